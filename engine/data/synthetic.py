"""Small raw data in the real formats, for trying the engine, tests, benchmarks and examples without any download:

- fake MNIST in the IDX format: a few dozen digit-like images rendered with Pillow's font, shifted, at the real
  counts (60,000 / 10,000) so that `iiae prepare mnist-cdcb --mnist DIR` makes every split from them;
- shape / silhouette pairs in either `iiae prepare paired` layout (`write_paired`, `scripts/shapes.py`).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def digit_templates(per_digit: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """per_digit × 10 digit-like 28×28 uint8 images (white on black) and their labels."""
    from PIL import Image, ImageDraw, ImageFont

    images, labels = [], []
    for variant in range(per_digit):
        font = ImageFont.load_default(size=18 + 2 * variant)
        for digit in range(10):
            image = Image.new("L", (28, 28))
            ImageDraw.Draw(image).text((14, 14), str(digit), fill=255, font=font, anchor="mm",
                                       stroke_width=variant % 2, stroke_fill=255)
            images.append(np.asarray(image))
            labels.append(digit)
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def fake_mnist(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays named like the IDX files: the templates shifted by up to ±2 px, in a seeded order."""
    templates, digits = digit_templates()
    shifted, shifted_labels = [], []
    for dy in (-2, 0, 2):
        for dx in (-2, 0, 2):
            shifted.append(np.roll(templates, (dy, dx), axis=(1, 2)))
            shifted_labels.append(digits)
    variants, variant_labels = np.concatenate(shifted), np.concatenate(shifted_labels)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pick = rng.integers(0, len(variants), size=n)
        out[f"{prefix}-images-idx3-ubyte"] = variants[pick]
        out[f"{prefix}-labels-idx1-ubyte"] = variant_labels[pick]
    return out


def write_mnist_idx(folder: Path, *, n_train: int = 60_000, n_test: int = 10_000, gz: bool = False,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """The four IDX files (gzipped if gz); returns the arrays by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fake_mnist(n_train, n_test, seed)
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return arrays


def paired_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One pair of a small learnable dataset: X a disc or square of one colour on a background of another, Y its
    white silhouette on black (what is shared: shape, place and size; what only X holds: the two colours)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    r = rng.uniform(0.15, 0.3) * size
    mask = np.hypot(yy - cy, xx - cx) < r if rng.random() < 0.5 else np.maximum(abs(yy - cy), abs(xx - cx)) < r
    fg, bg = rng.integers(0, 256, (2, 3))
    x = np.where(mask[..., None], fg, bg).astype(np.uint8)
    y = np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)
    return x, y


def write_paired(folder: Path, n: int, *, size: int = 32, layout: str = "side", seed: int = 0,
                 splits: Optional[dict[str, int]] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`iiae prepare paired` input of `paired_shape` pairs: layout "side" → folder/<i>.png with X left and Y right;
    "folders" → folder/A/<i>.png and folder/B/<i>.png. With splits ({"train": 8, "test": 2}) the files go in
    folder/<split>/ (folders: folder/<split>/A, ...). Returns the pairs in file order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pairs = []
    for split, count in (splits or {"": n}).items():
        for i in range(count):
            x, y = paired_shape(rng, size)
            pairs.append((x, y))
            base = folder / split
            if layout == "side":
                base.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate([x, y], axis=1)).save(base / f"{i:04d}.png")
            else:
                for sub, image in (("A", x), ("B", y)):
                    (base / sub).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(base / sub / f"{i:04d}.png")
    return pairs
