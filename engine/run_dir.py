"""The run folder: refuse to clobber another run, find the checkpoint to resume from."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from .checkpoint import latest_checkpoint
from .errors import UserError


def claim_output_dir(run: Path, *, resume: bool, explicit_resume: bool, overwrite: bool) -> Optional[Path]:
    """Decide what to do with `run` before training; returns the checkpoint to resume from, if any.

    Empty or missing → start. `overwrite` → delete and start. `resume` → the newest complete checkpoint
    (an explicit --resume without one is an error; `train.resume: auto` without one starts fresh).
    A folder holding another run is refused, so nothing already written is lost."""
    run = Path(run)
    occupied = run.is_dir() and any(run.iterdir())
    if overwrite and occupied:
        shutil.rmtree(run)
        occupied = False
    checkpoint = latest_checkpoint(run) if occupied else None
    if resume and checkpoint is not None:
        return checkpoint
    if explicit_resume:
        raise UserError(f"{run}: no complete checkpoint to resume from (looked in {run / 'checkpoints'})")
    if occupied and not resume:
        raise UserError(
            f"{run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            f"or set train.output_dir=<new folder>"
        )
    if occupied:  # resume: auto, but the run died before its first checkpoint: start it again
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    return None
