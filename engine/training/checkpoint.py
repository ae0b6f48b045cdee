"""Checkpoints: `accelerator.save_state` plus the loop's `train_state.json` into `<run>/checkpoints/checkpoint_<step>`,
written under a temporary name and renamed only when complete, so a crash never leaves a half checkpoint that
`--resume` would pick; loading them without running anything they hold; the trainer's `Checkpointer` component."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator

from iiae.errors import UserError, first_line, write_failure
from iiae.run_dir import RunDir
from iiae.safe_files import atomic_write, safe_dir

PATTERN = re.compile(r"^checkpoint_(\d+)$")
STATE_FILE = "train_state.json"  # the loop's own state (step, data position, seeds, selection), JSON


def checkpoint_dir(run: Path) -> Path:
    return RunDir(run).checkpoints


def complete_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary `.tmp-*` folders are never listed, nor links: a checkpoint is
    a folder the engine renamed into place, never something elsewhere)."""
    root = checkpoint_dir(run)
    if root.is_symlink() or not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := PATTERN.match(p.name)) and p.is_dir() and not p.is_symlink()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: Path) -> Optional[Path]:
    found = complete_checkpoints(run)
    return found[-1] if found else None


def chosen_checkpoint(run, path: os.PathLike) -> Path:
    """`--resume PATH`: a complete checkpoint of this run (`<run>/checkpoints/checkpoint_N`), or one line why not."""
    path = Path(path)
    if path.resolve() not in [p.resolve() for p in complete_checkpoints(run.root)]:
        have = ", ".join(p.name for p in complete_checkpoints(run.root)) or "none"
        raise UserError(f"--resume {path}: not a complete checkpoint of {run.root} (it has: {have})")
    return path


def set_aside_after(run, checkpoint: Path) -> list[Path]:
    """Resuming from an older checkpoint: the newer ones belong to the abandoned continuation. They are renamed
    `abandoned-checkpoint_N` (kept, no longer resumed from or counted), so a later `--resume` cannot pick them."""
    moved = []
    step = int(PATTERN.match(checkpoint.name).group(1))
    for newer in complete_checkpoints(run.root):
        if int(PATTERN.match(newer.name).group(1)) > step:
            target, n = newer.with_name(f"abandoned-{newer.name}"), 1
            while os.path.lexists(target):  # an earlier abandoned one keeps its name (a dangling link too)
                n += 1
                target = newer.with_name(f"abandoned{n}-{newer.name}")
            newer.rename(target)
            moved.append(target)
            print(f"notice: {newer} is newer than {checkpoint.name}: kept as {target.name}", file=sys.stderr)
    return moved


