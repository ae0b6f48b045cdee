"""kernels.gaussian_kl on the Triton path: parity with the reference, edge shapes, rows split across programs,
gradcheck, golden values, the op.

Cases taking `kernel_device` run on CPU through the interpreter and have a `gpu`-marked [cuda] twin;
`gpu_kernel_device` cases are the twin alone (tests/kernel_helpers.py)."""
from __future__ import annotations

import math

import pytest
import torch
from kernel_helpers import (  # noqa: F401  (triton_path, kernel_device, gpu_kernel_device are fixtures)
    DEVICE,
    DTYPES,
    SHAPES,
    TRITON_RUNS,
    check_parity,
    forced_splits,
    golden_kl_case,
    gpu_kernel_device,
    gradcheck_fp64,
    kernel_device,
    make,
    noncontiguous_cases,
    triton_path,
)

from iiae import kernels
from iiae.kernels import reference as ref


# ---- parity: forward + backward, odd shapes, fp32 / fp16 / bf16 -------------------------------------------
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "pair"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gaussian_kl_parity(kernel_device, shape, dtype, prior):
    inputs = make(shape, dtype, n=2 if prior else 4, device=kernel_device)
    check_parity(kernels.gaussian_kl, ref.gaussian_kl, inputs)


def test_gaussian_kl_noncontiguous_inputs(triton_path):
    for case, _ in noncontiguous_cases():
        check_parity(kernels.gaussian_kl, ref.gaussian_kl, case[:4])


def test_gaussian_kl_edge_shapes(triton_path):
    for shape in [(0, 5), (3, 0), (7,)]:
        inputs = make(shape, n=4)
        torch.testing.assert_close(kernels.gaussian_kl(*inputs[:4]), ref.gaussian_kl(*inputs[:4]))


# ---- rows split across programs: chunk boundaries, a partial last chunk, the fixed-order sum -------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 5000), (2, 8, 8, 128)], ids=str)
def test_gaussian_kl_forced_multi_split(gpu_kernel_device, monkeypatch, shape, dtype):
    """3 chunks per row (the GPU picks its own count from the SM count; here it is forced): the partial sums add
    up to the reference, for the prior and for a pair, and a second call gives bitwise the same sums."""
    used = forced_splits(monkeypatch, 3)
    for n in (2, 4):
        inputs = make(shape, dtype, n=n, device=gpu_kernel_device)
        check_parity(kernels.gaussian_kl, ref.gaussian_kl, inputs)
        assert used and all(s == 3 for s in used), used
        first = kernels.gaussian_kl(*inputs)
        assert torch.equal(first, kernels.gaussian_kl(*inputs))


# ---- gradcheck in fp64 (the kernels compute in fp64 for fp64 inputs) -------------------------------------
GRADCHECK_CASES = {
    "kl_prior": (2, lambda *t_eps: kernels.gaussian_kl(*t_eps[:-1])),
    "kl_pair": (4, lambda *t_eps: kernels.gaussian_kl(*t_eps[:-1])),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_fp64(kernel_device, case):
    n, fn = GRADCHECK_CASES[case]
    assert gradcheck_fp64(fn, n, device=kernel_device)


# ---- golden values (disentanglement_lib), both backends ---------------------------------------------------
@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_golden_kl(monkeypatch, mode):
    mu, logvar, expected = golden_kl_case(monkeypatch, mode)
    torch.testing.assert_close(kernels.gaussian_kl(mu, logvar), expected)
    assert abs(expected[2].item() - 8.5914) < 1e-4
    # KL(q || q) = 0; KL(N(0, 1) || N(1, e)) = 1/e per dim.
    torch.testing.assert_close(kernels.gaussian_kl(mu, logvar, mu, logvar), torch.zeros(3, device=DEVICE))
    zeros = torch.zeros(2, 10, device=DEVICE)
    kl = kernels.gaussian_kl(zeros, zeros, zeros + 1, zeros + 1)
    torch.testing.assert_close(kl, torch.full((2,), 10 / math.e, device=DEVICE))


# ---- custom ops: registration checks -------------------------------------------------------------------------
def test_custom_ops_opcheck(triton_path):
    ops = torch.ops.iiae
    t = [x.detach() for x in make((3, 5), torch.float64, n=6)]
    grad_kl = torch.randn(3, 3, dtype=torch.float64, device=DEVICE)
    leaves = [x.requires_grad_() for x in make((3, 5), torch.float64, n=6)]
    for op, args in [
        (ops.gaussian_kl_fwd, (*leaves[:2], None, None)),
        (ops.gaussian_kl_fwd, tuple(leaves[:4])),
        (ops.gaussian_kl_bwd, (grad_kl[0], *t[:4])),
        (ops.gaussian_kl_bwd, (grad_kl[0], *t[:2], None, None)),
    ]:
        torch.library.opcheck(op, args)
