"""Writing a dataset folder (what `iiae prepare` converters call): the --out check, the shards of each split,
then `dataset.json`; a failed write (a full disk first of all) is one line naming the file and the fix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import UserError, write_failure
from .format import INFO_FILE, SHARD_RE, SHARD_SUFFIX, DatasetInfo, ShardInfo, SplitInfo, sha256_file


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless overwrite; with it, remove only what a prepare writes."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out}: folder is not empty; pass --overwrite to replace its dataset")
        for path in out.iterdir():
            if path.name == INFO_FILE or (path.is_file() and SHARD_RE.match(path.name)):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _disk_failure(err: Exception, path: Path, fix: str) -> Optional[UserError]:
    """A failed write of `path` as one line, or None when `err` is not one: an OSError, or the ValueError a tar
    stream raises once its file has failed (its cause, e.g. ENOSPC, then hangs on __context__)."""
    if isinstance(err, ValueError) and "closed file" not in str(err):
        return None
    reason = write_failure(err)
    if reason == "no space left on device":
        return UserError(f"no space left on device while writing {path}; the folder is incomplete "
                         f"(no {INFO_FILE}) — free space and re-run `{fix}`")
    return UserError(f"{reason} while writing {path}; the folder is incomplete (no {INFO_FILE}) — re-run `{fix}`")


def _abandon(writer: Any) -> None:
    """Close a ShardWriter whose file failed, ignoring further failures: left open, its tar stream would try to
    write again when garbage-collected and print a second traceback."""
    tar = getattr(writer, "tarstream", None)
    for close in (getattr(tar, "close", None), getattr(getattr(tar, "own_fileobj", None), "close", None)):
        try:
            if close is not None:
                close()
        except (OSError, ValueError):
            pass


def _write_split(out: Path, split: str, samples: Iterable[dict], total: int, shard_size: int,
                 fix: str) -> Optional[SplitInfo]:
    import webdataset as wds
    from tqdm import tqdm

    written: list[tuple[str, int]] = []
    labels: set[bytes] = set()
    writer = None

    def closed(fname: str) -> None:  # ShardWriter calls this before resetting its per-shard count
        written.append((fname, writer.count))

    def failed(err: Exception) -> Exception:  # for the writer's calls only: the converter's errors pass unchanged
        name = getattr(writer, "fname", None) or out / (f"{split}{SHARD_SUFFIX}" % 0)
        problem = _disk_failure(err, Path(name), fix)
        if problem is None:
            return err
        _abandon(writer)
        return problem

    # disable=None: a bar on a terminal, nothing in logs and pipes
    for sample in tqdm(samples, total=total, desc=f"{split:>12}", unit=" samples", dynamic_ncols=True, disable=None):
        if "cls" in sample:
            labels.add(sample["cls"])
        try:
            if writer is None:  # opened lazily: ShardWriter creates its first file at once, even for no samples
                # mtime=0 and encoder=False (bytes in, bytes out): the tar is a pure function of the samples
                writer = wds.ShardWriter(str(out / f"{split}{SHARD_SUFFIX}"), maxcount=shard_size, post=closed,
                                         verbose=0, mtime=0, encoder=False)
            writer.write(sample)
        except (OSError, ValueError) as err:
            raise failed(err) from None
    if writer is None:
        return None
    try:
        writer.close()
    except (OSError, ValueError) as err:
        raise failed(err) from None
    shards = [ShardInfo(file=Path(f).name, count=c, sha256=sha256_file(Path(f)), size=Path(f).stat().st_size)
              for f, c in written]
    return SplitInfo(count=sum(s.count for s in shards), shards=shards, num_classes=len(labels) or None)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from .. import __version__

    return {"iiae": __version__, **{pkg: version(pkg) for pkg in ("webdataset", "numpy", "pillow")}}


def write_dataset(out: Path, splits: dict[str, tuple[Iterable[dict], int]], *, shard_size: int,
                  **meta: Any) -> DatasetInfo:
    """Write each split (samples, expected count) as shards, then dataset.json. `meta`: the DatasetInfo fields."""
    fix = f"{meta.get('command', 'iiae prepare ...')} --out {out} --overwrite"
    written = {}
    for name, (samples, total) in splits.items():
        split = _write_split(out, name, samples, total, shard_size, fix)
        if split is not None:
            written[name] = split
    info = DatasetInfo(splits=written, generator=_versions(), root=out, **meta)
    tmp = out / f".{INFO_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
        os.replace(tmp, out / INFO_FILE)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _disk_failure(err, out / INFO_FILE, fix) from None
    return info
