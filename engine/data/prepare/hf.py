"""Any Hugging Face dataset with two paired image columns: a Hub id, a local folder of data files (parquet,
imagefolder, ...: whatever `datasets.load_dataset` reads) or a `save_to_disk` folder.

Splits keep their names, except validation/val → valid; a single split becomes `train` unless --split names
it. --limit takes the first N rows of each split; --streaming reads rows as they arrive instead of downloading
and caching the whole dataset first. Images are resized to --size squares (area filter when shrinking).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Iterator, Optional

from iiae.errors import DataError, first_line
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, positive_int
from iiae.data.prepare.images import resize_square

SPLIT_NAMES = {"validation": "valid", "val": "valid"}
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what `save_to_disk` writes at the top of its folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH",
                   help="Hub dataset id, folder of data files, or save_to_disk folder")
    p.add_argument("--config", metavar="NAME", help="the dataset's configuration (subset) name")
    p.add_argument("--split", metavar="SPLIT", help="only this split (default: every split)")
    p.add_argument("--revision", metavar="REV", help="Hub branch, tag or commit")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most the first N rows of each split")
    p.add_argument("--streaming", action="store_true", help="stream rows instead of downloading the whole dataset")
    p.add_argument("--x-column", required=True, metavar="A", help="image column of domain X")
    p.add_argument("--y-column", required=True, metavar="B", help="image column of domain Y")
    p.add_argument("--cls-column", metavar="C", help="optional integer label column")
    p.add_argument("--size", type=image_side, default=256, help="image size in px")


def _datasets():
    """The `datasets` module, or one line saying how to repair the environment (a numpy that pyarrow was not built
    for is the usual cause)."""
    try:
        import datasets
    except Exception as err:  # ImportError, or pyarrow's own errors at import
        raise DataError(f"`iiae prepare hf` needs the `datasets` package, which does not import here "
                        f"({first_line(err)}); repair it with `pip install -U datasets pyarrow 'numpy>=2'`") from None
    return datasets


def _load(args: argparse.Namespace) -> dict:
    """{split name as stored: Dataset or IterableDataset}."""
    datasets = _datasets()
    path = Path(args.dataset)
    saved = path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS)
    try:
        if saved:
            for option in ("config", "revision", "streaming"):
                if getattr(args, option):
                    raise DataError(f"--{option}: {args.dataset} is a save_to_disk folder, read whole; drop the option")
            loaded = datasets.load_from_disk(str(path))
            if args.split is not None:
                loaded = loaded[args.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            loaded = datasets.load_dataset(args.dataset, args.config, split=args.split, revision=args.revision,
                                           streaming=args.streaming)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"--dataset {args.dataset}: cannot load ({first_line(err)})") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return {SPLIT_NAMES.get(name, name): ds for name, ds in loaded.items()}
    name = (args.split or "train").split("[")[0]  # "train[:100]" is the train split
    return {SPLIT_NAMES.get(name, name): loaded}


def _columns(ds, name: str, args: argparse.Namespace) -> None:
    """Refuse missing columns and non-image columns before anything is written (when the schema is known:
    a streamed dataset may not say until its first row)."""
    datasets = _datasets()
    features = ds.features
    if features is None:
        return
    for column in filter(None, (args.x_column, args.y_column, args.cls_column)):
        if column not in features:
            raise DataError(f"--dataset {args.dataset}: split {name} has no column {column!r} "
                            f"(columns: {', '.join(features)})")
    for column in (args.x_column, args.y_column):
        if not isinstance(features[column], datasets.Image):
            raise DataError(f"--dataset {args.dataset}: column {column!r} is not an Image column "
                            f"({type(features[column]).__name__})")


def _pairs(rows: Iterable[dict], args: argparse.Namespace, split: str) -> Iterator[dict]:
    for i, row in enumerate(rows):
        missing = [c for c in (args.x_column, args.y_column, args.cls_column) if c and c not in row]
        if missing:
            raise DataError(f"--dataset {args.dataset}: split {split} row {i} has no column {missing[0]!r}")
        cls = row[args.cls_column] if args.cls_column else None
        yield encode_sample(f"{i:06d}", x=resize_square(row[args.x_column], args.size),
                            y=resize_square(row[args.y_column], args.size), cls=cls, meta={"row": i})


def _rows(ds, limit: Optional[int]) -> tuple[Iterable[dict], Optional[int]]:
    """The rows to convert and how many (None: a stream of unknown length)."""
    if hasattr(ds, "__len__"):
        n = len(ds) if limit is None else min(limit, len(ds))
        return (ds.select(range(n)) if n < len(ds) else ds), n
    return (ds.take(limit) if limit is not None else ds), limit


def convert(args: argparse.Namespace) -> DatasetInfo:
    datasets = _datasets()
    parts = _load(args)
    splits, counts = {}, {}
    for name, ds in parts.items():
        _columns(ds, name, args)
        rows, counts[name] = _rows(ds, args.limit)
        splits[name] = (_pairs(rows, args, name), counts[name])
    command = command_line(args, "--dataset", "--config", "--split", "--revision", "--limit", "--x-column",
                           "--y-column", "--cls-column", "--size") + (" --streaming" if args.streaming else "")
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name=Path(args.dataset).name, kind="image",
        image_size=args.size, domains={"x": args.x_column, "y": args.y_column}, source="hf", command=command,
        provenance={"dataset": args.dataset, "config": args.config, "revision": args.revision,
                    "streaming": args.streaming, "datasets": datasets.__version__, "rows": counts})
