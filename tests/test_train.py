"""The training engine end to end on CPU: artefacts, exact resume, signals, divergence, run-folder safety,
multi-rank and multi-node equivalence, gradient accumulation."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMEOUT = 240


def _env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # train on the torch kernels: the interpreter is for kernel tests
    env["OMP_NUM_THREADS"] = "1"  # several processes share 2 cores
    return env


def train(data, out, *extra, launcher=(PY, "engine/train.py"), check=True):
    cmd = [*launcher, "recipes/debug.yaml", f"data.root={data}", f"train.output_dir={out}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(run, step):
    (f,) = (Path(run) / "checkpoints" / f"checkpoint_{step}").glob("model*.safetensors")
    return load_file(f)


def events(run, kind):
    lines = (Path(run) / "train_log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def test_debug_run_writes_every_artefact(debug_data, tmp_path):
    run = tmp_path / "run"
    proc = train(debug_data, run, "train.keep_checkpoints=1", "data.monitor_split=test")
    for name in ("recipe.yaml", "run.json", "train_log.jsonl", "curves.png", "best/model.safetensors",
                 "best/config.json", "best/selection.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["kernels_backend"] == "torch"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint_12"]  # keep_checkpoints=1
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000006.png", "step_0000012.png"]
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    train_events, valid = events(run, "train"), events(run, "valid")
    assert [e["step"] for e in train_events] == [2, 4, 6, 8, 10, 12]
    assert [e["step"] for e in valid] == [6, 12]
    assert {"loss", "recon_x", "kl_rx", "c_t"} <= set(train_events[0])
    assert 0 <= valid[0]["recall_at_1_x2y"] <= 1
    monitor = events(run, "monitor")  # the test split beside validation, not used for selection
    assert [(e["step"], e["split"], e["n"]) for e in monitor] == [(6, "test", 64), (12, "test", 64)]
    assert "done: 12 steps" in proc.stdout + proc.stderr
    # output to a pipe: whole progress lines (the first and the last of a 12-step run), no carriage returns
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    progress = [line for line in proc.stderr.splitlines() if line.startswith("debug:")]
    assert progress[0].startswith("debug:   0%") and "12/12" in progress[-1]
    # the run folder of a finished run is not clobbered by a second run
    again = train(debug_data, run, check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and (run / "best/model.safetensors").is_file()


def test_without_an_eligible_point_the_final_weights_are_kept_and_say_so(debug_data, tmp_path):
    run = tmp_path / "run"
    proc = train(debug_data, run, "train.select_after=100")  # 12 steps: no point is eligible
    assert "warning: no validation point met the selection rule; saving the final weights" in proc.stdout + proc.stderr
    selection = json.loads((run / "best" / "selection.json").read_text())
    assert selection.pop("train_seconds") > 0
    assert selection == {"step": 12, "selection": "last", "reason": "no validation point met the selection rule"}
    assert (run / "best" / "model.safetensors").is_file()


@pytest.mark.slow  # three training processes; `iiae train` and engine/train.py also run in the default tier
def test_launchers_agree(debug_data, tmp_path):
    """python engine/train.py, iiae train and accelerate launch give the same weights."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    steps = ["train.max_steps=4", "train.eval_every=100", "train.checkpoint_every=4"]
    train(debug_data, a, *steps)
    train(debug_data, b, *steps, launcher=(PY, "-m", "iiae.cli", "train"))
    train(debug_data, c, *steps, launcher=(PY, "-m", "accelerate.commands.launch", "--config_file",
                                          "recipes/accelerate/cpu.yaml", "engine/train.py"))
    wa = weights(a, 4)
    for other in (b, c):
        wo = weights(other, 4)
        assert all((wa[k] == wo[k]).all() for k in wa)


