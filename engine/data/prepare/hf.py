"""Any Hugging Face dataset with two paired image columns (a Hub name or a `save_to_disk` folder).

Splits keep their names, except validation/val → valid; a single Dataset becomes `train`. Images are resized
to --size squares (area filter when shrinking).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

from ...config import IMAGE_SIZES
from ...errors import DataError, first_line
from ..format import DatasetInfo
from ..samples import encode_sample
from ..write import write_dataset
from . import command_line
from .images import resize_square

SPLIT_NAMES = {"validation": "valid", "val": "valid"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH", help="Hub dataset id or save_to_disk folder")
    p.add_argument("--x-column", required=True, metavar="A", help="image column of domain X")
    p.add_argument("--y-column", required=True, metavar="B", help="image column of domain Y")
    p.add_argument("--cls-column", metavar="C", help="optional integer label column")
    p.add_argument("--size", type=int, choices=IMAGE_SIZES, default=256, help="image size in px")


def _load(name: str):
    import datasets

    try:
        if Path(name).is_dir():
            return datasets.load_from_disk(name)
        return datasets.load_dataset(name)
    except Exception as err:
        raise DataError(f"--dataset {name}: cannot load ({first_line(err)})") \
            from None


def _pairs(ds, args: argparse.Namespace) -> Iterator[dict]:
    for i, row in enumerate(ds):
        cls = row[args.cls_column] if args.cls_column else None
        yield encode_sample(f"{i:06d}", x=resize_square(row[args.x_column], args.size),
                            y=resize_square(row[args.y_column], args.size), cls=cls, meta={"row": i})


def convert(args: argparse.Namespace) -> DatasetInfo:
    import datasets

    loaded = _load(args.dataset)
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    splits = {}
    for name, ds in parts.items():
        for column in filter(None, (args.x_column, args.y_column, args.cls_column)):
            if column not in ds.column_names:
                raise DataError(f"--dataset {args.dataset}: split {name} has no column {column!r} "
                                f"(columns: {', '.join(ds.column_names)})")
        for column in (args.x_column, args.y_column):
            if not isinstance(ds.features[column], datasets.Image):
                raise DataError(f"--dataset {args.dataset}: column {column!r} is not an Image column")
        splits[SPLIT_NAMES.get(name, name)] = (_pairs(ds, args), len(ds))
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name=Path(args.dataset).name, kind="image",
        image_size=args.size, domains={"x": args.x_column, "y": args.y_column}, source="hf",
        command=command_line(args, "--dataset", "--x-column", "--y-column", "--cls-column", "--size"),
        provenance={"dataset": args.dataset, "datasets": datasets.__version__,
                    "rows": {n: len(d) for n, d in parts.items()}})
