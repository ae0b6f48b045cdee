"""`iiae eval RUN_DIR_OR_HUB_ID --data DIR`: the paper's retrieval protocols on a trained model.

Paired datasets: Recall@1 X->Y and Y->X over the whole split, squared Euclidean on the flattened r^x / r^y means,
plus the same on the exclusive q(z^x|x) / q(z^y|y) means (an ablation: ~1/N when the codes are disentangled).
Also Recall@5 and @10 on the shared codes.
Sketchy (feature datasets): cosine, every test sketch against every test photo, mAP@all and P@100 (the paper's),
mAP@200 and P@200 (what later zero-shot SBIR papers report).
"""
from __future__ import annotations

import argparse
import json
from typing import Iterable, Optional

import torch

from .data.prepare import positive_int
from .errors import UserError
from .models import eval_mode
from .progress import progress_bar
from .retrieval import (EXCLUSIVE_RECALL, SHARED_RECALL, mean_average_precision, mean_average_precision_at_k,
                        precision_at_k, recall_at_1, recall_at_k)

RECALL_KS = (5, 10)  # Recall@K beside the paper's Recall@1 (shared codes), as other retrieval papers report

# ---- embedding ----------------------------------------------------------------------------------------------
def _device(model: torch.nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def _embed_many(model, batches: Iterable[dict], specs: list[tuple[str, str]], device=None, progress=True, total=None):
    """One pass over `batches` computing every (domain, which) embedding of `specs`; also returns the labels and
    how many images had another size or mode than the dataset's (converted on the way)."""
    device = _device(model, device)
    outs: list[list[torch.Tensor]] = [[] for _ in specs]
    labels: list[torch.Tensor] = []
    resized = 0
    encoders = {"shared": model.encode_shared, "exclusive": model.encode_exclusive}
    unknown = {w for _, w in specs} - encoders.keys()
    if unknown:
        raise ValueError(f"which must be 'shared' or 'exclusive', got {unknown.pop()!r}")
    bar = progress_bar(total=total, unit="sample", desc="embedding", disable=not progress, leave=False)
    with eval_mode(model), bar:
        for batch in batches:
            for out, (domain, which) in zip(outs, specs):
                # paired batches hold both domains; per-domain (Sketchy) batches hold one, as "v"
                v = batch[domain] if domain in batch else batch["v"]
                out.append(encoders[which](v.to(device), domain).flatten(1).float())
            n = outs[0][-1].shape[0]
            labels.append(batch["cls"] if "cls" in batch else torch.full((n,), -1))  # unlabelled batches: -1
            resized = batch.get("resized", 0)  # a running count: the last batch holds the total
            bar.update(n)
    if not labels:
        raise UserError("the evaluation split is empty")
    return [torch.cat(o) for o in outs], torch.cat(labels), resized


def embed(model, batches: Iterable[dict], domain: str, which: str = "shared", device=None, progress: bool = True) -> torch.Tensor:
    """Flattened posterior means [N, D] of every batch in order: r^d (which="shared") or q(z^d|d) ("exclusive").

    The model runs in eval mode without gradients (its mode is restored); inputs go to `device` (default: the
    model's), and so do the embeddings."""
    (out,), _, _ = _embed_many(model, batches, [(domain, which)], device, progress)
    return out


# ---- protocols ----------------------------------------------------------------------------------------------
def _count(info, split: str, limit: Optional[int], domain: Optional[str] = None) -> int:
    """Samples the pass will see; also fails early, naming the split, when it does not exist."""
    count = info.split(split, domain).count
    return count if limit is None else min(count, limit)


def _image_size(model) -> Optional[int]:
    from .models import input_kind

    return model.cfg.image_size if input_kind(model.cfg) == "image" else None


def _check_compatible(model, info) -> None:
    from .models import check_fits

    check_fits(model.cfg, info, where="the model's model")


def paired_metrics(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                   progress: bool = True) -> dict:
    """Recall@1 both ways on shared (r) and exclusive (q) means over the first `limit` pairs of `split`
    (default all), and Recall@5, @10 on the shared ones: keys recall_at_{1,5,10}_{x2y,y2x},
    exclusive_recall_at_1_x2y/_y2x (fractions), n."""
    from .data import iter_eval_batches

    _check_compatible(model, info)
    if info.layout != "paired":
        raise UserError(f"dataset {info.name} is per-domain ({info.layout}): use sketchy_metrics, not Recall@1 on pairs")
    total = _count(info, split, limit)
    batches = iter_eval_batches(info, split, batch_size, image_size=_image_size(model), limit=limit)
    specs = [("x", "shared"), ("y", "shared"), ("x", "exclusive"), ("y", "exclusive")]
    (sx, sy, ex, ey), labels, resized = _embed_many(model, batches, specs, device, progress, total)
    at_k = {way: recall_at_k(q, g, RECALL_KS) for way, q, g in (("x2y", sx, sy), ("y2x", sy, sx))}
    return {
        **dict(zip(SHARED_RECALL, (recall_at_1(sx, sy), recall_at_1(sy, sx)))),
        **{f"recall_at_{k}_{way}": at_k[way][k] for k in RECALL_KS for way in at_k},
        **dict(zip(EXCLUSIVE_RECALL, (recall_at_1(ex, ey), recall_at_1(ey, ex)))),
        "n": len(labels),
        "resized_samples": resized,
    }


def sketchy_metrics(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                    progress: bool = True) -> dict:
    """Zero-shot SBIR: every sketch (x) of `split` against every photo (y), cosine on the shared r means;
    relevant = same class. Keys map_all, precision_at_100 (the paper's), map_at_200, precision_at_200 (later
    papers'), n_sketches, n_photos."""
    from .data import iter_eval_batches

    _check_compatible(model, info)
    codes, labels, resized = {}, {}, 0
    for domain in ("x", "y"):
        total = _count(info, split, limit, domain)
        batches = iter_eval_batches(info, split, batch_size, domain=domain, limit=limit)
        (codes[domain],), labels[domain], odd = _embed_many(model, batches, [(domain, "shared")], device, progress,
                                                            total)
        resized += odd
    q, g, sketch_cls, photo_cls = codes["x"], codes["y"], labels["x"], labels["y"]
    return {
        "map_all": mean_average_precision(q, g, sketch_cls, photo_cls),
        "precision_at_100": precision_at_k(q, g, sketch_cls, photo_cls, k=min(100, len(g))),
        "map_at_200": mean_average_precision_at_k(q, g, sketch_cls, photo_cls, k=min(200, len(g))),
        "precision_at_200": precision_at_k(q, g, sketch_cls, photo_cls, k=min(200, len(g))),
        "n_sketches": len(q),
        "n_photos": len(g),
        "resized_samples": resized,
    }


def evaluate(model, info, split: str, **kwargs) -> dict:
    """The dataset's protocol: Sketchy's for per-domain datasets, paired Recall@1 otherwise."""
    return (sketchy_metrics if info.layout == "per-domain" else paired_metrics)(model, info, split, **kwargs)


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR_OR_HUB_ID", help="run dir (uses <run>/best), model folder, or Hub repo id")
    p.add_argument("--data", help="prepared dataset folder (default: the recipe's data.root)")
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--fidelity", action="store_true",
                   help="also score translations with per-domain digit classifiers and, on MNIST-CDCB, their colours "
                        "against the true ones")
    p.add_argument("--fidelity-steps", type=positive_int, default=None,
                   help="training steps of each fidelity classifier (default: iiae.fidelity.STEPS)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N samples only")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--no-verify", action="store_true", help="skip checking each shard's sha256 against dataset.json")


