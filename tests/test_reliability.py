"""The engine under attack: what it deletes, what it loads, how it stops, and how it reports bad input.

Each test is one attack; the data-side ones (dataset.json, odd images, disk full in `iiae prepare`) are in
test_reliability_data.py."""
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from iiae.errors import UserError
from iiae.run_lock import LOCK, RunLock
from iiae.training.run_folder import MARKER, check_output_dir, claim_output_dir

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMEOUT = 240


def _env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def train(data, out, *extra, cwd=ROOT, check=True):
    cmd = [PY, str(ROOT / "engine/train.py"), str(ROOT / "recipes/debug.yaml"), f"data.root={data}",
           f"train.output_dir={out}", *extra]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_here(capsys, data, out, *extra):
    """The command line's `main`, in this process (no interpreter start-up): for runs refused before training.
    `capsys`: pytest's capsys or capfd."""
    from iiae.train import main

    capsys.readouterr()
    code = main([str(ROOT / "recipes/debug.yaml"), f"data.root={data}", f"train.output_dir={out}", *extra])
    return subprocess.CompletedProcess([], code, "", capsys.readouterr().err)


def refused(proc, *words, only=True):
    """Exit 2, no traceback, an error line that holds every word: the only line on stderr, or (only=False, for
    failures after training began) the last one, below the progress bar."""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and (len(lines) == 1 or not only), lines
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the run folder is owned, never assumed ------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["", " ", ".", "..", "~", "/"])
def test_output_dir_that_could_hurt_is_refused(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="train.output_dir"):
        check_output_dir(raw)


def test_output_dir_overlapping_the_data_is_refused(tmp_path):
    data = tmp_path / "data" / "set"
    for out in (data, data / "run", tmp_path / "data"):
        with pytest.raises(UserError, match=r"overlaps data.root"):
            check_output_dir(str(out), {"data.root": data})
    assert check_output_dir(str(tmp_path / "runs" / "a"), {"data.root": data}) == tmp_path / "runs" / "a"


@pytest.mark.parametrize("flags", [dict(resume=True), dict(overwrite=True), dict(resume=True, overwrite=True)])
def test_foreign_folder_is_never_deleted(tmp_path, flags):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    (folder / "sub" / "photo.jpg").write_bytes(b"\xff\xd8")
    before = tree(folder)
    with pytest.raises(UserError, match="not created by this engine.*nothing was deleted"):
        claim_output_dir(folder, explicit_resume=False, **{"resume": False, "overwrite": False, **flags})
    assert tree(folder) == before


def _our_run(folder: Path) -> None:
    claim_output_dir(folder, resume=False, explicit_resume=False, overwrite=False)
    (folder / "recipe.yaml").write_text("name: x\n")
    (folder / "checkpoints" / ".tmp-checkpoint_3").mkdir(parents=True)
    (folder / "samples").mkdir()


def test_overwrite_deletes_only_what_the_engine_wrote(tmp_path):
    run = tmp_path / "run"
    _our_run(run)
    (run / "notes.txt").write_text("mine")
    before = tree(run)
    with pytest.raises(UserError, match=r"did not write \(notes.txt\).*nothing was deleted"):
        claim_output_dir(run, resume=False, explicit_resume=False, overwrite=True)
    assert tree(run) == before
    (run / "notes.txt").unlink()
    assert claim_output_dir(run, resume=False, explicit_resume=False, overwrite=True) is None
    assert sorted(p.name for p in run.iterdir()) == [MARKER]


def test_overwrite_beats_resume_auto(tmp_path):
    run = tmp_path / "run"
    _our_run(run)
    (run / "checkpoints" / "checkpoint_5").mkdir()
    assert claim_output_dir(run, resume=True, explicit_resume=False, overwrite=False) == run / "checkpoints" / "checkpoint_5"
    assert claim_output_dir(run, resume=True, explicit_resume=False, overwrite=True) is None
    assert sorted(p.name for p in run.iterdir()) == [MARKER]


def test_resume_auto_restarts_only_our_own_run(tmp_path):
    run = tmp_path / "run"
    _our_run(run)  # died before its first checkpoint
    assert claim_output_dir(run, resume=True, explicit_resume=False, overwrite=False) is None
    assert sorted(p.name for p in run.iterdir()) == [MARKER]
    with pytest.raises(UserError, match="contradict"):
        claim_output_dir(run, resume=True, explicit_resume=True, overwrite=True)


