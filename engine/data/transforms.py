"""Decoded sample values → model inputs, shared by training and evaluation."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


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
