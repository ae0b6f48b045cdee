"""Print the results table of one or more evaluated runs next to the paper's MNIST-CDCB numbers (markdown).

    python scripts/results_table.py runs/mnist_cdcb_cpu [runs/ablation_* ...] [--wall-seconds S]
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

PAPER = {"recall_at_1_x2y": 0.997, "recall_at_1_y2x": 0.997}  # Hwang et al. 2020, Table 1 (256 px, GPU)


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
    return f"{dev}, {platform.machine()}"


def row(run: Path) -> str:
    m = json.loads((run / "eval_results.json").read_text())
    sel = json.loads((run / "best" / "selection.json").read_text())
    recipe = (run / "recipe.yaml").read_text()
    name = next(line.split(":", 1)[1].strip() for line in recipe.splitlines() if line.startswith("name:"))
    secs = sel.get("train_seconds")
    when = f"step {sel['step']}" + (f", {secs / 60:.1f} min" if secs else "")
    label = name if run.name == name else f"{run.name} ({name})"
    return (f"| {label} | {pct(m['recall_at_1_x2y'])} | {pct(m['recall_at_1_y2x'])} | "
            f"{pct(m['exclusive_recall_at_1_x2y'])} / {pct(m['exclusive_recall_at_1_y2x'])} | "
            f"{pct(m.get('translation_accuracy_x2y'))} / {pct(m.get('translation_accuracy_y2x'))} | {when} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--wall-seconds", type=float, default=None, help="whole demo wall time, printed below the table")
    args = ap.parse_args()
    print("| model | Recall@1 X→Y | Recall@1 Y→X | exclusive Recall@1 X→Y / Y→X | translation accuracy X→Y / Y→X | selected at (training time) |")
    print("|---|---|---|---|---|---|")
    print(f"| paper (256 px, GPU) | {pct(PAPER['recall_at_1_x2y'])} | {pct(PAPER['recall_at_1_y2x'])} | chance | — | — |")
    for run in args.runs:
        print(row(run))
    print(f"\nmachine: {machine()}" + (f"; whole run {args.wall_seconds / 60:.1f} min" if args.wall_seconds else ""))


if __name__ == "__main__":
    main()
