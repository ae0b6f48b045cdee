"""Writing a dataset folder (what `iiae prepare` converters call): the --out check, the shards of each split,
then `dataset.json`; a failed write (a full disk first of all) is one line naming the file and the fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from iiae.errors import UserError, write_failure
from iiae.safe_files import atomic_write, create_new
from iiae.data.format import INFO_FILE, SHARD_RE, SHARD_SUFFIX, DatasetInfo, ShardInfo, SplitInfo, sha256_file


DATASET_MARKER = ".iiae-dataset"  # written into --out before the first shard: the folder is a prepare's own


def _own_files(out: Path) -> set[str]:
    """The names in `out` an earlier `iiae prepare` wrote: in a marked folder every shard-named file, else the
    shards its dataset.json lists (a folder prepared before the marker existed). Never a folder's other files."""
    if (out / DATASET_MARKER).is_file():
        return {p.name for p in out.iterdir() if SHARD_RE.match(p.name)}
    try:
        info = json.loads((out / INFO_FILE).read_text())
        listed = [s["file"] for split in info["splits"].values() for s in split["shards"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()
    return {name for name in listed if isinstance(name, str) and SHARD_RE.match(name) and "/" not in name}


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless overwrite; with it, delete only the shards an earlier prepare wrote there
    (never a file it did not write, and never a link's target), refusing shard-named files of anyone else, which
    the new shards would overwrite."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out}: folder is not empty; pass --overwrite to replace its dataset")
        ours = _own_files(out)
        foreign = sorted(p.name for p in out.iterdir() if SHARD_RE.match(p.name) and p.name not in ours)
        if foreign:
            raise UserError(f"--out {out}: holds shard-named files no earlier `iiae prepare` wrote there "
                            f"({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); nothing was deleted: "
                            "move them away or choose another --out")
        for name in ours | {INFO_FILE}:
            path = out / name
            if path.is_symlink() or path.is_file():  # a link is removed itself, its target never touched
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    create_new(out / DATASET_MARKER, json.dumps({"created_by": "iiae prepare"}) + "\n")


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

    from iiae.version import __version__

    return {"iiae": __version__, **{pkg: version(pkg) for pkg in ("webdataset", "numpy", "pillow")}}


def write_dataset(out: Path, splits: dict[str, tuple[Iterable[dict], int]], *, shard_size: int,
                  **meta: Any) -> DatasetInfo:
    """Write each split (samples, expected count) as shards, then dataset.json. `meta`: the DatasetInfo fields."""
    fix = f"{meta.get('command', 'iiae prepare ...')} --out {out} --overwrite"
    for name in splits:  # checked before any shard is written: dataset.json would refuse the names afterwards
        if not SHARD_RE.match(f"{name}{SHARD_SUFFIX}" % 0):
            raise UserError(f"split {name!r}: its shard names would not be plain file names; expected a split name "
                            "of letters, digits, '.', '_' and '-'")
    written = {}
    for name, (samples, total) in splits.items():
        split = _write_split(out, name, samples, total, shard_size, fix)
        if split is not None:
            written[name] = split
    info = DatasetInfo(splits=written, generator=_versions(), root=out, **meta)
    try:
        atomic_write(out / INFO_FILE, json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
    except OSError as err:
        raise _disk_failure(err, out / INFO_FILE, fix) from None
    return info
