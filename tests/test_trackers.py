"""Trackers: init kwargs from the recipe, one wandb run across resumes, sample grids as images, and a missing
tracker refused at start. TensorBoard is the real one; wandb is a stub package that records its calls."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import ROOT, TIMEOUT, _env

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

STUB = '''
import json, os

def _record(**event):
    with open(os.environ["STUB_WANDB_LOG"], "a") as f:
        f.write(json.dumps(event, default=str) + "\\n")

class _Config:
    def update(self, values, allow_val_change=False):
        _record(call="config", keys=len(values))

config = _Config()

class Image:
    def __init__(self, data):
        self.size = getattr(data, "size", None)

class _Run:
    def __init__(self, kwargs):
        self.id = kwargs.get("id")

    def log(self, values, step=None, **kwargs):
        images = [k for k, v in values.items() if isinstance(v, list) and v and isinstance(v[0], Image)]
        _record(call="log", step=step, images=images)

    def finish(self):
        _record(call="finish")

def init(project=None, **kwargs):
    _record(call="init", project=project, **kwargs)
    return _Run(kwargs)
'''


def _stub_wandb(folder: Path) -> Path:
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "__init__.py").write_text(STUB)
    (folder / "wandb-0.0.0.dist-info").mkdir()
    (folder / "wandb-0.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: wandb\nVersion: 0.0.0\n")
    return folder


def _train(data, run, *extra, env=None):
    cmd = [sys.executable, "engine/train.py", "recipes/debug.yaml", f"data.root={data}", f"train.output_dir={run}",
           "train.eval_every=100", "train.checkpoint_every=6", "train.sample_every=6", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env={**_env(), **(env or {})})


@pytest.mark.slow  # 25 s: the default tier keeps the refusal below and the ZeRO-1 run (10-minute budget)
def test_wandb_kwargs_one_run_across_resumes_and_grids_to_every_tracker(debug_data, tmp_path):
    # a process of its own: accelerate lists the available trackers once, when it is first imported
    stub, log = _stub_wandb(tmp_path / "stub"), tmp_path / "wandb.jsonl"
    env = {"PYTHONPATH": str(stub), "STUB_WANDB_LOG": str(log)}
    run = tmp_path / "run"
    options = ["train.trackers=[tensorboard, wandb]", "train.tracker_kwargs={wandb: {entity: me, tags: [a, b]}}"]
    first = _train(debug_data, run, *options, "train.max_steps=6", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    again = _train(debug_data, run, *options, "train.max_steps=12", "--resume", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    inits = [e for e in events if e["call"] == "init"]
    assert len(inits) == 2 and inits[0]["id"] == inits[1]["id"] and inits[0]["resume"] == "allow"
    assert inits[0]["entity"] == "me" and inits[0]["tags"] == ["a", "b"] and inits[0]["project"] == "debug"
    assert json.loads((run / "trackers.json").read_text()) == {"wandb": {"id": inits[0]["id"]}}
    assert [e["step"] for e in events if e["call"] == "log" and e["images"] == ["samples/translation"]] == [6, 12]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events_file in sorted((run / "tensorboard").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events_file), size_guidance={"images": 0})
        acc.Reload()
        steps += [e.step for tag in acc.Tags()["images"] for e in acc.Images(tag)]
    assert sorted(steps) == [6, 12]


def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(debug_data, tmp_path):
    proc = _train(debug_data, tmp_path / "run", "train.trackers=[tensorboard, aim]")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1
    assert "train.trackers: aim is not installed here; `pip install aim`, or leave it out" in err[0]
    assert not (tmp_path / "run").exists()
