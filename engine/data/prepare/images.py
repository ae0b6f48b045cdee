"""Image helpers shared by the converters of image datasets (and by `IIAE.preprocess`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def to_rgb(image):
    """A PIL image of any mode as RGB: 16-bit (and 32-bit integer) grey scaled to 8 bits rather than clipped at
    255 (Pillow's convert clips); transparency composited on white rather than dropped (the colour under a
    transparent pixel is arbitrary)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 65535) / 257
        return Image.fromarray(np.rint(grey).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def resize_square(image, size: int) -> np.ndarray:
    """A PIL image as uint8 size x size x 3: area (box) filter when shrinking, bicubic when enlarging."""
    from PIL import Image

    image = to_rgb(image)
    if image.size != (size, size):
        shrink = image.size[0] >= size and image.size[1] >= size
        image = image.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    return np.asarray(image)


def source_order(paths: list[Path]) -> list[Path]:
    """Numeric stems in numeric order (1, 2, ..., 10), otherwise by name."""
    if all(p.stem.isdigit() for p in paths):
        return sorted(paths, key=lambda p: int(p.stem))
    return sorted(paths, key=lambda p: p.name)


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` (any depth, hidden names skipped), sorted by relative path."""
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                  key=lambda p: p.relative_to(folder).as_posix())