def test_resume_is_exact(debug_data, tmp_path):
    """12 steps straight == 6 steps, stop, resume, 6 more (bitwise), across a data-epoch boundary (8 batches)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(debug_data, straight)
    train(debug_data, split, "train.max_steps=6")
    proc = train(debug_data, split, "--resume")
    assert "resumed from" in proc.stdout + proc.stderr
    a, b = weights(straight, 12), weights(split, 12)
    assert all((a[k] == b[k]).all() for k in a)
    assert [e["loss"] for e in events(straight, "train")] == [e["loss"] for e in events(split, "train")]


def test_sigterm_checkpoints_and_resumes(debug_data, tmp_path):
    run = tmp_path / "run"
    cmd = [PY, "engine/train.py", "recipes/debug.yaml", f"data.root={debug_data}", f"train.output_dir={run}",
           "train.max_steps=100000", "train.checkpoint_every=100000", "train.eval_every=100000",
           "train.sample_every=100000", "train.log_every=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + TIMEOUT
    while not (run / "train_log.jsonl").exists() or len((run / "train_log.jsonl").read_text().splitlines()) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in out + err and "--resume" in out + err
    (ckpt,) = (run / "checkpoints").iterdir()
    step = int(ckpt.name.split("_")[1])
    assert step >= 3
    resumed = train(debug_data, run, "--resume", f"train.max_steps={step + 2}")
    assert f"resumed from {ckpt}" in resumed.stdout + resumed.stderr
    assert (run / "checkpoints" / f"checkpoint_{step + 2}").is_dir()


def test_non_finite_loss_stops_and_keeps_checkpoint(debug_data, tmp_path):
    run = tmp_path / "run"
    train(debug_data, run, "train.max_steps=2", "train.checkpoint_every=2")
    # a resume may not change the objective (tests/test_resume.py): the run's own recipe gets the infinite weight
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("recon_weight: 1000.0", "recon_weight: .inf"))
    proc = train(debug_data, run, "--resume", "train.max_steps=4", "objective.recon_weight=.inf", check=False)
    assert proc.returncode == 3  # diverged: not the bad-input code
    assert "not finite at step 2" in proc.stderr and "recon_x" in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint_2"]


def test_bad_input_is_one_line(debug_data, tmp_path, capsys):
    from iiae.train import main  # in this process: each case fails before training starts

    def code_and_err(data, out, *extra):
        code = main([str(ROOT / "recipes/debug.yaml"), f"data.root={data}", f"train.output_dir={out}", *extra])
        return code, capsys.readouterr().err

    code, err = code_and_err(tmp_path / "nodata", tmp_path / "run")
    assert code == 2 and "iiae prepare" in err and len(err.strip().splitlines()) == 1
    code, err = code_and_err(debug_data, tmp_path / "run2", "--resume")
    assert code == 2 and "no complete checkpoint" in err
    code, err = code_and_err(debug_data, tmp_path / "run3", "data.monitor_split=nope")  # found before any step
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "data.monitor_split:" in err and "'nope'" in err and not (tmp_path / "run3").exists()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _harness(tmp_path, name, accum=1, torchrun=None):
    out = tmp_path / f"{name}.json"
    cmd = [PY, "tests/ddp_harness.py", str(out), str(accum)]
    if torchrun is None:
        subprocess.run(cmd, cwd=ROOT, check=True, timeout=TIMEOUT, env=_env(), capture_output=True)
    else:
        procs = [subprocess.Popen([PY, "-m", "torch.distributed.run", *args, *cmd[1:]], cwd=ROOT, env=_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for args in torchrun]
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err[-3000:]
    return json.loads(out.read_text())


def test_ranks_nodes_and_accumulation_match_one_rank(tmp_path):
    one = _harness(tmp_path, "one")
    accum = _harness(tmp_path, "accum", accum=2)
    ranks = _harness(tmp_path, "ranks", torchrun=[["--nproc_per_node", "2", "--master_port", str(_port())]])
    port = _port()
    nodes = _harness(tmp_path, "nodes", torchrun=[
        ["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(i), "--master_addr", "127.0.0.1",
         "--master_port", str(port)] for i in (0, 1)])
    assert (ranks["world"], nodes["world"], accum["accum"]) == (2, 2, 2)
    for other in (accum, ranks, nodes):
        assert other["losses"] == pytest.approx(one["losses"], rel=1e-5)
        assert other["checksums"][0] == pytest.approx(one["checksums"][0], rel=1e-6)
        assert len(set(other["checksums"])) == 1  # every rank holds the same weights
    assert len(set(one["losses"])) == len(one["losses"])  # the trajectory moves


def test_two_rank_training_run(debug_data, tmp_path):
    """The real loop and loader on 2 gloo ranks: finishes, same step count, selection and artefacts on rank 0."""
    run = tmp_path / "run"
    train(debug_data, run, "data.batch_size=4", launcher=(
        PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()), "engine/train.py"))
    assert json.loads((run / "run.json").read_text())["num_processes"] == 2
    assert [e["step"] for e in events(run, "train")][-1] == 12
    assert (run / "best/model.safetensors").is_file()
    assert list((run / "checkpoints/checkpoint_12").glob("random_states_1.pkl"))


def test_nodes_without_a_shared_run_folder_are_refused_at_start(debug_data, tmp_path):
    """Two simulated nodes whose train.output_dir paths differ (what separate filesystems look like): both stop in
    one line before the first step; a shared folder (test_two_rank_training_run) passes the same check."""
    port = _port()
    procs = [subprocess.Popen(
        [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(i),
         "--master_addr", "127.0.0.1", "--master_port", str(port), "engine/train.py", "recipes/debug.yaml",
         f"data.root={debug_data}", f"train.output_dir={tmp_path / f'node{i}' / 'run'}", "data.batch_size=4"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert all(p.returncode != 0 for p in procs)
    for err in errs:
        assert "is not one shared folder: rank(s) 0, 1 (of 2) cannot see the others' files" in err
    assert not (tmp_path / "node0" / "run" / "checkpoints").exists()
    assert not (tmp_path / "node0" / "run" / "train_log.jsonl").exists()
