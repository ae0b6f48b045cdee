"""Shared by the tests/test_kernel_*.py files: devices, tolerances, inputs, the parity check (Liger-Kernel style).

Without CUDA the Triton path runs on CPU tensors through the interpreter (conftest sets TRITON_INTERPRET=1
before anything imports `kernels`); ~8 ms per program, so every grid in these tests stays under ~100 programs.

Twins. The parity, gradcheck, Philox and forced multi-split cases take the `kernel_device` fixture (or
`gpu_kernel_device`, twin only): a `[cpu]` case on CPU tensors through the interpreter (the default tier) and a
`[cuda]` twin marked `gpu` (deselected by the default addopts; `pytest -m gpu` runs it against the compiled
kernels). Where CUDA is present the interpreter is off, so the `[cpu]` cases skip there and the `[cuda]` twins
carry them. `IIAE_GPU_TWIN_DEVICE=cpu` (gpu_check.sh --gpu-sections-anyway) runs the twins on CPU through the
interpreter: their code path, checked without a GPU.
"""
from __future__ import annotations

import importlib.util
import math
import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# From the environment, not from `kernels`: a broken ops module must fail these tests, not skip them.
HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_RUNS = HAS_TRITON and (CUDA or os.environ.get("TRITON_INTERPRET") == "1")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TWIN_DEVICE = os.environ.get("IIAE_GPU_TWIN_DEVICE", "cuda")

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")

