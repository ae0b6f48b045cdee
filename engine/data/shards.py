"""Shard folders: writing `<split>-%06d.tar` + `dataset.json`, loading and verifying them, reading shards back.

A folder is complete once `dataset.json` exists: it is written last (atomically), after every shard and its
sha256, so an interrupted `iiae prepare` leaves a folder the loader refuses with the command that fixes it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tarfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator, model_validator

from ..errors import DataError, UserError
from .samples import has_field

INFO_FILE = "dataset.json"
SHARD_SUFFIX = "-%06d.tar"
_SHARD_RE = re.compile(r".+-\d{6}\.tar$")


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    count: NonNegativeInt
    sha256: str

    @field_validator("file")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # the shard is opened as root / file: a path would read outside the dataset folder
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise ValueError("must be a plain file name inside the dataset folder")
        return name


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: NonNegativeInt
    shards: list[ShardInfo]
    num_classes: Optional[NonNegativeInt] = None  # distinct `cls` values (Sketchy: classes per matched batch)

    @model_validator(mode="after")
    def _counts_add_up(self) -> "SplitInfo":
        # batches per epoch come from `count`, the draws from the shard counts: they must agree
        total = sum(s.count for s in self.shards)
        if self.count != total:
            raise ValueError(f"count {self.count} is not the sum of its shard counts ({total})")
        return self


class DatasetInfo(BaseModel):
    """What `dataset.json` holds, plus `root`: the folder it was loaded from (not stored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal[1] = 1
    name: str
    kind: Literal["image", "feature"]
    # paired: each sample holds x and y; per-domain: `<split>-<domain name>` splits hold one side each
    layout: Literal["paired", "per-domain"] = "paired"
    image_size: Optional[int] = None
    feature_dim: Optional[int] = None
    domains: dict[Literal["x", "y"], str]
    classes: Optional[list[str]] = None
    splits: dict[str, SplitInfo]
    source: str
    command: str  # the `iiae prepare ...` call without --out: how to re-create the folder
    provenance: dict[str, Any]
    generator: dict[str, str]
    seed: Optional[int] = None
    root: Path = Field(Path("."), exclude=True)

    def split_name(self, split: str, domain: Optional[str] = None) -> str:
        """The stored split holding `split` for `domain` ("x"|"y"); per-domain layouts need a domain."""
        if self.layout == "paired":
            return split
        if domain not in ("x", "y"):
            raise ValueError(f"{self.root}: per-domain dataset: pass domain='x' ({self.domains['x']}) "
                             f"or 'y' ({self.domains['y']})")
        return f"{split}-{self.domains[domain]}"

    def split(self, split: str, domain: Optional[str] = None) -> SplitInfo:
        name = self.split_name(split, domain)
        found = self.splits.get(name)
        if found is None:
            have = ", ".join(sorted(self.splits)) or "none"
            raise DataError(f"{self.root / INFO_FILE}: no shards for split '{name}' (it has: {have}); "
                            f"re-create the folder with `{self.fix_command()}` or pick another split")
        if found.count == 0:  # nothing to draw: the training stream would never yield a batch
            raise DataError(f"{self.root / INFO_FILE}: split '{name}' is empty (0 samples in "
                            f"{len(found.shards)} shards); re-create the folder with `{self.fix_command()}` "
                            f"or pick another split")
        return found

    def path(self, shard: ShardInfo) -> Path:
        return self.root / shard.file

    def fix_command(self) -> str:
        return f"{self.command} --out {self.root} --overwrite"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Folder-name guesses for the one-line "run this" hint when there is no dataset.json to ask.
_HINTS = [
    ("sketchy", "iiae prepare sketchy --src RAW"),
    ("cars", "iiae prepare cars --src RAW"),
    ("facades", "iiae prepare pix2pix --name facades --src RAW"),
    ("maps", "iiae prepare pix2pix --name maps --src RAW"),
    ("debug", "iiae prepare mnist-cdcb --size 32 --limit 64"),
    ("mnist", "iiae prepare mnist-cdcb"),
]


def prepare_hint(root: Path) -> str:
    name = root.name.lower()
    for word, command in _HINTS:
        if word in name:
            size = re.search(r"_(32|64|128|256)$", name)
            if command == "iiae prepare mnist-cdcb" and size:
                command += f" --size {size.group(1)}"
            return f"{command} --out {root}"
    return f"iiae prepare {{mnist-cdcb|pix2pix|cars|sketchy|hf}} ... --out {root}"


def _format_error(source: Path, err: ValidationError) -> str:
    """The first problem as `source: key: what` (as engine.config does for recipes)."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    if first["type"] == "extra_forbidden":
        return f"{source}: {key}: unknown key"
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    return f"{source}: {key}: {msg}" if isinstance(got, dict) else f"{source}: {key}: {msg} (got {got!r})"


def load_dataset_info(root: str | os.PathLike, verify: bool = False) -> DatasetInfo:
    """Read `root/dataset.json` and check every listed shard exists (and, with verify, its sha256)."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        state = ("folder does not exist" if not root.exists() else
                 "folder is empty" if root.is_dir() and not any(root.iterdir()) else "no dataset.json")
        raise DataError(f"{info_path}: not found ({state}); create the dataset with `{prepare_hint(root)}`")
    try:
        data = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise DataError(f"{info_path}: unreadable ({first}); re-create it with `{prepare_hint(root)} --overwrite`") \
            from None
    if not isinstance(data, dict):
        raise DataError(f"{info_path}: expected a JSON object (format, name, kind, splits, ...), got a "
                        f"{type(data).__name__}; re-create it with `{prepare_hint(root)} --overwrite`")
    try:
        info = DatasetInfo.model_validate({**data, "root": root})
    except ValidationError as err:
        command = data.get("command")
        fix = f"{command} --out {root}" if isinstance(command, str) and command else prepare_hint(root)
        raise DataError(f"{_format_error(info_path, err)}; re-create it with `{fix} --overwrite`") from None
    for split in info.splits.values():
        for shard in split.shards:
            path = info.path(shard)
            if not path.is_file():
                raise DataError(f"{path}: shard listed in {info_path} is missing; "
                                f"re-create the folder with `{info.fix_command()}`")
            if verify and sha256_file(path) != shard.sha256:
                raise DataError(f"{path}: sha256 does not match {info_path} (corrupt or modified); "
                                f"re-create the folder with `{info.fix_command()}`")
    return info


