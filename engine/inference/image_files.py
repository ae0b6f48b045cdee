"""The files a user names for a trained model: finding the inputs (images at any depth, or `.npy` vectors for
feature models; reading images is `iiae.data.image_io`), and what `iiae translate`, `embed` and `retrieve` share to keep users' files safe: an output is refused in one line
when it resolves (links and `..` included) to an input file or into an input or model folder (`refuse_overwrite`,
`model_folders`) or is a link or a folder (`plain_output`); paths, numbers and devices on the command line are
checked in one line (`path_kind`, `whole_number`), as is untrusted text quoted in a message
(`shown`); SIGTERM becomes a clean exit that waits for the file being written (`stop_on_sigterm`, `one_file`),
so no half-written file is left. The files themselves are written through `iiae.safe_files`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from iiae.data.prepare.images import IMAGE_SUFFIXES, image_files
from iiae.errors import UserError, shown

FEATURE_SUFFIXES = (".npy",)


def path_kind(path: Union[str, os.PathLike], option: str) -> str:
    """"file", "folder", "missing" or "other" for a path the command line names (links followed: the user's own);
    one line naming the option where the system refuses to look (a name too long, no permission), which
    Path.is_file() would raise as a traceback."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as err:
        raise UserError(f"{option} {shown(str(path))}: cannot be used ({err.strerror or err})") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def is_file(path: Union[str, os.PathLike]) -> bool:
    """Path.is_file() for a path built from untrusted names: False (not a traceback) where the system refuses."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def find_inputs(path: str | os.PathLike, kind: str = "image", option: str = "--input") -> tuple[Path, list[Path]]:
    """(root, files) for a file or a folder (searched at any depth) of images, or `.npy` vectors (kind
    "feature"); names in outputs are relative to root. One-line UserError when there is nothing to read."""
    path = Path(path).expanduser()
    suffixes = IMAGE_SUFFIXES if kind == "image" else FEATURE_SUFFIXES
    found = path_kind(path, option)
    if found == "file":
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{option} {path}: not a {' / '.join(suffixes)} file")
        return path.parent, [path]
    if found != "folder":
        raise UserError(f"{option} {path}: no such file or folder")
    files = image_files(path) if kind == "image" else sorted(path.rglob("*.npy"))
    if not files:
        raise UserError(f"{option} {path}: no {' / '.join(suffixes)} files in it")
    return path, files


def load_features(paths: Sequence[Path], dim: int) -> torch.Tensor:
    """`.npy` vectors of length `dim` → float32 [B, dim]; one-line UserError naming a file of another shape."""
    rows = []
    for path in paths:
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: unreadable .npy file ({err})") from None
        if value.shape != (dim,):
            raise UserError(f"{path}: holds an array of shape {value.shape}; the model reads vectors of shape ({dim},)")
        rows.append(value.astype(np.float32))
    return torch.from_numpy(np.stack(rows))


def notice(changed: Counter, total: int, size: int) -> None:
    """One stderr line saying what `load_images` changed (nothing when nothing was)."""
    import sys

    if changed:
        done = ", ".join(f"{n} {what}" for what, n in sorted(changed.items()))
        print(f"notice: of {total} input image(s), {done}; the model reads {size}×{size} RGB, as its training "
              "data was stored", file=sys.stderr)


# ---- what the commands on users' files share -------------------------------------------------------------------
def whole_number(raw: Union[str, int], option: str, *, low: int = 1, high: Optional[int] = None) -> int:
    """A command-line count as an int in [low, high]; one-line UserError otherwise (argparse's `type=int` answers
    "1e8" with its usage text, and nothing bounded a count that would allocate a translation per unit)."""
    try:
        value = raw if isinstance(raw, int) else int(str(raw).strip())
    except ValueError:
        value = None
    span = f"from {low} to {high}" if high is not None else f"at least {low}"
    if value is None or value < low or (high is not None and value > high):
        raise UserError(f"{option} {shown(str(raw), 40)}: expected a whole number {span}")
    return value


def model_folders(run: Union[str, os.PathLike]) -> list[tuple[str, Path]]:
    """The folders an output must stay out of for RUN: the model folder (a run's best/) and a run's checkpoints/;
    for a Hub id, the Hugging Face cache its files come from."""
    from iiae.models.loading import resolve_run

    weights, run_dir = resolve_run(run)
    if weights is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        return [("the Hugging Face cache", Path(HF_HUB_CACHE))]
    folders = [("the model folder", weights)]
    if run_dir is not None and run_dir.root != weights:
        folders.append(("the run's checkpoints", run_dir.checkpoints))
    return folders


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_overwrite(option: str, out: Union[str, os.PathLike], *, files: Iterable[Path] = (),
                     folders: Iterable[tuple[str, Path]] = (), given: Optional[Union[str, os.PathLike]] = None) -> Path:
    """`out`, resolved (links and `..` followed); a one-line UserError when it is one of the input `files` or is, or
    lies inside, one of the `folders` ((what, folder) pairs: input folders, `model_folders`). Writing there would
    replace what the command reads, or put files into a model folder that is never trusted. `given`: the option's
    value when `out` is a file derived from it (a translation in the --out folder, the picture beside the JSON)."""
    target = Path(out).expanduser().resolve()
    head = f"{option} {given}: would write {out}, which" if given is not None else f"{option} {out}:"
    inputs = files if isinstance(files, (set, frozenset)) else {Path(f).resolve() for f in files}
    if target in inputs:
        raise UserError(f"{head} is an input of this command ({target}); expected an output that is none of its "
                        "inputs")
    for what, folder in folders:
        folder = Path(folder).expanduser().resolve()
        if _inside(target, folder):
            raise UserError(f"{head} is {'' if target == folder else 'inside '}{what} ({folder}); expected a path "
                            "outside it")
    return target


def plain_output(path: Union[str, os.PathLike], option: str, what: str) -> Path:
    """`iiae.safe_files.refuse_link` (absent or a regular file: no link, no folder) with the option named."""
    from iiae.safe_files import refuse_link

    try:
        return refuse_link(path, what)
    except UserError as err:
        raise UserError(f"{option} {err}") from None


def make_folder(folder: Path, option: str) -> None:
    """mkdir -p, with one line naming the option when something in the way is a file, or a name cannot be made
    (too long, no permission); the folders it made before failing are removed again: nothing is left behind."""
    missing = []
    for level in [folder, *folder.parents]:
        if path_kind(level, option) != "missing":
            break
        missing.append(level)
    made = []
    try:
        for level in reversed(missing):
            try:
                level.mkdir()
            except FileExistsError:  # made meanwhile by someone else: fine when it is a folder
                if not level.is_dir():
                    raise
                continue
            made.append(level)
    except OSError as err:
        for level in reversed(made):
            with contextlib.suppress(OSError):
                level.rmdir()
        raise UserError(f"{option}: cannot create the folder {shown(str(folder))} ({err.strerror or err})") from None


class Terminated(UserError):
    """SIGTERM while a command works on files: raised where the process is (between two files when it is writing
    one), so no output is left half-written and the CLI exits 143 in one line."""

    exit_code = 128 + signal.SIGTERM


_SIGTERM = {"what": "", "writing": 0, "pending": None}  # the state of the innermost stop_on_sigterm block


@contextlib.contextmanager
def stop_on_sigterm(what: str = "the files written so far are complete") -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block instead of killing the process (the default action leaves
    whatever a writer had opened: a 0-byte or truncated file); inside `one_file` it waits for that file to be
    complete. The previous handler comes back after the block; outside the main thread (where handlers cannot be
    set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        if _SIGTERM["writing"] and _SIGTERM["pending"] is None:
            _SIGTERM["pending"] = signum  # a second SIGTERM does not wait
            return
        raise Terminated(f"{signal.Signals(signum).name}: stopped; {_SIGTERM['what']}, nothing half-written is left")

    saved = dict(_SIGTERM)
    _SIGTERM.update(what=what, writing=0, pending=None)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _SIGTERM.update(saved)


@contextlib.contextmanager
def one_file() -> Iterator[None]:
    """Around writing one output (its temporary file, the write, the rename): a SIGTERM there (under
    `stop_on_sigterm`) stops the command once the file is complete, so not even a temporary file is left behind.
    A write takes milliseconds; the model's work before it is interrupted at once."""
    _SIGTERM["writing"] += 1
    try:
        yield
    finally:
        _SIGTERM["writing"] -= 1
    signum = _SIGTERM["pending"]
    if signum is not None and not _SIGTERM["writing"]:
        _SIGTERM["pending"] = None
        raise Terminated(f"{signal.Signals(signum).name}: stopped; {_SIGTERM['what']}, nothing half-written is left")
