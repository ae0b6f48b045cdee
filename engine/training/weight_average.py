"""`optim.ema_decay`: an exponential moving average of the weights (Polyak averaging), as torch's
`swa_utils.AveragedModel` keeps it. When set, validation, model selection, sample grids and the saved model read
the average instead of the live weights; checkpoints hold it beside the optimizer state, as safetensors."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from iiae.errors import UserError

FILE = "averaged_weights.safetensors"  # in a checkpoint folder


class WeightAverage:
    """Trainer component: after every optimizer step, average ← decay·average + (1 − decay)·weights (the first
    step copies the weights). BatchNorm statistics are averaged alike (`use_buffers`), so the average evaluates
    with the statistics of the weights it averages over."""

    def __init__(self, model: torch.nn.Module, decay: float):
        device = next(model.parameters()).device  # n_averaged beside the weights, not on the CPU
        self.averaged = AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                      use_buffers=True)
        self.averaged.module.eval()  # never trained: dropout off, BatchNorm statistics only from the average

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def due(self, step: int) -> bool:
        return False  # acts every step, on the device, without a host sync

    def after_step(self, trainer, terms: dict, micro: list[dict]) -> None:
        self.averaged.update_parameters(trainer.raw_model)

    def end(self, trainer) -> None:
        pass

    # ---- in checkpoints --------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.averaged.state_dict().items()}
        save_file(state, str(Path(folder) / FILE))

    def load(self, folder: Path) -> None:
        """The average saved in checkpoint `folder`, or one line why not."""
        from safetensors.torch import load_file

        path = Path(folder) / FILE
        if not path.is_file():
            raise UserError(f"{path}: missing; this run averages its weights (optim.ema_decay) and each of its "
                            "checkpoints holds the average: resume from a complete checkpoint")
        try:
            self.averaged.load_state_dict(load_file(str(path)))
        except Exception as err:
            raise UserError(f"{path}: not the averaged weights of this model ({str(err).splitlines()[0]}); "
                            "expected the file a run with the same recipe wrote") from None
