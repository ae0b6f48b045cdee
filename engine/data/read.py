"""Reading a dataset folder: `dataset.json` (checked, with the command that fixes it), the shards in stored order,
training's tolerant read (skips and counts bad samples) and evaluation's strict, in-order batches.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import ValidationError

from iiae.schema import format_validation_error
from iiae.errors import DataError, first_line
from iiae.data.catalogue import prepare_hint
from iiae.data.format import INFO_FILE, DatasetInfo, prepare_call
from iiae.data.location import join
from iiae.data.samples import decode_cls, decode_fitted, decode_meta, has_field


VERIFY = ("all", "size", "none")  # `data.verify`: sha256 of every shard, byte sizes only, nothing


def _read_info_file(root: str) -> tuple[str, dict]:
    """(location of dataset.json, its JSON object) for a local folder or a URL; DataError with the fix."""
    from iiae.data.location import INFO_BYTES, TooLarge, is_remote, local_folder, read_bytes

    info_path = join(root, INFO_FILE)
    if is_remote(root):
        try:
            text = read_bytes(info_path)  # capped and timed: a server's endless or trickling reply ends
        except TooLarge:
            raise DataError(f"{info_path}: larger than {INFO_BYTES:,} bytes; expected a dataset.json made by "
                            f"`iiae prepare` served at {root}") from None
        except Exception as err:  # curl's exit status, a failed command, a refused connection
            raise DataError(f"{info_path}: cannot read ({first_line(err)}); expected a dataset served at "
                            f"{root} (made by `iiae prepare`)") from None
        fix = f"serve a dataset made by `iiae prepare` at {root}"
    else:
        folder = local_folder(root)
        if not (folder / INFO_FILE).is_file():
            state = ("folder does not exist" if not folder.exists() else
                     "folder is empty" if folder.is_dir() and not any(folder.iterdir()) else "no dataset.json")
            raise DataError(f"{info_path}: not found ({state}); create the dataset with `{prepare_hint(folder)}`")
        fix = f"re-create it with `{prepare_hint(folder)} --overwrite`"
        try:
            with open(folder / INFO_FILE, "rb") as f:
                text = f.read(INFO_BYTES + 1)
        except OSError as err:
            raise DataError(f"{info_path}: unreadable ({first_line(err)}); {fix}") from None
        if len(text) > INFO_BYTES:
            raise DataError(f"{info_path}: larger than {INFO_BYTES:,} bytes, not a dataset.json made by "
                            f"`iiae prepare`; {fix}")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DataError(f"{info_path}: unreadable ({first_line(err)}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"{info_path}: expected a JSON object (format, name, kind, splits, ...), got a "
                        f"{type(data).__name__}; {fix}")
    return info_path, data


def load_dataset_info(root: str | os.PathLike, verify: bool | str | tuple[str, ...] = False) -> DatasetInfo:
    """Read `dataset.json` of the dataset at `root` (a folder or a URL: `iiae.data.location`) and check its
    shards: verify=False or "none" — local shards exist; "size" — each shard exists and has its recorded byte size
    (HTTP: a HEAD request; commands: not checked); True or "all" — also its sha256 (read whole, remote ones too);
    a tuple — sha256 of the named splits only ("test" covers per-domain "test-<domain>" splits too)."""
    from iiae.data.location import is_remote, size_of

    root = str(root)
    info_path, data = _read_info_file(root)
    remote = is_remote(root)
    try:
        info = DatasetInfo.model_validate({**data, "root": root})
    except ValidationError as err:
        command = data.get("command")
        try:  # quoted as the fix only if it is what `iiae prepare` writes there
            prepare_call(command)
        except ValueError:
            command = None
        fix = f"{command} --out {root}" if command else prepare_hint(Path(root))
        raise DataError(f"{format_validation_error(info_path, err)}; re-create it with `{fix} --overwrite`") from None
    if verify not in (True, False) and not isinstance(verify, tuple) and verify not in VERIFY:
        raise ValueError(f"verify must be a bool, a tuple of splits or one of {VERIFY}, got {verify!r}")
    fix = f"re-create the folder with `{info.fix_command()}`"
    for name, split in info.splits.items():
        hashed = verify in (True, "all") or (isinstance(verify, tuple) and any(
            name == s or name.startswith(f"{s}-") for s in verify))
        sized = hashed or verify == "size"
        for shard in split.shards:
            path = info.path(shard)
            if not (remote or sized) and not Path(path).is_file():
                raise DataError(f"{path}: shard listed in {info_path} is missing; {fix}")
            if sized:
                try:
                    size = size_of(path)
                except OSError as err:
                    raise DataError(f"{path}: shard listed in {info_path} cannot be reached ({first_line(err)}); "
                                    f"{fix}") from None
                if size is not None and shard.size is not None and size != shard.size:
                    raise DataError(f"{path}: {size:,} bytes, {info_path} lists {shard.size:,} (truncated or "
                                    f"modified); {fix}")
            if hashed and _sha256(path, shard.size) != shard.sha256:
                raise DataError(f"{path}: sha256 does not match {info_path} (corrupt or modified); {fix}")
    return info


def _sha256(location: str, size: Optional[int] = None) -> str:
    from iiae.data.location import open_location, shard_seconds

    digest = hashlib.sha256()
    try:
        stream = open_location(location, limit=size, seconds=shard_seconds(size))
        with stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise DataError(f"{location}: cannot be read to check its sha256 ({first_line(err)})") from None
    return digest.hexdigest()


class CorruptShard(Exception):
    """A tar-level or transfer failure; `key` names the last good sample (the one being read is dropped: it may
    lack members)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"at key {key}: {reason}")
        self.key, self.reason = key, reason


