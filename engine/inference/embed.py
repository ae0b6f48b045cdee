"""`iiae embed RUN --input DIR --domain x|y --out FILE`: the codes of image files (or `.npy` vectors for feature
models), saved with their file names for `iiae retrieve` or any search index.

FILE.safetensors: tensor `codes` [N, D] float32; metadata `files` (a JSON list, relative to `root`), `root`,
`domain`, `which`, `model`, `model_sha256`. FILE.npz: arrays `codes` and `files`, and `meta` (a JSON string of
the rest).

An embedding file is never trusted (it may come from anyone): `load_embeddings` checks all of it (codes 2-D,
floating point, non-empty and finite; one relative file name per row, none absolute or with `..`; domain,
which and the model's weights hash; no key missing, none unknown), and refuses anything else in one line.
`model_sha256` (`weights_sha256`) names the weights that made the codes: `iiae retrieve` refuses a gallery of
another model even when its codes have the same width. `root` is where the files were when embedded: information
only, never a path the engine opens.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import torch

from iiae.errors import UserError, shown

BATCH = 64
FORMATS = (".safetensors", ".npz")
META_KEYS = ("root", "domain", "which", "model", "model_sha256")  # beside codes and files
DOMAINS, WHICH = ("x", "y"), ("shared", "exclusive")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Embeddings:
    codes: torch.Tensor  # [N, D] float32: flattened posterior means
    files: list[str]  # relative to root, in the order of codes
    root: str
    domain: str  # "x" | "y": which encoder
    which: str  # "shared" (r means) | "exclusive" (q means)
    model: str  # the run, model folder or Hub id that computed them
    model_sha256: str  # weights_sha256 of that model

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if k not in ("codes", "files")}


def weights_sha256(model) -> str:
    """The model's identity: sha256 over its state_dict, each tensor's name, dtype, shape and bytes in sorted key
    order (the same on any device). Computed once per command: it reads every weight."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_finite(codes: torch.Tensor, what: str) -> None:
    """One line when codes hold NaN or inf: JSON has no such numbers, and every distance to them is meaningless."""
    if not torch.isfinite(codes).all():
        rows = f"{int((~torch.isfinite(codes)).any(1).sum())} row(s) of" if codes.dim() == 2 else "some"
        raise UserError(f"{what}: {rows} codes hold NaN or inf values; expected finite codes (damaged weights "
                        "or inputs?)")


def relative_name(name: Any) -> bool:
    """A file name an embedding file may record: a relative path that stays inside its folder (no absolute path,
    drive, `..`, `.` or empty part, NUL), whichever separator it uses."""
    if not isinstance(name, str) or not name or "\0" in name or PureWindowsPath(name).drive:
        return False
    parts = name.replace("\\", "/").split("/")
    return all(part not in ("", ".", "..") for part in parts)


def embed_files(model, files: list[Path], domain: str, which: str = "shared", progress: bool = True) -> torch.Tensor:
    """Flattened means [N, D] (CPU, float32) of r^domain (which="shared") or q(z^domain | domain) ("exclusive") for
    image files (resized as training data was, with a notice) or `.npy` vectors (feature models)."""
    from iiae.data.image_io import load_images
    from iiae.evaluation.codes import encode_batches
    from iiae.inference.image_files import load_features, notice

    image = len(model.input_shape) == 3
    changed: Counter = Counter()

    def batches():
        for start in range(0, len(files), BATCH):
            chunk = files[start:start + BATCH]
            yield {domain: load_images(chunk, model.cfg.image_size, changed) if image
                   else load_features(chunk, model.cfg.feature_dim)}

    (codes,), _, _ = encode_batches(model, batches(), [(domain, which)], progress=progress, total=len(files),
                                    desc=f"embedding {domain}", unit="file")
    if image:
        notice(changed, len(files), model.cfg.image_size)
    return codes.cpu()


def _checked(path: Path, codes: Any, files: Any, meta: Any) -> Embeddings:
    """Embeddings from what a file holds, after checking every part of it; one line naming the first fault."""
    def bad(what: str):
        raise UserError(f"{path}: not a valid `iiae embed` file: {what}")

    if not isinstance(meta, dict):
        bad(f"its metadata is {type(meta).__name__}, expected a JSON object")
    missing, unknown = [k for k in META_KEYS if k not in meta], sorted(set(meta) - set(META_KEYS))
    if missing:
        bad(f"no {', '.join(missing)} (another program's file, or one of an older iiae: embed again with `iiae embed`)")
    if unknown:
        bad(f"unknown key(s) {shown(', '.join(map(str, unknown)))}")
    for key in META_KEYS:
        if not isinstance(meta[key], str):
            bad(f"{key} is a {type(meta[key]).__name__}, expected a string")
    if meta["domain"] not in DOMAINS:
        bad(f"domain {shown(meta['domain'], 20)}, expected x or y")
    if meta["which"] not in WHICH:
        bad(f"which {shown(meta['which'], 20)}, expected shared or exclusive")
    if not _SHA256.fullmatch(meta["model_sha256"]):
        bad("model_sha256 is not a sha256 (64 hex digits)")
    if not isinstance(codes, torch.Tensor) or not codes.is_floating_point():
        bad(f"codes are {getattr(codes, 'dtype', type(codes).__name__)}, expected floating-point numbers")
    if codes.dim() != 2 or 0 in codes.shape:
        bad(f"codes of shape {tuple(codes.shape)}, expected [N, D] with N, D ≥ 1")
    check_finite(codes, str(path))
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        bad("files is not a list of file names")
    if len(files) != codes.shape[0]:
        bad(f"{len(files)} file name(s) for {codes.shape[0]} rows of codes; expected one per row")
    for row, name in enumerate(files):
        if not relative_name(name):
            bad(f"file name {shown(repr(name), 60)} (row {row}) is not a relative name inside the embedded folder")
    return Embeddings(codes=codes.float(), files=files, **meta)


