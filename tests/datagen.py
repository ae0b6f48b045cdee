"""Small raw datasets in the real formats, written by the tests themselves (nothing is downloaded).

- MNIST: the four IDX files (full 60,000 / 10,000 counts, so the valid split exists), made of a few dozen
  digit-like images rendered with Pillow's font, shifted.
- pix2pix: side-by-side JPEGs in train/ val/ test/.
- 3D Cars: car_XXX_mesh.mat with `im` of shape (128, 128, 3, 24, 4); plane colours encode (car, azimuth,
  elevation) so tests can check which render went where.
- SketchyVGG: {train,test}_{sketch,image}_{features,paths}.npy.
- Hugging Face: a dataset with two Image columns, saved with save_to_disk.
- Paired images (`iiae prepare paired`): side-by-side files or two folders of shape / silhouette pairs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from iiae.data.synthetic import (MNIST_FILES, digit_templates, fake_mnist, paired_shape,  # noqa: F401
                                 write_mnist_idx, write_paired)

def write_pix2pix(folder: Path, files: dict[str, Iterable[int]], half: int = 48, seed: int = 0) -> None:
    """folder/<split>/<n>.jpg: side-by-side pairs (left X: a smooth colour field; right Y: blocky labels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:half, 0:half] / half
    for split, numbers in files.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            c = rng.integers(0, 256, size=(2, 3))
            photo = (c[0] * xx[..., None] + c[1] * yy[..., None]) / 2
            labels = np.kron(rng.integers(0, 256, size=(4, 4, 3)), np.ones((half // 4, half // 4, 1)))
            pair = np.concatenate([photo, labels], axis=1).astype(np.uint8)
            Image.fromarray(pair).save(folder / split / f"{n}.jpg", quality=90)


def car_plane(car: int, azimuth: int, elevation: int) -> tuple[int, int, int]:
    """The RGB colour of render (car, azimuth, elevation) in write_cars files."""
    return car, 10 * azimuth, 60 * elevation


def write_cars(folder: Path, ids: Iterable[int]) -> None:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for car in ids:
        im = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
        for azimuth in range(24):
            for elevation in range(4):
                im[:, :, :, azimuth, elevation] = car_plane(car, azimuth, elevation)
        savemat(folder / f"car_{car:03d}_mesh.mat", {"im": im})


def write_sketchy(folder: Path, train_classes: dict[str, tuple[int, int]], test_classes: dict[str, tuple[int, int]],
                  dim: int = 512, seed: int = 0, prefix: str = "") -> dict[tuple[str, str], tuple[np.ndarray, list[str]]]:
    """classes: name → (sketches, photos); paths `{prefix}<class>/<file>`. Returns {(split, "sketch"|"image"):
    (features, paths)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for kind, which in (("sketch", 0), ("image", 1)):
            paths = [f"{prefix}{name}/{kind}_{i}.png" for name, counts in classes.items() for i in range(counts[which])]
            feats = rng.standard_normal((len(paths), dim)).astype(np.float32)
            np.save(folder / f"{split}_{kind}_features.npy", feats)
            np.save(folder / f"{split}_{kind}_paths.npy", np.asarray(paths))
            written[(split, kind)] = (feats, paths)
    return written


def write_hf_pairs(folder: Path, splits: Optional[dict[str, int]] = None, size: int = 40, seed: int = 0) -> None:
    """A datasets.Dataset (splits=None: 6 rows) or DatasetDict with Image columns `a`, `b` and int `label`."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)

    def make(n: int) -> datasets.Dataset:
        a = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
        b = [Image.fromarray(rng.integers(0, 256, (size, size // 2, 3), dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features({"a": datasets.Image(), "b": datasets.Image(), "label": datasets.Value("int64")})
        return datasets.Dataset.from_dict({"a": a, "b": b, "label": list(range(n))}, features=features)

    data = make(6) if splits is None else datasets.DatasetDict({k: make(n) for k, n in splits.items()})
    data.save_to_disk(str(folder))


def prepare(*argv: str) -> int:
    """`iiae prepare ...` in this process; returns the exit code."""
    from iiae.cli import main

    return main(["prepare", *map(str, argv)])


def prepare_debug_data(out: Path, mnist_dir: Path, *, pairs: int = 64, size: int = 32,
                       shard_size: Optional[int] = None) -> Path:
    """MNIST-CDCB shards through the real converter from fake IDX files (written to mnist_dir if absent), rendered
    `area` (a linear blend: X and Y share one mask, which the pixel-relation tests read back)."""
    if not (mnist_dir / MNIST_FILES[0]).exists():
        write_mnist_idx(mnist_dir)
    extra = ["--shard-size", str(shard_size)] if shard_size else []
    code = prepare("mnist-cdcb", "--mnist", mnist_dir, "--size", size, "--limit", pairs, "--render", "area",
                   "--out", out, *extra)
    assert code == 0, f"prepare mnist-cdcb failed with exit code {code}"
    return out


def samples(info, split):
    """Every stored sample of a stored split, decoded: [(key, {"x"/"y": ..., "cls": int, "json": dict})]."""
    import json

    from iiae.data import read_shard
    from iiae.data.samples import decode_cls, decode_field

    out = []
    for shard in info.splits[split].shards:
        for s in read_shard(info.path(shard)):
            row = {f: decode_field(s, f) for f in ("x", "y") if f"{f}.png" in s or f"{f}.npy" in s}
            row["cls"] = decode_cls(s)
            row["json"] = json.loads(s["json"])
            out.append((s["__key__"], row))
    return out
