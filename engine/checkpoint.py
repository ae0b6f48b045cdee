"""Checkpoints: `accelerator.save_state` into `<run>/checkpoints/checkpoint_<step>`, written under a temporary
name and renamed only when complete, so a crash never leaves a half checkpoint that `--resume` would pick."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

from accelerate import Accelerator

PATTERN = re.compile(r"^checkpoint_(\d+)$")


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def complete_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary `.tmp-*` folders are never listed)."""
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: Path) -> Optional[Path]:
    found = complete_checkpoints(run)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, run: Path, step: int, keep: int) -> Path:
    """Every rank writes its part (RNG states, shards) into the temporary folder; the main rank renames
    it and drops checkpoints beyond the newest `keep`."""
    root = checkpoint_dir(run)
    final = root / f"checkpoint_{step}"
    tmp = root / f".tmp-checkpoint_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in complete_checkpoints(run)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
