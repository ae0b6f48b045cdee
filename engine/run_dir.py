"""The run folder: the names of what it holds, who owns it, what may be deleted in it, and loading its model.

A folder becomes a run when the engine creates or claims it: it then holds `.iiae-run` (a marker naming the
engine). The engine deletes only inside a marked folder, and there only the names it writes itself (`ENGINE_NAMES`);
it never deletes, or even writes into, a folder it did not create unless that folder is empty. While a run trains,
its writer holds the folder's lock (`iiae.run_lock`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .checkpoint import latest_checkpoint
from .errors import UserError, first_line
from .run_lock import LOCK, RunLock

if TYPE_CHECKING:
    from .config import Recipe

MARKER = ".iiae-run"
WEIGHT_FILES = ("config.json", "model.safetensors")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
        self.best = self.root / "best"  # the selected model, in Hub format (+ recipe.yaml, selection.json)
        self.samples = self.root / "samples"
        self.tensorboard = self.root / "tensorboard"
        self.tracker_ids = self.root / "trackers.json"  # tracker run ids (wandb) a resume continues
        self.views_grid = self.root / "views_grid.png"  # Cars3D: true renders over guided translations (`iiae eval`)
        self.lock = RunLock(self.root)  # taken by the main process of a training run when it claims the folder

    def sample_grid(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def read_eval_results(self) -> dict:
        """eval_results.json, or `metrics.json` of runs evaluated by older versions, or {}."""
        for path in (self.eval_results, self.root / "metrics.json"):
            if path.is_file():
                return json.loads(path.read_text())
        return {}

    def read_recipe(self) -> Optional["Recipe"]:
        from .config import load_recipe

        for path in (self.recipe, self.best / "recipe.yaml"):
            if path.is_file():
                return load_recipe(path)
        return None


RANK_MARKERS = ".ranks"  # check_shared_folder's markers, one folder per start
# everything a training run or `iiae eval/translate` writes at the top of a run folder; trackers' own folders too
ENGINE_NAMES = frozenset({MARKER, LOCK, RANK_MARKERS, "metrics.jsonl", "metrics.json", "wandb", "mlruns", "aim", ".aim"} | {
    path.name for key, path in vars(RunDir(".")).items() if isinstance(path, Path) and key != "root"})


def check_output_dir(raw: str, protected: dict[str, str | os.PathLike] | None = None) -> Path:
    """`train.output_dir` as a path, refused in one line when deleting or filling it could hurt: empty, the cwd,
    `/`, home, an ancestor of the cwd, or the same as / inside / around a `protected` folder (e.g. data.root)."""
    if not str(raw).strip():
        raise UserError("train.output_dir: empty; expected a folder for this run, e.g. train.output_dir=runs/NAME")
    run = Path(raw).expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if run == cwd or run in cwd.parents:
        raise UserError(f"train.output_dir: {raw} is the current directory or one of its parents; "
                        "expected a folder of its own, e.g. runs/NAME")
    if run == home or run == Path(run.anchor):
        raise UserError(f"train.output_dir: {raw} is {'your home folder' if run == home else 'the file-system root'}; "
                        "expected a folder of its own, e.g. runs/NAME")
    for key, other in (protected or {}).items():
        other = Path(other).expanduser().resolve()
        if run == other or other in run.parents or run in other.parents:
            raise UserError(f"train.output_dir: {raw} overlaps {key} ({other}); expected a separate folder")
    return run


def is_run(run: Path) -> bool:
    return (Path(run) / MARKER).is_file()


def _foreign(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name not in ENGINE_NAMES)


def _clear(run: Path) -> None:
    """Delete the engine's own files of a marked run (the marker and the lock stay: the run is still ours)."""
    for path in run.iterdir():
        if path.name in ENGINE_NAMES - {MARKER, LOCK}:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _listing(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def claim_output_dir(run: Path, *, resume: bool, explicit_resume: bool, overwrite: bool,
                     lock: Optional[RunLock] = None) -> Optional[Path]:
    """Decide what to do with `run` before training; returns the checkpoint to resume from, if any.

    Missing or empty → start (marked as ours). `overwrite` → delete the engine's files of our run, then start;
    anything else in it is listed and refused. `resume` → the newest complete checkpoint (an explicit --resume
    without one is an error; `train.resume: auto` without one starts our run again). A folder the engine did not
    create is never deleted: it is refused with what it holds. `lock` is taken before anything is deleted or
    written, so a folder another live process writes is refused."""
    take = lock.acquire if lock is not None else (lambda: None)
    run = Path(run)
    if overwrite and explicit_resume:
        raise UserError("--resume and --overwrite contradict each other: pass one of them")
    if run.exists() and not run.is_dir():
        raise UserError(f"train.output_dir: {run} exists and is not a folder")
    contents = sorted(p.name for p in run.iterdir() if p.name != LOCK) if run.is_dir() else []
    checkpoint = latest_checkpoint(run) if resume and contents and not overwrite else None  # --overwrite wins
    if checkpoint is not None:
        take()
        _mark(run)  # a run written before markers existed becomes ours by being resumed
        return checkpoint
    if explicit_resume:
        raise UserError(f"{run}: no complete checkpoint to resume from (looked in {run / 'checkpoints'})")
    if contents:
        if not is_run(run):
            raise UserError(f"train.output_dir: {run} is not empty and was not created by this engine (no {MARKER}; "
                            f"holds {_listing(contents)}); nothing was deleted: choose an empty or new folder")
        if not (overwrite or resume):
            raise UserError(f"{run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                            f"or set train.output_dir=<new folder>")
        foreign = _foreign(run)  # replace our run, or start again one that died before its first checkpoint
        if foreign:
            raise UserError(f"{run}: holds files this engine did not write ({_listing(foreign)}); nothing was "
                            f"deleted: move them away or choose another train.output_dir")
        take()
        _clear(run)
    run.mkdir(parents=True, exist_ok=True)
    take()
    _mark(run)
    return None


def check_shared_folder(accelerator, run: RunDir) -> None:
    """Several processes: each writes a marker into the run folder, then each looks for everyone's. Only rank 0
    completes checkpoints (it renames `.tmp-checkpoint_N`), so a rank that cannot see rank 0's files (nodes
    without a shared filesystem under train.output_dir) could never resume: refused here, on every rank at once,
    before the first step."""
    import shutil
    import socket
    import uuid

    import torch
    from accelerate.utils import broadcast_object_list

    if accelerator.num_processes == 1:
        return
    token = broadcast_object_list([uuid.uuid4().hex if accelerator.is_main_process else None])[0]
    folder = run.root / RANK_MARKERS / token
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank_{accelerator.process_index}").write_text(socket.gethostname())
    accelerator.wait_for_everyone()
    seen = torch.tensor([sum((folder / f"rank_{r}").is_file() for r in range(accelerator.num_processes))])
    counts = accelerator.gather(seen.to(accelerator.device)).tolist()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(run.root / RANK_MARKERS, ignore_errors=True)
    blind = [r for r, n in enumerate(counts) if n < accelerator.num_processes]
    if blind:
        raise UserError(
            f"train.output_dir: {run.root} is not one shared folder: rank(s) {', '.join(map(str, blind))} (of "
            f"{accelerator.num_processes}) cannot see the others' files there. Multi-node training needs "
            "train.output_dir on a filesystem every node mounts (rank 0 completes the checkpoints; a resume on the "
            "other nodes would find none); point it at a shared mount")


def _mark(run: Path) -> None:
    marker = run / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"created_by": "iiae", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


# ---- the model of a run, a model folder or a Hub repo -------------------------------------------------------
def _is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in WEIGHT_FILES)


def resolve_run(run_or_id: str | os.PathLike) -> tuple[Optional[Path], Optional[RunDir]]:
    """(folder holding config.json + model.safetensors, the folder that receives eval results) for a local path:
    a run dir gives (run/best, run), a model folder gives (folder, folder). (None, None): not a local path."""
    path = Path(run_or_id)
    if not path.exists():
        return None, None
    if _is_model_dir(path):
        return path, RunDir(path)
    if _is_model_dir(path / "best"):
        return path / "best", RunDir(path)
    missing = [n for n in WEIGHT_FILES if not (path / "best" / n).is_file()]
    raise UserError(
        f"{path}: not a run (no {path / 'best'} with {', '.join(missing)}) nor a model folder "
        f"(config.json + model.safetensors); has training selected a model yet?"
    )


def load_model(run_or_id: str | os.PathLike, device=None):
    """The selected model of a run dir (`<run>/best`), a model folder, or a Hub repo id; strict, in eval mode."""
    from .models import IIAE

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

    from .hub_connection import check_hub_reachable
    from .models import IIAE

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
    return recipe.data.root