def save_checkpoint(accelerator: Accelerator, run: Path, step: int, keep: int, state, average=None) -> Path:
    """Every rank writes its part (RNG states, shards) into the temporary folder, the main rank adds `state` as
    `train_state.json` (and the `WeightAverage`, when there is one), renames the folder and drops checkpoints
    beyond the newest `keep`. A failed write (disk full) removes the temporary folder and raises one line; the
    newest complete checkpoint is untouched."""
    root = checkpoint_dir(run)
    final = root / f"checkpoint_{step}"
    tmp = root / f".tmp-checkpoint_{step}"
    if accelerator.is_main_process:
        safe_dir(root, "the run's checkpoints folder")
        for path in (tmp, final):  # a link there would be written through (tmp) or renamed onto (final)
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                raise UserError(f"{path}: is {'a symbolic link' if path.is_symlink() else 'not a folder'}; expected "
                                f"a checkpoint folder the engine writes (nothing was saved): remove it")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()  # a fresh folder: what save_state writes lands inside the run
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            atomic_write(tmp / STATE_FILE, json.dumps(state.state_dict()))
            if average is not None:
                average.save(tmp)
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = latest_checkpoint(run)
        intact = f"{kept.name} is intact" if kept is not None else "no earlier checkpoint exists"
        raise UserError(f"{write_failure(err, root)} while writing checkpoint {step} in {root}; {intact}") from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in complete_checkpoints(run)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, state) -> None:
    """Restore model, optimizer, scheduler, RNG states (accelerate) and `state` (train_state.json).

    Nothing here runs code from the checkpoint: accelerate reads tensors and its RNG pickles with
    `weights_only=True` (tensors, numpy arrays and builtins only); the pickles are checked first so a refused
    file stops the resume instead of being skipped with an info log; accelerate's own custom-object pickles
    (`custom_checkpoint_*.pkl`, read with `weights_only=False`) are never loaded."""
    from accelerate.utils import load

    _refuse_links_in(checkpoint)
    if list(checkpoint.glob("custom_checkpoint_*.pkl")) or not (checkpoint / STATE_FILE).is_file():
        raise UserError(f"{checkpoint}: no {STATE_FILE} (a checkpoint of an older engine, or not this engine's); "
                        "its pickled state is not loaded: start a new run, or use its weights as a model")
    with warnings.catch_warnings():  # torch warns about the pickle protocol of the very files it then refuses
        warnings.simplefilter("ignore")
        for pickled in sorted(checkpoint.glob("random_states_*.pkl")):
            try:
                load(pickled)
            except Exception as err:
                raise UserError(f"{pickled}: refused: {_load_failure(err)}") from None
        deepspeed_files = sorted(checkpoint.glob("*/*.pt"))  # DeepSpeed loads them with weights_only=False
        plain_types = _deepspeed_plain_types() if deepspeed_files else []
        for pickled in deepspeed_files:
            try:
                with torch.serialization.safe_globals(plain_types):
                    torch.load(pickled, map_location="cpu", weights_only=True)
            except Exception as err:
                raise UserError(f"{pickled}: refused: {_load_failure(err)}") from None
        try:
            state.load_state_dict(json.loads((checkpoint / STATE_FILE).read_text()))
            accelerator.load_state(str(checkpoint))
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"{checkpoint}: cannot resume from it: {_load_failure(err)}") from None


def _refuse_links_in(checkpoint: Path) -> None:
    """A checkpoint holds only the folders and regular files the engine wrote: a link (to /dev/zero, a fifo, a
    file elsewhere) or a fifo is refused in one line before anything is read."""
    for folder, subfolders, files in os.walk(checkpoint):  # never follows a link
        for name in subfolders + files:
            path = Path(folder, name)
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                kind = "a symbolic link" if path.is_symlink() else "not a regular file"
                raise UserError(f"{path}: is {kind}; a checkpoint holds only the files the engine wrote: "
                                "nothing was loaded")


def _deepspeed_plain_types() -> list:
    """The three DeepSpeed classes its ZeRO optimizer files hold besides tensors and builtins (plain records:
    allowing them lets the weights-only loader rebuild them without running anything else)."""
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [LossScaler, ZeroStageEnum, fragment_address]


def _load_failure(err: BaseException) -> str:
    if isinstance(err, pickle.UnpicklingError):  # weights_only met something that is not plain data
        return "it holds objects other than tensors, numpy arrays and builtins, which are never unpickled"
    return first_line(err)


class Checkpointer:
    """Trainer component: a checkpoint every `train.checkpoint_every` steps, on the last step, and when the run is
    stopping (a signal); the newest `train.keep_checkpoints` are kept."""

    def __init__(self, run: Path, every: int, keep: int, max_steps: int):
        self.run, self.every, self.keep, self.max_steps = Path(run), every, keep, max_steps

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.max_steps

    def after_step(self, trainer, terms: dict, micro: list[dict]) -> None:
        step = trainer.state.step
        if self.due(step) or trainer.stopping:
            save_checkpoint(trainer.accelerator, self.run, step, self.keep, trainer.state, trainer.average)

    def end(self, trainer) -> None:
        pass
