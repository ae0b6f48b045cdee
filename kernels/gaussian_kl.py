"""Per-row KL(q || p) of diagonal Gaussians, summed over every non-batch dim.

p = N(0, I):  KL = 1/2 sum(mu^2 + var - 1 - logvar)
p given:      KL = 1/2 sum(logvar_p - logvar + (var + (mu - mu_p)^2) / var_p - 1)
Inputs are viewed as [B, N]. Forward: one program per (row, chunk of the row), partial sums added in a
fixed order afterwards. Backward: elementwise over the flat tensor, grad_output[B] broadcast per row.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _ops, _utils


# Term and gradient helpers, shared with shared_latent.py. Masked lanes load zeros, which make every
# term exactly 0 (exp(0) - 1 = 0), so no extra select is needed before summing.
@triton.jit
def _kl_prior_term(mu, logvar, var):
    return mu * mu + var - 1.0 - logvar


@triton.jit
def _kl_pair_term(mu, logvar, var, mu_p, logvar_p):
    diff = mu - mu_p
    return logvar_p - logvar + (var + diff * diff) * tl.exp(-logvar_p) - 1.0


@triton.jit
def _kl_pair_grads(mu, var, mu_p, logvar_p):
    """d/d(mu, logvar, mu_p, logvar_p) of one element's 1/2 * _kl_pair_term."""
    inv_var_p = tl.exp(-logvar_p)
    diff = mu - mu_p
    grad_mu = diff * inv_var_p
    grad_logvar = 0.5 * (var * inv_var_p - 1.0)
    grad_logvar_p = 0.5 * (1.0 - (var + diff * diff) * inv_var_p)
    return grad_mu, grad_logvar, -grad_mu, grad_logvar_p