def _reraise(err: Exception) -> bool:
    raise err


def read_shard(location: str | os.PathLike, *, count: Optional[int] = None,
               size: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Samples of one shard (a local path or a URL) in stored order, read by webdataset's tar reader:
    `{"__key__": k, "x.png": bytes, ...}`. `count` and `size` (what dataset.json lists) bound the read: more
    samples or bytes raise CorruptShard, as does any tar or transfer failure (a remote read also has a waiting
    budget, `location.shard_seconds`)."""
    import webdataset as wds

    from iiae.data.location import TooLarge, open_location, shard_seconds

    last, yielded = None, 0
    try:
        stream = open_location(str(location), limit=size, seconds=shard_seconds(size))
    except OSError as err:
        raise CorruptShard("(first record)", first_line(err)) from None
    try:
        members = wds.tariterators.tar_file_expander([{"stream": stream, "url": str(location)}], handler=_reraise)
        for sample in wds.tariterators.group_by_keys(members, handler=_reraise):
            if count is not None and yielded == count:  # an endless tar stops here, one sample past the count
                raise CorruptShard(f"after {last}" if last else "(first record)",
                                   f"holds more than the {count} samples dataset.json lists")
            record = {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}
            last = record["__key__"]
            yielded += 1
            yield record
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        # webdataset appends the stream and URL to the exception's args: the first one is the reason
        reason = str(err.args[0]) if err.args and str(err.args[0]) else type(err).__name__
        reason = reason.removesuffix(f" @ {stream}")
        if isinstance(err, TooLarge):
            reason = f"more than the {size:,} bytes dataset.json lists"
        raise CorruptShard(f"after {last}" if last else "(first record)", reason) from None
    finally:
        try:
            stream.close()
        except Exception:  # a failed pipe reports its exit status again on close
            pass


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


def read_valid_samples(path: Path, expected: int, fields: tuple[str, ...], log: SkipLog,
                       size: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Training read: the samples that hold all `fields`, at most `expected` (the count listed; `size`: the bytes
    listed, when known). Whatever the shard lacks against `expected` (corrupt, truncated, missing members) is
    logged once, after its last good sample."""
    good = 0
    problem = last = None
    try:
        for sample in read_shard(path, count=expected, size=size):
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
                      domain: Optional[str] = None, limit: Optional[int] = None, meta: bool = False
                      ) -> Iterator[dict[str, Any]]:
    """Every sample of `split` exactly once (the first `limit` only, if given), in key order.

    domain=None (paired datasets): `{"x", "y", "cls", "key", "resized"}`; domain="x"|"y" (required for
    per-domain datasets such as Sketchy: x = sketch, y = photo): `{"v", "cls", "key", "resized"}`. Images are
    float [B,3,H,W] in [−1, 1], resized to `image_size` if given; features float32 [B,F]; `cls` −1 where absent;
    `key` a list; with meta=True also `meta`, the samples' `json` dicts ({} where absent). An image of another
    size or mode than the dataset's is converted as in training; `resized` counts those so far (the last batch
    holds the total). Any corrupt, truncated or short shard, or undecodable sample, raises DataError naming it.
    """
    import torch  # here: reading dataset.json needs no torch

    from iiae.data.transforms import to_tensor

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
        if meta:
            out["meta"] = list(columns[-3])
        out["resized"] = resized
        return out

    for shard in shards:
        path = info.path(shard)
        fail = f"re-create the folder with `{info.fix_command()}`"
        got = 0
        try:
            for sample in read_shard(path, count=shard.count, size=shard.size):
                key = sample["__key__"]
                try:
                    fitted = [decode_fitted(sample, f, info.image_size) for f in fields]
                    label = decode_cls(sample)
                    extra = (decode_meta(sample),) if meta else ()
                except Exception as err:
                    raise DataError(f"{path}: key {key}: unreadable sample ({err}); {fail}") from None
                values = [value for value, _ in fitted]
                resized += sum(odd is not None for _, odd in fitted)
                if key <= previous:
                    raise DataError(f"{path}: key {key} is out of order (after {previous}); {fail}")
                previous = key
                got += 1
                rows.append((*values, *extra, label, key))
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
