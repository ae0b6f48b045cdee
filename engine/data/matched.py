"""Class-matched training batches (Sketchy): per step one random sketch and one random photo of every training
class, in a fixed class order, drawn with replacement.

The features are small (N × 512 float32), so both domains are read from the shards once and kept in memory.
Each step's draw is seeded from (recipe seed, epoch, rank, step): skipping to a step costs nothing.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.read import SkipLog, read_valid_samples
from iiae.data.samples import decode_cls, decode_field
from iiae.data.stream import seed_of

_cache: dict[tuple, tuple] = {}  # the last materialised split: a new epoch's loader reuses it


def _read_domain(info: DatasetInfo, domain: str, log: SkipLog) -> tuple[np.ndarray, np.ndarray]:
    """All features of the train split of one domain, grouped by class: (values [N, F], labels [N], sorted)."""
    values, labels = [], []
    for shard in info.split("train", domain).shards:
        path = info.path(shard)
        for sample in read_valid_samples(path, shard.count, (domain,), log, size=shard.size):
            try:
                values.append(decode_field(sample, domain))
                labels.append(decode_cls(sample))
            except Exception as err:
                log.lost(path, f"{path}: key {sample['__key__']}: undecodable ({err}); skipped 1 sample", 1)
    if not values:
        raise DataError(f"{info.root}: no readable train samples for domain {info.domains[domain]}; "
                        f"re-create the folder with `{info.fix_command()}`")
    labels_arr = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels_arr, kind="stable")
    return np.stack(values)[order], labels_arr[order]


def _materialise(info: DatasetInfo) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    key = (str(info.root), tuple((s.file, s.sha256) for split in info.splits.values() for s in split.shards))
    if key not in _cache:
        log = SkipLog()
        domains = {d: _read_domain(info, d, log) for d in ("x", "y")}
        _cache.clear()
        _cache[key] = (domains, log.count)
    return _cache[key]


class ClassMatchedBatches:
    """Yields `{"x", "y", "cls", "skipped", "resized"}` for steps first_step .. steps-1 of one (epoch, rank)."""

    def __init__(self, info: DatasetInfo, *, seed: int, epoch: int, rank: int, first_step: int, steps: int):
        domains, self.skipped = _materialise(info)
        (self.xv, xl), (self.yv, yl) = domains["x"], domains["y"]
        # classes with both a sketch and a photo, in label order; each domain's samples of class c lie in
        # [start[c], start[c] + count[c]) of its label-sorted arrays
        self.classes = np.intersect1d(xl, yl)
        self.x_start, self.x_count = self._ranges(xl)
        self.y_start, self.y_count = self._ranges(yl)
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.first_step, self.steps = first_step, steps

    def _ranges(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = np.searchsorted(labels, self.classes, side="left")
        return start, np.searchsorted(labels, self.classes, side="right") - start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        labels = torch.from_numpy(self.classes)
        for step in range(self.first_step, self.steps):
            rng = np.random.default_rng(seed_of(self.seed, self.epoch, self.rank, step))
            xi = self.x_start + rng.integers(0, self.x_count)
            yi = self.y_start + rng.integers(0, self.y_count)
            yield {"x": torch.from_numpy(self.xv[xi]), "y": torch.from_numpy(self.yv[yi]), "cls": labels.clone(),
                   "skipped": self.skipped, "resized": 0}  # features: nothing to resize
