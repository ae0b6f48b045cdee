"""Images in and out of a model, made as the training data was: files or PIL images → float tensors in [−1, 1]
(RGB, square, area filter when shrinking, as `iiae prepare` stored them), and decoder outputs → uint8 or PIL."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterable, Union

import numpy as np
import torch

from iiae.data.prepare.images import resize_square
from iiae.errors import UserError

ImageSource = Union[str, os.PathLike, Any]  # a path, or a PIL image (PIL is imported lazily)


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
    from iiae.data.transforms import to_tensor

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
