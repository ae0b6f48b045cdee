"""`iiae prepare mnist-cdcb --compare DIR`: how close each rendering of this generator comes to the published
MNIST-CDCB pairs (CdDN's DATA/MNISTCDCB: 512×256 PNGs, X = CB left, Y = CD right, file k = MNIST test image k−1).

Each original's colours are read off it (pair_colours), the same MNIST digit is rendered with them by every
--render, and both are measured at 256 px and after area-resizing to --size (what a loader sees). The masks: X's
and Y's pixels projected onto their ideal blend lines (bg → white, black → fg). A Markdown table, one row per
quantity, one column per (source, size): `published` = the files in DIR, the others = our --render options.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iiae.errors import DataError, shown
from iiae.data.prepare.mnist_cdcb import (DIGIT_LEVEL, ORIGINAL_SIZE, RENDERS, area_resize, colour_pairs,
                                         legacy_bicubic_weights, load_mnist)

EDGE = (0.1, 0.9)  # a mask value strictly between these is an edge pixel (the 10–90 % band)
TOLERANCE = 3  # levels: "darker than the background", "brighter than the digit colour" beyond rounding
BLOCK = 8  # JPEG's block side
CHUNK = 25  # pairs rendered and measured at a time


# ------------------------------------------------------------------------------------------------ reading

def read_pairs(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MNIST test indices [n], X [n,256,256,3], Y [n,256,256,3]) of the numbered pair files in `folder`."""
    from PIL import Image

    if not folder.is_dir():
        raise DataError(f"--compare {folder}: not a folder")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise DataError(f"--compare {folder}: no .png pair files (expected 00001.png = MNIST test image 0, ...)")
    odd = [f.name for f in files if not f.stem.isdigit() or int(f.stem) < 1]
    if odd:
        raise DataError(f"--compare {folder}: {shown(odd[0])} is not named by its number (00001.png = MNIST test "
                        "image 0)")
    files.sort(key=lambda f: int(f.stem))
    pairs = []
    for f in files:
        try:
            with Image.open(f) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as err:
            raise DataError(f"{f}: unreadable image ({err})") from None
        if pixels.shape != (ORIGINAL_SIZE, 2 * ORIGINAL_SIZE, 3):
            raise DataError(f"{f}: {pixels.shape[1]}×{pixels.shape[0]}, expected a {2 * ORIGINAL_SIZE}×"
                            f"{ORIGINAL_SIZE} pair (X left, Y right)")
        pairs.append(pixels)
    stack = np.stack(pairs)
    return (np.array([int(f.stem) - 1 for f in files]), stack[:, :, :ORIGINAL_SIZE].copy(),
            stack[:, :, ORIGINAL_SIZE:].copy())


def _commonest(pixels: np.ndarray) -> np.ndarray:
    """The most frequent exact colour of [k, 3] uint8 pixels (lowest packed value on a tie)."""
    packed = pixels.astype(np.int64) @ np.array([65536, 256, 1])
    values, counts = np.unique(packed, return_counts=True)
    v = int(values[np.argmax(counts)])
    return np.array([v >> 16, (v >> 8) & 255, v & 255], dtype=np.uint8)


def pair_colours(x: np.ndarray, y: np.ndarray, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bg, fg) [n, 3] uint8 read off pairs of these MNIST `digits`: bg = X's commonest colour (the flat
    background covers most of it); fg by least squares under the published generator's model, Y_c ≈ fg_c·U + G
    (U, G: the legacy bicubic of the digit mask and of the grey sub-threshold pixels), on Y's unclipped pixels
    where U > 0.5. Y's commonest colour will not do: the bicubic overshoots inside the strokes, and flat
    stretches of the foreground colour are rare at 256 px."""
    bg = np.stack([_commonest(xi.reshape(-1, 3)) for xi in x])
    weights, scale = legacy_bicubic_weights(28, ORIGINAL_SIZE)
    a = weights / scale
    fg = np.zeros((len(y), 3), dtype=np.uint8)
    for i, (yi, digit) in enumerate(zip(y.astype(np.float64), digits)):
        inside = digit > DIGIT_LEVEL
        u = a @ inside.astype(np.float64) @ a.T
        g = a @ np.where(inside, 0.0, digit.astype(np.float64)) @ a.T
        for c in range(3):
            level = (yi[..., c] + 0.5) * 510 / 511  # undoes TF's ×255.5/255 truncation on average
            use = (u > 0.5) & (yi[..., c] > 0) & (yi[..., c] < 255)
            if use.any():
                value = (u[use] @ (level[use] - g[use])) / (u[use] @ u[use])
            else:  # saturated everywhere on the digit: 0 or 255
                value = 255.0 if (yi[..., c][u > 0.5] >= 255).mean() > 0.5 else 0.0
            fg[i, c] = np.clip(np.rint(value), 0, 255)
    return bg, fg


# ------------------------------------------------------------------------------------------------ statistics

def blend_masks(x: np.ndarray, y: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unclipped masks [s, s] of one pair: X projected onto bg → white, Y onto black → fg (least squares over the
    channels); 0 = background, 1 = digit."""
    b, f = bg.astype(np.float64), fg.astype(np.float64)
    span = 255.0 - b
    mx = ((x - b) @ span) / max(span @ span, 1.0)
    my = (y @ f) / max(f @ f, 1.0)
    return mx, my