def print_table(record: dict) -> None:
    print(f"{record['model']}  on  {record['dataset']}/{record['split']}")
    for key, value in record.items():
        if isinstance(value, float):
            print(f"  {key:<34} {value:8.4f}")
        elif isinstance(value, list):
            print(f"  {key:<34} " + " ".join(f"{v:.2f}" for v in value))
        elif isinstance(value, int):
            print(f"  {key:<34} {value:8d}")


def run(args: argparse.Namespace) -> int:
    from .data import load_dataset_info
    from .device import resolve_device
    from .models import check_fits
    from .run_dir import data_root, load_model, resolve_run
    from .view_metrics import is_views_dataset

    device = resolve_device(args.device)
    _, run_dir = resolve_run(args.run)
    if run_dir is not None:  # before minutes of evaluation, not after: a link where a result goes is refused
        from .safe_files import refuse_link

        for path in (run_dir.eval_results, run_dir.views_grid):
            refuse_link(path, f"{path.name} (a regular file the engine writes)")
    model = load_model(args.run, device)
    # hash only the split this evaluation reads: the training shards can be most of the folder
    info = load_dataset_info(data_root(args.run, args.data), verify=() if args.no_verify else (args.split,))
    check_fits(model.cfg, info, where="the model's model", notice=True)  # refusals first; the notice once
    metrics = evaluate(model, info, args.split, batch_size=args.batch_size, limit=args.limit, device=device,
                       progress=not args.json)
    if args.fidelity:
        from .colour_fidelity import colour_metrics, has_colours
        from .fidelity import STEPS, default_cache_dir, fidelity_metrics

        metrics.update(fidelity_metrics(model, info, args.split, cache_dir=default_cache_dir(info),
                                        steps=args.fidelity_steps or STEPS, batch_size=args.batch_size,
                                        limit=args.limit, device=device, progress=not args.json))
        if has_colours(info):
            metrics.update(colour_metrics(model, info, args.split, batch_size=args.batch_size, limit=args.limit,
                                          device=device, progress=not args.json))
    if info.layout == "paired" and info.kind == "image":  # guided translation against the true partner
        from .translation_error import translation_error

        metrics.update(translation_error(model, info, args.split, batch_size=args.batch_size, limit=args.limit,
                                         device=device, progress=not args.json))
    if is_views_dataset(info):  # Cars3D: identity across views, guided translation, factor probes
        from .view_metrics import view_metrics, views_grid

        metrics.update(view_metrics(model, info, args.split, batch_size=args.batch_size, device=device,
                                    progress=not args.json))
        if run_dir is not None:
            from .safe_files import atomic_path

            with atomic_path(run_dir.views_grid, "a PNG the engine writes") as tmp:  # never through a link
                views_grid(model, info, args.split, device=device).save(tmp, format="PNG")
    # the data as given: datasets of one name can differ (two renderings of MNIST-CDCB), and make demo checks it
    record = {"model": str(args.run), "dataset": info.name, "data": info.root, "split": args.split, **metrics}
    if run_dir is not None:
        from .safe_files import atomic_write

        # renamed into place: a link at eval_results.json is refused, never written through
        atomic_write(run_dir.eval_results, json.dumps(record, indent=2) + "\n", "eval_results.json (a regular file)")
    if args.json:
        print(json.dumps(record))
    else:
        print_table(record)
        if run_dir is not None:
            print(f"wrote {run_dir.eval_results}")
    return 0
