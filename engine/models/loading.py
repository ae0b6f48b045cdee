"""The trained model a command names: a run folder (its `best/`), a model folder or a Hub repo id; loaded strictly,
in eval mode, from the local Hub cache before any network, with one-line errors naming the source."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from iiae.errors import UserError, first_line
from iiae.run_dir import ModelFolder, RunDir

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _is_model_dir(path: Path) -> bool:
    return ModelFolder(path).is_complete()


def resolve_run(run_or_id: str | os.PathLike) -> tuple[Optional[Path], Optional[RunDir]]:
    """(folder holding config.json + model.safetensors, the folder that receives eval results) for a local path:
    a run dir gives (run/best, run), a model folder gives (folder, folder). (None, None): not a local path."""
    path = Path(run_or_id)
    try:
        if not path.exists():
            return None, None
    except OSError as err:  # a name too long for the file system, a folder that cannot be searched
        raise UserError(f"{str(path)[:80]}: cannot be read as a run or model folder ({err.strerror}); expected a run "
                        "dir, a model folder or a Hub repo id (user/name)") from None
    if _is_model_dir(path):
        return path, RunDir(path)
    best = RunDir(path).model
    if best.is_complete():
        return best.root, RunDir(path)
    missing = [p.name for p in best.hub_files if not p.is_file()]
    raise UserError(
        f"{path}: not a run (no {best.root} with {', '.join(missing)}) nor a model folder "
        f"(config.json + model.safetensors); has training selected a model yet?"
    )


def load_model(run_or_id: str | os.PathLike, device=None):
    """The selected model of a run dir (`<run>/best`), a model folder, or a Hub repo id; strict, in eval mode."""
    from iiae.models.iiae import IIAE

    weights, _ = resolve_run(run_or_id)
    source = str(weights) if weights is not None else str(run_or_id)
    if weights is None and not _HUB_ID.match(source):
        raise UserError(f"{source}: no such run dir or model folder, and not a Hub repo id (user/name)")
    try:
        model = IIAE.from_pretrained(source) if weights is not None else _from_hub(source)
    except UserError:
        raise
    except Exception as err:  # a Hub lookup failure or a strict-loading error: one line naming the source
        where = "local model" if weights is not None else "no local run of that name; Hub model"
        raise UserError(f"{source}: cannot load {where}: {first_line(err, lines=2)}") from None
    return model.to(device) if device is not None else model


def _from_hub(repo_id: str):
    """A Hub model: from the local cache without any network when it is there; else one connection attempt first,
    so an offline machine fails at once in one line instead of after the client's retries."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from iiae.hub_connection import check_hub_reachable
    from iiae.models.iiae import IIAE

    try:
        return IIAE.from_pretrained(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    try:
        check_hub_reachable()
    except ConnectionError as err:
        raise UserError(f"{repo_id}: not in the local Hugging Face cache, and the Hub cannot be reached ({err}); "
                        "connect, or pass a local run dir or model folder") from None
    return IIAE.from_pretrained(repo_id)


def data_root(run_or_id: str | os.PathLike, given: Optional[str]) -> str:
    """The dataset to evaluate on: `--data`, else the data.root of the recipe beside the model."""
    if given:
        return given
    weights, run = resolve_run(run_or_id)
    recipe = run.read_recipe() if run is not None else None
    if recipe is None and weights is not None:
        recipe = RunDir(weights).read_recipe()
    if recipe is None:
        raise UserError(f"{run_or_id}: no recipe.yaml beside the model to take data.root from; pass --data DIR")
    from iiae.data.location import runs_command

    root = recipe.data.root
    if runs_command(root):
        # a command runs only when the user typed it: never one read from a run or model folder
        raise UserError(f"{run_or_id}: its stored recipe.yaml reads data.root through a command ({root[:80]!r}); "
                        "a stored recipe never runs one: pass it yourself with --data if you trust it, or --data DIR")
    return root


def trained_on(run_or_id: str | os.PathLike) -> Optional[str]:
    """The dataset a local model was trained on, as far as its folder says: the `dataset` of its
    eval_results.json, else the name of its recipe's data folder; None for a Hub id or when neither is there."""
    weights, run = resolve_run(run_or_id)
    if run is None:
        return None
    name = run.read_eval_results().get("dataset")
    if isinstance(name, str) and name:
        return name
    recipe = run.read_recipe() or (RunDir(weights).read_recipe() if weights is not None else None)
    return Path(recipe.data.root).name if recipe is not None else None


def add_model_arguments(p) -> None:
    """The arguments every command on a trained model shares (`iiae eval`, `translate`, `embed`, `retrieve`): which
    model, and the device it runs on."""
    from iiae.device import HELP

    p.add_argument("run", metavar="RUN_DIR_OR_HUB_ID", help="run dir (uses <run>/best), model folder, or Hub repo id")
    p.add_argument("--device", default=None, help=HELP)
