"""benchmarks/throughput.py in --quick mode: it runs end to end and its JSON has the documented structure."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"
RECIPES = ("debug", "mnist_cdcb_cpu")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the benchmark measures real code paths, never the interpreter
    # no data.root override here: mnist_cdcb_cpu uses data/mnist_cdcb_32 when prepared, else synthetic shards
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--plot", str(out / "plots"), "--results", str(out / "csv")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got {len(lines)}:\n{proc.stdout[:2000]}"
    return json.loads(lines[0]), out, proc.stderr


def test_top_level_keys(quick_run):
    result, _, _ = quick_run
    for key in ("engine_vs_bare", "fastest_vs_bare", "loader_vs_step", "kernels", "paper_step", "device", "versions", "git_sha"):
        assert key in result, key
    assert result["quick"] is True
    assert result["errors"] == []
    assert result["versions"]["torch"]
    assert isinstance(result["git_sha"], str) and result["git_sha"]


def test_engine_vs_bare(quick_run):
    result, _, _ = quick_run
    assert set(result["engine_vs_bare"]) == set(RECIPES)
    for name, d in result["engine_vs_bare"].items():
        for key in ("engine_samples_per_s", "bare_samples_per_s", "ratio"):
            assert _positive(d[key]), (name, key, d[key])
        # the ratio is engine speed / bare speed: a loop that is not wildly different from bare
        assert 0.3 < d["ratio"] < 3, (name, d["ratio"])
        assert d["target"] == 0.97 and isinstance(d["meets_target"], bool)


def test_fastest_vs_bare(quick_run):
    result, _, _ = quick_run
    assert set(result["fastest_vs_bare"]) == set(RECIPES)
    for name, d in result["fastest_vs_bare"].items():
        assert "channels_last" in d["variants"] and d["fastest"] in d["variants"]
        for variant, m in d["variants"].items():
            for key in ("engine_ms_per_step", "bare_ms_per_step", "ratio", "warmup_s"):
                assert _positive(m[key]), (name, variant, key, m[key])
        assert d["ratio"] == max(m["ratio"] for m in d["variants"].values())
        assert d["meets_target"] == (d["ratio"] >= d["target"] == 1.5)


def test_loader_vs_step(quick_run):
    result, _, _ = quick_run
    assert set(result["loader_vs_step"]) == set(RECIPES)
    for name, d in result["loader_vs_step"].items():
        for key in ("loader_samples_per_s", "step_samples_per_s", "ratio", "fed_vs_memory"):
            assert _positive(d[key]), (name, key, d[key])
        assert d["target"] == 5.0 and d["meets_target"] == (d["ratio"] >= 5.0)
        assert d["batch_shape"][1:] == [3, 32, 32]
        assert isinstance(d["synthetic"], bool)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA output")
def test_cuda_sections_skipped(quick_run):
    result, _, stderr = quick_run
    assert result["kernels"] == {"skipped": "no CUDA"}
    assert result["paper_step"] == {"skipped": "no CUDA"}
    assert result["device"]["type"] == "cpu"
    assert "skipped: no CUDA" in stderr


def test_outputs_written(quick_run):
    _, out, _ = quick_run
    assert (out / "plots" / "engine_vs_bare.png").stat().st_size > 1000
    assert (out / "plots" / "loader_vs_step.png").stat().st_size > 1000
    assert (out / "plots" / "fastest_vs_bare.png").stat().st_size > 1000
    rows = (out / "csv" / "engine_vs_bare.csv").read_text().splitlines()
    assert rows[0].startswith("date,device,") and len(rows) == 1 + len(RECIPES)
    assert "git_sha" in rows[0] and "torch" in rows[0]
    assert len((out / "csv" / "loader_vs_step.csv").read_text().splitlines()) == 1 + len(RECIPES)


@pytest.mark.slow
def test_time_to_accuracy_quick(tmp_path):
    """The three settings train the debug recipe on self-made data to the first validation (target 0) in one run,
    started outside the checkout with nothing of tests/ importable (what the package ships is enough)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--quick",
                           "--eval-every", "4", "--out", str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    tmp_path = tmp_path / "out"
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert set(result["settings"]) == {"paper_decoder", "fp32", "fast"}
    assert "model.decoder_conditioning=concat" in result["settings"]["paper_decoder"]["overrides"]
    for d in result["settings"].values():
        assert d["reached"] and d["steps"] == 4 and _positive(d["train_seconds"]) and _positive(d["ms_per_step"])
        assert [p["step"] for p in d["curve"]] == [4]
    assert "fast ÷ fp32" in proc.stdout and "fast ÷ paper_decoder" in proc.stdout
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 1000
