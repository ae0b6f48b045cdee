"""Print the results table of one or more evaluated runs of one dataset next to the paper's numbers (markdown).

    python scripts/results_table.py runs/mnist_cdcb_cpu [runs/ablation_* ...] [--wall-seconds S]

The table follows the dataset of the first run's eval_results.json: retrieval (MNIST-CDCB, Maps) or the view
metrics (Cars3D, which the paper shows in pictures only).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch

# Hwang et al. 2020: Table 1 (MNIST-CDCB), Table 2 (Facades, Maps; CdDN = Gonzalez-Garcia et al. 2018), 256 px, GPU
PAPER = {
    "mnist-cdcb": [("paper (256 px, GPU)", 0.997, 0.997)],
    "facades": [("paper (256 px, GPU)", 0.962, 0.991), ("CdDN, paper's Table 2", 0.849, 0.896)],
    "maps": [("paper (256 px, GPU)", 0.966, 0.973), ("CdDN, paper's Table 2", 0.914, 0.969)],
}


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
    return f"{dev}, {platform.machine()}"


def _read(run: Path) -> tuple[dict, dict, str]:
    m = json.loads((run / "eval_results.json").read_text())
    sel = json.loads((run / "best" / "selection.json").read_text())
    recipe = (run / "recipe.yaml").read_text()
    name = next(line.split(":", 1)[1].strip() for line in recipe.splitlines() if line.startswith("name:"))
    return m, sel, name if run.name == name else f"{run.name} ({name})"


def _when(sel: dict, run: Path) -> str:
    secs = sel.get("train_seconds")
    if secs is None and sel.get("selection") == "last":  # the final weights: the time from the training log
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
        secs = max((e.get("train_seconds", 0) for e in log), default=None)
    final = " (final weights: no valid point met the rule)" if sel.get("reason") else ""
    return f"step {sel['step']}{final}" + (f", {secs / 60:.1f} min" if secs else "")


def _both_ways(m: dict, key: str, fmt, suffix: str = "") -> str:
    a, b = m.get(f"{key}_x2y{suffix}"), m.get(f"{key}_y2x{suffix}")
    return "—" if a is None else f"{fmt(a)} / {fmt(b)}"


def retrieval_table(runs: list[Path], dataset: str) -> list[str]:
    translation = dataset == "mnist-cdcb"  # digit classifiers and stored colours exist for MNIST-CDCB only
    extra = [" translation accuracy X→Y / Y→X |", " guided colour error X→Y / Y→X (0–255) |",
             " prior colour spread X→Y / Y→X (of the real one) |"] if translation else []
    lines = ["| model | Recall@1 X→Y | Recall@1 Y→X | exclusive Recall@1 X→Y / Y→X |" + "".join(extra)
             + " selected at (training time) |", "|---|---|---|---|" + "---|" * len(extra) + "---|"]
    for label, x2y, y2x in PAPER.get(dataset, []):
        lines.append(f"| {label} | {pct(x2y)} | {pct(y2x)} | chance |" + " — |" * len(extra) + " — |")
    for run in runs:
        m, sel, label = _read(run)
        cells = [label, pct(m["recall_at_1_x2y"]), pct(m["recall_at_1_y2x"]),
                 _both_ways(m, "exclusive_recall_at_1", pct)]
        if translation:
            cells += [_both_ways(m, "translation_accuracy", pct), _both_ways(m, "guided_colour_error", "{:.1f}".format),
                      _both_ways(m, "prior_colour_spread_ratio", lambda v: f"{100 * v:.0f} %")]
        lines.append("| " + " | ".join(cells + [_when(sel, run)]) + " |")
    return lines


def label_maps_table(runs: list[Path]) -> list[str]:
    """Facades: translations against the true label maps (`iiae eval --fidelity`, evaluation/label_maps.py)."""
    lines = ["", "| model | photo→labels guided: accuracy / mIoU | prior | labels→photo guided (segmenter) | prior | "
             "segmenter on real photos (ceiling) | prior diversity photo→labels / labels→photo |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        m, _, label = _read(run)
        if "segmenter_accuracy" not in m:
            continue
        pair = lambda kind, way: f"{pct(m[f'labels_{kind}_accuracy_{way}'])} / {100 * m[f'labels_{kind}_miou_{way}']:.1f}"
        lines.append(f"| {label} | {pair('guided', 'x2y')} | {pair('prior', 'x2y')} | {pair('guided', 'y2x')} | "
                     f"{pair('prior', 'y2x')} | {pct(m['segmenter_accuracy'])} / {100 * m['segmenter_miou']:.1f} | "
                     f"{m['labels_diversity_x2y']:.3f} / {m['labels_diversity_y2x']:.3f} |")
    return lines if len(lines) > 3 else []


def _norm_ranks(m: dict) -> str:
    a, b = m["miss_norm_rank_x2y"], m["miss_norm_rank_y2x"]
    if math.isnan(a) and math.isnan(b):  # every gallery code has one norm (model.shared_code_norm: sphere)
        return "— (one norm)"
    return " / ".join("—" if math.isnan(v) else f"{v:.2f}" for v in (a, b))


def diagnosis_table(runs: list[Path]) -> list[str]:
    """Why shared-code retrieval misses (`iiae eval --diagnose`, evaluation/code_diagnosis.py)."""
    lines = ["", "| model | hubness max X→Y / Y→X | hubness skew X→Y / Y→X | misses' gallery-norm percentile X→Y / Y→X "
             "| R² of r^x from r^y / r^y from r^x | active dims | variance on them r^x / r^y "
             "| Recall@1 X→Y / Y→X ranked by cosine | by centred cosine | by CSLS |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        m, _, label = _read(run)
        if "active_dims" not in m:
            continue
        lines.append(f"| {label} | {m['hubness_max_x2y']} / {m['hubness_max_y2x']} | {m['hubness_skew_x2y']:.1f} / "
                     f"{m['hubness_skew_y2x']:.1f} | {_norm_ranks(m)} | "
                     f"{m['r2_x_from_y']:.2f} / {m['r2_y_from_x']:.2f} | {m['active_dims']} | "
                     f"{m['active_var_x']:.2f} / {m['active_var_y']:.2f} | "
                     + " | ".join(_both_ways(m, "recall_at_1", pct, suffix=f"_{r}") for r in ("cosine", "centred", "csls")) + " |")
    return lines if len(lines) > 3 else []


def views_table(runs: list[Path]) -> list[str]:
    lines = ["| model | identity Recall@1 across views (chance) | guided translation L1 / PSNR | copy x | "
             "nearest training car | joint reconstruction | azimuth probe z^y / z^s (chance) | "
             "car probe z^s / z^y (chance) | trained |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        m, sel, label = _read(run)
        pair = lambda name: f"{m[f'views_{name}_l1']:.1f} / {m[f'views_{name}_psnr']:.1f} dB"
        lines.append(
            f"| {label} | {pct(m['views_identity_recall_at_1'])} ({pct(m['views_identity_chance'])}) | "
            f"{pair('guided')} | {pair('copy_x')} | {pair('nearest_train')} | {pair('reconstruction')} | "
            f"{pct(m['views_probe_azimuth_from_z_y'])} / {pct(m['views_probe_azimuth_from_z_s'])} "
            f"({pct(m['views_probe_azimuth_chance'])}) | {pct(m['views_probe_car_from_z_s'])} / "
            f"{pct(m['views_probe_car_from_z_y'])} ({pct(m['views_probe_car_chance'])}) | {_when(sel, run)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--wall-seconds", type=float, default=None, help="whole demo wall time, printed below the table")
    args = ap.parse_args()
    first, _, _ = _read(args.runs[0])
    views = "views_identity_recall_at_1" in first
    lines = views_table(args.runs) if views else (retrieval_table(args.runs, first["dataset"])
                                                  + label_maps_table(args.runs) + diagnosis_table(args.runs))
    print("\n".join(lines))
    print(f"\nmachine: {machine()}" + (f"; whole run {args.wall_seconds / 60:.1f} min" if args.wall_seconds else ""))


if __name__ == "__main__":
    main()
