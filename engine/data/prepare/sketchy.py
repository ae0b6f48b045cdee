"""Sketchy (zero-shot SBIR) from SketchyVGG features: `{train,test}_{sketch,image}_features.npy` ([N, 512])
with `{train,test}_{sketch,image}_paths.npy` (".../<class>/<file>": the class is the parent folder).

Per-domain shards (`train-sketch-*`, `train-photo-*`, `test-sketch-*`, `test-photo-*`): x = sketch, y = photo;
`cls` indexes the sorted class names of all four files; `json` keeps the path.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import numpy as np

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line

DOMAINS = {"x": "sketch", "y": "photo"}
FILE_STEM = {"sketch": "sketch", "photo": "image"}  # SketchyVGG calls photos "image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", type=Path, required=True, metavar="DIR", help="folder of the SketchyVGG .npy files")


def _load_array(src: Path, path: Path, expected: str, cast: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):  # an object array: it loads only through pickle, which can run any code
            raise DataError(f"{path}: an object array (loading it would unpickle it); expected {expected} — "
                            f"convert it once, if you trust the file: `p = {str(path)!r}; "
                            f"np.save(p, np.load(p, allow_pickle=True).astype({cast}))`") from None
        raise DataError(f"--src {src}: unreadable {path.name} ({err})") from None
    except Exception as err:
        raise DataError(f"--src {src}: unreadable {path.name} ({err})") from None


def class_of(path: str) -> str:
    """The class of a sample: the folder its file is in (as the official code, `split('/')[-2]`), so absolute or
    deeper paths name the same class as `<class>/<file>`."""
    return path.replace("\\", "/").split("/")[-2]


def _load(src: Path, split: str, domain: str) -> tuple[np.ndarray, list[str]]:
    stem = f"{split}_{FILE_STEM[domain]}"
    feats, paths = src / f"{stem}_features.npy", src / f"{stem}_paths.npy"
    for path in (feats, paths):
        if not path.is_file():
            raise DataError(f"--src {src}: {path.name} is missing (SketchyVGG layout: "
                            f"{{train,test}}_{{sketch,image}}_{{features,paths}}.npy)")
    values = _load_array(src, feats, "float32 features", "'float32'")
    names_arr = _load_array(src, paths, "'<class>/<file>' strings", "str")
    if names_arr.dtype.kind not in "US":
        raise DataError(f"{paths}: expected an array of '<class>/<file>' strings, got dtype {names_arr.dtype}")
    names = [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in names_arr.reshape(-1).tolist()]
    flat = next((n for n in names if "/" not in n.replace("\\", "/")), None)
    if flat is not None:
        raise DataError(f"{paths}: path {flat!r} has no class folder; expected '<class>/<file>' strings")
    if values.ndim != 2 or len(values) != len(names):
        raise DataError(f"{feats}: expected [N, D] features for the {len(names)} paths of {paths.name}, "
                        f"got shape {values.shape}")
    return values, names


def _samples(values: np.ndarray, names: list[str], field: str, classes: dict[str, int]) -> Iterator[dict]:
    for i, (value, name) in enumerate(zip(values, names)):
        yield encode_sample(f"{i:06d}", **{field: value.astype(np.float32)}, cls=classes[class_of(name)],
                            meta={"path": name})


def convert(args: argparse.Namespace) -> DatasetInfo:
    raw = {(split, domain): _load(args.src, split, DOMAINS[domain]) for split in ("train", "test")
           for domain in ("x", "y")}
    dims = {values.shape[1] for values, _ in raw.values()}
    if len(dims) != 1:
        raise DataError(f"--src {args.src}: feature sizes differ between files ({sorted(dims)})")
    names = sorted({class_of(n) for _, paths in raw.values() for n in paths})
    index = {name: i for i, name in enumerate(names)}
    splits = {f"{split}-{DOMAINS[domain]}": (_samples(values, paths, domain, index), len(paths))
              for (split, domain), (values, paths) in raw.items()}
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name="sketchy", kind="feature", layout="per-domain",
        feature_dim=dims.pop(), domains=DOMAINS, classes=names, source="sketchy",
        command=command_line(args, "--src"),
        provenance={"src": str(args.src.resolve()), "counts": {s: n for s, (_, n) in splits.items()}})
