"""Which device a command runs on: the one rule every command and the trainer share."""
from __future__ import annotations

from typing import Optional

import torch

from .errors import UserError


def resolve_device(name: Optional[str] = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps", ...), else CUDA when available, else Apple's MPS when available,
    else the CPU; a device the machine lacks is refused in one line."""
    mps = torch.backends.mps.is_available()
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; expected cpu")
    if device.type == "mps" and not mps:
        raise UserError(f"--device {name}: no Apple MPS device is available here; expected cpu")
    return device
