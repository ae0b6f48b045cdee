"""Translation and swap grids: pixel sizes, layout (which tile holds what), purity (mode, inputs, RNG)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from iiae.config import load_recipe
from iiae.models import IIAE
from iiae.inference.translate import to_uint8
from iiae.grids import HEADER, PAD, TITLE, grid_size, swap_grid, swap_tiles, tile_grid, tile_size, translation_grid

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml"))


def _images(n, seed=0, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _tile(img, row, col, size, top):
    """Pixels of tile (row, col) of a grid whose tile rows start at `top`, downsampled back to `size`."""
    t = tile_size(size)
    a = np.asarray(img)[top + PAD + row * (t + PAD):, PAD + col * (t + PAD):][:t, :t]
    return a[:: t // size, :: t // size]


def test_translation_grid_size_layout_and_purity(model):
    x, y = _images(5, 1), _images(5, 2)
    x0, y0 = x.clone(), y.clone()
    model.train()
    img = translation_grid(model, x, y, n_rows=3, generator=torch.Generator().manual_seed(0))
    w, h = grid_size(3, 6, 32)
    assert img.size == (w, 2 * h)
    assert model.training  # the caller's mode comes back
    assert torch.equal(x, x0) and torch.equal(y, y0)
    top = TITLE + HEADER
    # X->Y block: column 0 is the input x, column 5 the target y; the Y->X block below swaps them
    assert np.array_equal(_tile(img, 1, 0, 32, top), to_uint8(x[1]).permute(1, 2, 0).numpy())
    assert np.array_equal(_tile(img, 2, 5, 32, top), to_uint8(y[2]).permute(1, 2, 0).numpy())
    assert np.array_equal(_tile(img, 0, 0, 32, h + top), to_uint8(y[0]).permute(1, 2, 0).numpy())
    # the guided column decodes r^x(x) with q(z^y|y): the model's own guided translation
    model.eval()
    guided = model.translate(x[:3], "y", exclusive=model.encode_exclusive(y[:3], "y"))
    assert np.array_equal(_tile(img, 1, 4, 32, top), to_uint8(guided[1]).permute(1, 2, 0).numpy())


def test_translation_grid_is_reproducible_with_a_seed(model):
    x, y = _images(2, 3), _images(2, 4)
    a = translation_grid(model, x, y, 2, torch.Generator().manual_seed(7))
    b = translation_grid(model, x, y, 2, torch.Generator().manual_seed(7))
    assert a.tobytes() == b.tobytes()
    model.eval()
    img = translation_grid(model, x, y, 2, torch.Generator().manual_seed(7))
    assert not model.training and img.tobytes() == a.tobytes()  # eval inside regardless of the caller's mode


@pytest.fixture(scope="module")
def mapped_model():
    """The debug model with Y's exclusive code a 4x4 map (`model.exclusive_maps: [y]`)."""
    torch.manual_seed(0)
    return IIAE.from_recipe(load_recipe(RECIPES / "debug.yaml", [
        "model.decoder_conditioning=film", "model.exclusive_channels=[8,16]", "model.exclusive_maps=[y]"]))


@pytest.mark.parametrize("which,domain", [("model", "x"), ("mapped_model", "y")])
def test_swap_grid_cells_decode_shared_of_row_with_exclusive_of_column(which, domain, request):
    model = request.getfixturevalue(which)
    v = _images(4, 5)
    model.eval()
    tiles = swap_tiles(model, v, domain)
    assert tiles.shape == (5, 5, 3, 32, 32)
    assert torch.isnan(tiles[0, 0]).all()
    assert torch.equal(tiles[0, 1:], v) and torch.equal(tiles[1:, 0], v)
    z_s, z_d = model.encode_shared(v, domain), model.encode_exclusive(v, domain)
    assert z_d.dim() == (4 if which == "mapped_model" else 2)  # a map [B, C, h, w], or a vector
    expect = model.decode(z_s[2:3], z_d[1:2], domain)[0]
    torch.testing.assert_close(tiles[3, 2], expect, rtol=1e-5, atol=1e-5)
    img = swap_grid(model, v, domain)
    assert img.size == grid_size(5, 5, 32)
    corner = _tile(img, 0, 0, 32, TITLE + HEADER)
    assert (corner == 255).all()  # blank corner: white


@pytest.mark.parametrize("size,tile", [(32, 64), (64, 64), (128, 128), (48, 96)])
def test_tile_grid_sizes(size, tile):
    assert tile_size(size) == tile
    img = tile_grid(torch.zeros(2, 3, 1, size, size), headers=["a", "b", "c"])  # greyscale tiles
    assert img.size == (3 * (tile + PAD) + PAD, HEADER + 2 * (tile + PAD) + PAD)
    assert img.mode == "RGB"
    with pytest.raises(ValueError):
        tile_grid(torch.zeros(1, 2, 3, size, size), headers=["only one"])


def test_translation_grid_rejects_features(model):
    with pytest.raises(ValueError, match="images"):
        translation_grid(model, torch.zeros(2, 512), torch.zeros(2, 512))
