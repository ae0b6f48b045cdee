"""pix2pix Facades / Maps: side-by-side JPEG pairs (left X, right Y), halves area-resized to --size.

Facades: train/ 400, val/ 100 (our valid), test/ 106; X = photo, Y = labels.
Maps: train/ 1,096, val/ 1,098 (our test, as the paper); valid = train images 1-800; X = satellite, Y = map.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, source_checksums
from iiae.data.prepare.images import resize_square, source_order

MAPS_VALID_LAST = 800  # maps valid = train images numbered 1..800
LAYOUT = {  # our split -> (pix2pix folder, keep file?)
    "facades": {"train": ("train", None), "valid": ("val", None), "test": ("test", None)},
    "maps": {"train": ("train", None), "valid": ("train", lambda p: int(p.stem) <= MAPS_VALID_LAST),
             "test": ("val", None)},
}
DOMAINS = {"facades": {"x": "photo", "y": "labels"}, "maps": {"x": "satellite", "y": "map"}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", choices=sorted(LAYOUT), required=True, help="which pix2pix dataset")
    p.add_argument("--src", type=Path, required=True, metavar="DIR",
                   help="the extracted pix2pix folder holding train/ val/ (and test/ for facades)")
    p.add_argument("--size", type=image_side, default=256, help="image size in px")


def _files(src: Path, folder: str) -> list[Path]:
    found = [p for p in (src / folder).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not found:
        raise DataError(f"--src {src}: no images in {src / folder}/ (expected the pix2pix layout "
                        f"DIR/{{train,val,test}}/N.jpg)")
    return source_order(found)


def _pairs(src: Path, files: list[Path], size: int) -> Iterator[dict]:
    from PIL import Image

    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image.load()
        except OSError as err:
            raise DataError(f"{path}: unreadable image ({err})") from None
        w, h = image.size
        x, y = image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, 2 * (w // 2), h))
        yield encode_sample(f"{i:06d}", x=resize_square(x, size), y=resize_square(y, size),
                            meta={"file": path.relative_to(src).as_posix()})


def convert(args: argparse.Namespace) -> DatasetInfo:
    splits, read = {}, set()
    for split, (folder, keep) in LAYOUT[args.name].items():
        files = _files(args.src, folder)
        if keep is not None:
            files = [p for p in files if p.stem.isdigit() and keep(p)]
        splits[split] = (_pairs(args.src, files, args.size), len(files))
        read.update(files)
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name=args.name, kind="image", image_size=args.size,
        domains=DOMAINS[args.name], source="pix2pix", command=command_line(args, "--name", "--src", "--size"),
        provenance={"src": str(args.src.resolve()), "files": {s: n for s, (_, n) in splits.items()},
                    "sources": source_checksums(args.src, sorted(read))})
