"""`iiae retrieve RUN --query IMG_OR_DIR --gallery DIR_OR_EMBEDDINGS [-k 10] [--out results.json]`: cross-domain
search with the shared codes: each query (of --query-domain) against a gallery of the other domain, a folder of
files or an `iiae embed` file. Squared Euclidean for image models (the paper's Recall@1 distance), cosine for
feature models; `--metric` chooses otherwise. Writes the top-k as JSON and a picture of the queries and their
top-k beside it (`<out>.png`).

The picture reads only images the command line names: a folder gallery's own files, or, for an embedding-file
gallery, its recorded names under `--gallery-images DIR` (relative names that stay inside DIR; without the
option, under the recorded root only where that lies in the --query folder). Any other recorded root is
reported, never opened. Neither output may be a query, a gallery file or image, a link, or lie in the model's
folders (refused in one line before anything is written).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch

from iiae.errors import UserError, shown

PICTURE_ROWS = 16  # queries shown in the picture (all are in the JSON)


def _gallery_file(path: Path, domain: str, run: str, sha256: str):
    """The Embeddings of an `iiae embed` file, checked against the model: its weights hash, domain and codes."""
    from iiae.inference.embed import load_embeddings
    e = load_embeddings(path)
    if e.which != "shared" or e.domain != domain:
        raise UserError(f"--gallery {path}: holds {e.which} codes of domain {e.domain}; expected shared codes of "
                        f"domain {domain} (`iiae embed RUN --input DIR --domain {domain} --out {path.name}`)")
    if e.model_sha256 != sha256:
        raise UserError(f"--gallery {path}: embedded by another model ({shown(e.model, 120)}, weights sha256 "
                        f"{e.model_sha256[:12]}…), not {run} ({sha256[:12]}…); embed it again with this one: "
                        f"`iiae embed {run} --input DIR --domain {domain} --out {path.name}`")
    return e


def _recorded_root_under(root: str, query: str) -> Optional[Path]:
    """An embedding file's recorded root, only where it is (links followed) the --query folder or inside it: a
    folder this command line names. Else None: a recorded root is information, never a path to open."""
    from iiae.inference.image_files import path_kind

    named, recorded = Path(query).expanduser(), Path(root)
    if path_kind(named, "--query") != "folder" or not recorded.is_absolute():
        return None
    top, where = named.resolve(), recorded.resolve()
    return where if where == top or top in where.parents else None  # gallery_images checks each file


def gallery_images(folder: Path, names: list[str]) -> list[Optional[Path]]:
    """Where the picture may read each recorded gallery name: under `folder` (named on this command line), the
    name relative and the file, links followed, still inside `folder`; None where not (an embedding file's names
    are never trusted, nor is its recorded root opened)."""
    from iiae.inference.embed import relative_name
    from iiae.inference.image_files import is_file

    top = folder.resolve()
    out: list[Optional[Path]] = []
    for name in names:
        path = folder / name
        inside = relative_name(name) and top in path.resolve().parents
        out.append(path if inside and is_file(path) else None)
    return out


def picture(queries: list[Path], gallery: list[Optional[Path]], indices: torch.Tensor, size: int, title: str):
    """Rows: a query, then its top-k gallery images (best first), at the model's resolution; or None when one of
    those gallery images is missing (None in `gallery`, or no longer a file)."""
    from iiae.inference.image_files import is_file
    from iiae.data.image_io import load_images
    from iiae.grids import tile_grid

    drawn = queries[:PICTURE_ROWS]
    paths = [[gallery[j] for j in row] for row in indices[:PICTURE_ROWS].tolist()]
    if not all(p is not None and is_file(p) for row in paths for p in row):
        return None
    rows = [torch.cat([load_images([q], size), load_images(row, size)]) for q, row in zip(drawn, paths)]
    headers = ["query"] + [str(r + 1) for r in range(indices.shape[1])]
    return tile_grid(torch.stack(rows), headers, title)


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from iiae.models.loading import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--query", required=True, metavar="IMG_OR_DIR", help="query file or folder")
    p.add_argument("--gallery", required=True, type=Path, metavar="DIR_OR_EMBEDDINGS",
                   help="folder of the other domain's files, or an `iiae embed` file of their shared codes")
    p.add_argument("--gallery-images", type=Path, default=None, metavar="DIR",
                   help="with an `iiae embed` --gallery: the folder its files were embedded from, for the picture "
                        "(default: the root the file records, only where that lies in the --query folder; any "
                        "other recorded root is never opened, and there is no picture)")
    p.add_argument("--query-domain", choices=("x", "y"), default="x", help="the queries' domain (default x)")
    # checked in run() (one line; argparse's type=int prints its usage); more than the gallery holds is clamped
    p.add_argument("-k", default=10, help="matches per query (default 10; at most the gallery's size)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), default=None,
                   help="default: euclidean (squared) for image models, cosine for feature models")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON of the matches (default results.json); "
                                                                         "the picture goes beside it as <stem>.png")


def run(args: argparse.Namespace) -> int:
    from iiae.inference.embed import FORMATS, Embeddings, check_finite, embed_files, weights_sha256
    from iiae.inference.image_files import (
        find_inputs, make_folder, model_folders, one_file, path_kind, plain_output, refuse_overwrite,
        stop_on_sigterm, whole_number,
    )
    from iiae.models import input_kind
    from iiae.models.iiae import OTHER
    from iiae.evaluation.retrieval_metrics import top_k
    from iiae.device import resolve_device
    from iiae.models.loading import load_model
    from iiae.safe_files import atomic_path, atomic_write

    k = whole_number(args.k, "-k")
    out = args.out.expanduser()
    image_out = out.with_suffix(".png")
    if image_out.name.casefold() == out.name.casefold():
        raise UserError(f"--out {args.out}: the picture goes beside the JSON as <stem>.png; expected a .json name")
    plain_output(out, "--out", "a JSON file (or nothing) for the matches")
    plain_output(image_out, "--out", "a PNG file (or nothing) for the picture")
    from_file = path_kind(args.gallery, "--gallery") == "file" and args.gallery.suffix in FORMATS
    if args.gallery_images is not None:
        if not from_file:
            raise UserError(f"--gallery-images: applies to an `iiae embed` file --gallery, and {args.gallery} is not "
                            "one (a folder gallery draws from its own files)")
        if path_kind(args.gallery_images, "--gallery-images") != "folder":
            raise UserError(f"--gallery-images {args.gallery_images}: no such folder")
    model = load_model(args.run, resolve_device(args.device))
    kind = input_kind(model.cfg)
    metric = args.metric or ("euclidean" if kind == "image" else "cosine")
    root, queries = find_inputs(args.query, kind, option="--query")
    sha256 = weights_sha256(model)  # once: it reads every weight
    domain = OTHER[args.query_domain]
    folder = None  # where the picture reads an embedding file's images
    if from_file:
        gallery = _gallery_file(args.gallery, domain, str(args.run), sha256)
        folder = args.gallery_images or _recorded_root_under(gallery.root, args.query)
        gallery_files = gallery_images(folder, gallery.files) if folder is not None else None
    else:
        gallery_root, gallery_files = find_inputs(args.gallery, kind, option="--gallery")
    # nothing written may replace what this command reads, nor go into the model's folders; checked before any
    # model work
    inputs = {p.resolve() for p in queries + [f for f in gallery_files or [] if f is not None]}
    inputs |= {args.gallery.resolve()} if from_file else set()
    refuse_overwrite("--out", out, files=inputs, folders=model_folders(args.run))
    refuse_overwrite("--out", image_out, files=inputs, folders=model_folders(args.run), given=args.out)
    if not from_file:
        g = embed_files(model, gallery_files, domain)
        check_finite(g, f"{args.run}: the shared codes of --gallery {args.gallery}")
        gallery = Embeddings(g, [f.relative_to(gallery_root).as_posix() for f in gallery_files],
                             str(gallery_root.resolve()), domain, "shared", str(args.run), sha256)
    codes = embed_files(model, queries, args.query_domain)
    check_finite(codes, f"{args.run}: the shared codes of --query {args.query}")
    if codes.shape[1] != gallery.codes.shape[1]:
        raise UserError(f"--gallery {args.gallery}: codes of {gallery.codes.shape[1]} values, the model's have "
                        f"{codes.shape[1]}; embed the gallery with this model")
    indices, scores = top_k(codes, gallery.codes, min(k, len(gallery.files)), metric)
    score = "distance" if metric == "euclidean" else "similarity"
    results = [{"query": q.relative_to(root).as_posix(),
                "matches": [{"file": gallery.files[j], score: round(s, 6)} for j, s in zip(i, v)]}
               for q, i, v in zip(queries, indices.tolist(), scores.tolist())]
    record = {"model": str(args.run), "query_domain": args.query_domain, "gallery_domain": gallery.domain,
              "metric": metric, "k": indices.shape[1], "query_root": str(root.resolve()),
              "gallery_root": gallery.root, "results": results}
    if args.gallery_images is not None:
        record["gallery_images"] = str(args.gallery_images.resolve())
    make_folder(out.parent, "--out")
    with stop_on_sigterm("the files written so far are complete"):
        with one_file():
            atomic_write(out, json.dumps(record, indent=2, allow_nan=False) + "\n", "a JSON file")
        print(f"wrote {out}: top {indices.shape[1]} of {len(gallery.files)} for {len(queries)} queries ({metric})")
        if kind != "image":
            return 0
        if gallery_files is None:
            print(f"notice: no picture: --gallery {args.gallery} is an embedding file, its images recorded under "
                  f"{shown(gallery.root)} (not opened: outside --query); pass --gallery-images DIR to draw them")
            return 0
        by = "squared Euclidean distance" if metric == "euclidean" else "cosine similarity"
        title = f"{args.query_domain} -> {gallery.domain}: top {indices.shape[1]} by {by}"
        image = picture(queries, gallery_files, indices, model.cfg.image_size, title)
        if image is None:
            print(f"notice: some of the top-{indices.shape[1]} gallery images are not files under "
                  f"{folder if from_file else args.gallery} (any more); no picture drawn")
        else:
            with one_file(), atomic_path(image_out, "a PNG file") as tmp:
                image.save(tmp, format="PNG")
            print(f"wrote {image_out}")
    return 0
