"""Decoded sample values → model inputs, shared by training and evaluation."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

# `data.augment`: how many of the square's 8 symmetries (the dihedral group) a training pair may be given. Both
# images of a pair get the same one, so the pair stays a pair; an overhead view (Maps) is as plausible in any of
# the 8, a photo of an upright object only mirrored.
AUGMENTATIONS = {"none": 1, "flip": 2, "dihedral": 8}


def symmetry(image: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k of an H×W×C image: k // 2 quarter turns, then a left-right mirror when k is odd (k = 1: the
    mirror alone)."""
    image = np.rot90(image, k // 2, axes=(0, 1))
    return image[:, ::-1] if k % 2 else image


def jitter(batch: torch.Tensor, offsets: np.ndarray, extra: int) -> torch.Tensor:
    """`data.jitter`: a [B,3,S,S] batch scaled up to S + `extra` and cropped back to S, image i at `offsets[i]`
    (row, column), each in 0..extra."""
    size = batch.shape[-1]
    big = F.interpolate(batch, size=(size + extra, size + extra), mode="bilinear", align_corners=False)
    return torch.stack([big[i, :, r:r + size, c:c + size] for i, (r, c) in enumerate(offsets)])


def to_tensor(values: list[np.ndarray], size: Optional[int]) -> torch.Tensor:
    """Stack decoded values: images → float [B,3,H,W] in [−1, 1] (resized to `size` if it differs); features →
    float32 [B,F]."""
    batch = np.stack(values)
    if batch.dtype != np.uint8:
        return torch.from_numpy(batch)
    # numpy, not torch: tiny tensor ops pay torch's thread-pool overhead, many times over on a busy CPU
    images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
    np.divide(images, 127.5, out=images)
    np.subtract(images, 1.0, out=images)
    tensor = torch.from_numpy(images)
    if size is not None and tensor.shape[-1] != size:
        # antialias only when shrinking: it is the area-style filter there, and a no-op for upscaling
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=tensor.shape[-1] > size)
    return tensor
