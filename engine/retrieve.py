"""`iiae retrieve RUN --query IMG_OR_DIR --gallery DIR_OR_EMBEDDINGS [-k 10] [--out results.json]`: cross-domain
search with the shared codes: each query (of --query-domain) against a gallery of the other domain, a folder of
files or an `iiae embed` file. Squared Euclidean for image models (the paper's Recall@1 distance), cosine for
feature models; `--metric` chooses otherwise. Writes the top-k as JSON and a picture of the queries and their
top-k beside it (`<out>.png`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .errors import UserError

PICTURE_ROWS = 16  # queries shown in the picture (all are in the JSON)


def _gallery(model, path: Path, domain: str, run: str):
    """The gallery's Embeddings: read from an `iiae embed` file (checked against the model), else embedded."""
    from .embed import FORMATS, Embeddings, embed_files, load_embeddings
    from .image_files import find_inputs
    from .models import input_kind

    if path.is_file() and path.suffix in FORMATS:
        e = load_embeddings(path)
        if e.which != "shared" or e.domain != domain:
            raise UserError(f"--gallery {path}: holds {e.which} codes of domain {e.domain}; expected shared codes of "
                            f"domain {domain} (`iiae embed RUN --input DIR --domain {domain} --out {path.name}`)")
        return e
    root, files = find_inputs(path, input_kind(model.cfg), option="--gallery")
    return Embeddings(embed_files(model, files, domain), [f.relative_to(root).as_posix() for f in files],
                      str(root.resolve()), domain, "shared", run)


def picture(queries: list[Path], gallery_root: Path, gallery_files: list[str], indices: torch.Tensor, size: int,
            title: str):
    """Rows: a query, then its top-k gallery images (best first), at the model's resolution; or None when the
    gallery images are no longer where they were embedded."""
    from .image_files import load_images
    from .translate import tile_grid

    shown = queries[:PICTURE_ROWS]
    paths = [[gallery_root / gallery_files[j] for j in row] for row in indices[:PICTURE_ROWS].tolist()]
    if not all(p.is_file() for row in paths for p in row):
        return None
    rows = [torch.cat([load_images([q], size), load_images(row, size)]) for q, row in zip(shown, paths)]
    headers = ["query"] + [str(r + 1) for r in range(indices.shape[1])]
    return tile_grid(torch.stack(rows), headers, title)


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR_OR_HUB_ID", help="run dir (uses <run>/best), model folder, or Hub repo id")
    p.add_argument("--query", required=True, metavar="IMG_OR_DIR", help="query file or folder")
    p.add_argument("--gallery", required=True, type=Path, metavar="DIR_OR_EMBEDDINGS",
                   help="folder of the other domain's files, or an `iiae embed` file of their shared codes")
    p.add_argument("--query-domain", choices=("x", "y"), default="x", help="the queries' domain (default x)")
    p.add_argument("-k", type=int, default=10, help="matches per query (default 10)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), default=None,
                   help="default: euclidean (squared) for image models, cosine for feature models")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON of the matches (default results.json); "
                                                                         "the picture goes beside it as <stem>.png")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")


def run(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .embed import embed_files
    from .image_files import find_inputs
    from .models import input_kind
    from .models.iiae import OTHER
    from .retrieval import top_k
    from .run_dir import load_model

    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    model = load_model(args.run, resolve_device(args.device))
    kind = input_kind(model.cfg)
    metric = args.metric or ("euclidean" if kind == "image" else "cosine")
    root, queries = find_inputs(args.query, kind, option="--query")
    gallery = _gallery(model, args.gallery, OTHER[args.query_domain], str(args.run))
    codes = embed_files(model, queries, args.query_domain)
    if codes.shape[1] != gallery.codes.shape[1]:
        raise UserError(f"--gallery {args.gallery}: codes of {gallery.codes.shape[1]} values, the model's have "
                        f"{codes.shape[1]}; embed the gallery with this model")
    indices, scores = top_k(codes, gallery.codes, args.k, metric)
    score = "distance" if metric == "euclidean" else "similarity"
    results = [{"query": q.relative_to(root).as_posix(),
                "matches": [{"file": gallery.files[j], score: round(s, 6)} for j, s in zip(i, v)]}
               for q, i, v in zip(queries, indices.tolist(), scores.tolist())]
    record = {"model": str(args.run), "query_domain": args.query_domain, "gallery_domain": gallery.domain,
              "metric": metric, "k": indices.shape[1], "query_root": str(root.resolve()),
              "gallery_root": gallery.root, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: top {indices.shape[1]} of {len(gallery.files)} for {len(queries)} queries ({metric})")
    if kind == "image":
        by = "squared Euclidean distance" if metric == "euclidean" else "cosine similarity"
        title = f"{args.query_domain} -> {gallery.domain}: top {indices.shape[1]} by {by}"
        image = picture(queries, Path(gallery.root), gallery.files, indices, model.cfg.image_size, title)
        if image is None:
            print(f"notice: gallery images are not under {gallery.root} any more; no picture drawn")
        else:
            image.save(args.out.with_suffix(".png"))
            print(f"wrote {args.out.with_suffix('.png')}")
    return 0
