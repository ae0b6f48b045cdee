"""Reading a dataset folder: `dataset.json` (checked, with the command that fixes it), the shards in stored order,
training's tolerant read (skips and counts bad samples) and evaluation's strict, in-order batches.
"""
from __future__ import annotations

import json
import os
import tarfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import ValidationError

from ..config import format_validation_error
from ..errors import DataError, first_line
from .catalogue import prepare_hint
from .format import INFO_FILE, DatasetInfo, sha256_file
from .samples import decode_cls, decode_fitted, has_field


def load_dataset_info(root: str | os.PathLike, verify: bool | tuple[str, ...] = False) -> DatasetInfo:
    """Read `root/dataset.json` and check every listed shard exists; with verify, also its sha256 — of every split
    (True), or only of the named splits (a tuple; "test" covers per-domain "test-<domain>" splits too)."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        state = ("folder does not exist" if not root.exists() else
                 "folder is empty" if root.is_dir() and not any(root.iterdir()) else "no dataset.json")
        raise DataError(f"{info_path}: not found ({state}); create the dataset with `{prepare_hint(root)}`")
    try:
        data = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{info_path}: unreadable ({first_line(err)}); re-create it with `{prepare_hint(root)} --overwrite`") \
            from None
    if not isinstance(data, dict):
        raise DataError(f"{info_path}: expected a JSON object (format, name, kind, splits, ...), got a "
                        f"{type(data).__name__}; re-create it with `{prepare_hint(root)} --overwrite`")
    try:
        info = DatasetInfo.model_validate({**data, "root": root})
    except ValidationError as err:
        command = data.get("command")
        fix = f"{command} --out {root}" if isinstance(command, str) and command else prepare_hint(root)
        raise DataError(f"{format_validation_error(info_path, err)}; re-create it with `{fix} --overwrite`") from None
    for name, split in info.splits.items():
        hashed = verify is True or (bool(verify) and any(name == s or name.startswith(f"{s}-") for s in verify))
        for shard in split.shards:
            path = info.path(shard)
            if not path.is_file():
                raise DataError(f"{path}: shard listed in {info_path} is missing; "
                                f"re-create the folder with `{info.fix_command()}`")
            if hashed and sha256_file(path) != shard.sha256:
                raise DataError(f"{path}: sha256 does not match {info_path} (corrupt or modified); "
                                f"re-create the folder with `{info.fix_command()}`")
    return info


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


# ---------------------------------------------------------------------------------------------- training

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


# ---------------------------------------------------------------------------------------------- evaluation

def iter_eval_batches(info: DatasetInfo, split: str, batch_size: int, *, image_size: Optional[int] = None,
                      domain: Optional[str] = None, limit: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Every sample of `split` exactly once (the first `limit` only, if given), in key order.

    domain=None (paired datasets): `{"x", "y", "cls", "key", "resized"}`; domain="x"|"y" (required for
    per-domain datasets such as Sketchy: x = sketch, y = photo): `{"v", "cls", "key", "resized"}`. Images are
    float [B,3,H,W] in [−1, 1], resized to `image_size` if given; features float32 [B,F]; `cls` −1 where absent;
    `key` a list. An image of another size or mode than the dataset's is converted as in training; `resized`
    counts those so far (the last batch holds the total). Any corrupt, truncated or short shard, or undecodable
    sample, raises DataError naming it.
    """
    import torch  # here: reading dataset.json needs no torch

    from .transforms import to_tensor

    if limit == 0:
        return
    fields = ("x", "y") if domain is None else (domain,)
    names = ("x", "y") if domain is None else ("v",)
    shards = info.split(split, domain).shards
    rows: list[tuple] = []
    seen, previous, resized = 0, "", 0

    def batch() -> dict[str, Any]:
        columns = list(zip(*rows))
        out = {name: to_tensor(list(col), image_size) for name, col in zip(names, columns)}
        out["cls"] = torch.tensor(columns[-2], dtype=torch.long)
        out["key"] = list(columns[-1])
        out["resized"] = resized
        return out

    for shard in shards:
        path = info.path(shard)
        fail = f"re-create the folder with `{info.fix_command()}`"
        got = 0
        try:
            for sample in read_shard(path):
                key = sample["__key__"]
                try:
                    fitted = [decode_fitted(sample, f, info.image_size) for f in fields]
                    label = decode_cls(sample)
                except Exception as err:
                    raise DataError(f"{path}: key {key}: unreadable sample ({err}); {fail}") from None
                values = [value for value, _ in fitted]
                resized += sum(odd is not None for _, odd in fitted)
                if key <= previous:
                    raise DataError(f"{path}: key {key} is out of order (after {previous}); {fail}")
                previous = key
                got += 1
                rows.append((*values, label, key))
                seen += 1
                if len(rows) == batch_size:
                    yield batch()
                    rows = []
                if seen == limit:
                    break
        except CorruptShard as err:
            raise DataError(f"{path}: corrupt shard {err}; {fail}") from None
        if seen == limit:
            break
        if got != shard.count:
            raise DataError(f"{path}: holds {got} samples, dataset.json lists {shard.count}; {fail}")
    if rows:
        yield batch()
