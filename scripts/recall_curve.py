"""Shared Recall@1 of a run against training time: the validation split (what selection reads) and the monitor
split (`data.monitor_split`, e.g. test), both directions, from <run>/train_log.jsonl.

    python scripts/recall_curve.py runs/maps_cpu docs/maps_recall_curve.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iiae.evaluation.retrieval_metrics import SHARED_RECALL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [json.loads(line) for line in (args.run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, style in (("valid", "-"), ("monitor", ":")):
        points = [e for e in events if e.get("kind") == kind and "train_seconds" in e]
        if not points:
            continue
        split = points[0].get("split", kind)
        for key, marker in zip(SHARED_RECALL, "os"):
            ax.plot([e["train_seconds"] / 60 for e in points], [100 * e[key] for e in points], style + marker,
                    ms=3, label=f"{split}: {key}")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("shared Recall@1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{args.run.name}: Recall@1 against training time")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
