"""Trainer component: a translation grid of the first validation pairs every `train.sample_every` steps, saved in
the run folder and logged to the trackers as an image."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch


class SampleGrids:
    """The same 8 validation pairs and the same exclusive draws at every step, so grids compare across steps;
    image datasets only, main process only."""

    def __init__(self, recipe, info, path_of: Callable[[int], Path], main_process: bool, n: int = 8):
        from iiae.data import iter_eval_batches

        self.every, self.path_of = recipe.train.sample_every, path_of
        self.batch = None
        if main_process and info.kind == "image":
            self.batch = next(iter(iter_eval_batches(info, recipe.data.valid_split, n,
                                                     image_size=recipe.model.image_size, limit=n)))

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def after_step(self, trainer, terms: dict, micro: list[dict]) -> None:
        step = trainer.state.step
        if self.batch is None or not self.due(step):
            return
        from iiae.grids import translation_grid

        device = trainer.accelerator.device
        gen = torch.Generator(device="cpu").manual_seed(0)
        x, y = self.batch["x"].to(device), self.batch["y"].to(device)
        from iiae.training.metric_logger import log_images

        from iiae.safe_files import atomic_path, safe_dir

        path = self.path_of(step)
        safe_dir(path.parent, "the run's samples folder")
        grid = translation_grid(trainer.eval_model, x, y, n_rows=x.shape[0], generator=gen)
        with atomic_path(path, "a sample grid (PNG) the engine writes") as tmp:  # never written through a link
            grid.save(tmp, format="PNG")
        log_images(trainer.accelerator, {"samples/translation": grid}, step)

    def end(self, trainer) -> None:
        pass
