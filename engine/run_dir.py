"""The names of what a run folder holds (`RunDir`) and of what a model folder holds (`ModelFolder`), and reading
them back without trusting them: the one place those file names are written. Claiming a folder for training is
`iiae.training.run_folder`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from iiae.errors import UserError, first_line
from iiae.run_lock import RunLock
from iiae.safe_files import read_regular, refuse_link

if TYPE_CHECKING:
    from iiae.config import Recipe

class RunDir:
    """Where each artefact of a run lives (one name per file, so a reader knows which is which)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.recipe = self.root / "recipe.yaml"  # the resolved recipe the run trains
        self.run_info = self.root / "run.json"  # device, ranks, kernel backend, versions
        self.train_log = self.root / "train_log.jsonl"  # one JSON object per logged training / validation step
        self.eval_results = self.root / "eval_results.json"  # the latest `iiae eval` of the selected model
        self.curves = self.root / "curves.png"
        self.checkpoints = self.root / "checkpoints"
        self.best = self.root / "best"  # the selected model: a ModelFolder
        self.samples = self.root / "samples"
        self.tensorboard = self.root / "tensorboard"
        self.tracker_ids = self.root / "trackers.json"  # tracker run ids (wandb) a resume continues
        self.views_grid = self.root / "views_grid.png"  # Cars3D: true renders over guided translations (`iiae eval`)
        self.lock = RunLock(self.root)  # taken by the main process of a training run when it claims the folder

    @property
    def model(self) -> "ModelFolder":
        return ModelFolder(self.best)

    def sample_grid(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def read_eval_results(self) -> dict:
        """eval_results.json, or `metrics.json` of runs evaluated by older versions, or {}; a link, a folder or
        anything but a JSON object there is refused in one line (a run folder is never trusted)."""
        for path in (self.eval_results, self.root / "metrics.json"):
            if refuse_link(path, "a JSON object written by `iiae eval`").is_file():
                return read_json_object(path, "a JSON object written by `iiae eval`")
        return {}

    def read_recipe(self) -> Optional["Recipe"]:
        from iiae.config import load_recipe

        for path in (self.recipe, self.best / "recipe.yaml"):
            if refuse_link(path, "the run's recipe (a YAML file)").is_file():
                return load_recipe(path)
        return None


class ModelFolder:
    """What a model folder holds (a run's best/, or one a user copied): the Hub format (`config.json` with the model
    and objective sections, `model.safetensors`) plus the run's record of it."""

    def __init__(self, root: str | os.PathLike):
        from huggingface_hub.constants import CONFIG_NAME, SAFETENSORS_SINGLE_FILE

        self.root = Path(root)
        self.config = self.root / CONFIG_NAME
        self.weights = self.root / SAFETENSORS_SINGLE_FILE
        self.recipe = self.root / "recipe.yaml"  # the resolved recipe that trained it
        self.selection = self.root / "selection.json"  # the step and validation metrics it was selected at

    @property
    def hub_files(self) -> tuple[Path, Path]:
        """What makes it loadable (`from_pretrained`)."""
        return self.config, self.weights

    @property
    def files(self) -> tuple[Path, ...]:
        """Everything of it a repo gets (`iiae push`); nothing else in the folder is ever uploaded."""
        return self.config, self.weights, self.recipe, self.selection

    def is_complete(self) -> bool:
        return all(p.is_file() for p in self.hub_files)


def read_json_object(path: Path, what: str, raw: Optional[bytes] = None) -> dict:
    """A JSON object from a file of a run or model folder (never trusted; `raw`: its bytes, already read), or one
    line naming the file: a link, a folder, not JSON, not an object."""
    try:
        data = json.loads(read_regular(path, what) if raw is None else raw)
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, an integer too long, nested too deep
        raise UserError(f"{path}: not valid JSON ({first_line(err)}); expected {what}") from None
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(data), "null")
        raise UserError(f"{path}: holds a JSON {kind}; expected {what}")
    return data
