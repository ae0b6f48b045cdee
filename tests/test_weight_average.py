"""`optim.ema_decay`: the moving average of the weights is the formula's, is what training validates and saves,
resumes exactly, and a checkpoint without it is refused in one line."""
import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from iiae.cli import main
from iiae.config import load_recipe
from iiae.models import IIAE
from iiae.training.weight_average import FILE, WeightAverage
from test_train import ROOT

DEBUG = ROOT / "recipes" / "debug.yaml"
SHORT = ["train.sample_every=100", "train.log_every=1"]


def _model() -> IIAE:
    return IIAE.from_recipe(load_recipe(DEBUG))


def test_a_model_deep_copies():
    model = _model()
    twin = copy.deepcopy(model)
    assert twin.arch is model.arch and twin.state_dict().keys() == model.state_dict().keys()


def test_the_average_follows_the_formula_for_weights_and_batchnorm_statistics():
    model, decay = _model(), 0.75
    average = WeightAverage(model, decay)
    trainer = SimpleNamespace(raw_model=model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average.after_step(trainer, {}, [])  # the first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.add_(2.0)
    averaged = average.module.state_dict()
    assert all(torch.equal(averaged[k], start[k]) for k in start)  # a copy: untouched until the next update
    average.after_step(trainer, {}, [])
    averaged = average.module.state_dict()
    params = dict(model.named_parameters())
    stats = [k for k in start if k.endswith("running_mean")]
    assert params and stats
    for k in params:
        torch.testing.assert_close(averaged[k], start[k] + (1 - decay) * 1.0)
    for k in stats:
        torch.testing.assert_close(averaged[k], start[k] + (1 - decay) * 2.0)
    assert not average.module.training and model.training


def _train(data, run, *extra):
    return main(["train", str(DEBUG), f"data.root={data}", f"train.output_dir={run}", *SHORT, *extra])


@pytest.mark.integration
def test_training_selects_and_saves_the_average_and_resumes_it_exactly(debug_data, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    ema = ["optim.ema_decay=0.5", "train.selection=last"]
    assert _train(debug_data, straight, *ema) == 0
    assert _train(debug_data, split, *ema, "train.max_steps=6") == 0
    assert _train(debug_data, split, *ema, "--resume") == 0
    a = load_file(straight / "checkpoints" / "checkpoint_12" / FILE)
    b = load_file(split / "checkpoints" / "checkpoint_12" / FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["n_averaged"]) == 12
    # best/ holds the average, not the live weights
    saved = load_file(straight / "best" / "model.safetensors")
    (live_file,) = (straight / "checkpoints" / "checkpoint_12").glob("model*.safetensors")
    live = load_file(live_file)
    assert saved.keys() == live.keys()
    assert all(torch.equal(saved[k], a[f"module.{k}"]) for k in saved)
    assert any(not torch.equal(saved[k], live[k]) for k in saved if saved[k].is_floating_point())


@pytest.mark.integration
def test_a_checkpoint_without_its_average_is_refused_in_one_line(debug_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(debug_data, run, "optim.ema_decay=0.9", "train.max_steps=6") == 0
    (run / "checkpoints" / "checkpoint_6" / FILE).unlink()
    capsys.readouterr()
    assert _train(debug_data, run, "optim.ema_decay=0.9", "--resume") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and FILE in err[0] and "optim.ema_decay" in err[0]


@pytest.mark.integration
def test_changing_the_decay_on_resume_is_refused(debug_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(debug_data, run, "optim.ema_decay=0.9", "train.max_steps=6") == 0
    capsys.readouterr()
    assert _train(debug_data, run, "optim.ema_decay=0.99", "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.ema_decay (0.9 -> 0.99)" in err[0]
