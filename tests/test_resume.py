"""Resume that cannot hurt: a changed model or objective is refused before anything is written, allowed changes
are recorded, a longer cosine run is stretched (not re-warmed), `--resume CHECKPOINT` continues from a chosen
checkpoint exactly, and `train.init_from` starts from another run's weights."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from iiae.cli import main
from iiae.training.resume import cosine_lr
from test_train import ROOT, events, weights

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

SHORT = ["train.eval_every=100", "train.sample_every=100", "train.log_every=1"]


def train(data, run, *extra):
    return main(["train", str(ROOT / "recipes" / "debug.yaml"), f"data.root={data}", f"train.output_dir={run}",
                 *SHORT, *extra])


def test_a_changed_model_or_objective_is_refused_before_anything_is_written(debug_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(debug_data, run, "train.max_steps=2", "train.checkpoint_every=2") == 0
    before = {p.name: p.read_bytes() for p in (run / "recipe.yaml", run / "run.json", run / "train_log.jsonl")}
    capsys.readouterr()
    code = train(debug_data, run, "train.max_steps=4", "model.z_shared=8", "objective.beta=0.5", "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "model.z_shared (4 -> 8)" in err[0] and "objective.beta (0.2 -> 0.5)" in err[0]
    assert "nothing was written" in err[0]
    assert {p: (run / p).read_bytes() for p in before} == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint_2"]


def test_extending_a_cosine_run_stretches_the_schedule(debug_data, tmp_path, capsys):
    run = tmp_path / "run"
    cosine = ["optim.schedule=cosine", "optim.min_lr_ratio=0.1", "train.checkpoint_every=100"]
    assert train(debug_data, run, *cosine, "train.max_steps=6") == 0
    assert train(debug_data, run, *cosine, "train.max_steps=12", "--resume") == 0
    out = capsys.readouterr()
    assert "notice: resumed with train.max_steps = 12 (the run had 6)" in out.out + out.err
    lrs = {e["step"]: e["lr"] for e in events(run, "train")}
    base = 2e-4  # the debug recipe's optim.lr
    for step in range(1, 7):  # the first run: its own length
        assert lrs[step] == pytest.approx(cosine_lr(base, step, 6, 0.1), rel=1e-9)
    for step in range(7, 13):  # then the closed form of the new length, from where it was: no climb to the peak
        assert lrs[step] == pytest.approx(cosine_lr(base, step, 12, 0.1), rel=1e-9)
    assert lrs[7] < base and all(lrs[s + 1] < lrs[s] for s in range(7, 12))
    assert lrs[12] == pytest.approx(base * 0.1)
    assert json.loads((run / "run.json").read_text())["recipe_changes"] == {"train.max_steps": [6, 12]}
    assert math.isclose(cosine_lr(base, 0, 12, 0.1), base)


def test_resume_from_a_chosen_checkpoint_is_exact(debug_data, tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    steps = ["train.max_steps=6", "train.checkpoint_every=2"]
    assert train(debug_data, straight, *steps) == 0
    assert train(debug_data, run, *steps) == 0
    first = weights(run, 6)
    assert train(debug_data, run, *steps, "--resume", str(run / "checkpoints" / "checkpoint_2")) == 0
    assert "checkpoint_4 is newer than checkpoint_2: kept as abandoned-checkpoint_4" in capsys.readouterr().err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["abandoned-checkpoint_4", "abandoned-checkpoint_6", "checkpoint_2", "checkpoint_4",
                     "checkpoint_6"]
    again, reference = weights(run, 6), weights(straight, 6)
    assert all(torch.equal(again[k], reference[k]) and torch.equal(first[k], reference[k]) for k in reference)
    assert [e["step"] for e in events(run, "train")] == [1, 2, 3, 4, 5, 6]  # the abandoned steps logged once
    assert train(debug_data, run, *steps, "--resume", str(tmp_path)) == 2
    assert "not a complete checkpoint of" in capsys.readouterr().err


def test_init_from_starts_from_another_runs_weights(debug_data, tmp_path, capsys):
    source, run, fresh = tmp_path / "source", tmp_path / "run", tmp_path / "fresh"
    assert train(debug_data, source, "train.max_steps=4", "train.checkpoint_every=4") == 0
    tiny = ["train.max_steps=1", "train.checkpoint_every=1", "optim.lr=1e-12"]  # one step that moves nothing
    assert train(debug_data, run, *tiny, f"train.init_from={source}") == 0
    assert train(debug_data, fresh, *tiny) == 0
    start = load_file(source / "best" / "model.safetensors")
    got, other = weights(run, 1), weights(fresh, 1)
    params = [k for k in start if "running" not in k and "num_batches" not in k]  # BN statistics move in a step
    gap = max((got[k] - start[k]).abs().max().item() for k in params)
    fresh_gap = max((other[k] - start[k]).abs().max().item() for k in params)  # same seed: the source's start
    assert gap < 1e-8 and fresh_gap > 1e-5
    capsys.readouterr()
    assert train(debug_data, tmp_path / "bad", *tiny, f"train.init_from={source}", "model.z_shared=8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "train.init_from:" in err[-1] and "same architecture" in err[-1]
