"""The demo's helper scripts on run folders written here: the results table per dataset, the Recall@1 curve; the
scripts and benchmarks stand on the package alone (never on tests/)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

ROOT = Path(__file__).resolve().parents[1]


def fake_run(tmp_path: Path, name: str, metrics: dict, selection: dict, log: list[dict]) -> Path:
    run = tmp_path / name
    (run / "best").mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"name: {name}\n")
    (run / "eval_results.json").write_text(json.dumps(metrics))
    (run / "best" / "selection.json").write_text(json.dumps(selection))
    (run / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    return run


def script(*args) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_results_table_follows_the_dataset(tmp_path):
    recall = {"recall_at_1_x2y": 0.5, "recall_at_1_y2x": 0.25, "exclusive_recall_at_1_x2y": 0.001,
              "exclusive_recall_at_1_y2x": 0.0}
    maps = fake_run(tmp_path, "maps_cpu", {"dataset": "maps", **recall}, {"step": 900, "train_seconds": 600}, [])
    out = script("scripts/results_table.py", maps)
    assert "| paper (256 px, GPU) | 96.60 % | 97.30 % |" in out and "CdDN" in out
    assert "| maps_cpu | 50.00 % | 25.00 % | 0.10 % / 0.00 % | step 900, 10.0 min |" in out
    final = fake_run(tmp_path, "maps_final", {"dataset": "maps", **recall}, {"step": 3000, "selection": "last",
                     "reason": "no validation point met the selection rule"}, [{"train_seconds": 750}])
    assert "| step 3000 (final weights: no valid point met the rule), 12.5 min |" in script("scripts/results_table.py", final)
    assert "translation accuracy" not in out and "hubness" not in out and "segmenter" not in out
    labels = {f"labels_{kind}_{m}_{way}": v for kind, v in (("guided", 0.8), ("prior", 0.6))
              for m in ("accuracy", "miou") for way in ("x2y", "y2x")}
    diagnosis = {"hubness_max_x2y": 3, "hubness_max_y2x": 24, "hubness_skew_x2y": 2.0, "hubness_skew_y2x": 3.4,
                 "miss_norm_rank_x2y": 0.33, "miss_norm_rank_y2x": 0.06, "r2_x_from_y": 0.12, "r2_y_from_x": 0.17,
                 "active_dims": 1905, "active_var_x": 0.13, "active_var_y": 0.15,
                 "recall_at_1_x2y_cosine": 0.81, "recall_at_1_y2x_cosine": 0.62,
                 "recall_at_1_x2y_centred": 0.85, "recall_at_1_y2x_centred": 0.7,
                 "recall_at_1_x2y_csls": 0.9, "recall_at_1_y2x_csls": 0.875}
    facades = fake_run(tmp_path, "facades_cpu", {"dataset": "facades", **recall, **labels, **diagnosis,
                                                 "segmenter_accuracy": 0.85, "segmenter_miou": 0.5,
                                                 "labels_diversity_x2y": 0.01, "labels_diversity_y2x": 0.2},
                       {"step": 6000, "train_seconds": 600}, [])
    out = script("scripts/results_table.py", facades)
    assert "| paper (256 px, GPU) | 96.20 % | 99.10 % |" in out and "| CdDN, paper's Table 2 | 84.90 % | 89.60 % |" in out
    assert ("| facades_cpu | 80.00 % / 80.0 | 60.00 % / 60.0 | 80.00 % / 80.0 | 60.00 % / 60.0 | 85.00 % / 50.0 | "
            "0.010 / 0.200 |") in out
    assert ("| facades_cpu | 3 / 24 | 2.0 / 3.4 | 0.33 / 0.06 | 0.12 / 0.17 | 1905 | 0.13 / 0.15 | 81.00 % / 62.00 % "
            "| 85.00 % / 70.00 % | 90.00 % / 87.50 % |") in out
    sphere = fake_run(tmp_path, "facades_sphere", {"dataset": "facades", **recall, **labels, **diagnosis,
                                                   "miss_norm_rank_x2y": float("nan"), "miss_norm_rank_y2x": float("nan"),
                                                   "segmenter_accuracy": 0.85, "segmenter_miou": 0.5,
                                                   "labels_diversity_x2y": 0.01, "labels_diversity_y2x": 0.2},
                      {"step": 6000}, [])
    assert "| facades_sphere | 3 / 24 | 2.0 / 3.4 | — (one norm) | 0.12 / 0.17 |" in script("scripts/results_table.py", sphere)
    mnist = fake_run(tmp_path, "mnist_cdcb_cpu", {"dataset": "mnist-cdcb", **recall, "translation_accuracy_x2y": 0.9,
                                                  "translation_accuracy_y2x": 0.8, "guided_colour_error_x2y": 12.34,
                                                  "guided_colour_error_y2x": 3.0,
                                                  "prior_colour_spread_ratio_x2y": 0.614,
                                                  "prior_colour_spread_ratio_y2x": 0.9}, {"step": 4000}, [])
    out = script("scripts/results_table.py", mnist)
    assert "| paper (256 px, GPU) | 99.70 % | 99.70 % | chance | — | — | — | — |" in out
    assert ("| mnist_cdcb_cpu | 50.00 % | 25.00 % | 0.10 % / 0.00 % | 90.00 % / 80.00 % | 12.3 / 3.0 | 61 % / 90 % "
            "| step 4000 |") in out

    views = {f"views_{k}": v for k, v in {
        "identity_recall_at_1": 0.75, "identity_chance": 1 / 7, "probe_azimuth_from_z_y": 0.9,
        "probe_azimuth_from_z_s": 0.1, "probe_azimuth_chance": 1 / 23, "probe_car_from_z_s": 0.8,
        "probe_car_from_z_y": 0.2, "probe_car_chance": 1 / 7}.items()}
    views.update({f"views_{n}_{m}": 1.5 for n in ("guided", "copy_x", "nearest_train", "reconstruction")
                  for m in ("l1", "psnr")})
    cars = fake_run(tmp_path, "cars_cpu", {"dataset": "cars", **recall, **views}, {"step": 40, "selection": "last"},
                    [{"step": 40, "kind": "train", "train_seconds": 120.0}])
    out = script("scripts/results_table.py", cars)
    assert "| cars_cpu | 75.00 % (14.29 %) | 1.5 / 1.5 dB |" in out and "90.00 % / 10.00 % (4.35 %)" in out
    assert "\nmachine: " in out
    assert "step 40, 2.0 min" in out  # the final weights: time from the training log


def test_recall_curve_draws_valid_and_monitor(tmp_path):
    log = [{"step": s, "kind": kind, "split": split, "train_seconds": 60.0 * s, "recall_at_1_x2y": 0.1 * s,
            "recall_at_1_y2x": 0.05 * s} for s in (1, 2) for kind, split in (("valid", "valid"), ("monitor", "test"))]
    run = fake_run(tmp_path, "maps_cpu", {}, {}, log)
    out = tmp_path / "curve.png"
    assert "wrote" in script("scripts/recall_curve.py", run, out)
    from PIL import Image

    assert Image.open(out).size == (630, 360)


SCRIPTS = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
TEST_HELPERS = re.compile(r"^\s*(from|import)\s+(datagen|kernel_helpers|ddp_harness|conftest)\b|sys\.path.*tests", re.M)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_and_benchmarks_never_import_the_tests(path):
    """They run from an installed package, where tests/ does not exist: none of its helpers may be imported."""
    assert not TEST_HELPERS.search(path.read_text())


def test_shapes_runs_outside_the_checkout(tmp_path):
    """`make example-paired`'s data generator, started from another folder with only the package importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "shapes.py"), "out", "--pairs", "3", "--size", "16",
                           "--layout", "folders"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "A").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert len(list((tmp_path / "out" / "B").iterdir())) == 3
