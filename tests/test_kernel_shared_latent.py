"""kernels.shared_latent_terms on the Triton path: parity with the reference, partial use, edge shapes, rows split
across programs, gradcheck, golden values, the shared Philox stream, the op, and (GPU) fused vs eager speed.

Cases taking `kernel_device` run on CPU through the interpreter and have a `gpu`-marked [cuda] twin;
`gpu_kernel_device` cases are the twin alone (tests/kernel_helpers.py)."""
from __future__ import annotations

import time

import pytest
import torch
from kernel_helpers import (  # noqa: F401  (triton_path, kernel_device, gpu_kernel_device are fixtures)
    DEVICE,
    DTYPES,
    SHAPES,
    TOL,
    TRITON_RUNS,
    check_parity,
    drawn_eps,
    forced_splits,
    golden_kl_case,
    gpu_kernel_device,
    gradcheck_fp64,
    kernel_device,
    make,
    needs_cuda,
    noncontiguous_cases,
    run,
    triton_path,
)

from iiae import kernels
from iiae.kernels import reference as ref


# ---- parity: forward + backward, odd shapes, fp32 / fp16 / bf16 -------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shared_latent_parity(kernel_device, shape, dtype):
    inputs = make(shape, dtype, n=6, device=kernel_device)
    eps = torch.randn(shape, device=kernel_device)
    check_parity(
        lambda *t: kernels.shared_latent_terms(*t, eps), lambda *t: ref.shared_latent_terms(*t, eps), inputs
    )


def test_shared_latent_partial_use(triton_path):
    """Only some outputs in the loss: autograd hands zeros for the others, grads still match."""
    inputs = make((4, 33), n=6)
    _, kl_prior, _, kl_ry = kernels.shared_latent_terms(*inputs, seed=3)
    grads = torch.autograd.grad((kl_prior + 2 * kl_ry).sum(), inputs)
    ref_inputs = [t.detach().requires_grad_() for t in inputs]
    _, rp, _, rr = ref.shared_latent_terms(*ref_inputs)
    ref_grads = torch.autograd.grad((rp + 2 * rr).sum(), ref_inputs, allow_unused=True, materialize_grads=True)
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, **TOL[torch.float32])


def test_shared_latent_noncontiguous_inputs(triton_path):
    for case, eps in noncontiguous_cases():
        check_parity(
            lambda *t: kernels.shared_latent_terms(*t, eps), lambda *t: ref.shared_latent_terms(*t, eps), case
        )


def test_shared_latent_edge_shapes(triton_path):
    for shape in [(0, 5), (3, 0), (7,)]:
        inputs = make(shape, n=6)
        z, kp, kx, ky = kernels.shared_latent_terms(*inputs, seed=1)
        assert z.shape == shape and kp.shape == kx.shape == ky.shape == (shape[0],)
        torch.testing.assert_close(kp, ref.gaussian_kl(*inputs[:2]))


# ---- rows split across programs: chunk boundaries, a partial last chunk, the fixed-order sum -------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 5000), (2, 8, 8, 128)], ids=str)
def test_shared_latent_forced_multi_split(gpu_kernel_device, monkeypatch, shape, dtype):
    """3 chunks per row (the GPU picks its own count from the SM count; here it is forced): z and the three KL
    sums match the reference with an explicit eps; with Philox, z is reparameterize's and a second call is
    bitwise the same."""
    used = forced_splits(monkeypatch, 3)
    inputs = make(shape, dtype, n=6, device=gpu_kernel_device)
    eps = torch.randn(shape, device=gpu_kernel_device)
    check_parity(lambda *t: kernels.shared_latent_terms(*t, eps), lambda *t: ref.shared_latent_terms(*t, eps), inputs)
    assert used and all(s == 3 for s in used), used
    seeded = kernels.shared_latent_terms(*inputs, seed=8, offset=5)
    assert all(torch.equal(a, b) for a, b in zip(seeded, kernels.shared_latent_terms(*inputs, seed=8, offset=5)))
    assert torch.equal(seeded[0], kernels.reparameterize(*inputs[:2], seed=8, offset=5))


# ---- gradcheck in fp64 (the kernels compute in fp64 for fp64 inputs) -------------------------------------
GRADCHECK_CASES = {
    "shared_eps": (6, lambda *t_eps: kernels.shared_latent_terms(*t_eps)),
    "shared_philox": (6, lambda *t_eps: kernels.shared_latent_terms(*t_eps[:-1], seed=9, offset=1)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_fp64(kernel_device, case):
    n, fn = GRADCHECK_CASES[case]
    assert gradcheck_fp64(fn, n, fast=case.endswith("philox"), device=kernel_device)


# ---- golden values (disentanglement_lib), both backends ---------------------------------------------------
@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_golden_kl(monkeypatch, mode):
    mu, logvar, expected = golden_kl_case(monkeypatch, mode)
    _, kl_prior, kl_rx, kl_ry = kernels.shared_latent_terms(mu, logvar, mu, logvar, mu, logvar, torch.zeros_like(mu))
    torch.testing.assert_close(kl_prior, expected)
    torch.testing.assert_close(kl_rx, torch.zeros(3, device=DEVICE))


# ---- Philox: the stream of reparameterize, regeneration in backward ------------------------------------------
def test_philox_same_stream_as_reparameterize(kernel_device):
    """The same stream feeds the fused op: z_s equals reparameterize for the same (seed, offset)."""
    mu, logvar = make((6, 300), device=kernel_device)
    z = kernels.reparameterize(mu, logvar, seed=5, offset=0)
    others = make((6, 300), n=4, seed=1, device=kernel_device)
    z_s = kernels.shared_latent_terms(mu, logvar, *others, seed=5, offset=0)[0]
    assert torch.equal(z_s, z)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_eps_regenerated_in_backward(kernel_device, dtype):
    """Backward redraws eps from (seed, offset): its gradients equal those with the eps forward used."""
    inputs = make((5, 300), dtype, n=6, device=kernel_device)
    outs, grads, weights = run(lambda *t: kernels.shared_latent_terms(*t, seed=21, offset=4), inputs)
    eps = drawn_eps(outs[0], *inputs[:2])
    _, ref_grads, _ = run(lambda *t: ref.shared_latent_terms(*t, eps), inputs, weights)
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, **TOL[dtype])


# ---- custom ops: registration checks -------------------------------------------------------------------------
def test_custom_ops_opcheck(triton_path):
    ops = torch.ops.iiae
    t = [x.detach() for x in make((3, 5), torch.float64, n=6)]
    eps = torch.randn(3, 5, dtype=torch.float64, device=DEVICE)
    grad_kl = torch.randn(3, 3, dtype=torch.float64, device=DEVICE)
    leaves = [x.requires_grad_() for x in make((3, 5), torch.float64, n=6)]
    for op, args in [
        (ops.shared_latent_fwd, (*leaves, None, 7, 3)),
        (ops.shared_latent_bwd, (t[0], grad_kl, *t, eps, 0, 0)),
    ]:
        torch.library.opcheck(op, args)


# ---- GPU tier ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_gpu_fused_faster_than_eager(monkeypatch):
    monkeypatch.delenv("IIAE_KERNELS", raising=False)
    inputs = make((64, 65536), n=6, device="cuda")

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def fwd_bwd(impl):
        def go():
            z, kp, kx, ky = impl(*inputs, seed=1)
            torch.autograd.grad(z.sum() + (kp + kx + ky).sum(), inputs)
        return go

    assert timed(fwd_bwd(kernels.shared_latent_terms)) < timed(fwd_bwd(ref.shared_latent_terms))
