"""`iiae embed RUN --input DIR --domain x|y --out FILE`: the codes of image files (or `.npy` vectors for feature
models), saved with their file names for `iiae retrieve` or any search index.

FILE.safetensors: tensor `codes` [N, D] float32; metadata `files` (a JSON list, relative to `root`), `root`,
`domain`, `which`, `model`. FILE.npz: arrays `codes` and `files`, and `meta` (a JSON string of the rest).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import UserError

BATCH = 64
FORMATS = (".safetensors", ".npz")


@dataclass
class Embeddings:
    codes: torch.Tensor  # [N, D] float32: flattened posterior means
    files: list[str]  # relative to root, in the order of codes
    root: str
    domain: str  # "x" | "y": which encoder
    which: str  # "shared" (r means) | "exclusive" (q means)
    model: str  # the run, model folder or Hub id that computed them

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if k not in ("codes", "files")}


@torch.no_grad()
def embed_files(model, files: list[Path], domain: str, which: str = "shared", progress: bool = True) -> torch.Tensor:
    """Flattened means [N, D] (CPU, float32) of r^domain (which="shared") or q(z^domain | domain) ("exclusive") for
    image files (resized as training data was, with a notice) or `.npy` vectors (feature models)."""
    from .image_files import load_features, load_images, notice
    from .progress import progress_bar

    encode = {"shared": model.encode_shared, "exclusive": model.encode_exclusive}[which]
    device, image = next(model.parameters()).device, len(model.input_shape) == 3
    changed: Counter = Counter()
    out = []
    with progress_bar(total=len(files), unit="file", desc=f"embedding {domain}", disable=not progress) as bar:
        for start in range(0, len(files), BATCH):
            chunk = files[start:start + BATCH]
            v = load_images(chunk, model.cfg.image_size, changed) if image else load_features(chunk, model.cfg.feature_dim)
            out.append(encode(v.to(device), domain).flatten(1).float().cpu())
            bar.update(len(chunk))
    if image:
        notice(changed, len(files), model.cfg.image_size)
    return torch.cat(out)


def save_embeddings(e: Embeddings, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"codes": e.codes.contiguous()}, str(path), metadata={**e.meta(), "files": json.dumps(e.files)})
    else:
        import numpy as np

        np.savez(path, codes=e.codes.numpy(), files=np.asarray(e.files), meta=np.asarray(json.dumps(e.meta())))


def load_embeddings(path: Path) -> Embeddings:
    """An `iiae embed` output; one-line UserError for anything else."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                codes = f.get_tensor("codes")
            files = json.loads(meta.pop("files"))
        elif path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as f:
                codes, files, meta = torch.from_numpy(f["codes"]), [str(s) for s in f["files"]], json.loads(str(f["meta"]))
        else:
            raise UserError(f"{path}: expected an `iiae embed` file ({' or '.join(FORMATS)})")
        return Embeddings(codes=codes.float(), files=files, **meta)
    except UserError:
        raise
    except Exception as err:  # wrong keys, damaged file, another program's file
        raise UserError(f"{path}: not an `iiae embed` file ({type(err).__name__}: {err})") from None


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR_OR_HUB_ID", help="run dir (uses <run>/best), model folder, or Hub repo id")
    p.add_argument("--input", required=True, metavar="IMG_OR_DIR", help="image file or folder (any depth)")
    p.add_argument("--domain", required=True, choices=("x", "y"), help="which domain the files are")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help=f"output file ({' or '.join(FORMATS)})")
    p.add_argument("--which", choices=("shared", "exclusive"), default="shared",
                   help="shared codes (r means: cross-domain search, default) or exclusive (q means)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")


def run(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .image_files import find_inputs
    from .models import input_kind
    from .run_dir import load_model

    if args.out.suffix not in FORMATS:
        raise UserError(f"--out {args.out}: expected a {' or '.join(FORMATS)} file name")
    model = load_model(args.run, resolve_device(args.device))
    root, files = find_inputs(args.input, input_kind(model.cfg))
    codes = embed_files(model, files, args.domain, args.which)
    save_embeddings(Embeddings(codes, [f.relative_to(root).as_posix() for f in files], str(root.resolve()),
                               args.domain, args.which, str(args.run)), args.out)
    print(f"wrote {args.out}: {codes.shape[0]} {args.which} codes of {codes.shape[1]} values ({args.domain})")
    return 0
