"""pix2pix Facades / Maps: side-by-side JPEG pairs (left X, right Y), halves area-resized to --size.

Facades: train/ 400, val/ 100 (our valid), test/ 106; X = photo, Y = labels. A copy without val/ (the CycleGAN
distribution's) takes valid from train 1-100, as the official code does for Maps.
Maps: train/ 1,096, val/ 1,098 (our test, as the paper); valid = train images 1-800; X = satellite, Y = map.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, source_checksums
from iiae.data.prepare.images import resize_square, source_order


def _numbered_up_to(last: int) -> Callable[[Path], bool]:
    return lambda p: p.stem.isdigit() and int(p.stem) <= last


# our split -> (pix2pix folder, keep file?), the first layout whose folders all exist; a validation split taken
# from training images is trained on (the official code's Maps valid/ is a copy of train 1-800)
LAYOUTS = {
    "facades": ({"train": ("train", None), "valid": ("val", None), "test": ("test", None)},
                {"train": ("train", None), "valid": ("train", _numbered_up_to(100)), "test": ("test", None)}),
    "maps": ({"train": ("train", None), "valid": ("train", _numbered_up_to(800)), "test": ("val", None)},),
}
RELEASE = {  # images per folder of the pix2pix download, numbered 1..N
    "facades": {"train": 400, "val": 100, "test": 106},
    "maps": {"train": 1096, "val": 1098},
}
DOMAINS = {"facades": {"x": "photo", "y": "labels"}, "maps": {"x": "satellite", "y": "map"}}


def layout(name: str, src: Path) -> dict:
    """The split layout of `src`: the first of LAYOUTS[name] whose folders all exist (the full one first)."""
    for candidate in LAYOUTS[name]:
        if all((src / folder).is_dir() for folder, _ in candidate.values()):
            return candidate
    needed = " or ".join("/ ".join(sorted({f for f, _ in c.values()})) + "/" for c in LAYOUTS[name])
    raise DataError(f"--src {src}: expected the pix2pix {name} folders {needed} (DIR/<folder>/N.jpg)")


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def release_gaps(name: str, folder: str, files: list[Path]) -> Optional[str]:
    """None when `files` are exactly the release's 1..N of `folder`, else one line saying what differs."""
    expected = RELEASE[name].get(folder)
    if expected is None:
        return None
    have = {int(p.stem) for p in files if p.stem.isdigit()}
    missing = sorted(set(range(1, expected + 1)) - have)
    extra = len(files) - len(have & set(range(1, expected + 1)))
    if not missing and not extra:
        return None
    parts = [f"missing {len(missing)}: {_ranges(missing)[:120]}"] if missing else []
    parts += [f"{extra} not numbered 1-{expected}"] if extra else []
    return (f"{folder}/ holds {len(files)} images, the pix2pix {name} release {expected} ({'; '.join(parts)}); "
            f"results will not compare with the paper's")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", choices=sorted(LAYOUTS), required=True, help="which pix2pix dataset")
    p.add_argument("--src", type=Path, required=True, metavar="DIR",
                   help="the extracted pix2pix folder: maps train/ val/; facades train/ val/ test/ or train/ test/")
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
    chosen = layout(args.name, args.src)
    for split, (folder, keep) in chosen.items():
        files = _files(args.src, folder)
        if keep is None and (gaps := release_gaps(args.name, folder, files)):
            print(f"notice: --src {args.src}: {gaps}", file=sys.stderr)
        if keep is not None:
            files = [p for p in files if keep(p)]
        splits[split] = (_pairs(args.src, files, args.size), len(files))
        read.update(files)
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name=args.name, kind="image", image_size=args.size,
        domains=DOMAINS[args.name], source="pix2pix", command=command_line(args, "--name", "--src", "--size"),
        provenance={"src": str(args.src.resolve()), "files": {s: n for s, (_, n) in splits.items()},
                    "valid_from_train": chosen["valid"][0] == "train",
                    "sources": source_checksums(args.src, sorted(read))})
