"""Plain-PyTorch ground truth for the kernels; also the `torch` backend.

Same signatures as the public API, so either can stand in for the other. Math in fp32 (fp64 for fp64
inputs), z cast back to mu's dtype, KL returned in the compute dtype: exactly the kernels' contract.
The noise follows the RNG contract of `kernels` (see its docstring) with torch's generator.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._utils import compute_dtype


def _seeded_normal(like: torch.Tensor, seed: int, offset: int = 0) -> torch.Tensor:
    """eps shaped like `like`: flat element i is normal draw number offset + i of a torch.Generator on
    like's device seeded with `seed` (drawn in fp32, then cast to like's dtype).

    Draws offset + numel values and keeps the last numel, so rows [r, r + B) drawn at offset r * row_size
    are rows r .. r + B of the same call on rows [0, r + B) at offset 0."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    eps = torch.randn(offset + like.numel(), generator=gen, device=like.device, dtype=torch.float32)
    return eps[offset:].view(like.shape).to(like.dtype)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps. eps None: `_seeded_normal(mu, seed, offset)` with a seed, else
    torch.randn_like(mu) (torch's global RNG; offset unused)."""
    if eps is None:
        eps = torch.randn_like(mu) if seed is None else _seeded_normal(mu, seed, offset)
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
    """(z_s, KL(q_s || N(0, I)), KL(q_s || r_x), KL(q_s || r_y)) for q_s = N(mu_s, e^logvar_s); z_s (and
    its noise) exactly as `reparameterize(mu_s, logvar_s, eps, seed=seed, offset=offset)`."""
    return (
        reparameterize(mu_s, logvar_s, eps, seed=seed, offset=offset),
        gaussian_kl(mu_s, logvar_s),
        gaussian_kl(mu_s, logvar_s, mu_rx, logvar_rx),
        gaussian_kl(mu_s, logvar_s, mu_ry, logvar_ry),
    )
