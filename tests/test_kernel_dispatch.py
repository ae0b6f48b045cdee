"""kernels: backend dispatch, the torch backend, input validation, importing, torch.compile, the GPU tier."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from kernel_helpers import (  # noqa: F401  (triton_path is a fixture)
    DEVICE,
    HAS_TRITON,
    REPO,
    TOL,
    make,
    needs_cuda,
    triton_path,
)

from iiae import kernels
from iiae.kernels import reference as ref


# ---- torch.compile ---------------------------------------------------------------------------------------------
@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_torch_compile_sees_opaque_ops(triton_path):
    """fullgraph=True: dispatch, the custom ops' fake impls and autograd all trace (aot_eager: no C++ needed)."""
    inputs = make((3, 37), n=6)

    def step(*t):
        z, kp, kx, ky = kernels.shared_latent_terms(*t, seed=4, offset=2)
        z_x = kernels.reparameterize(t[0], t[1], seed=5)
        return (z * z_x).sum() + (kp + 2 * kx + 3 * ky + kernels.gaussian_kl(*t[:4])).sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    eager_loss = step(*inputs)
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, torch.autograd.grad(eager_loss, inputs)):
        torch.testing.assert_close(g, e)


# ---- dispatch -------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_ops_loaded():
    assert kernels._TRITON_ERROR is None
    assert kernels._INTERPRETED == (os.environ.get("TRITON_INTERPRET") == "1")


def test_backend_dispatch(monkeypatch):
    cpu = torch.zeros(2, 3)
    monkeypatch.delenv("IIAE_KERNELS", raising=False)
    assert kernels.backend(cpu) == "torch"  # auto never picks the interpreter
    monkeypatch.setenv("IIAE_KERNELS", "auto")
    assert kernels.backend(cpu) == "torch"
    monkeypatch.setenv("IIAE_KERNELS", "torch")
    assert kernels.backend(cpu) == "torch"
    monkeypatch.setenv("IIAE_KERNELS", "TRITON")
    if kernels._INTERPRETED:
        assert kernels.backend(cpu) == "triton"
    monkeypatch.setattr(kernels, "_INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.backend(cpu)
    monkeypatch.setattr(kernels, "_TRITON_ERROR", ImportError("no triton"))
    with pytest.raises(RuntimeError, match="not usable"):
        kernels.backend(cpu)
    monkeypatch.setenv("IIAE_KERNELS", "cuda")
    with pytest.raises(ValueError, match="auto|triton|torch"):
        kernels.backend(cpu)


@pytest.mark.gpu
@needs_cuda
def test_backend_auto_on_cuda(monkeypatch):
    monkeypatch.delenv("IIAE_KERNELS", raising=False)
    assert kernels.backend(torch.zeros(1, device="cuda")) == ("torch" if kernels._INTERPRETED else "triton")


def test_torch_backend(monkeypatch):
    monkeypatch.setenv("IIAE_KERNELS", "torch")
    mu, logvar = make((4, 9))
    eps = torch.randn(4, 9, device=DEVICE)
    assert torch.equal(kernels.reparameterize(mu, logvar, eps), ref.reparameterize(mu, logvar, eps))
    torch.manual_seed(3)
    z = kernels.reparameterize(mu, logvar)  # no seed: torch's global RNG
    torch.manual_seed(3)
    assert torch.equal(z, (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)))
    # a seed: torch's generator seeded with it, not Philox (tests/test_kernel_reference.py has the contract)
    z = kernels.reparameterize(mu, logvar, seed=99)
    eps99 = torch.randn(mu.shape, generator=torch.Generator(device=DEVICE).manual_seed(99), device=DEVICE)
    assert torch.equal(z, (mu + torch.exp(0.5 * logvar) * eps99))
    outs = kernels.shared_latent_terms(*make((4, 9), n=6), eps)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref.shared_latent_terms(*make((4, 9), n=6), eps)))


def test_input_validation():
    mu, logvar = make((3, 4))
    with pytest.raises(ValueError, match="does not match"):
        kernels.gaussian_kl(mu, logvar[:, :2])
    with pytest.raises(ValueError, match="both mu_p and logvar_p"):
        kernels.gaussian_kl(mu, logvar, mu)
    with pytest.raises(TypeError, match="floating point"):
        kernels.reparameterize(mu, torch.zeros(3, 4, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="batch dim"):
        kernels.gaussian_kl(mu[0, 0], logvar[0, 0])


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_import_without_triton_or_interpreter():
    """Importing never fails: no Triton at all, or Triton without CUDA and without the interpreter."""
    script = """
import sys, torch
if sys.argv[1] == "no-triton":
    sys.modules["triton"] = None  # makes `import triton` raise ImportError
from iiae import kernels
x = torch.zeros(2, 3)
assert kernels.backend(x) == "torch"
assert kernels.gaussian_kl(x, x).tolist() == [0.0, 0.0]
import os
os.environ["IIAE_KERNELS"] = "triton"
try:
    kernels.backend(x)
except RuntimeError as e:
    print("raised:", e)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "IIAE_KERNELS")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    for mode, expect in [("no-triton", "not usable"), ("no-interpreter", "TRITON_INTERPRET=1")]:
        proc = subprocess.run(
            [sys.executable, "-c", script, mode], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert "raised:" in proc.stdout and expect in proc.stdout, proc.stdout


# ---- GPU tier ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_gpu_compile_inductor(monkeypatch):
    monkeypatch.delenv("IIAE_KERNELS", raising=False)
    inputs = make((8, 8, 8, 128), torch.bfloat16, n=6, device="cuda")

    def step(*t):
        z, kp, kx, ky = kernels.shared_latent_terms(*t, seed=4)
        return (z.float() ** 2).mean() + (kp + kx + ky + kernels.gaussian_kl(*t[:2])).mean()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    eager = step(*inputs)
    torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, torch.autograd.grad(eager, inputs)):
        torch.testing.assert_close(g, e, **TOL[torch.bfloat16])


@pytest.mark.gpu
@needs_cuda
def test_gpu_large_rows_int64_offsets(monkeypatch):
    """Two rows of 2^30 + 3 elements: row 1 starts past 2^31 elements, flat indices past int32."""
    monkeypatch.delenv("IIAE_KERNELS", raising=False)
    n = 2**30 + 3
    mu = torch.zeros(2, n, device="cuda", dtype=torch.bfloat16)
    logvar = torch.zeros_like(mu)
    mu[1, -5:] = 1.0  # KL to N(0, I) = 1/2 per unit mean
    torch.testing.assert_close(kernels.gaussian_kl(mu, logvar), torch.tensor([0.0, 2.5], device="cuda"))
    z = kernels.reparameterize(mu, logvar, seed=1)
    # The tail's noise is Philox(1, 2n - 5 + j): the same numbers as a 5-element call at that offset.
    tail = kernels.reparameterize(mu[1, -5:][None], logvar[1, -5:][None], seed=1, offset=2 * n - 5)
    assert torch.equal(z[1, -5:][None], tail)
