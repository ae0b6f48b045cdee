"""What the training loop and evaluation call: per-rank training batches and in-order evaluation batches.

Not for `accelerator.prepare`: the train loader already splits the data by rank, and preparing it would shard it
a second time.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import torch

from ..config import Recipe
from ..errors import DataError
from .samples import decode_cls, decode_field
from .shards import CorruptShard, DatasetInfo, read_shard
from .stream import to_tensor


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
    return max(1, split.count // (per_step * world_size))


class TrainLoader:
    """One data epoch of one rank: exactly `len(self)` batches `{"x", "y", "cls", "skipped"}` on CPU.

    `batch["skipped"]`: training samples skipped so far in this epoch on this rank (corrupt, truncated or
    undecodable data), summed over the DataLoader workers.
    """

    def __init__(self, batches: Iterable[dict[str, Any]], length: int):
        self._batches, self._length = batches, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        per_worker: dict[int, int] = {}
        for batch in self._batches:
            per_worker[batch.pop("worker", 0)] = batch["skipped"]
            batch["skipped"] = sum(per_worker.values())
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
    if recipe.data.class_matched:
        from .matched import ClassMatchedBatches

        return TrainLoader(ClassMatchedBatches(info, seed=recipe.seed, epoch=epoch, rank=rank,
                                               first_step=skip_batches, steps=total), length)
    if length == 0:
        return TrainLoader([], 0)
    import webdataset as wds

    from .stream import PairStream

    stream = PairStream(info, seed=recipe.seed, epoch=epoch, rank=rank, world_size=world_size,
                        batch_size=recipe.data.batch_size, shuffle_buffer=recipe.data.shuffle_buffer,
                        skip_batches=skip_batches, cache=recipe.data.cache,
                        image_size=recipe.model.image_size if info.kind == "image" else None)
    # a private generator: creating the iterator must not draw from the global torch RNG, which the training
    # step's dropout uses (a resumed run creates a loader where the uninterrupted run did not)
    generator = torch.Generator().manual_seed(recipe.seed + 7919 * epoch + 104729 * rank)
    loader = wds.WebLoader(stream, batch_size=None, num_workers=recipe.data.num_workers, shuffle=False,
                           generator=generator)
    # with_epoch on the loader, after batching: on the dataset it would count per worker
    return TrainLoader(loader.with_epoch(length), length)


def iter_eval_batches(info: DatasetInfo, split: str, batch_size: int, *, image_size: Optional[int] = None,
                      domain: Optional[str] = None, limit: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """Every sample of `split` exactly once (the first `limit` only, if given), in key order.

    domain=None (paired datasets): `{"x", "y", "cls", "key"}`; domain="x"|"y" (required for per-domain
    datasets such as Sketchy: x = sketch, y = photo): `{"v", "cls", "key"}`. Images are float [B,3,H,W] in
    [−1, 1], resized to `image_size` if given; features float32 [B,F]; `cls` −1 where absent; `key` a list.
    Any corrupt, truncated or short shard raises DataError naming it.
    """
    if limit == 0:
        return
    fields = ("x", "y") if domain is None else (domain,)
    names = ("x", "y") if domain is None else ("v",)
    shards = info.split(split, domain).shards
    rows: list[tuple] = []
    seen, previous = 0, ""

    def batch() -> dict[str, Any]:
        columns = list(zip(*rows))
        out = {name: to_tensor(list(col), image_size) for name, col in zip(names, columns)}
        out["cls"] = torch.tensor(columns[-2], dtype=torch.long)
        out["key"] = list(columns[-1])
        return out

    for shard in shards:
        path = info.path(shard)
        fail = f"re-create the folder with `{info.fix_command()}`"
        got = 0
        try:
            for sample in read_shard(path):
                key = sample["__key__"]
                try:
                    values = [decode_field(sample, f) for f in fields]
                    label = decode_cls(sample)
                except Exception as err:
                    raise DataError(f"{path}: key {key}: unreadable sample ({err}); {fail}") from None
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

