"""Reparameterised sample z = mu + exp(logvar / 2) * eps.

eps is read from a tensor, or drawn in-kernel from Philox(seed, offset + flat element index) and
drawn again in backward from the same (seed, offset): no eps tensor is ever stored.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _ops, _utils


@triton.jit
def _normal_noise(eps_ptr, offs, mask, seed, offset, HAS_EPS: tl.constexpr):
    """eps for the flat element indices `offs`: loaded, or Philox N(0, 1) (shared with shared_latent)."""
    if HAS_EPS:
        eps = tl.load(eps_ptr + offs, mask=mask, other=0.0)
    else:
        eps = tl.randn(seed, offset + offs)
    return eps


@triton.jit(do_not_specialize=["seed", "offset"])
def _reparam_fwd_kernel(
    mu_ptr, logvar_ptr, eps_ptr, z_ptr, n_elements, seed, offset,
    HAS_EPS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    eps = _normal_noise(eps_ptr, offs, mask, seed, offset, HAS_EPS).to(COMPUTE)
    z = mu + tl.exp(0.5 * logvar) * eps
    tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed", "offset"])
def _reparam_bwd_kernel(
    grad_z_ptr, logvar_ptr, eps_ptr, grad_logvar_ptr, n_elements, seed, offset,
    HAS_EPS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    # d z / d mu = 1 is handled on the host (grad_mu is grad_z itself); only d z / d logvar here.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    grad_z = tl.load(grad_z_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    eps = _normal_noise(eps_ptr, offs, mask, seed, offset, HAS_EPS).to(COMPUTE)
    grad_logvar = 0.5 * grad_z * tl.exp(0.5 * logvar) * eps
    tl.store(grad_logvar_ptr + offs, grad_logvar.to(grad_logvar_ptr.dtype.element_ty), mask=mask)


# ---- launchers ---------------------------------------------------------------------------------------
def reparam_forward(
    mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], seed: int, offset: int
) -> torch.Tensor:
    mu, logvar, eps = _utils.contiguous(mu, logvar, eps)
    z = _utils.empty_like(mu)
    n = mu.numel()
    if n == 0:
        return z
    block = _utils.block_size(n, mu.device)
    with _utils.device_guard(mu):
        _reparam_fwd_kernel[_utils.flat_grid(n, block)](
            mu, logvar, eps, z, n, seed, offset,
            HAS_EPS=eps is not None, COMPUTE=_utils.tl_compute_dtype(mu.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return z


def reparam_backward(
    grad_z: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], seed: int, offset: int
) -> torch.Tensor:
    grad_z, logvar, eps = _utils.contiguous(grad_z, logvar, eps)
    grad_logvar = _utils.empty_like(logvar)
    n = logvar.numel()
    if n == 0:
        return grad_logvar
    block = _utils.block_size(n, logvar.device)
    with _utils.device_guard(logvar):
        _reparam_bwd_kernel[_utils.flat_grid(n, block)](
            grad_z, logvar, eps, grad_logvar, n, seed, offset,
            HAS_EPS=eps is not None, COMPUTE=_utils.tl_compute_dtype(logvar.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return grad_logvar


# ---- ops: opaque to torch.compile, differentiable ---------------------------------------------------------
# Saves logvar (and eps when given); never mu, z, or generated eps. d z / d mu = 1: grad_mu is grad_z.
_reparameterize_op = _ops.fused_op(
    "reparameterize", reparam_forward, reparam_backward,
    forward_fake=lambda mu, logvar, eps, seed, offset: _utils.empty_like(mu),
    backward_fake=lambda grad_z, logvar, eps, seed, offset: _utils.empty_like(logvar),
    saved=("logvar", "eps", "seed", "offset"), grads=("logvar",), passthrough={"mu": 0},
)


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], seed: int, offset: int
) -> torch.Tensor:
    """Triton path of `iiae.kernels.reparameterize` (dispatch and seed drawing live in kernels/__init__)."""
    return _reparameterize_op(mu, logvar, eps, seed, offset)
