"""`iiae prepare SOURCE --out DIR ...`: convert a raw dataset into shards + dataset.json (one module per source).

Each source module has `add_arguments(parser)` and `convert(args) -> DatasetInfo`; this module adds the shared
options, refuses a non-empty --out (unless --overwrite) before any work, and prints the summary. A module may also
name, in STANDALONE, a sibling module whose `standalone(args) -> int | None` is a mode that writes no dataset
(mnist-cdcb --compare); it runs first, and for such a source --out is checked here rather than by argparse.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import time
from pathlib import Path, PurePath

from iiae.data.catalogue import SOURCES
from iiae.data.format import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

DEFAULT_SHARD_SIZE = 1000


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value




def image_side(text: str) -> int:
    """`--size`: any side the image models can read (they check that their stride-2 stages fit it), up to what a
    dataset may declare (one image of that side is already 48 MiB as float32)."""
    value = _integer(text)
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected an image side of {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px, "
                                         f"got {text}")
    return value


def relative_folder(text: str) -> str:
    """A folder named relative to --src that stays inside it (no absolute path, no `..`)."""
    path = PurePath(text)
    if not text.strip() or path.is_absolute() or ".." in path.parts:
        raise argparse.ArgumentTypeError(f"expected a folder inside --src, named relative to it (e.g. A), got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for source in SOURCES:
        p = sub.add_parser(source.name, help=source.help, description=source.help)
        module = importlib.import_module(f".{source.module}", __name__)
        module.add_arguments(p)
        p.add_argument("--out", type=Path, required=not hasattr(module, "STANDALONE"),
                       help="output folder for the shards and dataset.json")
        p.add_argument("--overwrite", action="store_true", help="replace the dataset in a non-empty --out")
        p.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="N",
                       help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
        p.set_defaults(_converter=source.module)


def command_line(args: argparse.Namespace, *options: str) -> str:
    """The `iiae prepare` call that re-creates this dataset (without --out): stored in dataset.json."""
    words = ["iiae", "prepare", args.source]
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            words += [option, str(value)]
    if args.shard_size != DEFAULT_SHARD_SIZE:
        words += ["--shard-size", str(args.shard_size)]
    return shlex.join(words)  # a folder name with a space or a quote stays one word when the command is re-run


def source_checksums(src: Path, files: list[Path]) -> dict:
    """What dataset.json records of the raw files read: their count and one sha256 over a `sha256sum`-style
    manifest of them ("<sha256>  <path relative to src>" lines, sorted by path), so that a dataset can be traced
    to its exact sources, and a changed or missing source file shows."""
    import hashlib

    from iiae.data.format import sha256_file

    lines = sorted(f"{sha256_file(p)}  {p.relative_to(src).as_posix()}\n" for p in files)
    return {"files": len(lines), "manifest_sha256": hashlib.sha256("".join(lines).encode()).hexdigest()}


def run(args: argparse.Namespace) -> int:
    from iiae.data.write import prepare_output

    from iiae.errors import UserError

    module = importlib.import_module(f".{args._converter}", __name__)
    standalone = getattr(module, "STANDALONE", None)
    code = importlib.import_module(f".{standalone}", __name__).standalone(args) if standalone else None
    if code is not None:
        return code
    if args.out is None:  # what argparse says for the other sources
        raise UserError(f"prepare {args.source}: the following arguments are required: --out")
    start = time.perf_counter()
    prepare_output(args.out, args.overwrite)
    info = module.convert(args)
    elapsed = time.perf_counter() - start
    print(f"prepared {info.name} ({info.kind}, {info.layout}) into {args.out} in {elapsed:.1f} s")
    for name, split in info.splits.items():
        size = sum(s.size for s in split.shards)
        print(f"  {name:<12} {split.count:>7,} samples  {len(split.shards):>4} shards  {size / 1e6:8.1f} MB")
    shape = f"{info.image_size} px" if info.kind == "image" else f"{info.feature_dim}-d features"
    print(f"  x = {info.domains['x']}, y = {info.domains['y']}, {shape}; re-create: {info.command} --out {args.out}")
    return 0