def save_embeddings(e: Embeddings, path: Path) -> None:
    """Written through a temporary file and a rename (`iiae.safe_files`), after the checks `load_embeddings` makes:
    a file this writes is always one it reads back."""
    import numpy as np

    from iiae.inference.image_files import make_folder
    from iiae.safe_files import atomic_path

    e = _checked(path, e.codes, list(e.files), e.meta())
    make_folder(path.parent, "--out")
    with atomic_path(path, f"a {path.suffix} file") as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"codes": e.codes.contiguous()}, str(tmp), metadata={**e.meta(), "files": json.dumps(e.files)})
        else:
            np.savez(tmp, codes=e.codes.numpy(), files=np.asarray(e.files, dtype=str),
                     meta=np.asarray(json.dumps(e.meta())))


def _read_safetensors(path: Path) -> tuple[Any, Any, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), dict(f.metadata() or {})
        if keys != ["codes"]:
            held = shown(", ".join(keys)) or "none"
            raise UserError(f"{path}: not a valid `iiae embed` file: holds tensor(s) {held}; expected codes only")
        codes = f.get_tensor("codes")
    if "files" not in meta:
        raise UserError(f"{path}: not a valid `iiae embed` file: no files")
    try:
        files = json.loads(meta.pop("files"))
    except json.JSONDecodeError:
        raise UserError(f"{path}: not a valid `iiae embed` file: files is not a JSON list of file names") from None
    return codes, files, meta


def _read_npz(path: Path) -> tuple[Any, Any, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as f:  # an object array (pickle) is refused, never unpickled
        if sorted(f.files) != ["codes", "files", "meta"]:
            held = shown(", ".join(sorted(f.files))) or "nothing"
            raise UserError(f"{path}: not a valid `iiae embed` file: holds {held}; expected codes, files and meta")
        codes, files, meta = f["codes"], f["files"], f["meta"]
    if codes.dtype.kind != "f":
        raise UserError(f"{path}: not a valid `iiae embed` file: codes are {codes.dtype}, expected floating-point "
                        "numbers")
    if files.ndim != 1 or files.dtype.kind != "U":
        raise UserError(f"{path}: not a valid `iiae embed` file: files is not a list of file names")
    if meta.ndim != 0 or meta.dtype.kind != "U":
        raise UserError(f"{path}: not a valid `iiae embed` file: meta is not a JSON string")
    try:
        meta = json.loads(str(meta))
    except json.JSONDecodeError:
        raise UserError(f"{path}: not a valid `iiae embed` file: meta is not JSON") from None
    # native float32 whatever the file's byte order or width (torch.from_numpy refuses big-endian arrays)
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32)), [str(s) for s in files], meta


def load_embeddings(path: Path) -> Embeddings:
    """An `iiae embed` output, every part checked (module doc); one-line UserError for anything else."""
    if path.suffix not in FORMATS:
        raise UserError(f"{path}: expected an `iiae embed` file ({' or '.join(FORMATS)})")
    try:
        codes, files, meta = (_read_safetensors if path.suffix == ".safetensors" else _read_npz)(path)
    except UserError:
        raise
    except Exception as err:  # damaged file, another program's file, a pickled array
        from iiae.errors import first_line

        raise UserError(f"{path}: not an `iiae embed` file ({type(err).__name__}: {first_line(err)})") from None
    return _checked(path, codes, files, meta)


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from iiae.models.loading import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--input", required=True, metavar="IMG_OR_DIR", help="image file or folder (any depth)")
    p.add_argument("--domain", required=True, choices=("x", "y"), help="which domain the files are")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help=f"output file ({' or '.join(FORMATS)})")
    p.add_argument("--which", choices=("shared", "exclusive"), default="shared",
                   help="shared codes (r means: cross-domain search, default) or exclusive (q means)")


def run(args: argparse.Namespace) -> int:
    from iiae.inference.image_files import (
        find_inputs, model_folders, one_file, plain_output, refuse_overwrite, stop_on_sigterm,
    )
    from iiae.models import input_kind
    from iiae.device import resolve_device
    from iiae.models.loading import load_model

    if args.out.suffix not in FORMATS:
        raise UserError(f"--out {args.out}: expected a {' or '.join(FORMATS)} file name")
    plain_output(args.out, "--out", f"a {args.out.suffix} file (or nothing)")
    model = load_model(args.run, resolve_device(args.device))
    root, files = find_inputs(args.input, input_kind(model.cfg))
    refuse_overwrite("--out", args.out, files=files, folders=model_folders(args.run))  # before any model work
    codes = embed_files(model, files, args.domain, args.which)
    check_finite(codes, f"{args.run}: the {args.which} codes of {args.input}")
    e = Embeddings(codes, [f.relative_to(root).as_posix() for f in files], str(root.resolve()), args.domain,
                   args.which, str(args.run), weights_sha256(model))
    with stop_on_sigterm(f"{args.out} is written whole or not at all"), one_file():
        save_embeddings(e, args.out)
    print(f"wrote {args.out}: {codes.shape[0]} {args.which} codes of {codes.shape[1]} values ({args.domain})")
    return 0