def centre_of_mass(m: np.ndarray) -> float:
    """The mask's centre of mass as a fraction of the side, pixel centres at (i + 0.5)/s, rows and columns
    averaged: 0.5 is the middle."""
    side = m.shape[0]
    c = (np.arange(side) + 0.5) / side
    total = max(m.sum(), 1e-12)
    return float((m.sum(1) @ c + m.sum(0) @ c) / (2 * total))


def perimeter(b: np.ndarray) -> int:
    """Pixel edges between a binary mask and the rest inside the image (the image border is no digit edge)."""
    p = b.astype(np.int8)
    return int(np.abs(np.diff(p, axis=0)).sum() + np.abs(np.diff(p, axis=1)).sum())


def stroke_width(b: np.ndarray) -> float:
    """2·area/perimeter of a binary mask: a stroke's width when it is long (a square of side a gives a/2)."""
    return 2.0 * b.sum() / max(perimeter(b), 1)


def edge_width(m: np.ndarray) -> float:
    """The 10–90 % edge band's width in px: its pixels per pixel edge of the mask > 0.5's boundary."""
    band = ((m > EDGE[0]) & (m < EDGE[1])).sum()
    return band / max(perimeter(m > 0.5), 1)


def blockiness(image: np.ndarray) -> float:
    """Mean luminance step across 8-px block boundaries over the mean step elsewhere (≈ 1: no JPEG blocks)."""
    lum = image.astype(np.float64).mean(-1)
    ratios = []
    for steps in (np.abs(np.diff(lum, axis=1)), np.abs(np.diff(lum, axis=0)).T):
        at = (np.arange(steps.shape[1]) + 1) % BLOCK == 0
        ratios.append(steps[:, at].mean() / max(steps[:, ~at].mean(), 1e-12))
    return float(np.mean(ratios))


class Stats:
    """Running (sum, count) per quantity over the pairs."""

    def __init__(self):
        self.sums: dict[str, list[float]] = {}

    def add(self, name: str, value: float, count: float = 1.0) -> None:
        s = self.sums.setdefault(name, [0.0, 0.0])
        s[0] += value
        s[1] += count

    def get(self, name: str) -> float:
        total, count = self.sums.get(name, (0.0, 0.0))
        return total / count if count else float("nan")


