"""kernels.reparameterize on the Triton path: parity with the reference, gradcheck, the Philox stream, the op.

Cases taking `kernel_device` run on CPU through the interpreter and have a `gpu`-marked [cuda] twin
(tests/kernel_helpers.py)."""
from __future__ import annotations

import math

import pytest
import torch
from kernel_helpers import (  # noqa: F401  (triton_path, kernel_device are fixtures)
    DEVICE,
    DTYPES,
    SHAPES,
    TOL,
    check_parity,
    drawn_eps,
    gradcheck_fp64,
    kernel_device,
    make,
    noncontiguous_cases,
    run,
    triton_path,
)

from iiae import kernels
from iiae.kernels import reference as ref


# ---- parity: forward + backward, odd shapes, fp32 / fp16 / bf16 -------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reparameterize_parity(kernel_device, shape, dtype):
    mu, logvar = make(shape, dtype, device=kernel_device)
    eps = torch.randn(shape, device=kernel_device)
    check_parity(
        lambda m, lv: kernels.reparameterize(m, lv, eps), lambda m, lv: ref.reparameterize(m, lv, eps), [mu, logvar]
    )


def test_reparameterize_noncontiguous_inputs(triton_path):
    for case, eps in noncontiguous_cases():
        check_parity(
            lambda m, lv: kernels.reparameterize(m, lv, eps), lambda m, lv: ref.reparameterize(m, lv, eps), case[:2]
        )


# ---- gradcheck in fp64 (the kernels compute in fp64 for fp64 inputs) -------------------------------------
GRADCHECK_CASES = {
    "reparam_eps": (2, lambda m, lv, eps: kernels.reparameterize(m, lv, eps)),
    "reparam_philox": (2, lambda m, lv, eps: kernels.reparameterize(m, lv, seed=7, offset=3)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_fp64(kernel_device, case):
    n, fn = GRADCHECK_CASES[case]
    assert gradcheck_fp64(fn, n, fast=case.endswith("philox"), device=kernel_device)


# ---- Philox: determinism, stream layout, moments, regeneration in backward -------------------------------
def test_philox_determinism(kernel_device):
    mu, logvar = make((6, 300), device=kernel_device)
    z = kernels.reparameterize(mu, logvar, seed=5, offset=0)
    assert torch.equal(z, kernels.reparameterize(mu, logvar, seed=5, offset=0))
    assert not torch.equal(z, kernels.reparameterize(mu, logvar, seed=6, offset=0))
    assert not torch.equal(z, kernels.reparameterize(mu, logvar, seed=5, offset=1))
    # seed=None draws the seed from torch's generator.
    torch.manual_seed(0)
    a = kernels.reparameterize(mu, logvar)
    b = kernels.reparameterize(mu, logvar)
    torch.manual_seed(0)
    assert torch.equal(a, kernels.reparameterize(mu, logvar)) and not torch.equal(a, b)


def test_philox_offset_shifts_stream(kernel_device):
    """eps[i] = Philox(seed, offset + flat index i): offset k continues where index k of offset 0 was."""
    k, n = 77, 1000
    zeros = torch.zeros(1, n + k, device=kernel_device)
    eps_long = kernels.reparameterize(zeros, zeros, seed=11, offset=0)
    eps_short = kernels.reparameterize(zeros[:, :n], zeros[:, :n], seed=11, offset=k)
    assert torch.equal(eps_short, eps_long[:, k:])
    big = 3 * 2**31  # offsets past 32 bits use the high Philox counter word
    assert not torch.equal(kernels.reparameterize(zeros, zeros, seed=11, offset=big), eps_long)


def test_philox_moments(kernel_device):
    n = 8192
    zeros = torch.zeros(4, n // 4, device=kernel_device)
    eps = kernels.reparameterize(zeros, zeros, seed=123).double()
    # Standard errors: mean 1/sqrt(n) = 0.011, std ~0.008; bounds at ~4.5 sigma.
    assert abs(eps.mean().item()) < 0.05
    assert abs(eps.std().item() - 1) < 0.04
    assert abs((eps > 0).double().mean().item() - 0.5) < 0.03
    z = kernels.reparameterize(zeros + 2, zeros + math.log(9.0), seed=124).double()
    assert abs(z.mean().item() - 2) < 0.15 and abs(z.std().item() - 3) < 0.12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_eps_regenerated_in_backward(kernel_device, dtype):
    """Backward redraws eps from (seed, offset): its gradients equal those with the eps forward used."""
    inputs = make((5, 300), dtype, n=2, device=kernel_device)
    outs, grads, weights = run(lambda m, lv: kernels.reparameterize(m, lv, seed=21, offset=4), inputs)
    eps = drawn_eps(outs[0], *inputs)
    _, ref_grads, _ = run(lambda m, lv: ref.reparameterize(m, lv, eps), inputs, weights)
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, **TOL[dtype])


# ---- custom ops: registration checks -------------------------------------------------------------------------
def test_custom_ops_opcheck(triton_path):
    ops = torch.ops.iiae
    t = [x.detach() for x in make((3, 5), torch.float64, n=6)]
    eps = torch.randn(3, 5, dtype=torch.float64, device=DEVICE)
    leaves = [x.requires_grad_() for x in make((3, 5), torch.float64, n=6)]
    for op, args in [
        (ops.reparameterize_fwd, (*leaves[:2], eps, 0, 0)),
        (ops.reparameterize_fwd, (*leaves[:2], None, 7, 3)),
        (ops.reparameterize_bwd, (t[0], t[1], None, 7, 3)),
    ]:
        torch.library.opcheck(op, args)
