"""A dataset folder on disk: `<split>-%06d.tar` shards and the `dataset.json` that lists them with their sha256.

A folder is complete once `dataset.json` exists: it is written last (atomically), after every shard and its
sha256, so an interrupted `iiae prepare` leaves a folder the loader refuses with the command that fixes it.
What one sample inside a shard holds is `samples.py`.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, ValidationInfo, field_validator,
                      model_validator)

from iiae.errors import DataError

INFO_FILE = "dataset.json"
SHARD_SUFFIX = "-%06d.tar"
# the names SHARD_SUFFIX makes (`<split>-000000.tar`, splits like `test-photo`), and the only ones a dataset.json may
# list: a name reaches URLs and `pipe:` commands, so no shell, URL or option character (`\Z`: `$` allows a "\n")
SHARD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}-\d{6}\.tar\Z")
# the largest image side and feature width a dataset (or a model) may declare: one 2048-px RGB image is 48 MiB as
# float32, so a hostile dataset.json or config.json cannot make the engine allocate gigabytes per sample
MAX_IMAGE_SIZE = 2048
MAX_FEATURE_DIM = 1 << 16
MIN_IMAGE_SIZE = 8  # px: the smallest side the image models downsample (also `iiae prepare --size`)
# labels are 0 .. MAX_CLASSES - 1 (-1: none): a classifier over the labels seen (fidelity) has as many outputs
MAX_CLASSES = 1 << 16


def _one_line(text: str) -> str:
    # dataset.json's words reach one-line errors and terminals: no newline or escape sequence
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("must be one line of printable text (no control characters)")
    return text


def prepare_call(command: str) -> str:
    """dataset.json's `command`, checked: every error's fix quotes it as a command to run, so only what `iiae
    prepare` writes there (ValueError otherwise)."""
    if not isinstance(command, str) or not command.startswith("iiae prepare "):
        raise ValueError("expected the `iiae prepare ...` call that made the folder")
    return _one_line(command)


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
        if not SHARD_RE.match(name):
            raise ValueError("expected a shard name <split>-<6 digits>.tar of letters, digits, '.', '_' and '-' "
                             "(e.g. train-000000.tar)")
        return name


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: NonNegativeInt
    shards: list[ShardInfo]
    # distinct `cls` values (Sketchy: classes per matched batch)
    num_classes: Optional[Annotated[int, Field(ge=0, le=MAX_CLASSES)]] = None

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
    # the side of every image and width of every feature: bounded before any sample or batch is allocated
    image_size: Optional[Annotated[int, Field(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)]] = Field(None,
                                                                                               validate_default=True)
    feature_dim: Optional[Annotated[int, Field(gt=0, le=MAX_FEATURE_DIM)]] = Field(None, validate_default=True)
    domains: dict[Literal["x", "y"], str]
    classes: Optional[list[str]] = Field(None, max_length=MAX_CLASSES)
    splits: dict[str, SplitInfo]
    source: str
    command: str  # the `iiae prepare ...` call without --out: how to re-create the folder
    provenance: dict[str, Any]
    generator: dict[str, str]
    seed: Optional[int] = None
    root: str = Field(".", exclude=True)

    @field_validator("name", "source")
    @classmethod
    def _printable(cls, text: str) -> str:
        return _one_line(text)

    @field_validator("command")
    @classmethod
    def _prepare_call(cls, command: str) -> str:
        return prepare_call(command)

    @field_validator("domains", "splits")
    @classmethod
    def _printable_names(cls, names: dict) -> dict:
        for name in (*names, *(v for v in names.values() if isinstance(v, str))):
            _one_line(name)
        return names

    @field_validator("classes")
    @classmethod
    def _printable_classes(cls, classes: Optional[list[str]]) -> Optional[list[str]]:
        for name in classes or ():
            _one_line(name)
        return classes

    @field_validator("image_size", "feature_dim")
    @classmethod
    def _declared_for_kind(cls, value: Optional[int], info: ValidationInfo) -> Optional[int]:
        needed = {"image": "image_size", "feature": "feature_dim"}.get(info.data.get("kind"))
        if value is None and info.field_name == needed:
            raise ValueError(f"required for kind {info.data['kind']}")
        return value

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
        from iiae.data.location import join

        return join(self.root, INFO_FILE)

    def path(self, shard: ShardInfo) -> str:
        """Where the shard is: a local path or a URL (what `location.open_location` reads)."""
        from iiae.data.location import join

        return join(self.root, shard.file)

    def fix_command(self) -> str:
        return f"{self.command} --out {self.root} --overwrite"
