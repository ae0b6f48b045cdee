"""The endless training stream of paired samples for one (rank, DataLoader worker).

Shards are drawn with replacement, in proportion to their sample counts (uniform over samples; webdataset's
ResampledShards draws shards uniformly, which over-samples a split's short last shard), from the worker's share
of the split; then a shuffle buffer, decode, batch. Every random choice is seeded from (recipe seed, epoch, rank,
worker), so the stream is a pure function of those: a resumed run re-reads it and drops the batches already
trained on instead of restoring any state.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.read import SkipLog, read_valid_samples
from iiae.data.samples import decode_cls, decode_fitted
from iiae.data.transforms import jitter, symmetry, to_tensor

FIELDS = ("x", "y")

# `data.cache`: decoded samples of every shard read cleanly so far, kept for the life of the process (the loader
# runs in the main process then). Later epochs skip tar parsing and image decoding, which on a small CPU machine
# cost a sixth of a 32-px MNIST training step. Keyed by shard path, then sample key.
_DECODED: dict[str, dict[str, tuple[np.ndarray, np.ndarray, int]]] = {}


def seed_of(*parts: Any) -> int:
    """A 64-bit seed from any parts (negative seeds included), the same in every process and Python run."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


class PairStream(IterableDataset):
    """Yields batches `{"x", "y", "cls", "skipped", "resized", "worker"}` forever; the loader cuts the epoch."""

    def __init__(self, info: DatasetInfo, *, seed: int, epoch: int, rank: int, world_size: int, batch_size: int,
                 shuffle_buffer: int, skip_batches: int, image_size: Optional[int], cache: bool = False,
                 symmetries: int = 1, jitter: int = 0):
        super().__init__()
        self.root, self.fix_command = info.root, info.fix_command()
        # an empty shard has nothing to draw (and a share of only empty ones would have zero weights)
        self.shards = [s for s in info.split("train").shards if s.count]
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.batch_size, self.shuffle_buffer, self.skip = batch_size, shuffle_buffer, skip_batches
        self.image_size = image_size
        self.fit_size = info.image_size  # each image is first brought to the dataset's own size
        self.cache = cache
        self.symmetries = symmetries  # transforms.AUGMENTATIONS: 1 = as stored
        self.jitter = jitter  # data.jitter: 0 = as stored
        self.locations = {s.file: info.path(s) for s in self.shards}  # local paths or URLs
        self.counts = {self.locations[s.file]: s.count for s in self.shards}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        worker = get_worker_info()
        workers, physical = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        # The DataLoader takes batch i from physical worker i % workers. Physical worker j plays logical worker
        # (j + skip) % workers, so the round robin starts at the worker that made batch `skip` of the full
        # stream; each logical worker drops its own batches among the first `skip`.
        logical = (physical + self.skip) % workers
        own_skip = max(0, -(-(self.skip - logical) // workers))
        # split by node and worker: disjoint shares when there are enough shards, re-dealt every epoch (the
        # same permutation on every rank, so the shares stay disjoint); otherwise everyone draws from all
        group, groups = self.rank * workers + logical, self.world_size * workers
        shards = self.shards
        if len(shards) >= groups:
            order = list(range(len(shards)))
            random.Random(seed_of(self.seed, self.epoch, "deal")).shuffle(order)
            shards = [shards[i] for i in order[group::groups]]
        stream_id = (self.seed, self.epoch, self.rank, logical)

        log = SkipLog()
        samples = self._samples(shards, random.Random(seed_of(*stream_id, "shards")), log)
        if self.shuffle_buffer > 1:
            shuffle = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                                  rng=random.Random(seed_of(*stream_id, "shuffle")))
            samples = shuffle(samples)
        augment = np.random.default_rng(seed_of(*stream_id, "augment")) if self.symmetries > 1 else None
        shift = np.random.default_rng(seed_of(*stream_id, "jitter")) if self.jitter else None
        for index, batch in enumerate(self._batches(self._decoded(samples, log))):
            # drawn for the skipped batches too: a resumed stream gives every later pair the same transforms
            ks = augment.integers(self.symmetries, size=len(batch)) if augment is not None else None
            offsets = shift.integers(self.jitter + 1, size=(len(batch), 2)) if shift is not None else None
            if index >= own_skip:
                xs, ys, labels = zip(*batch)
                if ks is not None:
                    xs, ys = ([symmetry(v, k) for v, k in zip(values, ks)] for values in (xs, ys))
                x, y = to_tensor(list(xs), self.image_size), to_tensor(list(ys), self.image_size)
                if offsets is not None:  # the same offsets for both images: the pair stays a pair
                    x, y = jitter(x, offsets, self.jitter), jitter(y, offsets, self.jitter)
                yield {"x": x, "y": y,
                       "cls": torch.tensor(labels, dtype=torch.long), "skipped": log.count,
                       "resized": log.resized, "worker": logical}

    def _samples(self, share, rng: random.Random, log: SkipLog) -> Iterator[dict[str, Any]]:
        dead: set[str] = set()  # shards that gave no sample at all: not drawn again
        candidates = share
        while True:
            candidates = [s for s in candidates if s.file not in dead]
            if not candidates:  # this worker's share is unreadable: draw from the whole split instead
                candidates = [s for s in self.shards if s.file not in dead]
                if not candidates:  # nothing left to read: stop instead of spinning forever
                    raise DataError(f"{self.root}: none of the {len(self.shards)} training shards is readable; "
                                    f"re-create the folder with `{self.fix_command}`")
            shard = rng.choices(candidates, weights=[s.count for s in candidates])[0]
            path = self.locations[shard.file]
            cached = _DECODED.get(path) if self.cache else None
            if cached is not None:  # the same samples in the same order as a fresh read; already decoded
                for key, record in cached.items():
                    yield {"__key__": key, "__shard__": shard.file, "__decoded__": record}
                continue
            good = 0
            for sample in read_valid_samples(path, shard.count, FIELDS, log, size=shard.size):
                good += 1
                sample["__shard__"] = shard.file
                yield sample
            if good == 0:
                dead.add(shard.file)

    def _decoded(self, samples, log: SkipLog) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        filling: dict[str, dict] = {}  # shards being read for the cache; dropped on the first bad sample
        for sample in samples:
            if "__decoded__" in sample:
                yield sample["__decoded__"]
                continue
            shard = self.locations[sample["__shard__"]]
            try:
                (x, odd_x), (y, odd_y) = (decode_fitted(sample, f, self.fit_size) for f in FIELDS)
                record = x, y, decode_cls(sample)
            except Exception as err:  # garbage bytes inside an intact tar (a decompression bomb included)
                log.lost(shard, f"{shard}: key {sample['__key__']}: undecodable ({err}); skipped 1 sample", 1)
                filling[str(shard)] = None
                continue
            for field, odd in (("x", odd_x), ("y", odd_y)):
                if odd is not None:
                    log.converted(shard, f"{shard}: key {sample['__key__']}: {field} is a {odd} image, not "
                                         f"{self.fit_size}×{self.fit_size} RGB: converted")
                    filling[str(shard)] = None  # not cached, so every epoch counts it as the uncached stream does
            if self.cache:
                self._remember(filling, shard, sample["__key__"], record)
            yield record

    def _remember(self, filling: dict, shard, key: str, record: tuple) -> None:
        """Cache a shard once every one of its samples has decoded (a damaged shard keeps its disk path,
        and its warnings)."""
        name = str(shard)
        if name in _DECODED or filling.get(name, {}) is None:
            return
        records = filling.setdefault(name, {})
        records[key] = record
        if len(records) == self.counts[name]:  # complete: key order restored, as a fresh read yields them
            _DECODED[name] = dict(sorted(filling.pop(name).items()))

    def _batches(self, items) -> Iterator[list]:
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
