"""Plain-PyTorch ground truth for the kernels; also the `torch` backend.

Same signatures as the public API, so either can stand in for the other. Math in fp32 (fp64 for fp64
inputs), z cast back to mu's dtype, KL returned in the compute dtype: exactly the kernels' contract.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._utils import compute_dtype


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps. Without eps, draws it from torch's RNG (seed/offset are for the
    Triton backend's Philox stream and are not used here)."""
    if eps is None:
        eps = torch.randn_like(mu)
    acc = compute_dtype(mu.dtype)
    return (mu.to(acc) + torch.exp(0.5 * logvar.to(acc)) * eps.to(acc)).to(mu.dtype)


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_p: Optional[torch.Tensor] = None,
    logvar_p: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """KL(N(mu, e^logvar) || p) summed over all non-batch dims -> [B]; p = N(0, I) when not given."""
    acc = compute_dtype(mu.dtype)
    mu, logvar = mu.to(acc), logvar.to(acc)
    if mu_p is None:
        term = mu.square() + logvar.exp() - 1 - logvar
    else:
        mu_p, logvar_p = mu_p.to(acc), logvar_p.to(acc)
        term = logvar_p - logvar + (logvar.exp() + (mu - mu_p).square()) / logvar_p.exp() - 1
    return 0.5 * (term.flatten(1).sum(1) if term.dim() > 1 else term)


def shared_latent_terms(
    mu_s: torch.Tensor,
    logvar_s: torch.Tensor,
    mu_rx: torch.Tensor,
    logvar_rx: torch.Tensor,
    mu_ry: torch.Tensor,
    logvar_ry: torch.Tensor,
    eps: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_s, KL(q_s || N(0, I)), KL(q_s || r_x), KL(q_s || r_y)) for q_s = N(mu_s, e^logvar_s)."""
    return (
        reparameterize(mu_s, logvar_s, eps),
        gaussian_kl(mu_s, logvar_s),
        gaussian_kl(mu_s, logvar_s, mu_rx, logvar_rx),
        gaussian_kl(mu_s, logvar_s, mu_ry, logvar_ry),
    )
