"""What a resumed run needs beyond weights and optimizer state."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import torch

from iiae.training.selection import Selector


@dataclass
class TrainState:
    """Everything beyond model/optimizer/RNG that a resumed run needs (`train_state.json` in each checkpoint)."""

    seed: int
    selector: Selector
    step: int = 0  # optimizer steps taken
    data_epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches consumed in data_epoch
    train_seconds: float = 0.0  # wall time inside training steps (no eval, sampling or checkpoints)
    rng: torch.Generator = field(default=None)  # per-step seeds for the reparameterisation noise

    def __post_init__(self):
        if self.rng is None:
            # the same on every rank: noise is a function of (step seed, global row), see `train_step`
            self.rng = torch.Generator().manual_seed(self.seed)

    def next_seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng))

    def state_dict(self) -> dict:
        """JSON-native: checkpoints store it as `train_state.json`, never as pickle."""
        keys = ("step", "data_epoch", "batch_in_epoch", "train_seconds")
        rng = base64.b64encode(self.rng.get_state().numpy().tobytes()).decode("ascii")
        return {**{k: getattr(self, k) for k in keys}, "rng": rng, "selector": self.selector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("step", "data_epoch", "batch_in_epoch", "train_seconds"):
            setattr(self, key, state[key])
        rng = np.frombuffer(base64.b64decode(state["rng"]), dtype=np.uint8)
        self.rng.set_state(torch.from_numpy(rng.copy()))
        self.selector.load_state_dict(state["selector"])
