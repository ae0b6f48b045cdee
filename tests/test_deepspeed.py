"""DeepSpeed on CPU (`DS_ACCELERATOR=cpu`, one process: the only way accelerate runs it without a GPU), launched
exactly as a user launches it: ZeRO stages 1 and 2 follow the plain run's loss trajectory, clipping comes from
`train.max_grad_norm`, bf16 trains, a stopped run resumes exactly, and a DeepSpeed checkpoint file holding foreign
code is refused before DeepSpeed unpickles it. A 2-process ZeRO-2 run is a GPU test (benchmarks/gpu_check.sh)."""
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

if os.environ.get("CI"):  # CI installs the extra (make test): a missing DeepSpeed must fail there, not skip
    import deepspeed  # noqa: F401
else:
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")

from test_reliability import Payload
from test_train import PY, events, train

CONFIGS = {1: "recipes/accelerate/deepspeed_zero1.yaml", 2: "recipes/accelerate/deepspeed_zero2.yaml"}
STEPS = ["train.eval_every=100", "train.sample_every=100"]  # 12 steps, checkpoints at 6 and 12


@pytest.fixture(autouse=True)
def cpu_deepspeed(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def ds_train(data, out, *extra, stage=2, precision=None, check=True):
    launcher = (PY, "-m", "accelerate.commands.launch", "--config_file", CONFIGS[stage],
                *(("--mixed_precision", precision) if precision else ()), "engine/train.py")
    return train(data, out, *STEPS, *extra, launcher=launcher, check=check)


def losses(run):
    return [e["loss"] for e in events(run, "train")]


def max_relative_gap(a, b):
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def run_info(run):
    return json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def plain(debug_data, tmp_path_factory):
    """The same recipe without DeepSpeed: unclipped, and clipped at 0.5 (recon weight 1000: clipping bites)."""
    root = tmp_path_factory.mktemp("plain")
    for name, extra in (("unclipped", []), ("clipped", ["train.max_grad_norm=0.5"])):
        train(debug_data, root / name, *STEPS, *extra)
    return root


@pytest.fixture(scope="module")
def stopped_at_6(debug_data, tmp_path_factory):
    """ZeRO-2, clipped at 0.5, stopped after 6 steps (its checkpoint_6 resumes below)."""
    run = tmp_path_factory.mktemp("ds") / "run"
    ds_train(debug_data, run, "train.max_grad_norm=0.5", "train.max_steps=6")
    return run


@pytest.mark.slow  # 80 s with its op build; ZeRO-2 keeps the DeepSpeed engine path in the default tier
def test_zero_1_matches_the_plain_run_and_clips_nothing_unasked(debug_data, plain, tmp_path):
    run = tmp_path / "run"
    ds_train(debug_data, run, stage=1)
    assert run_info(run)["distributed_type"] == "DistributedType.DEEPSPEED"  # not a silent plain CPU run
    assert losses(run) == pytest.approx(losses(plain / "unclipped"), rel=1e-5)
    # the selected model is the trained one (the module DeepSpeed wraps), equal to the plain run's
    ours, theirs = (load_file(r / "best" / "model.safetensors") for r in (run, plain / "unclipped"))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-6) for k in ours)
    # had DeepSpeed filled "gradient_clipping": "auto" with its 1.0, the trajectory would have left the plain one
    # (under Adam clipping moves the loss little, but 10x more than the tolerance above)
    assert max_relative_gap(losses(plain / "clipped"), losses(plain / "unclipped")) > 1e-4


def test_zero_2_clips_from_the_recipe_and_resumes_exactly(debug_data, plain, stopped_at_6, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_6, run)
    proc = ds_train(debug_data, run, "train.max_grad_norm=0.5", "--resume")
    assert "resumed from" in proc.stdout + proc.stderr and "checkpoint_6" in proc.stdout + proc.stderr
    assert [e["step"] for e in events(run, "train")] == [2, 4, 6, 8, 10, 12]
    assert losses(run) == pytest.approx(losses(plain / "clipped"), rel=1e-5)


@pytest.mark.slow  # the default tier keeps the stage/clipping/resume cases (10-minute budget)
def test_bf16_under_deepspeed_casts_inputs_and_trains(debug_data, plain, tmp_path):
    """DeepSpeed casts the weights to bf16 and turns accelerate's autocast off: the inputs (and BatchNorm's
    statistics) follow the weights; the trajectory stays within bf16 rounding of fp32; best/ loads and embeds."""
    from iiae.models import IIAE

    run = tmp_path / "run"
    ds_train(debug_data, run, precision="bf16")
    assert run_info(run)["mixed_precision"] == "bf16"
    assert losses(run) == pytest.approx(losses(plain / "unclipped"), rel=2e-2)
    model = IIAE.from_pretrained(str(run / "best")).eval()
    assert torch.isfinite(model.encode_shared(torch.rand(2, 3, 32, 32) * 2 - 1, "x")).all()


@pytest.mark.slow
def test_foreign_code_in_a_deepspeed_checkpoint_never_runs(debug_data, stopped_at_6, tmp_path):
    """DeepSpeed loads its files with weights_only=False; the engine checks them with the weights-only loader
    first (allowing only DeepSpeed's three plain record classes)."""
    run, proof = tmp_path / "run", tmp_path / "PAYLOAD_RAN"
    shutil.copytree(stopped_at_6, run)
    (planted,) = (run / "checkpoints" / "checkpoint_6").glob("*/mp_rank_00_model_states.pt")
    planted.write_bytes(pickle.dumps(Payload(proof)))
    proc = ds_train(debug_data, run, "--resume", check=False)
    assert proc.returncode != 0 and not proof.exists()
    assert f"error: {planted}: refused" in proc.stderr
