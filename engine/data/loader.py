"""What the training loop calls: batches per epoch (checked against the split and memory), per-rank batches.

Not for `accelerator.prepare`: the train loader already splits the data by rank, and preparing it would shard it
a second time.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import torch

from iiae.config import Recipe
from iiae.errors import DataError
from iiae.data.format import DatasetInfo


def _check_layout(recipe: Recipe, info: DatasetInfo) -> None:
    per_domain = info.layout == "per-domain"
    if recipe.data.class_matched != per_domain:
        raise DataError(
            f"{info.root}: a {info.layout} dataset ({info.domains['x']}/{info.domains['y']}) trains with "
            f"data.class_matched: {str(per_domain).lower()}")


def train_batches_per_epoch(recipe: Recipe, info: DatasetInfo, world_size: int) -> int:
    """Batches each rank takes per data epoch: recipe.data.batches_per_epoch, else train samples // global batch
    (class-matched: train sketches // (classes × ranks)); at least 1."""
    _check_layout(recipe, info)
    if recipe.data.batches_per_epoch is not None:
        return recipe.data.batches_per_epoch
    if recipe.data.class_matched:
        split = info.split("train", "x")
        per_step = split.num_classes or 1
    else:
        split = info.split("train")
        per_step = recipe.data.batch_size
        _check_batch_fits(recipe, info, split.count, world_size)
    return max(1, split.count // (per_step * world_size))


def _check_batch_fits(recipe: Recipe, info: DatasetInfo, count: int, world_size: int) -> None:
    """Refuse, before anything is allocated, a batch larger than the training split or than half this machine's
    memory (a float32 x and y per sample, twice: the batch being built and the one in use)."""
    batch = recipe.data.batch_size
    if batch * world_size > count:
        raise DataError(f"data.batch_size: {batch} × {world_size} rank(s) exceeds the {count} samples of the train "
                        f"split of {info.root}; expected at most {max(1, count // world_size)}")
    side = recipe.model.image_size if info.kind == "image" else 1
    per_sample = 2 * 4 * (recipe.model.channels * side * side if info.kind == "image" else recipe.model.feature_dim)
    need, have = 2 * batch * per_sample, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have // 2:
        raise DataError(f"data.batch_size: {batch} needs about {need / 2**30:.1f} GiB for its batches, more than half "
                        f"of this machine's {have / 2**30:.1f} GiB; expected a smaller batch")


class TrainLoader:
    """One data epoch of one rank: exactly `len(self)` batches `{"x", "y", "cls", "skipped", "resized"}` on CPU.

    `batch["skipped"]`: training samples skipped so far in this epoch on this rank (corrupt, truncated or
    undecodable data); `batch["resized"]`: images so far that had another size or mode than the dataset's and
    were converted. Both summed over the DataLoader workers.
    """

    def __init__(self, batches: Iterable[dict[str, Any]], length: int):
        self._batches, self._length = batches, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        per_worker: dict[str, dict[int, int]] = {"skipped": {}, "resized": {}}
        for batch in self._batches:
            worker = batch.pop("worker", 0)
            for name, counts in per_worker.items():
                counts[worker] = batch.get(name, 0)
                batch[name] = sum(counts.values())
            yield batch


def make_train_loader(recipe: Recipe, info: DatasetInfo, *, rank: int, world_size: int, epoch: int,
                      skip_batches: int = 0) -> TrainLoader:
    """The training batches of data epoch `epoch` on `rank`, minus the first `skip_batches` (a resumed run gets
    bitwise the batches the uninterrupted run would have had next). Same recipe, epoch, rank and num_workers →
    the same stream."""
    total = train_batches_per_epoch(recipe, info, world_size)
    if not 0 <= skip_batches <= total:
        raise ValueError(f"skip_batches={skip_batches} is outside 0..{total} (batches per epoch)")
    length = total - skip_batches
    for key, off in (("augment", "none"), ("jitter", 0)):  # image transforms
        value = getattr(recipe.data, key)
        if value != off and info.kind != "image":
            raise DataError(f"data.{key}: {value} needs an image dataset; {info.root} holds {info.kind} samples "
                            f"(expected data.{key}: {off})")
    if recipe.data.class_matched:
        from iiae.data.matched import ClassMatchedBatches

        return TrainLoader(ClassMatchedBatches(info, seed=recipe.seed, epoch=epoch, rank=rank,
                                               first_step=skip_batches, steps=total), length)
    if length == 0:
        return TrainLoader([], 0)
    import webdataset as wds

    from iiae.data.stream import PairStream
    from iiae.data.transforms import AUGMENTATIONS

    stream = PairStream(info, seed=recipe.seed, epoch=epoch, rank=rank, world_size=world_size,
                        batch_size=recipe.data.batch_size, shuffle_buffer=recipe.data.shuffle_buffer,
                        skip_batches=skip_batches, cache=recipe.data.cache,
                        symmetries=AUGMENTATIONS[recipe.data.augment], jitter=recipe.data.jitter,
                        image_size=recipe.model.image_size if info.kind == "image" else None)
    # a private generator: creating the iterator must not draw from the global torch RNG, which the training
    # step's dropout uses (a resumed run creates a loader where the uninterrupted run did not)
    generator = torch.Generator().manual_seed(recipe.seed + 7919 * epoch + 104729 * rank)
    loader = wds.WebLoader(stream, batch_size=None, num_workers=recipe.data.num_workers, shuffle=False,
                           generator=generator)
    # with_epoch on the loader, after batching: on the dataset it would count per worker
    return TrainLoader(loader.with_epoch(length), length)
