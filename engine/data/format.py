"""A dataset folder on disk: `<split>-%06d.tar` shards and the `dataset.json` that lists them with their sha256.

A folder is complete once `dataset.json` exists: it is written last (atomically), after every shard and its
sha256, so an interrupted `iiae prepare` leaves a folder the loader refuses with the command that fixes it.
What one sample inside a shard holds is `samples.py`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from ..errors import DataError

INFO_FILE = "dataset.json"
SHARD_SUFFIX = "-%06d.tar"
SHARD_RE = re.compile(r".+-\d{6}\.tar$")  # the names SHARD_SUFFIX makes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    count: NonNegativeInt
    sha256: str  # sha256_file of the shard
    size: Optional[NonNegativeInt] = None  # bytes (datasets written before this field lack it)

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
    """What `dataset.json` holds, plus `root`: where it was loaded from (not stored): a folder or a URL
    (`iiae.data.location`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal[1] = 1
    name: str  # iiae.data.catalogue knows the paper's datasets by it
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
    root: str = Field(".", exclude=True)

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
            raise DataError(f"{self.info_file}: no shards for split '{name}' (it has: {have}); "
                            f"re-create the folder with `{self.fix_command()}` or pick another split")
        if found.count == 0:  # nothing to draw: the training stream would never yield a batch
            raise DataError(f"{self.info_file}: split '{name}' is empty (0 samples in "
                            f"{len(found.shards)} shards); re-create the folder with `{self.fix_command()}` "
                            f"or pick another split")
        return found

    @field_validator("root", mode="before")
    @classmethod
    def _as_text(cls, root: Any) -> str:
        return str(root)  # a Path from callers; URLs stay URLs

    @property
    def info_file(self) -> str:
        from .location import join

        return join(self.root, INFO_FILE)

    def path(self, shard: ShardInfo) -> str:
        """Where the shard is: a local path or a URL (what `location.open_location` reads)."""
        from .location import join

        return join(self.root, shard.file)

    def fix_command(self) -> str:
        return f"{self.command} --out {self.root} --overwrite"