# ---------------------------------------------------------------------------------------------- writing

def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless overwrite; with it, remove only what a prepare writes."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out}: folder is not empty; pass --overwrite to replace its dataset")
        for path in out.iterdir():
            if path.name == INFO_FILE or (path.is_file() and _SHARD_RE.match(path.name)):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _disk_failure(err: Exception, path: Path, fix: str) -> Optional[UserError]:
    """A failed write of `path` as one line, or None when `err` is not one: an OSError, or the ValueError a tar
    stream raises once its file has failed (its cause, e.g. ENOSPC, then hangs on __context__)."""
    if isinstance(err, ValueError) and "closed file" not in str(err):
        return None
    cause: Optional[BaseException] = err
    while cause is not None and not (isinstance(cause, OSError) and cause.errno == errno.ENOSPC):
        cause = cause.__context__
    if cause is not None:
        return UserError(f"no space left on device while writing {path}; the folder is incomplete "
                         f"(no {INFO_FILE}) — free space and re-run `{fix}`")
    first = (str(err).splitlines() or [type(err).__name__])[0]
    return UserError(f"{first} while writing {path}; the folder is incomplete (no {INFO_FILE}) — re-run `{fix}`")


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
    shards = [ShardInfo(file=Path(f).name, count=c, sha256=sha256_file(Path(f))) for f, c in written]
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


# ---------------------------------------------------------------------------------------------- reading

class CorruptShard(Exception):
    """A tar-level failure; `key` names the sample being read (dropped, it may lack members) or the last good one."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"at key {key}: {reason}")
        self.key, self.reason = key, reason


def read_shard(path: Path) -> Iterator[dict[str, Any]]:
    """Samples of one shard in stored order: `{"__key__": k, "x.png": bytes, ...}`. Raises CorruptShard."""
    current: Optional[dict[str, Any]] = None
    last = None
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                key, _, suffix = member.name.partition(".")
                data = tar.extractfile(member).read()
                if current is not None and key != current["__key__"]:
                    last = current["__key__"]
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                current[suffix] = data
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        where = current["__key__"] if current else (f"after {last}" if last else "(first record)")
        raise CorruptShard(where, str(err) or type(err).__name__) from None
    if current is not None:
        yield current


class CorruptDataWarning(UserWarning):
    """Training data that could not be read (the named samples were skipped), or an image of another size or
    mode (converted)."""


class SkipLog:
    """Counts training samples lost to bad data (`count`) and images converted to the dataset's size and mode
    (`resized`); warns once per shard for each (resampling revisits shards)."""

    def __init__(self) -> None:
        self.count = 0
        self.resized = 0
        self._warned: set[tuple[str, str]] = set()

    def lost(self, shard: Path, message: str, n: int) -> None:
        self.count += n
        self._warn(shard, "lost", f"{message}; training continues")

    def converted(self, shard: Path, message: str) -> None:
        self.resized += 1
        self._warn(shard, "resized", f"{message} (counted in `resized`; further ones in this shard are not named)")

    def _warn(self, shard: Path, kind: str, message: str) -> None:
        if (str(shard), kind) not in self._warned:
            self._warned.add((str(shard), kind))
            warnings.warn(message, CorruptDataWarning, stacklevel=3)


def read_valid_samples(path: Path, expected: int, fields: tuple[str, ...], log: SkipLog) -> Iterator[dict[str, Any]]:
    """Training read: the samples that hold all `fields`. Whatever the shard lacks against `expected` (corrupt,
    truncated, missing members) is logged once, after its last good sample."""
    good = 0
    problem = last = None
    try:
        for sample in read_shard(path):
            last = sample["__key__"]
            if all(has_field(sample, f) for f in fields):
                good += 1
                yield sample
            elif problem is None:
                problem = f"key {sample['__key__']}: missing {'/'.join(fields)}"
    except CorruptShard as err:
        problem = problem or str(err)
    if good < expected:
        problem = problem or (f"ends early after key {last}" if last else "holds no samples (no key)")
        log.lost(path, f"{path}: {problem}; skipped {expected - good} of {expected} samples",
                 expected - good)