def test_empty_output_dir_with_overwrite_deletes_nothing(debug_data, tmp_path, capsys, monkeypatch):
    """`train.output_dir=$OUT` with OUT unset, plus --overwrite, from a folder of the user's."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    proc = train_here(capsys, debug_data, "", "--overwrite")
    refused(proc, "train.output_dir", "empty")
    assert (work / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(work)) == ["thesis.tex"]


def test_resume_auto_on_a_dataset_folder_deletes_nothing(debug_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(debug_data, data)
    before = tree(data)
    refused(train_here(capsys, data, data, "train.resume=auto"), "overlaps data.root")
    other = tmp_path / "other_dataset"
    shutil.copytree(debug_data, other)
    refused(train_here(capsys, data, other, "train.resume=auto", "--overwrite"), "not created by this engine")
    assert tree(data) == before and tree(other) == before


# ---- no unpickling of what a user may be handed -------------------------------------------------------------
class Payload:
    """Unpickling this creates a file: proof that foreign code ran."""

    def __init__(self, proof: Path):
        self.proof = str(proof)

    def __reduce__(self):
        return (open, (self.proof, "w"))


@pytest.fixture(scope="module")
def two_step_run(debug_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("two_step") / "run"
    train(debug_data, run, "train.max_steps=2", "train.checkpoint_every=2", "train.eval_every=100",
          "train.sample_every=100")
    return run


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_planted_pickle_payload_never_runs(two_step_run, debug_data, tmp_path, capsys, planted):
    run = tmp_path / "handed_over"
    shutil.copytree(two_step_run, run)
    proof = tmp_path / "PAYLOAD_RAN"
    (run / "checkpoints" / "checkpoint_2" / planted).write_bytes(pickle.dumps(Payload(proof)))
    proc = train_here(capsys, debug_data, run, "--resume", "train.max_steps=4")
    refused(proc, "checkpoint_2")
    assert not proof.exists()


def test_no_allow_pickle_anywhere():
    """No call in the package passes allow_pickle=True (a suggested command in an error message may)."""
    import ast

    offenders = [f"{p}:{node.lineno}" for p in sorted(ROOT.glob("[ebk]*/**/*.py"))
                 for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Call)
                 for kw in node.keywords if kw.arg == "allow_pickle" and getattr(kw.value, "value", False) is not False]
    assert offenders == []


# ---- bounded shutdown and early refusals --------------------------------------------------------------------
def test_batch_that_cannot_fit_is_refused_before_allocating(debug_data, tmp_path, capsys):
    t0 = time.time()
    proc = train_here(capsys, debug_data, tmp_path / "run", "data.batch_size=100000000")
    refused(proc, "data.batch_size", "exceeds the 64 samples")
    assert time.time() - t0 < 60 and not (tmp_path / "run").exists()


def test_second_signal_exits_at_once(debug_data, tmp_path):
    """Training stuck for good (its shards became FIFOs nobody writes): the first SIGTERM cannot finish the step,
    the second one exits at once; the checkpoints written before stay complete and resumable."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(debug_data, data)
    cmd = [PY, "engine/train.py", "recipes/debug.yaml", f"data.root={data}", f"train.output_dir={run}",
           "train.max_steps=100000", "train.checkpoint_every=2", "train.eval_every=100000",
           "train.sample_every=100000", "train.log_every=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + TIMEOUT
        while not list((run / "checkpoints").glob("checkpoint_*")):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        for shard in data.glob("train-*.tar"):
            shard.unlink()
            os.mkfifo(shard)
        lines = -1
        while lines != (lines := len((run / "train_log.jsonl").read_text().splitlines())):  # until it stops moving
            time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(2)
        assert proc.poll() is None  # stuck: one signal cannot finish the step
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert time.time() - t0 < 10 and proc.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now" in err
    newest = max(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("checkpoint_*"))
    shutil.rmtree(data)
    shutil.copytree(debug_data, data)
    resumed = train(data, run, "--resume", f"train.max_steps={newest + 1}", "train.checkpoint_every=100000")
    assert f"resumed from {run / 'checkpoints' / f'checkpoint_{newest}'}" in resumed.stdout + resumed.stderr
    assert "took over the lock" in resumed.stderr  # os._exit left the lock file behind


# ---- one writer per run folder ------------------------------------------------------------------------------
HOLD = "import sys, time; from iiae.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def test_live_writer_is_refused_and_dead_ones_lock_is_taken_over(debug_data, tmp_path, capfd):
    run = tmp_path / "run"
    claim_output_dir(run, resume=False, explicit_resume=False, overwrite=False)
    holder = subprocess.Popen([PY, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"another live process writes this run \(pid {holder.pid} on "):
            RunLock(run).acquire()
        refused(train_here(capfd, debug_data, run, "--overwrite"), "another live process", str(holder.pid))
        assert (run / MARKER).is_file()
    finally:
        holder.kill()
        holder.wait()
    capfd.readouterr()
    lock = RunLock(run).acquire()
    assert f"took over the lock of a run that ended without releasing it (pid {holder.pid} on" in capfd.readouterr().err
    lock.release()
    assert not (run / LOCK).exists()


# ---- one line, exit 2, naming the key -----------------------------------------------------------------------
@pytest.mark.parametrize("override, words", [
    ("optim.betas=[2.0,0.999]", ("optim.betas.0", "less than 1")),
    ("seed=-1", ("seed", "greater than or equal to 0")),
    ("seed=99999999999999", ("seed", "less than 2147483648")),
    ("model.channels=1", ("model.channels", "RGB images", "expected 3")),
    ("model.arch=mlp", ("model.arch", "mlp reads features", "holds images")),
    ("model.image_size=64", ("model.image_size", "holds 32-px images")),
])
def test_bad_recipe_for_the_data_is_one_line(debug_data, tmp_path, capsys, override, words):
    refused(train_here(capsys, debug_data, tmp_path / "run", override), *words)
    assert not (tmp_path / "run").exists()


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_last_one(debug_data, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        run = mnt / "run"
        proc = train(debug_data, run, "train.max_steps=12", "train.checkpoint_every=2", "train.keep_checkpoints=3",
                     "train.eval_every=100", "train.sample_every=100", "train.trackers=[]", check=False)
        line = refused(proc, "no space left on device while writing checkpoint", "is intact", only=False)
        kept = line.split("; ")[-1].split()[0]
        assert (run / "checkpoints" / kept / "train_state.json").is_file()
        assert not list((run / "checkpoints").glob(".tmp-*"))
        load_file(run / "checkpoints" / kept / "model.safetensors")  # complete
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- nothing silently wrong ---------------------------------------------------------------------------------
def _eval(*args):
    return subprocess.run([PY, "-m", "iiae.cli", "eval", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, env=_env())


def test_eval_verifies_the_shards_it_reads(two_step_run, debug_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(debug_data, data)
    shard = sorted(data.glob("test-*.tar"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # in the tar's end-of-archive padding: the shard still reads, its sha256 no longer matches
    shard.write_bytes(bytes(raw))
    refused(_eval(two_step_run, "--data", data), "sha256 does not match", shard.name)
    ok = _eval(two_step_run, "--data", data, "--no-verify", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_non_finite_weights_are_refused_on_load(two_step_run, debug_data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(two_step_run / "best", model)
    weights = load_file(model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] * float("nan")
    save_file(weights, model / "model.safetensors")
    refused(_eval(model, "--data", debug_data), "hold NaN or inf", name)


# ---- kill -9 at random moments, then resume: bitwise the uninterrupted run ----------------------------------
KILL_ARGS = ("train.checkpoint_every=1", "train.keep_checkpoints=2", "train.resume=auto")


@pytest.fixture(scope="module")
def straight_run(debug_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    train(debug_data, run, *KILL_ARGS)
    return load_file(run / "checkpoints" / "checkpoint_12" / "model.safetensors")


@pytest.mark.parametrize("trial", [0] + [pytest.param(t, marks=pytest.mark.slow) for t in range(1, 6)])  # one by default
def test_kill_9_at_a_random_moment_then_resume_is_exact(straight_run, debug_data, tmp_path, trial):
    run = tmp_path / "run"
    cmd = [PY, "engine/train.py", "recipes/debug.yaml", f"data.root={debug_data}", f"train.output_dir={run}", *KILL_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + TIMEOUT
    while not (run / "train_log.jsonl").exists():  # training has begun
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(random.Random(trial).uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    train(debug_data, run, *KILL_ARGS)
    final = load_file(run / "checkpoints" / "checkpoint_12" / "model.safetensors")
    assert final.keys() == straight_run.keys()
    assert all((final[k] == straight_run[k]).all() for k in final)
    assert load_file(run / "best" / "model.safetensors")
