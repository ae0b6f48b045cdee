"""3D Cars: `car_XXX_mesh.mat` renders with `im` of shape (128, 128, 3, 24 azimuths, 4 elevations).

Per car and elevation: X = azimuth 0, Y = azimuth 1..23 → 92 pairs per car. Car ids <= 191 are train
(176 cars, 16,192 pairs), 192-199 test (7 cars, 644 pairs); stored at --size px (default 128, as released;
area-downscaled, the loader resizes again to a recipe's other size). `json`: car, elevation (0-3), azimuth (1-23).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from iiae.errors import DataError
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, source_checksums
from iiae.data.prepare.images import resize_square

SHAPE = (128, 128, 3, 24, 4)
LAST_TRAIN_ID = 191
PAIRS_PER_CAR = (SHAPE[3] - 1) * SHAPE[4]
_NAME = re.compile(r"car_(\d+)_mesh\.mat$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", type=Path, required=True, metavar="DIR", help="folder of car_XXX_mesh.mat files")
    p.add_argument("--size", type=image_side, default=SHAPE[0], help="image size in px (default 128)")


def _renders(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        im = loadmat(path, variable_names=["im"]).get("im")
    except Exception as err:  # scipy raises several types for damaged files
        raise DataError(f"{path}: unreadable .mat file ({err})") from None
    if im is None or im.shape != SHAPE:
        raise DataError(f"{path}: expected an `im` array of shape {SHAPE}, got "
                        f"{None if im is None else im.shape}")
    if im.dtype != np.uint8:  # float renders in [0, 1]
        im = np.clip(np.rint(im * 255.0), 0, 255).astype(np.uint8)
    return im


def _pairs(cars: list[tuple[int, Path]], size: int) -> Iterator[dict]:
    from PIL import Image

    def render(im: np.ndarray, azimuth: int, elevation: int) -> np.ndarray:
        return resize_square(Image.fromarray(np.ascontiguousarray(im[:, :, :, azimuth, elevation])), size)

    key = 0
    for car, path in cars:
        im = _renders(path)
        for elevation in range(SHAPE[4]):
            front = render(im, 0, elevation)
            for azimuth in range(1, SHAPE[3]):
                yield encode_sample(f"{key:06d}", x=front, y=render(im, azimuth, elevation),
                                    cls=car, meta={"car": car, "elevation": elevation, "azimuth": azimuth})
                key += 1


def convert(args: argparse.Namespace) -> DatasetInfo:
    cars = sorted((int(m.group(1)), p) for p in args.src.glob("car_*_mesh.mat") if (m := _NAME.search(p.name)))
    if not cars:
        raise DataError(f"--src {args.src}: no car_XXX_mesh.mat files")
    groups = {"train": [c for c in cars if c[0] <= LAST_TRAIN_ID], "test": [c for c in cars if c[0] > LAST_TRAIN_ID]}
    splits = {name: (_pairs(group, args.size), PAIRS_PER_CAR * len(group)) for name, group in groups.items()}
    return write_dataset(
        args.out, splits, shard_size=args.shard_size, name="cars", kind="image", image_size=args.size,
        domains={"x": "azimuth0", "y": "azimuth"}, source="cars", command=command_line(args, "--src", "--size"),
        provenance={"src": str(args.src.resolve()), "cars": {n: [c for c, _ in g] for n, g in groups.items()},
                    "sources": source_checksums(args.src, [p for _, p in cars])})
