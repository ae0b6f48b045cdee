"""Fused Gaussian-latent kernels of the IIAE objective: Triton on GPU, plain PyTorch elsewhere.

    reparameterize(mu, logvar, eps=None, *, seed=None, offset=0) -> z
    gaussian_kl(mu, logvar, mu_p=None, logvar_p=None) -> Tensor[B]
    shared_latent_terms(mu_s, logvar_s, mu_rx, logvar_rx, mu_ry, logvar_ry, eps=None, *, seed=None, offset=0)
        -> (z_s, kl_prior[B], kl_rx[B], kl_ry[B])
    backend(t) -> "triton" | "torch"
    reference: the same three functions in plain PyTorch (the ground truth)

Backend per call from env IIAE_KERNELS = auto (default: Triton for CUDA tensors) | triton | torch.
Importing this package never fails: without a usable Triton every call takes the torch path.

RNG contract (reparameterize, shared_latent_terms; both backends). eps given: no noise is drawn and both
backends compute the same numbers. Otherwise, with a seed, the noise of flat element i of the latent is a
function of (seed, offset + i): a caller holding rows [r, r + B) of a batch passes offset = r * row_size.
  triton: eps[i] = Philox(seed, offset + i), drawn in-kernel and drawn again in backward (never stored);
  torch:  eps[i] = draw offset + i of a torch.Generator on the tensor's device seeded with `seed`: flat
          fp32 normal draws 0 .. offset + numel - 1, the first `offset` dropped, cast to mu's dtype.
The two backends draw different numbers for the same seed (Philox vs torch's generator). torch's values
also depend on how many are drawn (CPU: e.g. the last 16 when the count is no multiple of 16; CUDA: the
launch layout): there rows [r, r + B) at offset r * row_size are exactly rows r .. r + B of rows [0, r + B)
at offset 0, but of a longer draw only where the counts line up; Philox has no such caveat.
Without a seed: triton draws one from torch's CPU generator (follows torch.manual_seed), torch uses
torch.randn_like(mu) (torch's global RNG; offset unused).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import reference
from ._utils import TRITON_IMPORT_ERROR, draw_seed, is_interpreted

__all__ = ["reparameterize", "gaussian_kl", "shared_latent_terms", "backend", "reference"]

# Why Triton cannot run here (None when it can). Kernels built under TRITON_INTERPRET=1 (set before this
# import) run on CPU tensors through the interpreter; otherwise they need CUDA tensors.
_TRITON_ERROR: Optional[BaseException] = TRITON_IMPORT_ERROR
_INTERPRETED = False
if _TRITON_ERROR is None:
    try:
        # `_ops_*` names: the submodule gaussian_kl would otherwise shadow the function defined below.
        from . import gaussian_kl as _ops_gaussian_kl
        from . import reparam as _ops_reparam
        from . import shared_latent as _ops_shared_latent

        _INTERPRETED = is_interpreted(_ops_reparam._reparam_fwd_kernel)
    except Exception as exc:  # a broken Triton install must leave the torch path working
        _TRITON_ERROR = exc

_MODES = ("auto", "triton", "torch")


def backend(t: torch.Tensor) -> str:
    """"triton" or "torch" for an op on tensor `t`, from env IIAE_KERNELS (read at every call).

    auto: Triton for CUDA tensors when compiled kernels are available, else torch (the interpreter is
    never picked automatically). triton: Triton if it can run `t` (CUDA, or the interpreter), else a
    RuntimeError. torch: always the reference implementation."""
    mode = os.environ.get("IIAE_KERNELS", "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"IIAE_KERNELS must be one of {'|'.join(_MODES)}, got {mode!r}")
    if mode == "torch":
        return "torch"
    if mode == "auto":
        return "triton" if t.is_cuda and _TRITON_ERROR is None and not _INTERPRETED else "torch"
    if _TRITON_ERROR is not None:
        raise RuntimeError(f"IIAE_KERNELS=triton but Triton is not usable: {_TRITON_ERROR!r}")
    if not (t.is_cuda or _INTERPRETED):
        raise RuntimeError(
            f"IIAE_KERNELS=triton needs CUDA tensors (got {t.device}), or TRITON_INTERPRET=1 set before "
            "`kernels` is first imported to run the kernels on CPU through the Triton interpreter"
        )
    return "triton"


def _check(names: str, *tensors: Optional[torch.Tensor]) -> None:
    """Same shape/device, floating point, a leading batch dim; None entries are skipped."""
    given = [(n, t) for n, t in zip(names.split(), tensors) if t is not None]
    name0, t0 = given[0]
    if t0.dim() == 0:
        raise ValueError(f"{name0} needs a leading batch dim, got a 0-dim tensor")
    for name, t in given:
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if t.shape != t0.shape or t.device != t0.device:
            raise ValueError(
                f"{name} {tuple(t.shape)} on {t.device} does not match {name0} {tuple(t0.shape)} on {t0.device}"
            )


def _philox_seed(eps: Optional[torch.Tensor], seed: Optional[int]) -> int:
    """The seed the Triton path uses: unused with an explicit eps, drawn on the host when not given."""
    if eps is not None:
        return 0
    return draw_seed() if seed is None else seed


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: Optional[torch.Tensor] = None,
    *,
    seed: Optional[int] = None,
    offset: int = 0,
) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, same shape and dtype as mu (math in fp32).

    eps given: both backends compute the same numbers, and no gradient flows into eps. eps None: noise
    per the RNG contract in this module's docstring, a function of (seed, offset + flat index)."""
    _check("mu logvar eps", mu, logvar, eps)
    if backend(mu) == "torch":
        return reference.reparameterize(mu, logvar, eps, seed=seed, offset=offset)
    return _ops_reparam.reparameterize(mu, logvar, eps, _philox_seed(eps, seed), offset)


def gaussian_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_p: Optional[torch.Tensor] = None,
    logvar_p: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-row KL(N(mu, e^logvar) || p) summed over all non-batch dims -> [B] in fp32 (fp64 for fp64).

    p = N(mu_p, e^logvar_p), or N(0, I) when both are None. Gradients flow into all four inputs."""
    if (mu_p is None) != (logvar_p is None):
        raise ValueError("give both mu_p and logvar_p, or neither (KL to N(0, I))")
    _check("mu logvar mu_p logvar_p", mu, logvar, mu_p, logvar_p)
    if backend(mu) == "torch":
        return reference.gaussian_kl(mu, logvar, mu_p, logvar_p)
    return _ops_gaussian_kl.gaussian_kl(mu, logvar, mu_p, logvar_p)


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
    """(z_s, KL(q_s || N(0, I)), KL(q_s || r_x), KL(q_s || r_y)) for q_s = N(mu_s, e^logvar_s), in one pass.

    z_s as `reparameterize(mu_s, logvar_s, eps, seed=seed, offset=offset)` (the same noise on either
    backend), the KLs as `gaussian_kl`; gradients flow into all six inputs."""
    _check("mu_s logvar_s mu_rx logvar_rx mu_ry logvar_ry eps", mu_s, logvar_s, mu_rx, logvar_rx, mu_ry, logvar_ry, eps)
    if backend(mu_s) == "torch":
        return reference.shared_latent_terms(
            mu_s, logvar_s, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, seed=seed, offset=offset
        )
    return _ops_shared_latent.shared_latent_terms(
        mu_s, logvar_s, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, _philox_seed(eps, seed), offset
    )