@triton.jit
def _gaussian_kl_fwd_kernel(
    mu_ptr, logvar_ptr, mu_p_ptr, logvar_p_ptr, partial_ptr, n_cols, chunk,
    HAS_P: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    row_start = row * n_cols
    col_start = split * chunk
    col_end = tl.minimum(col_start + chunk, n_cols)
    cols = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=COMPUTE)
    for c in range(col_start, col_end, BLOCK):
        mask = c + cols < col_end
        offs = row_start + c + cols
        mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        var = tl.exp(logvar)
        if HAS_P:
            mu_p = tl.load(mu_p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
            logvar_p = tl.load(logvar_p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
            acc += _kl_pair_term(mu, logvar, var, mu_p, logvar_p)
        else:
            acc += _kl_prior_term(mu, logvar, var)
    tl.store(partial_ptr + row * tl.num_programs(1) + split, 0.5 * tl.sum(acc, axis=0))


@triton.jit
def _gaussian_kl_bwd_kernel(
    grad_kl_ptr, mu_ptr, logvar_ptr, mu_p_ptr, logvar_p_ptr,
    grad_mu_ptr, grad_logvar_ptr, grad_mu_p_ptr, grad_logvar_p_ptr, n_elements, n_cols,
    HAS_P: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    grad_kl = tl.load(grad_kl_ptr + offs // n_cols, mask=mask, other=0.0).to(COMPUTE)
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    var = tl.exp(logvar)
    if HAS_P:
        mu_p = tl.load(mu_p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        logvar_p = tl.load(logvar_p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
        d_mu, d_logvar, d_mu_p, d_logvar_p = _kl_pair_grads(mu, var, mu_p, logvar_p)
        tl.store(grad_mu_p_ptr + offs, (grad_kl * d_mu_p).to(grad_mu_p_ptr.dtype.element_ty), mask=mask)
        tl.store(grad_logvar_p_ptr + offs, (grad_kl * d_logvar_p).to(grad_logvar_p_ptr.dtype.element_ty), mask=mask)
    else:
        d_mu = mu
        d_logvar = 0.5 * (var - 1.0)
    tl.store(grad_mu_ptr + offs, (grad_kl * d_mu).to(grad_mu_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logvar_ptr + offs, (grad_kl * d_logvar).to(grad_logvar_ptr.dtype.element_ty), mask=mask)


# ---- launchers ---------------------------------------------------------------------------------------
def finish_partials(partial: torch.Tensor, n_splits: int) -> torch.Tensor:
    """[..., B * n_splits] partial sums -> [..., B]; no extra kernel when each row had one program."""
    partial = partial.unflatten(-1, (-1, n_splits))
    return partial.squeeze(-1) if n_splits == 1 else partial.sum(-1)


def gaussian_kl_forward(
    mu: torch.Tensor, logvar: torch.Tensor, mu_p: Optional[torch.Tensor], logvar_p: Optional[torch.Tensor]
) -> torch.Tensor:
    mu, logvar, mu_p, logvar_p = _utils.contiguous(mu, logvar, mu_p, logvar_p)
    n_rows, n_cols = _utils.rows(mu)
    out_dtype = _utils.compute_dtype(mu.dtype)
    if n_rows == 0 or n_cols == 0:
        return torch.zeros(n_rows, dtype=out_dtype, device=mu.device)
    block = _utils.block_size(n_cols, mu.device)
    n_splits, chunk = _utils.reduction_layout(n_rows, n_cols, block, mu.device)
    partial = torch.empty(n_rows * n_splits, dtype=out_dtype, device=mu.device)
    with _utils.device_guard(mu):
        _gaussian_kl_fwd_kernel[(n_rows, n_splits)](
            mu, logvar, mu_p, logvar_p, partial, n_cols, chunk,
            HAS_P=mu_p is not None, COMPUTE=_utils.tl_compute_dtype(mu.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return finish_partials(partial, n_splits)


def gaussian_kl_backward(
    grad_kl: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    mu_p: Optional[torch.Tensor],
    logvar_p: Optional[torch.Tensor],
) -> list[torch.Tensor]:
    """[grad_mu, grad_logvar] for the prior, [.., grad_mu_p, grad_logvar_p] for a pair."""
    grad_kl, mu, logvar, mu_p, logvar_p = _utils.contiguous(grad_kl, mu, logvar, mu_p, logvar_p)
    inputs = [mu, logvar] if mu_p is None else [mu, logvar, mu_p, logvar_p]
    grads = [_utils.empty_like(t) for t in inputs]
    n = mu.numel()
    if n == 0:
        return grads
    _, n_cols = _utils.rows(mu)
    block = _utils.block_size(n, mu.device)
    grad_mu_p, grad_logvar_p = (None, None) if mu_p is None else grads[2:]
    with _utils.device_guard(mu):
        _gaussian_kl_bwd_kernel[_utils.flat_grid(n, block)](
            grad_kl, mu, logvar, mu_p, logvar_p, grads[0], grads[1], grad_mu_p, grad_logvar_p, n, n_cols,
            HAS_P=mu_p is not None, COMPUTE=_utils.tl_compute_dtype(mu.dtype), BLOCK=block,
            num_warps=_utils.num_warps(block),
        )
    return grads


# ---- ops: opaque to torch.compile, differentiable ---------------------------------------------------------
def _grad_fakes(grad_kl, mu, logvar, mu_p, logvar_p):
    return [_utils.empty_like(t) for t in ((mu, logvar) if mu_p is None else (mu, logvar, mu_p, logvar_p))]


_gaussian_kl_op = _ops.fused_op(
    "gaussian_kl", gaussian_kl_forward, gaussian_kl_backward,
    forward_fake=lambda mu, logvar, mu_p, logvar_p: mu.new_empty(mu.shape[0], dtype=_utils.compute_dtype(mu.dtype)),
    backward_fake=_grad_fakes,
    saved=("mu", "logvar", "mu_p", "logvar_p"), grads=("mu", "logvar", "mu_p", "logvar_p"),
)


def gaussian_kl(
    mu: torch.Tensor, logvar: torch.Tensor, mu_p: Optional[torch.Tensor], logvar_p: Optional[torch.Tensor]
) -> torch.Tensor:
    """Triton path of `iiae.kernels.gaussian_kl` (dispatch and validation live in kernels/__init__)."""
    return _gaussian_kl_op(mu, logvar, mu_p, logvar_p)
