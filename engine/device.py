"""Which device a command runs on: the one rule every command and the trainer share."""
from __future__ import annotations

from typing import Optional

import torch

from iiae.errors import UserError, shown


HELP = "default: cuda when available, else Apple's mps when available, else cpu"  # what resolve_device(None) picks


def resolve_device(name: Optional[str] = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps"), else CUDA when available, else Apple's MPS when available, else the
    CPU. A name torch cannot parse, a device type the engine does not run on (meta, xpu, ...) or a device the
    machine lacks is refused in one line."""
    mps = torch.backends.mps.is_available()
    if name:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise UserError(f"--device {shown(repr(name), 40)}: expected cpu, cuda, cuda:N or mps")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; expected cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); expected "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not mps:
        raise UserError(f"--device {name}: no Apple MPS device is available here; expected cpu")
    return device
