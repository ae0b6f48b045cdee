"""Colour fidelity on MNIST-CDCB pairs made by the real converter: the colour reader gives back the stored colours,
and the metrics score constructed models as they should: the identity translator (guided error = the reader's
floor) whose prior draws follow the generative process (spread ~ the real one), and a decoder that ignores its
exclusive code (spread 0)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iiae.evaluation.colour_fidelity import (REAL_SPREAD, background_colour, colour_metrics, digit_masks, foreground_colour,
                                  read_colour)
from iiae.data import iter_eval_batches, load_dataset_info
from iiae.errors import UserError
from iiae.data.image_io import to_uint8


def _from_255(v: torch.Tensor) -> torch.Tensor:
    return v / 127.5 - 1


class _Painter(torch.nn.Module):
    """A model double that knows how MNIST-CDCB is drawn. Its exclusive code of an image is the image's colour
    (X: the corner pixel, the background; Y: the brightest channel values of the digit), mapped to N(0, 1) by the
    inverse normal CDF; decoding repaints the source's digit mask in the colour the code maps back to. With
    `ignore_code` every decoded colour is mid-grey."""

    def __init__(self, size: int, ignore_code: bool = False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(image_size=size, z_exclusive=3)
        self.ignore_code = ignore_code
        self.normal = torch.distributions.Normal(0.0, 1.0)

    def _code(self, colour):  # 0..255 → N(0, 1) quantiles
        return self.normal.icdf(((colour + 0.5) / 256).clamp(1e-4, 1 - 1e-4))

    def _colour(self, code):
        return torch.full_like(code, 128.0) if self.ignore_code else self.normal.cdf(code) * 256 - 0.5

    def encode_exclusive(self, v, domain):
        img = (v + 1) * 127.5
        colour = img[:, :, 0, 0] if domain == "x" else img.flatten(2).amax(2)
        return self._code(colour)

    def _mask(self, v, domain):
        img = (v + 1) * 127.5
        if domain == "x":  # white digit on the background colour: per channel, the brightening above it
            bg = img[:, :, :1, :1]
            return ((img - bg) / (255 - bg).clamp_min(1)).amax(1).clamp(0, 1)
        return (img / img.flatten(2).amax(2)[..., None, None].clamp_min(1)).amax(1)

    def translate(self, v, to_domain, exclusive=None, n=1, generator=None):
        m = self._mask(v, "y" if to_domain == "x" else "x")[:, None]
        codes = [exclusive] if exclusive is not None else torch.randn(n, v.shape[0], 3, generator=generator)
        out = []
        for code in codes:
            c = self._colour(code)[..., None, None]
            out.append(_from_255((1 - m) * c + 255 * m if to_domain == "x" else m * c))
        return out[0] if exclusive is not None else torch.stack(out)


class _Partner(_Painter):
    """The identity translator: a guided translation is the true partner itself (looked up by the source's
    bytes); prior draws are the painter's."""

    def __init__(self, size: int, info):
        super().__init__(size)
        self.partner = {}
        for b in iter_eval_batches(info, "test", 64):
            for x, y in zip(b["x"], b["y"]):
                self.partner[("x", x.numpy().tobytes())], self.partner[("y", y.numpy().tobytes())] = y, x

    def translate(self, v, to_domain, exclusive=None, n=1, generator=None):
        if exclusive is None:
            return super().translate(v, to_domain, n=n, generator=generator)
        source = "y" if to_domain == "x" else "x"
        return torch.stack([self.partner[(source, row.numpy().tobytes())] for row in v])


