"""The shared-code terms of the IIAE objective in one pass over the six tensors.

From q(z^s|x,y) = N(mu_s, var_s) and the two auxiliary encoders r^x, r^y:
  z_s      = mu_s + exp(logvar_s / 2) * eps
  kl_prior = KL(q || N(0, I)),  kl_rx = KL(q || r^x),  kl_ry = KL(q || r^y)     (per row, [B])
Unfused, these are one reparam and three KL kernels reading mu_s/logvar_s four times. eps handling is
that of reparam.py (the Philox stream index is the flat element index, so for the same seed/offset the
z_s here equals `reparameterize(mu_s, logvar_s)`).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _ops, _utils
from .gaussian_kl import _kl_pair_grads, _kl_pair_term, _kl_prior_term, finish_partials
from .reparam import _normal_noise


@triton.jit(do_not_specialize=["seed", "offset"])
def _shared_latent_fwd_kernel(
    mu_ptr, logvar_ptr, mu_rx_ptr, logvar_rx_ptr, mu_ry_ptr, logvar_ry_ptr, eps_ptr, z_ptr, partial_ptr,
    n_rows, n_cols, chunk, seed, offset,
    HAS_EPS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    n_splits = tl.num_programs(1)
    row_start = row * n_cols
    col_start = split * chunk
    col_end = tl.minimum(col_start + chunk, n_cols)
    cols = tl.arange(0, BLOCK)
    acc_prior = tl.zeros([BLOCK], dtype=COMPUTE)
    acc_rx = tl.zeros([BLOCK], dtype=COMPUTE)
    acc_ry = tl.zeros([BLOCK], dtype=COMPUTE)
    for c in range(col_start, col_end, BLOCK):
        mask = c + cols < col_end
        offs = row_start + c + cols
        mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        mu_rx = tl.load(mu_rx_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        logvar_rx = tl.load(logvar_rx_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        mu_ry = tl.load(mu_ry_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        logvar_ry = tl.load(logvar_ry_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        eps = _normal_noise(eps_ptr, offs, mask, seed, offset, HAS_EPS).to(COMPUTE)
        z = mu + tl.exp(0.5 * logvar) * eps
        tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)
        var = tl.exp(logvar)
        acc_prior += _kl_prior_term(mu, logvar, var)
        acc_rx += _kl_pair_term(mu, logvar, var, mu_rx, logvar_rx)
        acc_ry += _kl_pair_term(mu, logvar, var, mu_ry, logvar_ry)
    # partial is [3, n_rows, n_splits]: prior, rx, ry.
    out = partial_ptr + row * n_splits + split
    plane = n_rows * n_splits
    tl.store(out, 0.5 * tl.sum(acc_prior, axis=0))
    tl.store(out + plane, 0.5 * tl.sum(acc_rx, axis=0))
    tl.store(out + 2 * plane, 0.5 * tl.sum(acc_ry, axis=0))


@triton.jit(do_not_specialize=["seed", "offset"])
def _shared_latent_bwd_kernel(
    grad_z_ptr, grad_kl_ptr,
    mu_ptr, logvar_ptr, mu_rx_ptr, logvar_rx_ptr, mu_ry_ptr, logvar_ry_ptr, eps_ptr,
    grad_mu_ptr, grad_logvar_ptr, grad_mu_rx_ptr, grad_logvar_rx_ptr, grad_mu_ry_ptr, grad_logvar_ry_ptr,
    n_elements, n_rows, n_cols, seed, offset,
    HAS_EPS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    row = offs // n_cols
    # grad_kl is [3, B]: per-row weights of kl_prior, kl_rx, kl_ry.
    g_prior = tl.load(grad_kl_ptr + row, mask=mask, other=0.0).to(COMPUTE)
    g_rx = tl.load(grad_kl_ptr + n_rows + row, mask=mask, other=0.0).to(COMPUTE)
    g_ry = tl.load(grad_kl_ptr + 2 * n_rows + row, mask=mask, other=0.0).to(COMPUTE)
    grad_z = tl.load(grad_z_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu_rx = tl.load(mu_rx_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar_rx = tl.load(logvar_rx_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu_ry = tl.load(mu_ry_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar_ry = tl.load(logvar_ry_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    eps = _normal_noise(eps_ptr, offs, mask, seed, offset, HAS_EPS).to(COMPUTE)

    var = tl.exp(logvar)
    dmu_x, dlv_x, dmu_rx, dlv_rx = _kl_pair_grads(mu, var, mu_rx, logvar_rx)
    dmu_y, dlv_y, dmu_ry, dlv_ry = _kl_pair_grads(mu, var, mu_ry, logvar_ry)
    grad_mu = grad_z + g_prior * mu + g_rx * dmu_x + g_ry * dmu_y
    grad_logvar = (
        0.5 * grad_z * tl.exp(0.5 * logvar) * eps + g_prior * 0.5 * (var - 1.0) + g_rx * dlv_x + g_ry * dlv_y
    )
    tl.store(grad_mu_ptr + offs, grad_mu.to(grad_mu_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logvar_ptr + offs, grad_logvar.to(grad_logvar_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_mu_rx_ptr + offs, (g_rx * dmu_rx).to(grad_mu_rx_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logvar_rx_ptr + offs, (g_rx * dlv_rx).to(grad_logvar_rx_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_mu_ry_ptr + offs, (g_ry * dmu_ry).to(grad_mu_ry_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logvar_ry_ptr + offs, (g_ry * dlv_ry).to(grad_logvar_ry_ptr.dtype.element_ty), mask=mask)


# ---- launchers ---------------------------------------------------------------------------------------
def shared_latent_forward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_rx: torch.Tensor,
    logvar_rx: torch.Tensor,
    mu_ry: torch.Tensor,
    logvar_ry: torch.Tensor,
    eps: Optional[torch.Tensor],
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, kl[3, B]) with kl rows prior, rx, ry."""
    mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps = _utils.contiguous(
        mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps
    )
    n_rows, n_cols = _utils.rows(mu)
    z = _utils.empty_like(mu)
    out_dtype = _utils.compute_dtype(mu.dtype)
    if n_rows == 0 or n_cols == 0:
        return z, torch.zeros(3, n_rows, dtype=out_dtype, device=mu.device)
    block = _utils.block_size(n_cols, mu.device)
    n_splits, chunk = _utils.reduction_layout(n_rows, n_cols, block, mu.device)
    partial = torch.empty(3, n_rows * n_splits, dtype=out_dtype, device=mu.device)
    with _utils.device_guard(mu):
        _shared_latent_fwd_kernel[(n_rows, n_splits)](
            mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, z, partial, n_rows, n_cols, chunk, seed, offset,
            HAS_EPS=eps is not None, COMPUTE=_utils.tl_compute_dtype(mu.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return z, finish_partials(partial, n_splits)


def shared_latent_backward(
    grad_z: torch.Tensor,
    grad_kl: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_rx: torch.Tensor,
    logvar_rx: torch.Tensor,
    mu_ry: torch.Tensor,
    logvar_ry: torch.Tensor,
    eps: Optional[torch.Tensor],
    seed: int,
    offset: int,
) -> list[torch.Tensor]:
    """Gradients of the six inputs, in argument order."""
    inputs = _utils.contiguous(mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry)
    grad_z, grad_kl, eps = _utils.contiguous(grad_z, grad_kl, eps)
    grads = [_utils.empty_like(t) for t in inputs]
    n = mu.numel()
    if n == 0:
        return grads
    n_rows, n_cols = _utils.rows(mu)
    block = _utils.block_size(n, mu.device)
    with _utils.device_guard(mu):
        _shared_latent_bwd_kernel[_utils.flat_grid(n, block)](
            grad_z, grad_kl, *inputs, eps, *grads, n, n_rows, n_cols, seed, offset,
            HAS_EPS=eps is not None, COMPUTE=_utils.tl_compute_dtype(mu.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return grads


# ---- ops: opaque to torch.compile, differentiable ---------------------------------------------------------
# Saves the six inputs (and eps when given); never z, the KLs or generated eps.
_INPUTS = ("mu", "logvar", "mu_rx", "logvar_rx", "mu_ry", "logvar_ry")


def _forward_fake(mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, seed, offset):
    return _utils.empty_like(mu), mu.new_empty(3, mu.shape[0], dtype=_utils.compute_dtype(mu.dtype))


def _backward_fake(grad_z, grad_kl, mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, seed, offset):
    return [_utils.empty_like(t) for t in (mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry)]


_shared_latent_op = _ops.fused_op(
    "shared_latent", shared_latent_forward, shared_latent_backward,
    forward_fake=_forward_fake, backward_fake=_backward_fake,
    saved=(*_INPUTS, "eps", "seed", "offset"), grads=_INPUTS,
)


def shared_latent_terms(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_rx: torch.Tensor,
    logvar_rx: torch.Tensor,
    mu_ry: torch.Tensor,
    logvar_ry: torch.Tensor,
    eps: Optional[torch.Tensor],
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton path of `iiae.kernels.shared_latent_terms` (dispatch and validation live in kernels/__init__)."""
    z, kl = _shared_latent_op(mu, logvar, mu_rx, logvar_rx, mu_ry, logvar_ry, eps, seed, offset)
    return z, kl[0], kl[1], kl[2]
