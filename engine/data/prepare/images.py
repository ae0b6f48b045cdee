"""Image helpers shared by the converters of image datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def resize_square(image, size: int) -> np.ndarray:
    """A PIL image as uint8 size x size x 3: area (box) filter when shrinking, bicubic when enlarging."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (size, size):
        shrink = image.size[0] >= size and image.size[1] >= size
        image = image.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    return np.asarray(image)


def source_order(paths: list[Path]) -> list[Path]:
    """Numeric stems in numeric order (1, 2, ..., 10), otherwise by name."""
    if all(p.stem.isdigit() for p in paths):
        return sorted(paths, key=lambda p: int(p.stem))
    return sorted(paths, key=lambda p: p.name)