def test_the_colour_reader_gives_back_the_stored_colours(debug_data):
    info = load_dataset_info(debug_data)
    b = next(iter_eval_batches(info, "test", 64, meta=True))
    bg = torch.tensor([m["bg"] for m in b["meta"]], dtype=torch.float32)
    fg = torch.tensor([m["fg"] for m in b["meta"]], dtype=torch.float32)
    x, y = to_uint8(b["x"]).float(), to_uint8(b["y"]).float()
    masks = digit_masks(x, y, bg, fg)
    for m in masks.values():
        assert m.shape == (64, 32, 32) and 0.03 < m.mean() < 0.5 and m.min() == 0 and m.max() == 1
    # a linear blend (the debug data's --render area): one mask, the same from either side
    assert (masks["x"] - masks["y"]).abs().mean() < 0.02
    assert (background_colour(x, masks["x"]) - bg).abs().max() < 1.0  # 8-bit rounding only
    assert (foreground_colour(y, masks["y"]) - fg).abs().max() < 1.0
    assert torch.equal(read_colour(y, masks["y"], "y"), foreground_colour(y, masks["y"]))
    # a grey guess is far off: the reader measures colour, not brightness
    m = masks["y"]
    assert (foreground_colour(torch.full_like(y, 128.0) * (m[:, None] > 0.5), m) - fg).abs().mean() > 30


def test_a_faithful_model_scores_zero_error_and_the_real_spread(debug_data):
    info = load_dataset_info(debug_data)
    out = colour_metrics(_Partner(32, info), info, "test", batch_size=24, progress=False)
    assert out["colour_read_error_x"] < 0.5 and out["colour_read_error_y"] < 0.5
    # guided translation = the true partner: the error is the reader's own, on the partner
    assert out["guided_colour_error_x2y"] == out["colour_read_error_y"]
    assert out["guided_colour_error_y2x"] == out["colour_read_error_x"]
    # 8 uniform draws: E[population std] ≈ 0.92 × 73.9
    for direction in ("x2y", "y2x"):
        assert 0.8 < out[f"prior_colour_spread_ratio_{direction}"] < 1.05
        assert out[f"prior_colour_spread_{direction}"] == pytest.approx(
            out[f"prior_colour_spread_ratio_{direction}"] * REAL_SPREAD)


def test_a_decoder_that_ignores_its_exclusive_code_has_no_spread(debug_data):
    info = load_dataset_info(debug_data)
    out = colour_metrics(_Painter(32, ignore_code=True), info, "test", batch_size=24, limit=40, progress=False)
    assert out["prior_colour_spread_x2y"] < 1.0 and out["prior_colour_spread_y2x"] < 1.0
    # mid-grey for colours uniform on 0..255: the expected error is 64
    assert 50 < out["guided_colour_error_x2y"] < 80 and 50 < out["guided_colour_error_y2x"] < 80


def test_colour_fidelity_needs_mnist_cdcb_colours():
    with pytest.raises(UserError, match="needs MNIST-CDCB pairs"):
        colour_metrics(_Painter(32), SimpleNamespace(name="maps", kind="image", layout="paired"), "test")


def test_the_reader_stays_within_a_few_levels_on_the_original_rendering():
    """`--render original` gives X a thinner digit than Y, grey edges and bicubic overshoot (not a linear blend):
    per-domain masks and confident pixels still read the stored colours within a few levels."""
    from iiae.data.prepare.mnist_cdcb import colour_pairs
    from iiae.data.synthetic import fake_mnist

    digits = fake_mnist(200, 10, seed=3)["train-images-idx3-ubyte"]
    rng = np.random.default_rng(0)
    bg, fg = (rng.integers(0, 256, (200, 3), dtype=np.uint8) for _ in range(2))
    cb, cd = colour_pairs(digits, bg, fg, 32, "original")
    x, y = (torch.from_numpy(v).permute(0, 3, 1, 2).float() for v in (cb, cd))
    bg_t, fg_t = torch.from_numpy(bg).float(), torch.from_numpy(fg).float()
    masks = digit_masks(x, y, bg_t, fg_t)
    assert (masks["y"] > 0.5).float().mean() > (masks["x"] > 0.5).float().mean()  # Y's digit is the thicker
    assert (background_colour(x, masks["x"]) - bg_t).abs().mean() < 2.0
    assert (foreground_colour(y, masks["y"]) - fg_t).abs().mean() < 6.0
