"""Claiming a run folder for training: what may be deleted in it, who owns it, and whether every rank sees it.

A folder becomes a run when the engine creates or claims it: it then holds `.iiae-run` (a marker naming the
engine). The engine deletes only inside a marked folder, and there only the names it writes itself (`ENGINE_NAMES`);
it never deletes, or even writes into, a folder it did not create unless that folder is empty. While a run trains,
its writer holds the folder's lock (`iiae.run_lock`).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Optional

from iiae.errors import UserError, first_line, shown
from iiae.run_dir import RunDir
from iiae.run_lock import LOCK, RunLock
from iiae.safe_files import TEMP_PREFIX, atomic_write, create_new, refuse_link, safe_dir
from iiae.training.checkpoint import latest_checkpoint

MARKER = ".iiae-run"
RANK_MARKERS = ".ranks"  # check_shared_folder's markers, one folder per start
# the engine's names at the top of a run folder that are folders; every other one is a regular file
ENGINE_FOLDERS = frozenset({"checkpoints", "best", "samples", "tensorboard", RANK_MARKERS, "wandb", "mlruns", "aim",
                            ".aim"})
# everything a training run or `iiae eval/translate` writes at the top of a run folder; trackers' own folders too
ENGINE_NAMES = frozenset({MARKER, LOCK, RANK_MARKERS, "metrics.jsonl", "metrics.json", "wandb", "mlruns", "aim", ".aim"} | {
    path.name for key, path in vars(RunDir(".")).items() if isinstance(path, Path) and key != "root"})


def check_output_dir(raw: str, protected: dict[str, str | os.PathLike] | None = None) -> Path:
    """`train.output_dir` as a path, refused in one line when deleting or filling it could hurt: empty, the cwd,
    `/`, home, an ancestor of the cwd, or the same as / inside / around a `protected` folder (e.g. data.root)."""
    if not str(raw).strip():
        raise UserError("train.output_dir: empty; expected a folder for this run, e.g. train.output_dir=runs/NAME")
    try:
        run = Path(raw).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a link loop (RuntimeError before 3.13), a NUL byte ...
        raise UserError(f"train.output_dir: {shown(raw)} cannot be resolved ({first_line(err)}); "
                        "expected a folder for this run, e.g. train.output_dir=runs/NAME") from None
    _check_length(raw, run)
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


# room for the deepest file a run writes below its folder (checkpoints/.tmp-checkpoint_N/...)
_INNER_PATH = 200


def _check_length(raw, run: Path) -> None:
    """A path the file system cannot take (ENAMETOOLONG) is refused before any parent folder is made."""
    existing = next((p for p in (run, *run.parents) if os.path.isdir(p)), Path(run.anchor))
    limits = []
    for name, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(os.pathconf(existing, name))
        except (OSError, ValueError):
            limits.append(default)
    name_max, path_max = limits
    long_part = next((part for part in run.parts if len(os.fsencode(part)) > name_max), None)
    if long_part is not None:
        raise UserError(f"train.output_dir: {shown(raw)} has a name of {len(os.fsencode(long_part))} bytes "
                        f"({shown(long_part, 30)}); the file system takes at most {name_max}: expected shorter names")
    if len(os.fsencode(str(run))) + _INNER_PATH >= path_max:
        raise UserError(f"train.output_dir: {shown(raw)} is too long ({len(os.fsencode(str(run)))} bytes); the "
                        f"file system takes paths under {path_max} bytes and the run's own files need "
                        f"{_INNER_PATH} more: expected a shorter path")


def is_run(run: Path) -> bool:
    """Marked by the engine: its marker is a regular file (a link there is no marker)."""
    try:
        return stat.S_ISREG(os.lstat(Path(run) / MARKER).st_mode)
    except OSError:
        return False


def _check_own_names(run: Path) -> None:
    """Each of the engine's names in `run` is what the engine writes there: a link (dangling ones too), or a folder
    where a file goes (or the reverse), is refused before anything is written, deleted or resumed through it."""
    for path in sorted(run.iterdir()):
        if path.name not in ENGINE_NAMES:
            continue
        if path.name in ENGINE_FOLDERS:
            if path.is_symlink() or not path.is_dir():
                safe_dir(path, f"the run's {path.name} folder")  # raises the one line of its kind
        else:
            refuse_link(path, f"the run's {path.name} (a regular file the engine writes)")


def _leftover(path: Path) -> bool:
    """A temporary file of an interrupted write (iiae.safe_files makes only files, never folders, of that name)."""
    return path.name.startswith(TEMP_PREFIX) and (path.is_symlink() or not path.is_dir())


def _foreign(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name not in ENGINE_NAMES and not _leftover(p))


def _clear(run: Path) -> None:
    """Delete the engine's own files of a marked run (the marker and the lock stay: the run is still ours)."""
    for path in run.iterdir():
        if path.name in ENGINE_NAMES - {MARKER, LOCK} or _leftover(path):
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
    try:
        if run.exists() and not run.is_dir():
            raise UserError(f"train.output_dir: {run} exists and is not a folder")
        contents = sorted(p.name for p in run.iterdir() if p.name != LOCK) if run.is_dir() else []
    except OSError as err:  # EACCES, ENAMETOOLONG ...: one line, before anything is written
        raise UserError(f"train.output_dir: {shown(run)} cannot be read ({err.strerror or err}); "
                        "expected a folder this user can write") from None
    checkpoint = latest_checkpoint(run) if resume and contents and not overwrite else None  # --overwrite wins
    if checkpoint is not None:
        _check_own_names(run)
        take()
        _mark(run)  # a run written before markers existed becomes ours by being resumed
        return checkpoint
    if explicit_resume:
        raise UserError(f"{run}: no complete checkpoint to resume from (looked in {RunDir(run).checkpoints})")
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
        _check_own_names(run)
        take()
        _clear(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"train.output_dir: {shown(run)} cannot be made ({err.strerror or err})") from None
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
    run.root.mkdir(parents=True, exist_ok=True)  # on a node without a shared folder, rank 0 made none here
    folder = safe_dir(safe_dir(run.root / RANK_MARKERS) / token)  # never through a link to elsewhere
    atomic_write(folder / f"rank_{accelerator.process_index}", socket.gethostname())
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
    marker = refuse_link(run / MARKER, "the engine's run marker (a regular file)")  # a dangling link: refused
    # O_EXCL | O_NOFOLLOW: never written through a link that appears meanwhile
    create_new(marker, json.dumps({"created_by": "iiae", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
