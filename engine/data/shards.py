"""Shard folders: writing `<split>-%06d.tar` + `dataset.json`, loading and verifying them, reading shards back.

A folder is complete once `dataset.json` exists: it is written last (atomically), after every shard and its
sha256, so an interrupted `iiae prepare` leaves a folder the loader refuses with the command that fixes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

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


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: NonNegativeInt
    shards: list[ShardInfo]
    num_classes: Optional[NonNegativeInt] = None  # distinct `cls` values (Sketchy: classes per matched batch)


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
        if found is None or not found.shards:
            have = ", ".join(sorted(self.splits)) or "none"
            raise DataError(f"{self.root / INFO_FILE}: no shards for split '{name}' (it has: {have}); "
                            f"re-create the folder with `{self.fix_command()}` or pick another split")
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


def load_dataset_info(root: str | os.PathLike, verify: bool = False) -> DatasetInfo:
    """Read `root/dataset.json` and check every listed shard exists (and, with verify, its sha256)."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        state = ("folder does not exist" if not root.exists() else
                 "folder is empty" if root.is_dir() and not any(root.iterdir()) else "no dataset.json")
        raise DataError(f"{info_path}: not found ({state}); create the dataset with `{prepare_hint(root)}`")
    try:
        info = DatasetInfo.model_validate({**json.loads(info_path.read_text()), "root": root})
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise DataError(f"{info_path}: unreadable ({first}); re-create it with `{prepare_hint(root)} --overwrite`") \
            from None
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


def _write_split(out: Path, split: str, samples: Iterable[dict], total: int, shard_size: int) -> Optional[SplitInfo]:
    import webdataset as wds
    from tqdm import tqdm

    written: list[tuple[str, int]] = []
    labels: set[bytes] = set()
    writer = None

    def closed(fname: str) -> None:  # ShardWriter calls this before resetting its per-shard count
        written.append((fname, writer.count))

    # disable=None: a bar on a terminal, nothing in logs and pipes
    for sample in tqdm(samples, total=total, desc=f"{split:>12}", unit=" samples", dynamic_ncols=True, disable=None):
        if writer is None:  # opened lazily: ShardWriter creates its first file at once, even for no samples
            # mtime=0 and encoder=False (bytes in, bytes out): the tar is a pure function of the samples
            writer = wds.ShardWriter(str(out / f"{split}{SHARD_SUFFIX}"), maxcount=shard_size, post=closed,
                                     verbose=0, mtime=0, encoder=False)
        if "cls" in sample:
            labels.add(sample["cls"])
        writer.write(sample)
    if writer is None:
        return None
    writer.close()
    shards = [ShardInfo(file=Path(f).name, count=c, sha256=sha256_file(Path(f))) for f, c in written]
    return SplitInfo(count=sum(s.count for s in shards), shards=shards, num_classes=len(labels) or None)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from .. import __version__

    return {"iiae": __version__, **{pkg: version(pkg) for pkg in ("webdataset", "numpy", "pillow")}}


def write_dataset(out: Path, splits: dict[str, tuple[Iterable[dict], int]], *, shard_size: int,
                  **meta: Any) -> DatasetInfo:
    """Write each split (samples, expected count) as shards, then dataset.json. `meta`: the DatasetInfo fields."""
    written = {}
    for name, (samples, total) in splits.items():
        split = _write_split(out, name, samples, total, shard_size)
        if split is not None:
            written[name] = split
    info = DatasetInfo(splits=written, generator=_versions(), root=out, **meta)
    tmp = out / f".{INFO_FILE}.tmp"
    tmp.write_text(json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, out / INFO_FILE)
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
    """Training data that could not be read: the named samples were skipped."""


class SkipLog:
    """Counts training samples lost to bad data; warns once per shard (resampling revisits shards)."""

    def __init__(self) -> None:
        self.count = 0
        self._warned: set[str] = set()

    def lost(self, shard: Path, message: str, n: int) -> None:
        self.count += n
        if str(shard) not in self._warned:
            self._warned.add(str(shard))
            warnings.warn(f"{message}; training continues", CorruptDataWarning, stacklevel=2)


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
