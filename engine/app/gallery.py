"""The images the page's Retrieve tab searches: a split of a prepared dataset (both domains) or a folder of the
user's images (one domain), embedded once at start-up with a progress bar, and the codes cached in the user cache
(`$IIAE_CACHE`, else `~/.cache/iiae`) under `app/<key>.safetensors`, keyed by the model's weights and what the
gallery holds (for a folder: every file's name, size and modification time), so a restart embeds nothing.
Only the files of the folder named on the command line (or the dataset's shards) are ever read."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from iiae.errors import UserError

DEFAULT_LIMIT = 2_000  # gallery images per domain unless --gallery-limit says otherwise


@dataclass
class Gallery:
    description: str  # shown on the page: "test split of maps_96 (1,098 pairs)"
    codes: dict[str, torch.Tensor]  # domain → [N, D] shared-code means (CPU, float32)
    names: dict[str, list[str]]  # domain → what each row is called on the page
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)  # domain → uint8 [N, 3, H, W] (dataset splits)
    files: dict[str, list[Path]] = field(default_factory=dict)  # domain → image files (folders), read on demand
    size: int = 0
    dataset: Optional[str] = None  # the dataset.json name of a dataset split

    def image(self, domain: str, index: int) -> Image.Image:
        if domain in self.pixels:
            return Image.fromarray(self.pixels[domain][index].permute(1, 2, 0).numpy())
        from iiae.data.image_io import load_images, to_pil

        return to_pil(load_images([self.files[domain][index]], self.size))[0]

    def domains_text(self, domains) -> str:
        return " and ".join(domains[d].label for d in self.codes)


def cache_dir() -> Path:
    base = os.environ.get("IIAE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iiae"
    return Path(base) / "app"


def _cached_codes(key: dict, compute) -> dict[str, torch.Tensor]:
    """compute() once per key: the codes are kept in the cache folder (written to a temporary name, renamed)."""
    from safetensors.torch import load_file, save_file

    from iiae.safe_files import atomic_path

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir() / f"{digest}.safetensors"
    if path.is_file() and not path.is_symlink():
        try:
            return load_file(path)
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    codes = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, "a cache file") as tmp:
            save_file({d: c.contiguous() for d, c in codes.items()}, str(tmp))
    except (OSError, UserError):  # a read-only cache costs the next start its embedding, nothing else
        pass
    return codes


def from_split(model, root: str, split: str, limit: int, sha256: str) -> Gallery:
    """Both domains of `split` of a prepared paired image dataset (the first `limit` pairs, in key order)."""
    from iiae.data import iter_eval_batches, load_dataset_info
    from iiae.data.image_io import to_uint8
    from iiae.evaluation.codes import encode_batches

    info = load_dataset_info(root)
    if info.kind != "image" or info.layout != "paired":
        raise UserError(f"--data {root}: {info.name} is not a paired image dataset; pass --gallery DIR "
                        "--gallery-domain x|y for a folder of images instead")
    size = model.cfg.image_size
    batches = list(iter_eval_batches(info, split, 64, image_size=size, limit=limit))
    if not batches:
        raise UserError(f"--data {root}: its {split} split is empty")
    keys = [k for b in batches for k in b["key"]]
    pixels = {d: to_uint8(torch.cat([b[d] for b in batches])) for d in ("x", "y")}

    def compute():
        (x, y), _, _ = encode_batches(model, batches, [("x", "shared"), ("y", "shared")], total=len(keys),
                                      desc="embedding the gallery", unit="pair")
        return {"x": x.cpu(), "y": y.cpu()}

    key = {"model": sha256, "dataset": str(Path(root).resolve()), "info": info.model_dump(mode="json"),
           "split": split, "limit": limit, "size": size}
    codes = _cached_codes(key, compute)
    names = [f"{split}/{k}" for k in keys]
    return Gallery(f"the {split} split of {info.name} ({len(keys):,} pairs, {root})", codes,
                   {"x": names, "y": names}, pixels=pixels, size=size,
                   dataset=info.name)


def from_folder(model, folder: str, domain: str, limit: int, sha256: str) -> Gallery:
    """The images of one domain in `folder` (at any depth, sorted by path; the first `limit`)."""
    from iiae.inference.embed import embed_files
    from iiae.inference.image_files import find_inputs

    root, files = find_inputs(folder, option="--gallery")
    files = files[:limit]
    stats = [(f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
    key = {"model": sha256, "folder": str(root.resolve()), "files": stats, "domain": domain,
           "size": model.cfg.image_size}
    codes = _cached_codes(key, lambda: {domain: embed_files(model, files, domain)})
    return Gallery(f"{len(files):,} {domain.upper()} images in {root}", codes,
                   {domain: [name for name, _, _ in stats]}, files={domain: files}, size=model.cfg.image_size)
