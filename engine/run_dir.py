"""The run folder: who owns it, what may be deleted in it, and the lock that keeps a second writer out.

A folder becomes a run when the engine creates or claims it: it then holds `.iiae-run` (a marker naming the
engine). The engine deletes only inside a marked folder, and there only the names it writes itself (`ENGINE_NAMES`);
it never deletes, or even writes into, a folder it did not create unless that folder is empty. The live writer
holds `.iiae-lock` (pid + host, under an exclusive `flock`): the kernel drops the flock when the process dies, so a
dead holder's lock is recognised and taken over, and a live one refuses a second trainer.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from .checkpoint import latest_checkpoint
from .errors import UserError

MARKER = ".iiae-run"
LOCK = ".iiae-lock"
# everything a training run or `iiae eval/translate` writes at the top of a run folder; trackers' own folders too
ENGINE_NAMES = frozenset({
    MARKER, LOCK, "recipe.yaml", "run.json", "metrics.jsonl", "metrics.json", "curves.png", "checkpoints", "best",
    "samples", "tensorboard", "fidelity", "wandb", "mlruns", "aim", ".aim",
})


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
                     lock: Optional["RunLock"] = None) -> Optional[Path]:
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
    checkpoint = latest_checkpoint(run) if resume and contents else None
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


def _mark(run: Path) -> None:
    marker = run / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"created_by": "iiae", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


class RunLock:
    """Exclusive right to write into a run folder, for the life of the process (`release` ends it early).

    The lock file holds the holder's pid and host; the `flock` on it is what proves the holder alive."""

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{self.path.parent}: another live process writes this run ({holder}); "
                            f"wait for it to end or stop it first") from None
        previous = _read_holder(fd)
        if previous:  # the file outlived its holder (killed, machine crashed): the flock says it is gone
            print(f"notice: took over the lock of a run that ended without releasing it ({previous})", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {holder['pid']} on {holder['host']}" if holder else ""
    except (ValueError, KeyError, TypeError):
        return "unknown holder"
