"""Files in and out of a trained model: finding the inputs a user names, reading them the way `iiae prepare`
stored the training data (RGB, square, area filter when shrinking), and pixels back to PIL images.

Feature models (arch mlp) read `.npy` vectors instead of images.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch

from .data.prepare.images import IMAGE_SUFFIXES, image_files, resize_square
from .errors import UserError

ImageSource = Union[str, os.PathLike, Any]  # a path, or a PIL image (PIL is imported lazily)
FEATURE_SUFFIXES = (".npy",)


def find_inputs(path: str | os.PathLike, kind: str = "image", option: str = "--input") -> tuple[Path, list[Path]]:
    """(root, files) for a file or a folder (searched at any depth) of images, or `.npy` vectors (kind
    "feature"); names in outputs are relative to root. One-line UserError when there is nothing to read."""
    path = Path(path).expanduser()
    suffixes = IMAGE_SUFFIXES if kind == "image" else FEATURE_SUFFIXES
    if path.is_file():
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{option} {path}: not a {' / '.join(suffixes)} file")
        return path.parent, [path]
    if not path.is_dir():
        raise UserError(f"{option} {path}: no such file or folder")
    files = image_files(path) if kind == "image" else sorted(path.rglob("*.npy"))
    if not files:
        raise UserError(f"{option} {path}: no {' / '.join(suffixes)} files in it")
    return path, files


def _open(source: ImageSource):
    from PIL import Image

    if isinstance(source, Image.Image):
        return source
    try:
        with Image.open(source) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{source}: unreadable image ({err})") from None
    return image


def load_images(sources: Iterable[ImageSource], size: int, changed: Counter | None = None) -> torch.Tensor:
    """Images (PIL or paths) → float [B, 3, size, size] in [−1, 1], made as the training shards were: converted to
    RGB (16-bit scaled, transparency on white) and resized square (area filter when shrinking, bicubic when
    enlarging). `changed` counts what was done ("resized from 256×256", "converted from L")."""
    from .data.transforms import to_tensor

    arrays = []
    for source in sources:
        image = _open(source)
        if changed is not None:
            if image.size != (size, size):
                changed[f"resized from {image.width}×{image.height}"] += 1
            if image.mode != "RGB":
                changed[f"converted from {image.mode}"] += 1
        arrays.append(resize_square(image, size))
    if not arrays:
        raise ValueError("no images given")
    return to_tensor(arrays, None)


def load_features(paths: Sequence[Path], dim: int) -> torch.Tensor:
    """`.npy` vectors of length `dim` → float32 [B, dim]; one-line UserError naming a file of another shape."""
    rows = []
    for path in paths:
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: unreadable .npy file ({err})") from None
        if value.shape != (dim,):
            raise UserError(f"{path}: holds an array of shape {value.shape}; the model reads vectors of shape ({dim},)")
        rows.append(value.astype(np.float32))
    return torch.from_numpy(np.stack(rows))


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """[..., C, H, W] in [-1, 1] → [..., C, H, W] uint8 with three channels (greyscale is repeated)."""
    v = ((v.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return torch.cat([v] * 3, dim=-3) if v.shape[-3] == 1 else v


def to_pil(images: torch.Tensor) -> list:
    """Float images [B, C, H, W] in [−1, 1] (what the decoders return) → a list of PIL RGB images."""
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 3, H, W] (or [B, 1, H, W]) in [-1, 1], got shape {tuple(images.shape)}")
    pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


def notice(changed: Counter, total: int, size: int) -> None:
    """One stderr line saying what `load_images` changed (nothing when nothing was)."""
    import sys

    if changed:
        done = ", ".join(f"{n} {what}" for what, n in sorted(changed.items()))
        print(f"notice: of {total} input image(s), {done}; the model reads {size}×{size} RGB, as its training "
              "data was stored", file=sys.stderr)
