"""The one registration every fused op goes through: two custom ops, their fakes, the autograd formula.

`fused_op("reparameterize", forward, backward, ...)` turns a forward and a backward launcher into
`torch.ops.iiae.reparameterize_fwd` / `_bwd` (opaque to torch.compile: the launchers' type annotations
are the schemas, the fakes give the output shapes) and registers on the forward op the formula

    grad of the inputs = backward(*grad_outputs, *saved inputs)

so the returned forward op is itself differentiable, eager and compiled alike. Needs only torch.
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

import torch

NAMESPACE = "iiae"


def fused_op(
    name: str,
    forward: Callable,
    backward: Callable,
    *,
    forward_fake: Callable,
    backward_fake: Callable,
    saved: Sequence[str],
    grads: Sequence[str],
    passthrough: Mapping[str, int] | None = None,
) -> torch.library.CustomOpDef:
    """Register `iiae::{name}_fwd` and `iiae::{name}_bwd`; return the (differentiable) forward op.

    forward(*inputs) -> outputs and backward(*grad_outputs, *saved) -> gradients are launchers; the fakes
    take the same arguments and return empty tensors of the outputs' shapes, dtypes and layouts.
    saved: the forward parameters backward takes after the grad outputs, in order. Tensors (and None) go
      through ctx.save_for_backward, anything else (seed, offset) onto ctx. Outputs are never saved.
    grads: the forward parameters that backward's outputs are the gradients of, in order; a shorter
      result leaves the rest None (gaussian_kl to N(0, I) returns two).
    passthrough: {parameter: i} when that parameter's gradient is grad output i as is (no kernel).
    Every other parameter gets no gradient (eps is noise, not a parameter; seed/offset are ints)."""
    params = list(inspect.signature(forward).parameters)
    passthrough = dict(passthrough or {})
    unknown = {*saved, *grads, *passthrough} - set(params)
    if unknown:
        raise ValueError(f"{name}: {sorted(unknown)} are not parameters of {forward.__name__}{tuple(params)}")

    fwd_op = torch.library.custom_op(f"{NAMESPACE}::{name}_fwd", forward, mutates_args=())
    fwd_op.register_fake(forward_fake)
    bwd_op = torch.library.custom_op(f"{NAMESPACE}::{name}_bwd", backward, mutates_args=())
    bwd_op.register_fake(backward_fake)

    def setup_context(ctx, inputs, output):
        values = dict(zip(params, inputs))
        kept = [values[p] for p in saved]
        ctx.is_tensor = [v is None or isinstance(v, torch.Tensor) for v in kept]
        ctx.save_for_backward(*(v for v, t in zip(kept, ctx.is_tensor) if t))
        ctx.others = [v for v, t in zip(kept, ctx.is_tensor) if not t]

    def backward_formula(ctx, *grad_outputs):
        tensors, others = iter(ctx.saved_tensors), iter(ctx.others)
        kept = [next(tensors) if t else next(others) for t in ctx.is_tensor]
        result = bwd_op(*grad_outputs, *kept)
        by_param = dict(zip(grads, [result] if isinstance(result, torch.Tensor) else result))
        by_param.update({p: grad_outputs[i] for p, i in passthrough.items()})
        return tuple(by_param.get(p) for p in params)

    fwd_op.register_autograd(backward_formula, setup_context=setup_context)
    return fwd_op
