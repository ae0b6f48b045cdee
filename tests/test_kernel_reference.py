"""kernels.reference (the torch backend) and the RNG contract of kernels/__init__: with a seed, the noise of flat
element i is a function of (seed, offset + i), so rows [r, r + B) drawn at offset r * row_size are rows r .. r + B
of the whole batch's draw, on both backends."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import DEVICE, TRITON_RUNS, gpu_kernel_device, make  # noqa: F401  (a fixture)

from iiae import kernels
from iiae.kernels import reference as ref

# Row sizes that are and are not multiples of 16 (torch's CPU generator treats a last partial 16-block apart).
ROW_SHAPES = [(3,), (4,), (7, 5), (4, 4, 4), (16,)]
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def old_model_eps(mu, seed, row_offset):
    """What IIAE._sample drew for the torch backend before the rule moved into kernels/reference.py."""
    gen = torch.Generator(device=mu.device).manual_seed(seed)
    shape = (row_offset + mu.shape[0], *mu.shape[1:])
    return torch.randn(shape, generator=gen, device=mu.device, dtype=torch.float32)[row_offset:].to(mu.dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("row_shape", ROW_SHAPES, ids=str)
def test_seeded_draw_is_the_models_former_draw(row_shape, dtype):
    """Bitwise: eps of a seeded call = rows row_offset.. of a seeded fp32 draw of row_offset + B rows, as the model
    drew it itself before, so the torch-backend training numbers did not change."""
    for n_rows, row_offset, seed in [(8, 16, 12345), (5, 0, 7), (1, 3, 2**31 - 1)]:
        mu, logvar = (t.detach() for t in make((n_rows, *row_shape), dtype))
        eps = old_model_eps(mu, seed, row_offset)
        offset = row_offset * mu[0].numel()
        z = ref.reparameterize(mu, logvar, seed=seed, offset=offset)
        assert z.dtype == dtype and torch.equal(z, ref.reparameterize(mu, logvar, eps))
        inputs = [t.detach() for t in make((n_rows, *row_shape), dtype, n=6)]
        got = ref.shared_latent_terms(*inputs, seed=seed, offset=offset)
        want = ref.shared_latent_terms(*inputs, old_model_eps(inputs[0], seed, row_offset))
        assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("mode", ["torch", "triton"])
@pytest.mark.parametrize("row_shape", ROW_SHAPES, ids=str)
def test_row_slice_property(monkeypatch, mode, row_shape):
    """Rows [r, r + B) drawn at offset r * row_size = rows r .. r + B of one draw of rows [0, r + B) at offset 0;
    reparameterize and shared_latent_terms draw the same noise."""
    if mode == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.setenv("IIAE_KERNELS", mode)
    check_row_slices(mode, row_shape, DEVICE)


@pytest.mark.parametrize("row_shape", ROW_SHAPES, ids=str)
def test_row_slice_property_philox_gpu(gpu_kernel_device, row_shape):
    """The Philox case above on the twin's device (pytest -m gpu: compiled kernels on CUDA)."""
    check_row_slices("triton", row_shape, gpu_kernel_device)


def check_row_slices(mode, row_shape, device):
    row_size = torch.Size(row_shape).numel()
    for r, n_rows, seed in [(16, 8, 12345), (0, 5, 3), (3, 1, 9), (1, 6, 0)]:
        full = [t.detach() for t in make((r + n_rows, *row_shape), n=6, seed=seed, device=device)]
        rows = [t[r:] for t in full]
        z_full = kernels.reparameterize(*full[:2], seed=seed)
        z_rows = kernels.reparameterize(*rows[:2], seed=seed, offset=r * row_size)
        assert torch.equal(z_rows, z_full[r:])
        s_full = kernels.shared_latent_terms(*full, seed=seed)
        s_rows = kernels.shared_latent_terms(*rows, seed=seed, offset=r * row_size)
        assert torch.equal(s_full[0], z_full) and torch.equal(s_rows[0], z_rows)
        if mode == "triton":  # Philox is a pure function of (seed, offset + i): any longer draw agrees too
            longer = [torch.cat([t, torch.zeros(3, *row_shape, device=device)]) for t in full[:2]]
            assert torch.equal(kernels.reparameterize(*longer, seed=seed)[r : r + n_rows], z_rows)


def test_seeded_draw_leaves_global_rng_alone():
    """A seeded draw uses its own generator; eps given wins over a seed; no seed follows torch.manual_seed."""
    mu, logvar = (t.detach() for t in make((4, 9)))
    state = torch.random.get_rng_state()
    z = ref.reparameterize(mu, logvar, seed=5, offset=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(z, ref.reparameterize(mu, logvar, seed=5, offset=2))
    assert not torch.equal(z, ref.reparameterize(mu, logvar, seed=5, offset=3))
    assert not torch.equal(z, ref.reparameterize(mu, logvar, seed=6, offset=2))
    eps = torch.randn(4, 9, device=DEVICE)
    assert torch.equal(ref.reparameterize(mu, logvar, eps, seed=5), ref.reparameterize(mu, logvar, eps))
    torch.manual_seed(1)
    a = ref.reparameterize(mu, logvar)
    torch.manual_seed(1)
    assert torch.equal(a, mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))


def test_seeded_draw_edge_shapes():
    for shape in [(0, 5), (3, 0), (7,)]:
        mu, logvar = (t.detach() for t in make(shape))
        z = ref.reparameterize(mu, logvar, seed=1, offset=4)
        assert z.shape == shape and z.dtype == mu.dtype
        z_s, kl, _, _ = ref.shared_latent_terms(*(t.detach() for t in make(shape, n=6)), seed=1, offset=4)
        assert z_s.shape == shape and kl.shape == (shape[0],)
