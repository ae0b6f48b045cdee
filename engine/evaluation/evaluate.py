"""`iiae eval RUN_DIR_OR_HUB_ID --data DIR`: the paper's retrieval protocols on a trained model.

Paired datasets: Recall@1 X->Y and Y->X over the whole split, squared Euclidean on the flattened r^x / r^y means,
plus the same on the exclusive q(z^x|x) / q(z^y|y) means (an ablation: ~1/N when the codes are disentangled).
Also Recall@5 and @10 on the shared codes.
Sketchy (feature datasets): cosine, every test sketch against every test photo, mAP@all and P@100 (the paper's),
mAP@200 and P@200 (what later zero-shot SBIR papers report).
`--pairs DIR`: the paired protocol among the side-by-side pair files of a folder instead (pair_folder).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from iiae.data.prepare import positive_int
from iiae.errors import UserError
from iiae.evaluation.codes import encode_batches
from iiae.evaluation.retrieval_metrics import (mean_average_precision, mean_average_precision_at_k, paired_scores,
                                              precision_at_k)

def embed(model, batches: Iterable[dict], domain: str, which: str = "shared", device=None, progress: bool = True) -> torch.Tensor:
    """Flattened posterior means [N, D] of every batch in order: r^d (which="shared") or q(z^d|d) ("exclusive").

    The model runs in eval mode without gradients (its mode is restored); inputs go to `device` (default: the
    model's), and so do the embeddings."""
    (out,), _, _ = encode_batches(model, batches, [(domain, which)], device, progress)
    return out


# ---- protocols ----------------------------------------------------------------------------------------------
def _count(info, split: str, limit: Optional[int], domain: Optional[str] = None) -> int:
    """Samples the pass will see; also fails early, naming the split, when it does not exist."""
    count = info.split(split, domain).count
    return count if limit is None else min(count, limit)


def _image_size(model) -> Optional[int]:
    from iiae.models import input_kind

    return model.cfg.image_size if input_kind(model.cfg) == "image" else None


def _check_compatible(model, info) -> None:
    from iiae.models import check_fits

    check_fits(model.cfg, info, where="the model's model")


def paired_metrics(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                   progress: bool = True) -> dict:
    """Recall@1 both ways on shared (r) and exclusive (q) means over the first `limit` pairs of `split`
    (default all), and Recall@5, @10 on the shared ones: keys recall_at_{1,5,10}_{x2y,y2x},
    exclusive_recall_at_1_x2y/_y2x (fractions), hubness_max/_skew_x2y/_y2x of the shared codes (`hubness`), n."""
    from iiae.data import iter_eval_batches

    _check_compatible(model, info)
    if info.layout != "paired":
        raise UserError(f"dataset {info.name} is per-domain ({info.layout}): use sketchy_metrics, not Recall@1 on pairs")
    total = _count(info, split, limit)
    batches = iter_eval_batches(info, split, batch_size, image_size=_image_size(model), limit=limit)
    specs = [("x", "shared"), ("y", "shared"), ("x", "exclusive"), ("y", "exclusive")]
    (sx, sy, ex, ey), labels, resized = encode_batches(model, batches, specs, device, progress, total)
    return {**paired_scores(sx, sy, ex, ey), "n": len(labels), "resized_samples": resized}


def sketchy_metrics(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                    progress: bool = True) -> dict:
    """Zero-shot SBIR: every sketch (x) of `split` against every photo (y), cosine on the shared r means;
    relevant = same class. Keys map_all, precision_at_100 (the paper's), map_at_200, precision_at_200 (later
    papers'), n_sketches, n_photos."""
    from iiae.data import iter_eval_batches

    _check_compatible(model, info)
    codes, labels, resized = {}, {}, 0
    for domain in ("x", "y"):
        total = _count(info, split, limit, domain)
        batches = iter_eval_batches(info, split, batch_size, domain=domain, limit=limit)
        (codes[domain],), labels[domain], odd = encode_batches(model, batches, [(domain, "shared")], device, progress,
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


# ---- the metric registry: what `iiae eval` reports, each group where it applies ---------------------------------
@dataclass
class EvalJob:
    """One `iiae eval`: the model, the data and how to read it; `run_dir` receives files (None for a Hub model)."""

    model: Any
    info: Any
    split: str
    batch_size: int
    limit: Optional[int]
    device: Any
    progress: bool
    run_dir: Any = None
    fidelity: bool = False
    fidelity_steps: Optional[int] = None
    diagnose: bool = False

    @property
    def reading(self) -> dict:
        return dict(batch_size=self.batch_size, limit=self.limit, device=self.device, progress=self.progress)


def _fidelity(job: EvalJob) -> dict:
    from iiae.evaluation.fidelity import STEPS, default_cache_dir, fidelity_metrics

    return fidelity_metrics(job.model, job.info, job.split, cache_dir=default_cache_dir(job.info),
                            steps=job.fidelity_steps or STEPS, **job.reading)


def _colours(job: EvalJob) -> dict:
    from iiae.evaluation.colour_fidelity import colour_metrics

    return colour_metrics(job.model, job.info, job.split, **job.reading)


def _label_maps(job: EvalJob) -> dict:
    from iiae.evaluation.label_maps import label_metrics

    return label_metrics(job.model, job.info, job.split, **job.reading)


def _has_label_maps(job: EvalJob) -> bool:
    from iiae.evaluation.label_maps import has_label_maps

    return job.fidelity and has_label_maps(job.info)


def _has_colours(job: EvalJob) -> bool:
    from iiae.evaluation.colour_fidelity import has_colours

    return job.fidelity and has_colours(job.info)


def _guided(job: EvalJob) -> dict:
    from iiae.evaluation.guided_error import translation_error

    return translation_error(job.model, job.info, job.split, **job.reading)


def _diagnosis(job: EvalJob) -> dict:
    """Why the shared-code retrieval misses (code_diagnosis): a second pass over the split for the r means."""
    from iiae.data import iter_eval_batches
    from iiae.evaluation.code_diagnosis import diagnose

    batches = iter_eval_batches(job.info, job.split, job.batch_size, image_size=_image_size(job.model), limit=job.limit)
    (r_x, r_y), _, _ = encode_batches(job.model, batches, [("x", "shared"), ("y", "shared")], job.device,
                                      job.progress, _count(job.info, job.split, job.limit))
    return diagnose(r_x, r_y)


def _is_views(job: EvalJob) -> bool:
    from iiae.evaluation.view_metrics import is_views_dataset

    return is_views_dataset(job.info)


def _views(job: EvalJob) -> dict:
    """Cars3D: identity across views, guided translation, factor probes; and the views grid beside the results."""
    from iiae.evaluation.view_metrics import view_metrics, views_grid

    reading = {k: v for k, v in job.reading.items() if k != "limit"}  # the probes need every view of a car
    metrics = view_metrics(job.model, job.info, job.split, **reading)
    if job.run_dir is not None:
        from iiae.safe_files import atomic_path

        with atomic_path(job.run_dir.views_grid, "a PNG the engine writes") as tmp:  # never through a link
            views_grid(job.model, job.info, job.split, device=job.device).save(tmp, format="PNG")
    return metrics


@dataclass(frozen=True)
class MetricGroup:
    name: str
    applies: Callable[[EvalJob], bool]
    compute: Callable[[EvalJob], dict]


METRICS = (  # in this order in eval_results.json
    MetricGroup("retrieval", lambda job: True, lambda job: evaluate(job.model, job.info, job.split, **job.reading)),
    MetricGroup("fidelity", lambda job: job.fidelity and bool(job.info.classes), _fidelity),  # digit classifiers
    MetricGroup("label maps", _has_label_maps, _label_maps),  # Facades: translations against the true labels
    MetricGroup("colour fidelity", _has_colours, _colours),  # MNIST-CDCB: colours against the stored ones
    MetricGroup("guided translation error", lambda job: job.info.layout == "paired" and job.info.kind == "image",
                _guided),  # against the true partner
    MetricGroup("views", _is_views, _views),
    MetricGroup("shared-code diagnosis", lambda job: job.diagnose and job.info.layout == "paired", _diagnosis),
)


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from iiae.models.loading import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--data", help="prepared dataset folder (default: the recipe's data.root)")
    p.add_argument("--pairs", metavar="DIR",
                   help="instead of a dataset: a folder of side-by-side pair files (left X, right Y, numbered names "
                        "in numeric order), each half resized to the model's size; Recall@1/5/10 both ways among them")
    p.add_argument("--split", default="test")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--fidelity", action="store_true",
                   help="also score translations: with per-domain digit classifiers and, on MNIST-CDCB, their colours "
                        "against the true ones; on Facades against the true label maps")
    p.add_argument("--fidelity-steps", type=positive_int, default=None,
                   help="training steps of each fidelity classifier (default: iiae.evaluation.fidelity.STEPS)")
    p.add_argument("--diagnose", action="store_true",
                   help="paired data: also report why shared-code retrieval misses (norms of the missed codes, the "
                        "linear R² of each side's codes from the other's, variances on active dimensions, Recall@1 "
                        "ranked by cosine and by CSLS, which discount hubs)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N samples only")
    p.add_argument("--no-verify", action="store_true", help="skip checking each shard's sha256 against dataset.json")


def print_table(record: dict) -> None:
    where = record["pairs"] if "pairs" in record else f"{record['dataset']}/{record['split']}"
    print(f"{record['model']}  on  {where}")
    for key, value in record.items():
        if isinstance(value, float):
            print(f"  {key:<34} {value:8.4f}")
        elif isinstance(value, list):
            print(f"  {key:<34} " + " ".join(f"{v:.2f}" for v in value))
        elif isinstance(value, int):
            print(f"  {key:<34} {value:8d}")


def run(args: argparse.Namespace) -> int:
    from iiae.data import load_dataset_info
    from iiae.device import resolve_device
    from iiae.models import check_fits
    from iiae.models.loading import data_root, load_model, resolve_run
    device = resolve_device(args.device)
    if args.pairs is not None:
        given = [flag for flag, on in (("--data", args.data), ("--fidelity", args.fidelity),
                                       ("--diagnose", args.diagnose), ("--split", args.split != "test")) if on]
        if given:
            raise UserError(f"--pairs scores a folder of pairs: {given[0]} does not apply to it")
    _, run_dir = resolve_run(args.run)
    if run_dir is not None and args.pairs is None:  # before minutes of work: a link where a result goes is refused
        from iiae.safe_files import refuse_link

        for path in (run_dir.eval_results, run_dir.views_grid):
            refuse_link(path, f"{path.name} (a regular file the engine writes)")
    model = load_model(args.run, device)
    if args.pairs is not None:
        return _run_pairs(args, model, device)
    # hash only the split this evaluation reads: the training shards can be most of the folder
    info = load_dataset_info(data_root(args.run, args.data), verify=() if args.no_verify else (args.split,))
    check_fits(model.cfg, info, where="the model's model", notice=True)  # refusals first; the notice once
    if args.diagnose and info.layout != "paired":
        print(f"notice: --diagnose applies to paired data; {info.name} is {info.layout}: nothing to diagnose",
              file=sys.stderr)
    job = EvalJob(model, info, args.split, args.batch_size, args.limit, device, not args.json, run_dir,
                  fidelity=args.fidelity, fidelity_steps=args.fidelity_steps, diagnose=args.diagnose)
    metrics = {}
    for group in METRICS:
        if group.applies(job):
            metrics.update(group.compute(job))
    # the data as given: datasets of one name can differ (two renderings of MNIST-CDCB), and make demo checks it
    record = {"model": str(args.run), "dataset": info.name, "data": info.root, "split": args.split, **metrics}
    if run_dir is not None:
        from iiae.safe_files import atomic_write

        # renamed into place: a link at eval_results.json is refused, never written through
        atomic_write(run_dir.eval_results, json.dumps(record, indent=2) + "\n", "eval_results.json (a regular file)")
    if args.json:
        print(json.dumps(record))
    else:
        print_table(record)
        if run_dir is not None:
            print(f"wrote {run_dir.eval_results}")
    return 0


def _run_pairs(args: argparse.Namespace, model, device) -> int:
    """`--pairs DIR`: printed only; the run's eval_results.json stays the evaluation of its dataset."""
    from pathlib import Path

    from iiae.evaluation.pair_folder import pair_metrics

    if _image_size(model) is None:
        raise UserError(f"{args.run}: --pairs reads images, and this model takes features")
    metrics = pair_metrics(model, Path(args.pairs), batch_size=args.batch_size, limit=args.limit, device=device,
                           progress=not args.json)
    record = {"model": str(args.run), "pairs": str(args.pairs), **metrics}
    if args.json:
        print(json.dumps(record))
    else:
        print_table(record)
    return 0