SHAPES = [(1, 1), (3, 37), (41, 129), (8, 8192), (5, 8, 8, 128)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Low precision: the reference runs on the same values upcast to fp32; its fp32 results rounded to the
# output dtype may differ from the kernel's by one unit in the last place.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}


@pytest.fixture
def triton_path(monkeypatch):
    """Every `iiae.kernels.*` call in the test takes the Triton path (import this fixture into the test module)."""
    if not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.setenv("IIAE_KERNELS", "triton")


def _kernel_device(request, monkeypatch) -> torch.device:
    device = torch.device(request.param)
    if not HAS_TRITON:
        pytest.skip("triton not installed")
    if device.type == "cuda" and not CUDA:
        pytest.skip("needs CUDA")
    if device.type == "cpu" and not INTERPRETED:
        pytest.skip("Triton interpreter off (CUDA present): the [cuda] twin runs this case (pytest -m gpu)")
    monkeypatch.setenv("IIAE_KERNELS", "triton")
    return device


_TWIN = pytest.param(TWIN_DEVICE, id="cuda", marks=pytest.mark.gpu)
# The device of a case with a gpu twin; every `iiae.kernels.*` call in the test takes the Triton path.
kernel_device = pytest.fixture(params=[pytest.param("cpu", id="cpu"), _TWIN])(_kernel_device)
# The gpu twin alone (no CPU case: the default tier's runtime stays as it is).
gpu_kernel_device = pytest.fixture(params=[_TWIN])(_kernel_device)


def forced_splits(monkeypatch, splits: int) -> list[int]:
    """Reduction forwards cut every row into `splits` chunks (fewer when the row has fewer blocks), blocks of at
    most 1024 (also in the interpreter, which would otherwise take a whole row per block); returns the list of
    split counts used, one per reduction launch, to check that the layout was taken."""
    import triton

    from iiae.kernels import _utils

    used: list[int] = []
    block_size = _utils.block_size

    def small_blocks(n, device):
        return min(block_size(n, device), 1024)

    def layout(n_rows, n_cols, block, device):
        n_blocks = triton.cdiv(n_cols, block)
        chunk = triton.cdiv(n_blocks, min(splits, n_blocks)) * block
        used.append(triton.cdiv(n_cols, chunk))
        return used[-1], chunk

    monkeypatch.setattr(_utils, "block_size", small_blocks)
    monkeypatch.setattr(_utils, "reduction_layout", layout)
    return used


def golden_kl_case(monkeypatch, mode: str):
    """disentanglement_lib's golden KL values on backend `mode`: (mu, logvar, KL to N(0, I)) for three rows of 10."""
    if mode == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.setenv("IIAE_KERNELS", mode)
    mu = torch.tensor([0.0, 1.0, 1.0], device=DEVICE)[:, None].expand(3, 10)
    logvar = torch.tensor([0.0, 0.0, 1.0], device=DEVICE)[:, None].expand(3, 10)
    return mu, logvar, torch.tensor([0.0, 5.0, 0.5 * 10 * (math.e - 1)], device=DEVICE)


def make(shape, dtype=torch.float32, n=2, seed=0, device=DEVICE):
    """n leaf tensors alternating mu ~ N(0, 1) and logvar ~ N(0, 0.5^2)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(shape, generator=gen) * (0.5 if i % 2 else 1.0)).to(device, dtype).requires_grad_()
        for i in range(n)
    ]


def weights_like(outs, seed=1):
    """Random grad_output per output, exactly representable in the output's own dtype."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen).to(o.device, o.dtype).float() for o in outs]


def run(fn, inputs, weights=None):
    """(outputs, grads of sum(w * out)) with grad_output = w (not all ones)."""
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    weights = weights or weights_like(outs)
    loss = sum((o.float() * w).sum() for o, w in zip(outs, weights))
    return outs, torch.autograd.grad(loss, inputs), weights


def check_parity(fn, ref_fn, inputs):
    """Kernel vs reference run on fp32 copies of the inputs, its results rounded to the kernel's dtypes."""
    outs, grads, weights = run(fn, inputs)
    ref_inputs = [t.detach().float().requires_grad_() for t in inputs]
    ref_outs, ref_grads, _ = run(ref_fn, ref_inputs, weights)
    for out, expected in zip(outs, ref_outs):
        assert out.shape == expected.shape
        assert out.dtype == (inputs[0].dtype if out.shape == inputs[0].shape else torch.float32)  # z vs KL
        torch.testing.assert_close(out, expected.to(out.dtype), **TOL[out.dtype])
    for grad, expected, t in zip(grads, ref_grads, inputs):
        assert grad.dtype == t.dtype and grad.shape == t.shape
        torch.testing.assert_close(grad, expected.to(grad.dtype), **TOL[grad.dtype])


def noncontiguous_cases():
    """Six [41, 129] transposed views, then column-strided slices of them, each with a strided eps."""
    base = make((129, 41), n=6)
    inputs = [t.t() for t in base]  # [41, 129] transposed views
    strided = [t[:, ::2] for t in inputs]  # and column-strided slices
    cases = []
    for case in (inputs, strided):
        assert not any(t.is_contiguous() for t in case)
        eps = torch.randn(case[0].shape, device=DEVICE).t().contiguous().t()  # same values, strided
        cases.append((case, eps))
    return cases


def gradcheck_fp64(fn, n, fast=False, device=DEVICE):
    """gradcheck of fn(*n fp64 leaves, eps) (the kernels compute in fp64 for fp64 inputs).

    fast (a random-projection check) for the Philox cases: in-kernel randn is slow in the interpreter, and the
    eps-regenerated-in-backward tests already tie their backward to the explicit-eps one."""
    shape = (2, 3) if n == 6 else (3, 2, 2)  # fewer perturbations for the six-input op (~20-70 ms per call)
    inputs = make(shape, torch.float64, n=n, device=device)
    eps = torch.randn(shape, dtype=torch.float64, device=device)
    return torch.autograd.gradcheck(lambda *t: fn(*t, eps), inputs, eps=1e-6, atol=1e-7, fast_mode=fast)


def drawn_eps(z, mu, logvar):
    """The noise a kernel used, recovered exactly enough from z = mu + exp(logvar / 2) * eps."""
    mu, logvar = (t.detach().double() for t in (mu, logvar))
    return (z.detach().double() - mu) / torch.exp(0.5 * logvar)