def measure_pair(stats: Stats, x: np.ndarray, y: np.ndarray, bg: np.ndarray, fg: np.ndarray,
                 original: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Adds one pair's quantities to `stats` (`original`: the original pair at this size, for the differences)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    b, f = bg.astype(np.float64), fg.astype(np.float64)
    raw = blend_masks(x, y, bg, fg)
    masks = [np.clip(m, 0, 1) for m in raw]
    for d, image, m, ideal in (("x", x, masks[0], b + masks[0][..., None] * (255 - b)),
                               ("y", y, masks[1], masks[1][..., None] * f)):
        binary = m > 0.5
        stats.add(f"com_{d}", centre_of_mass(m))
        stats.add(f"fraction_{d}", m.mean())
        stats.add(f"stroke_{d}", stroke_width(binary))
        stats.add(f"edge_{d}", edge_width(m))
        edge = (m > EDGE[0]) & (m < EDGE[1])
        stats.add(f"blend_{d}", float(np.linalg.norm(image - ideal, axis=-1)[edge].sum()), float(edge.sum()))
        stats.add(f"block_{d}", blockiness(image))
    bx, by = masks[0] > 0.5, masks[1] > 0.5
    stats.add("iou", (bx & by).sum() / max((bx | by).sum(), 1))
    stats.add("mask_diff", np.abs(masks[0] - masks[1]).mean())
    stats.add("white_x", float((x == 255).all(-1).mean()))
    stats.add("bright_y", float((y > f + TOLERANCE).any(-1).mean()))
    stats.add("halo_x", float(((x - b).mean(-1) < -TOLERANCE).mean()))
    if original is not None:
        for d, image, ref in (("x", x, original[0]), ("y", y, original[1])):
            stats.add(f"mae_{d}", float(np.abs(image - ref).mean()))
            stats.add(f"equal_{d}", float((image == ref).all(-1).mean()))


ROWS = (  # (label, keys, format): one value, or X / Y
    ("digit centre of mass X / Y (fraction of side)", ("com_x", "com_y"), "{:.3f}"),
    ("digit fraction X / Y", ("fraction_x", "fraction_y"), "{:.3f}"),
    ("stroke width X / Y (2·area/perimeter, px)", ("stroke_x", "stroke_y"), "{:.1f}"),
    ("X-mask vs Y-mask: IoU / mean abs diff", ("iou", "mask_diff"), "{:.3f}"),
    ("edge width 10–90 % X / Y (px)", ("edge_x", "edge_y"), "{:.1f}"),
    ("X pixels pure white / Y brighter than digit colour (%)", ("white_x", "bright_y"), "pct"),
    ("edge pixels' distance from the ideal blend X / Y (levels)", ("blend_x", "blend_y"), "{:.1f}"),
    ("X pixels darker than background (%)", ("halo_x",), "pct"),
    ("8×8 blockiness X / Y (1 = no JPEG blocks)", ("block_x", "block_y"), "{:.3f}"),
    ("mean abs diff to the published X / Y (levels)", ("mae_x", "mae_y"), "{:.3f}"),
    ("pixels equal to the published X / Y (%)", ("equal_x", "equal_y"), "pct3"),
)


def _cell(stats: Stats, keys: tuple[str, ...], fmt: str) -> str:
    values = [stats.get(k) for k in keys]
    if any(np.isnan(v) for v in values):
        return "—"
    if fmt.startswith("pct"):
        return " / ".join(f"{100 * v:.{3 if fmt == 'pct3' else 2}f}" for v in values)
    return " / ".join(fmt.format(v) for v in values)


def table(columns: dict[str, Stats]) -> str:
    """A Markdown table: one row per quantity (ROWS), one column per measured set."""
    lines = ["| quantity | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, keys, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(s, keys, fmt) for s in columns.values()) + " |")
    return "\n".join(lines)


def compare(folder: Path, size: int = 32, mnist: Path | None = None) -> str:
    """The Markdown table of the originals in `folder` against every rendering, at 256 px and at `size`, with a
    one-line header saying what was read."""
    indices, x, y = read_pairs(folder)
    digits = load_mnist(mnist)[0]["test_images"]
    if indices.max() >= len(digits):
        raise DataError(f"--compare {folder}: file {indices.max() + 1:05d}.png names MNIST test image "
                        f"{indices.max()}, there are {len(digits)}")
    sizes = (ORIGINAL_SIZE,) if size == ORIGINAL_SIZE else (ORIGINAL_SIZE, size)
    columns = {}
    for s in sizes:
        columns[f"published {s}"] = Stats()
        columns.update({f"{r} {s}": Stats() for r in RENDERS})
    bg, fg = pair_colours(x, y, digits[indices])
    for start in range(0, len(indices), CHUNK):
        part = slice(start, start + CHUNK)
        for s in sizes:
            ox, oy = (x[part], y[part]) if s == ORIGINAL_SIZE else (area_resize(x[part], s), area_resize(y[part], s))
            for i in range(len(ox)):
                measure_pair(columns[f"published {s}"], ox[i], oy[i], bg[part][i], fg[part][i])
            for r in RENDERS:
                rx, ry = colour_pairs(digits[indices[part]], bg[part], fg[part], s, r)
                for i in range(len(rx)):
                    measure_pair(columns[f"{r} {s}"], rx[i], ry[i], bg[part][i], fg[part][i],
                                 (ox[i].astype(np.float64), oy[i].astype(np.float64)))
    head = (f"{len(indices)} published pairs from {folder} (MNIST test images {indices.min()}–{indices.max()}) "
            f"against our --render {', '.join(RENDERS)}, drawn with each pair's colours; {size} px: the published "
            f"ones area-resized, ours made at --size {size}")
    return head + "\n\n" + table(columns)


def standalone(args) -> int | None:
    """`iiae prepare mnist-cdcb --compare DIR`: print the measurements instead of converting (no --out needed)."""
    if args.compare is None:
        return None
    print(compare(args.compare, size=args.size or 32, mnist=args.mnist))
    return 0
