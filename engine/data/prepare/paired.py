"""Any paired images, in one of the two layouts people have (`--src DIR`):

- side by side: each image file holds the X half and the Y half next to each other (pix2pix style;
  `--x-side left|right`, default left);
- two folders: `--x-dir A --y-dir B` (relative to DIR), pairs matched by relative path without the suffix
  (A/cat/1.jpg <-> B/cat/1.png).

Splits: sub-folders train/, valid/ (or val/, validation/) and test/ of DIR when any exists (two folders: DIR/<split>/A
and DIR/<split>/B, or A/<split> and B/<split> as pix2pix's combine script reads them); otherwise every pair is
shuffled with --seed and the first --valid N are valid, the next --test N test, the rest train (recorded in
dataset.json). `--cls-from-folder`: the label of a pair is the folder its file sits in (relative to the split).

Bad files never stop the conversion: an unreadable image, a side-by-side image too narrow to split, or a name
without a partner is reported on one line and counted; images of another mode (grey, RGBA, palette, 16-bit)
are converted and images of any size resized (area filter when shrinking), counted in the summary. A split that
ends up empty is an error, raised before dataset.json is written, so the folder never reads as a dataset.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from iiae.errors import DataError, first_line
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, non_negative_int, relative_folder, source_checksums
from iiae.data.prepare.images import image_files, resize_square

SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
SHOWN = 5  # names quoted per problem in the summary


@dataclass(frozen=True)
class Pair:
    name: str  # relative path without suffix: the key of the pair in reports and `json`
    x: Path
    y: Optional[Path]  # None: side by side in x
    label: Optional[str] = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", type=Path, required=True, metavar="DIR", help="folder of the paired images")
    p.add_argument("--size", type=image_side, default=256, help="image side in px (default 256)")
    p.add_argument("--x-side", choices=("left", "right"), default="left",
                   help="side-by-side files: which half is domain X (default left)")
    p.add_argument("--x-dir", metavar="A", type=relative_folder, help="two folders: the folder of domain X images (relative to --src)")
    p.add_argument("--y-dir", metavar="B", type=relative_folder, help="two folders: the folder of domain Y images, same file names")
    p.add_argument("--valid", type=non_negative_int, default=None, metavar="N",
                   help="without split folders: pairs drawn for valid (default: 10%% of the pairs)")
    p.add_argument("--test", type=non_negative_int, default=None, metavar="N",
                   help="without split folders: pairs drawn for test (default: 10%% of the pairs)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the valid/test draw (default 0)")
    p.add_argument("--cls-from-folder", action="store_true",
                   help="label each pair with the folder its file sits in (classes sorted by name)")
    p.add_argument("--x-name", default="x", help="what domain X holds, for dataset.json and model cards")
    p.add_argument("--y-name", default="y", help="what domain Y holds")
    p.add_argument("--name", help="dataset name in dataset.json (default: the --src folder's name)")


class Report:
    """Per-file problems (printed as they are found, counted) and conversions (counted). `record` is what
    dataset.json keeps: it fills while the shards are written, before the file is."""

    def __init__(self) -> None:
        self.skipped: dict[str, list[str]] = {}
        self.converted: Counter = Counter()
        self.record = {"skipped": Counter(), "skipped_files": self.skipped, "converted": self.converted}

    def skip(self, reason: str, what: str) -> None:
        self.record["skipped"][reason] += 1
        names = self.skipped.setdefault(reason, [])
        if len(names) < 100:
            names.append(what)
        _say(f"skipped {what}: {reason}")

    def summary(self) -> list[str]:
        lines = [f"skipped {n} {reason}" + (f" (first: {', '.join(self.skipped[reason][:SHOWN])})" if n > 1 else "")
                 for reason, n in self.record["skipped"].items()]
        if self.converted:
            lines.append("converted " + ", ".join(f"{n} {what}" for what, n in sorted(self.converted.items())))
        return lines


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # above a running progress bar, not through it


# ---------------------------------------------------------------------------------------------- finding pairs

def _split_roots(folder: Path) -> dict[str, Path]:
    """{our split: sub-folder} for the split folders `folder` has (train/, val/, ...)."""
    roots: dict[str, Path] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        split = SPLIT_FOLDERS.get(child.name.lower())
        if split is not None:
            if split in roots:
                raise DataError(f"--src {folder}: both {roots[split].name}/ and {child.name}/ would be the "
                                f"{split} split; keep one")
            roots[split] = child
    return roots


def _label(path: Path, root: Path) -> Optional[str]:
    parent = path.relative_to(root).parent
    return parent.as_posix() if parent.parts else None


def _side_by_side(root: Path) -> list[Pair]:
    return [Pair(p.relative_to(root).with_suffix("").as_posix(), p, None, _label(p, root)) for p in image_files(root)]


def _two_folders(x_root: Path, y_root: Path, report: Report, src: Path) -> list[Pair]:
    def by_name(root: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in image_files(root):
            name = p.relative_to(root).with_suffix("").as_posix()
            if name in found:
                report.skip("files with a duplicate name (another suffix)", p.relative_to(src).as_posix())
            else:
                found[name] = p
        return found

    xs, ys = by_name(x_root), by_name(y_root)
    for mine, theirs, other in ((xs, ys, y_root), (ys, xs, x_root)):
        for name in sorted(mine.keys() - theirs.keys()):
            report.skip(f"files without a partner in {other.relative_to(src).as_posix()}/",
                        mine[name].relative_to(src).as_posix())
    return [Pair(n, xs[n], ys[n], _label(xs[n], x_root)) for n in sorted(xs.keys() & ys.keys())]


def find_pairs(args: argparse.Namespace, report: Report) -> dict[str, list[Pair]]:
    """{split: pairs} in the layout the options name; raises DataError for a layout that holds no pairs."""
    src = args.src
    if not src.is_dir():
        raise DataError(f"--src {src}: no such folder")
    if (args.x_dir is None) != (args.y_dir is None):
        raise DataError("--x-dir and --y-dir: give both (two folders of matching names) or neither (side by side)")
    if args.x_dir is None:
        roots = _split_roots(src)
        found = {split: _side_by_side(root) for split, root in roots.items()} if roots else {None: _side_by_side(src)}
        layout = f"{src}/{{train,valid,test}}/*.jpg" if roots else f"{src}/*.jpg"
    else:
        outer = {s: r for s, r in _split_roots(src).items() if (r / args.x_dir).is_dir()}
        if outer:  # DIR/<split>/A, DIR/<split>/B
            x_roots = {s: r / args.x_dir for s, r in outer.items()}
            y_roots = {s: r / args.y_dir for s, r in outer.items()}
        else:  # A/<split>, B/<split>, or A and B alone
            x_roots = {s: r for s, r in _split_roots(src / args.x_dir).items()} or {None: src / args.x_dir}
            y_roots = {s: src / args.y_dir / (r.name if s else "") for s, r in x_roots.items()}
        for key, roots in (("--x-dir", x_roots), ("--y-dir", y_roots)):
            for folder in roots.values():
                if not folder.is_dir():
                    raise DataError(f"{key} {args.x_dir if key == '--x-dir' else args.y_dir}: no folder {folder}")
        found = {s: _two_folders(x_roots[s], y_roots[s], report, src) for s in x_roots}
        layout = f"{src}/{args.x_dir}/*.jpg with the same names in {src}/{args.y_dir}/"
    if not any(found.values()):
        raise DataError(f"--src {src}: no image pairs found (expected {layout})")
    if None not in found:
        if args.valid is not None or args.test is not None:
            raise DataError(f"--valid/--test: {src} has split folders ({', '.join(sorted(found))}); the splits come "
                            "from them, so drop these options")
        if "train" not in found:
            raise DataError(f"--src {src}: split folders {', '.join(sorted(found))} but no train/")
        return found
    return _draw_splits(found[None], args)


def _draw_splits(pairs: list[Pair], args: argparse.Namespace) -> dict[str, list[Pair]]:
    """Seeded draw: the first --valid of a permutation are valid, the next --test test, the rest train; each split
    keeps the pairs in name order."""
    n = len(pairs)
    n_valid = args.valid if args.valid is not None else n // 10
    n_test = args.test if args.test is not None else n // 10
    args.valid, args.test = n_valid, n_test  # recorded in the re-create command
    if n_valid + n_test >= n:
        raise DataError(f"--valid {n_valid} --test {n_test}: leaves no training pairs of the {n} found; "
                        "ask for fewer")
    order = np.random.default_rng(args.seed).permutation(n)
    picks = {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test], "train": order[n_valid + n_test:]}
    return {split: [pairs[i] for i in sorted(picks[split])] for split in ("train", "valid", "test") if len(picks[split])}


# ---------------------------------------------------------------------------------------------- reading pairs

def _open(path: Path, src: Path, report: Report):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # damaged, truncated, not an image, too big
        report.skip("unreadable images", f"{path.relative_to(src).as_posix()} ({first_line(err)})")
        return None
    if image.mode != "RGB":
        report.converted[f"{image.mode} images to RGB"] += 1
    return image


def split_halves(image, x_side: str):
    w, h = image.size
    left, right = image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, 2 * (w // 2), h))
    return (left, right) if x_side == "left" else (right, left)


def _samples(pairs: list[Pair], split: str, args: argparse.Namespace, classes: dict[str, int],
             report: Report) -> Iterator[dict]:
    good = 0
    for pair in pairs:
        x = _open(pair.x, args.src, report)
        if x is None:
            continue
        if pair.y is None:
            if x.width < 2:
                report.skip("images too narrow to split into two halves", pair.x.relative_to(args.src).as_posix())
                continue
            x, y = split_halves(x, args.x_side)
        else:
            y = _open(pair.y, args.src, report)
            if y is None:
                continue
        for image in (x, y):
            if image.size != (args.size, args.size):
                report.converted[f"images resized to {args.size} px"] += 1
        meta = {"file": pair.x.relative_to(args.src).as_posix()}
        if pair.y is not None:
            meta["y_file"] = pair.y.relative_to(args.src).as_posix()
        cls = classes[pair.label or ""] if classes else None
        yield encode_sample(f"{good:06d}", x=resize_square(x, args.size), y=resize_square(y, args.size),
                            cls=cls, meta=meta)
        good += 1
    if not good:  # raised before dataset.json exists: the folder stays incomplete, never a dataset without `split`
        raise DataError(f"--src {args.src}: no readable pair in the {split} split ({len(pairs)} found, all skipped)")


def convert(args: argparse.Namespace) -> DatasetInfo:
    report = Report()
    splits = find_pairs(args, report)
    pairs = [p for split in splits.values() for p in split]
    classes: dict[str, int] = {}
    if args.cls_from_folder:
        classes = {name: i for i, name in enumerate(sorted({p.label or "" for p in pairs}))}
        if len(classes) < 2:
            raise DataError(f"--cls-from-folder: the pairs of {args.src} sit in {len(classes)} folder; expected "
                            "one folder per class")
    files = [f for p in pairs for f in (p.x, p.y) if f is not None]
    options = ["--src", "--size", "--x-dir", "--y-dir", "--valid", "--test", "--seed", "--name"]
    options += [o for o, default in (("--x-side", "left"), ("--x-name", "x"), ("--y-name", "y"))
                if getattr(args, o[2:].replace("-", "_")) != default]  # non-defaults only: a readable command
    command = command_line(args, *options) + (" --cls-from-folder" if args.cls_from_folder else "")
    info = write_dataset(
        args.out, {s: (_samples(p, s, args, classes, report), len(p)) for s, p in splits.items()},
        shard_size=args.shard_size, name=args.name or args.src.resolve().name, kind="image", image_size=args.size,
        domains={"x": args.x_name, "y": args.y_name}, classes=sorted(classes, key=classes.get) or None,
        source="paired", command=command, seed=args.seed,
        provenance={"src": str(args.src.resolve()), "layout": "two folders" if args.x_dir else "side by side",
                    "split_from": "folders" if args.valid is None and args.test is None else "seeded draw",
                    "pairs_found": {s: len(p) for s, p in splits.items()}, **report.record,
                    "sources": source_checksums(args.src, files)})
    for line in report.summary():
        print(line)
    return info
