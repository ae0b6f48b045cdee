"""A run folder under attack (docs/SECURITY.md: the engine trusts the command line and the recipe it is given,
never what it reads from a run or model folder): `iiae push` uploads only the model's own regular files, every
file the engine writes there is never written through a link, a resume needs the run's recipe, the model card
quotes run data without letting it change the card, and tampered files are one line each, with nothing written.

All in process and on tiny folders: no training runs here."""
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from iiae import cli
from iiae.config import load_recipe, save_recipe
from iiae.errors import RecipeError
from iiae.errors import UserError
from iiae.hub.push import model_card, push
from iiae.models.card import build_card
from iiae.run_dir import RunDir
from iiae.run_lock import LOCK, RunLock
from iiae.training.run_folder import MARKER, check_output_dir, claim_output_dir
from test_hub import METRICS, _run_dir

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "recipes" / "debug.yaml"
SECRET = b"hf_SECRETTOKENSECRETTOKEN\n"


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every run: what a planted link points at (a Hub token, /etc/passwd as root)."""
    path = tmp_path / "outside" / "token"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def tree(folder: Path) -> dict[str, object]:
    """Everything under `folder`: file bytes, link targets, and folders, so "nothing was written" is exact."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def one_line(capsys, code: int, *words) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


# ---- 1. push uploads only the model's own regular files --------------------------------------------------------
def _link(path: Path, target: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def _hard(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    os.link(target, path)


# (what is planted, where, what the one line names)
PLANTS = {
    "token link as best/selection.json": (_link, "best/selection.json"),
    "token link as best/recipe.yaml": (_link, "best/recipe.yaml"),
    "token link as best/model.safetensors": (_link, "best/model.safetensors"),
    "token link as best/config.json": (_link, "best/config.json"),
    "token link under another name in best/": (_link, "best/notes.txt"),
    "token link as eval_results.json": (_link, "eval_results.json"),
    "token link as the newest sample grid": (_link, "samples/step_000099.png"),
    "token link as the swap grid": (_link, "samples/step_000012_swap.png"),
    "hard link to the token as best/selection.json": (_hard, "best/selection.json"),
    "hard link to the token as best/recipe.yaml": (_hard, "best/recipe.yaml"),
    "hard link to the token as a sample grid": (_hard, "samples/step_000099.png"),
    "a fifo as best/recipe.yaml": (_fifo, "best/recipe.yaml"),
    "a folder as best/selection.json": (_folder, "best/selection.json"),
    "a folder as eval_results.json": (_folder, "eval_results.json"),
    "a folder as a sample grid": (_folder, "samples/step_000099.png"),
    "a fifo as a sample grid": (_fifo, "samples/step_000099.png"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_push_refuses_links_and_non_files(tmp_path, hub, secret, capsys, plant):  # noqa: F811
    run = _run_dir(tmp_path)
    how, where = PLANTS[plant]
    if where in ("best/config.json", "best/model.safetensors"):  # a link to a loadable model elsewhere
        secret = (run / where).rename(tmp_path / "outside" / Path(where).name)
    if how in (_link, _hard):
        how(run / where, secret)
    else:
        how(run / where)
    code = cli.main(["push", str(run), "--repo-id", "alice/m"])
    one_line(capsys, code, where.split("/")[-1])
    assert hub["repo"] == [] and hub["commit"] == []  # nothing reached the Hub


@pytest.mark.parametrize("folder", ["best", "samples"])
def test_push_refuses_a_run_folder_that_is_a_link(tmp_path, hub, capsys, folder):  # noqa: F811
    run, elsewhere = _run_dir(tmp_path), tmp_path / f"elsewhere_{folder}"
    (run / folder).rename(elsewhere)
    (run / folder).symlink_to(elsewhere)
    one_line(capsys, cli.main(["push", str(run), "--repo-id", "alice/m"]), folder, "symbolic link")
    assert hub["commit"] == []


def test_push_uploads_only_the_model_format_files(tmp_path, hub, secret):  # noqa: F811
    run = _run_dir(tmp_path)
    save_recipe(load_recipe(DEBUG), run / "best" / "recipe.yaml")
    (run / "best" / "token.txt").write_bytes(SECRET)  # a stray regular file: never uploaded
    (run / "best" / "extra").mkdir()
    os.mkfifo(run / "best" / "pipe")  # not a name of the format: never opened
    push(run, "alice/m")
    (_, files, _), = hub["commit"]
    assert sorted(files) == sorted(["config.json", "model.safetensors", "recipe.yaml", "selection.json", "README.md",
                                    "eval_results.json", "translation_grid.png", "swap_grid.png"])
    assert not any(SECRET.strip() in data for data in files.values())


def test_push_refuses_a_grid_that_is_not_a_png(tmp_path, hub, secret, capsys):  # noqa: F811
    run = _run_dir(tmp_path)
    (run / "samples" / "step_000099.png").write_bytes(secret.read_bytes())  # a copy: a regular file, no PNG
    one_line(capsys, cli.main(["push", str(run), "--repo-id", "alice/m"]), "step_000099.png", "not a PNG")
    assert hub["commit"] == []


# ---- 2. nothing is written through a link in a run folder ------------------------------------------------------
def _marked_run(tmp_path: Path, checkpoint: bool = True, recipe=None) -> Path:
    """A run folder as training leaves it, without training: marker, recipe, one complete checkpoint."""
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint_2").mkdir(parents=True)
    (run / MARKER).write_text("{}\n")
    save_recipe(recipe or load_recipe(DEBUG), run / "recipe.yaml")
    if checkpoint:
        (run / "checkpoints" / "checkpoint_2" / "train_state.json").write_text("{}")
    return run


@pytest.mark.parametrize("kind", ["link", "dangling link", "folder", "fifo", "hard link"])
def test_the_lock_never_opens_a_link_or_a_non_file(tmp_path, secret, kind):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK
    if kind == "link":
        lock.symlink_to(secret)
    elif kind == "dangling link":
        lock.symlink_to(tmp_path / "outside" / "created_by_the_lock")
    elif kind == "folder":
        lock.mkdir()
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        os.link(secret, lock)
    with pytest.raises(UserError) as err:
        RunLock(run).acquire()
    assert "\n" not in str(err.value) and LOCK in str(err.value)
    assert secret.read_bytes() == SECRET and not (tmp_path / "outside" / "created_by_the_lock").exists()


ENGINE_FILES = ["recipe.yaml", "run.json", "train_log.jsonl", "eval_results.json", "trackers.json", "curves.png",
                "views_grid.png", MARKER, LOCK]
ENGINE_FOLDERS = ["checkpoints", "best", "samples", "tensorboard"]


@pytest.mark.parametrize("name", ENGINE_FILES + ENGINE_FOLDERS)
@pytest.mark.parametrize("flags", [dict(resume=True, explicit_resume=True, overwrite=False),
                                   dict(resume=False, explicit_resume=False, overwrite=True)])
def test_a_link_where_the_engine_writes_is_refused_before_anything_is_written(tmp_path, secret, name, flags):
    run = _marked_run(tmp_path)
    target = secret if name not in ENGINE_FOLDERS else secret.parent
    if name in ENGINE_FOLDERS and (run / name).exists():
        (run / name).rename(tmp_path / "outside" / name)
        target = tmp_path / "outside" / name
    _link(run / name, target)
    before = tree(tmp_path)
    with pytest.raises(UserError) as err:
        claim_output_dir(run, lock=RunLock(run), **flags)
    assert name in str(err.value) and "\n" not in str(err.value)
    assert tree(tmp_path) == before


def test_a_dangling_marker_link_creates_nothing_outside(tmp_path):
    from iiae.training.run_folder import _mark

    run, outside = tmp_path / "run", tmp_path / "outside_marker"
    run.mkdir()
    (run / MARKER).symlink_to(outside)
    with pytest.raises(UserError, match="not created by this engine"):  # a link is no marker
        claim_output_dir(run, resume=True, explicit_resume=False, overwrite=True)
    with pytest.raises(UserError, match="symbolic link"):
        _mark(run)
    assert not outside.exists() and not (run / LOCK).exists()


def test_the_run_recipe_is_never_written_through_a_link(tmp_path, secret):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    _link(run.recipe, secret)
    with pytest.raises(UserError, match="recipe.yaml: is a symbolic link"):
        save_recipe(load_recipe(DEBUG), run.recipe)
    assert secret.read_bytes() == SECRET


def test_run_json_is_never_written_through_a_link(tmp_path, secret):
    from iiae.training.trainer import Trainer

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    _link(run.run_info, secret)
    acc = _Acc()
    acc.__dict__.update(num_processes=1, mixed_precision="no", distributed_type="NO", print=lambda *a, **k: None)
    trainer = Trainer.__new__(Trainer)
    trainer.recipe, trainer.run, trainer.accelerator = load_recipe(DEBUG), run, acc
    trainer.state, trainer.info = SimpleNamespace(step=0), SimpleNamespace(kind="feature")
    with pytest.raises(UserError, match="run.json: is a symbolic link"):
        trainer._attach_components(None)
    assert secret.read_bytes() == SECRET


def test_eval_results_are_never_written_through_a_link(tmp_path, secret, capsys, monkeypatch):
    from iiae.evaluation import evaluate

    run = _run_dir(tmp_path)
    _link(run / "eval_results.json", secret)
    info = SimpleNamespace(layout="unpaired", kind="image", name="mnist-cdcb", root=str(tmp_path))
    monkeypatch.setattr("iiae.data.load_dataset_info", lambda *a, **k: info)
    monkeypatch.setattr("iiae.models.check_fits", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: {"recall_at_1_x2y": 0.5})
    monkeypatch.setattr("iiae.evaluation.view_metrics.is_views_dataset", lambda info: False)
    code = cli.main(["eval", str(run), "--data", str(tmp_path), "--device", "cpu"])
    one_line(capsys, code, "eval_results.json: is a symbolic link")
    assert secret.read_bytes() == SECRET


class _Acc(SimpleNamespace):
    """The Accelerator surface MetricLogger and save_checkpoint use: one main process, no trackers."""

    def __init__(self):
        super().__init__(is_main_process=True, trackers=[], device=torch.device("cpu"))

    def init_trackers(self, *a, **k):
        pass

    def log(self, *a, **k):
        pass

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        Path(folder, "model.safetensors").write_bytes(b"weights")


@pytest.mark.parametrize("kind", ["link", "hard link"])
def test_the_train_log_is_never_appended_through_a_link(tmp_path, secret, kind):
    from iiae.training.metric_logger import MetricLogger

    log = tmp_path / "train_log.jsonl"
    logger = MetricLogger(_Acc(), log, load_recipe(DEBUG))
    logger.log(1, "train", {"loss": 1.0})
    log.unlink()
    (log.symlink_to if kind == "link" else lambda t: os.link(t, log))(secret)
    with pytest.raises(UserError) as err:
        logger.log(2, "train", {"loss": 0.5})
    assert "train_log.jsonl" in str(err.value) and secret.read_bytes() == SECRET
    if kind == "link":  # a resume rewrites the log: refused too
        with pytest.raises(UserError, match="symbolic link"):
            logger.truncate_after(1)
        assert secret.read_bytes() == SECRET


def test_curves_and_tracker_ids_are_never_written_through_a_link(tmp_path, secret):
    from iiae.training.metric_logger import plot_curves, tracker_init_kwargs

    log = tmp_path / "train_log.jsonl"
    log.write_text(json.dumps({"step": 1, "kind": "train", "loss": 1.0}) + "\n{torn")  # a torn line is skipped
    _link(tmp_path / "curves.png", secret)
    with pytest.raises(UserError, match="curves.png: is a symbolic link"):
        plot_curves(log, tmp_path / "curves.png")
    recipe = load_recipe(DEBUG, ["train.trackers=[wandb]"])
    _link(tmp_path / "trackers.json", secret)
    with pytest.raises(UserError, match="trackers.json: is a symbolic link"):
        tracker_init_kwargs(recipe, tmp_path / "trackers.json", main=True)
    assert secret.read_bytes() == SECRET
    plot_curves(log, tmp_path / "fresh.png")  # the torn line does not stop the plot
    assert (tmp_path / "fresh.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("planted", ["best/selection.json", "best/model.safetensors", "best/config.json", "best"])
def test_the_selected_model_is_never_written_through_a_link(tmp_path, secret, planted):
    from iiae.models import IIAE
    from iiae.training.selection import save_best

    recipe = load_recipe(DEBUG)
    model, run = IIAE.from_recipe(recipe), tmp_path / "run"
    (run / "best").mkdir(parents=True)
    target = secret.parent if planted == "best" else secret
    if planted == "best":
        (run / "best").rmdir()
    _link(run / planted, target)
    before = tree(tmp_path / "outside")
    with pytest.raises(UserError, match="symbolic link"):
        save_best(model, run / "best", 4, {"score": 1.0}, recipe)
    assert tree(tmp_path / "outside") == before
    if planted != "best":  # nothing of the refused write is left behind
        assert sorted(p.name for p in (run / "best").iterdir()) == [Path(planted).name]


@pytest.mark.parametrize("planted", ["checkpoints/checkpoint_4", "checkpoints/.tmp-checkpoint_4", "checkpoints"])
def test_checkpoints_are_never_written_through_a_link(tmp_path, planted):
    from iiae.training.checkpoint import complete_checkpoints, save_checkpoint

    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "checkpoints").mkdir(parents=True)
    (outside / "checkpoint_4").mkdir(parents=True)
    if planted == "checkpoints":
        (run / "checkpoints").rmdir()
    _link(run / planted, outside / "checkpoint_4" if planted != "checkpoints" else outside)
    assert complete_checkpoints(run) == []  # a link is never a checkpoint to resume from
    with pytest.raises(UserError, match="symbolic link"):
        save_checkpoint(_Acc(), run, 4, keep=2, state=SimpleNamespace(state_dict=lambda: {"step": 4}))
    assert tree(outside) == {"checkpoint_4": "dir"}


@pytest.mark.parametrize("planted", ["train_state.json", "model.safetensors", "random_states_0.pkl"])
def test_a_checkpoint_holding_a_link_is_never_read(tmp_path, secret, planted):
    from iiae.training.checkpoint import load_checkpoint

    checkpoint = _marked_run(tmp_path) / "checkpoints" / "checkpoint_2"
    _link(checkpoint / planted, secret)  # or /dev/zero, which a reader never reaches the end of
    with pytest.raises(UserError, match=f"{planted}: is a symbolic link"):
        load_checkpoint(_Acc(), checkpoint, SimpleNamespace(load_state_dict=lambda d: None))


def test_a_sample_grid_is_never_written_through_a_link(tmp_path, secret):
    from iiae.models import IIAE
    from iiae.training.sample_grids import SampleGrids

    recipe = load_recipe(DEBUG)
    grids = SampleGrids.__new__(SampleGrids)
    run = RunDir(tmp_path / "run")
    run.samples.mkdir(parents=True)
    grids.every, grids.path_of = 1, run.sample_grid
    grids.batch = {"x": torch.zeros(2, 3, 32, 32), "y": torch.zeros(2, 3, 32, 32)}
    trainer = SimpleNamespace(state=SimpleNamespace(step=3), accelerator=_Acc(), eval_model=IIAE.from_recipe(recipe))
    _link(run.sample_grid(3), secret)
    with pytest.raises(UserError, match="step_0000003.png: is a symbolic link"):
        grids.after_step(trainer, {}, [])
    assert secret.read_bytes() == SECRET
    run.sample_grid(3).unlink()
    grids.after_step(trainer, {}, [])
    assert run.sample_grid(3).read_bytes().startswith(b"\x89PNG")


# ---- 3. a run without its recipe is not resumable ---------------------------------------------------------------
def _without_data(monkeypatch) -> None:
    """Trainer.build up to its resume checks with no dataset and no Accelerator: what is refused there is
    refused before the run folder is claimed, locked or written."""
    from iiae.training import trainer

    monkeypatch.setattr(trainer, "build_accelerator", lambda *a, **k: SimpleNamespace(is_main_process=True,
                                                                                       num_processes=1))
    monkeypatch.setattr("iiae.data.load_dataset_info", lambda *a, **k: SimpleNamespace(layout="paired"))
    monkeypatch.setattr(trainer, "check_fits", lambda *a, **k: None)
    monkeypatch.setattr("iiae.data.train_batches_per_epoch", lambda *a, **k: 1)
    monkeypatch.setattr(trainer, "_check_eval_splits", lambda *a, **k: None)


def _resume(run: Path, *extra) -> int:
    return cli.main(["train", str(DEBUG), f"data.root={run.parent / 'no_data'}", f"train.output_dir={run}",
                     "--resume", *extra])


def test_resuming_a_run_without_its_recipe_is_refused(tmp_path, capsys, monkeypatch):
    from iiae.training import trainer

    run = _marked_run(tmp_path)
    (run / "recipe.yaml").unlink()
    (run / "best").mkdir()
    save_recipe(load_recipe(DEBUG, ["model.z_shared=8"]), run / "best" / "recipe.yaml")  # never taken instead
    with pytest.raises(UserError) as err:
        trainer._resume_changes(load_recipe(DEBUG), RunDir(run), resume=True, overwrite=False)
    assert "recipe.yaml: missing" in str(err.value) and "--overwrite" in str(err.value)
    # through the command line: refused before the run folder is claimed, locked or written
    _without_data(monkeypatch)
    before = tree(tmp_path)
    one_line(capsys, _resume(run), "recipe.yaml: missing", "cannot be resumed")
    assert tree(tmp_path) == before
    # `train.resume: auto` with a checkpoint is a resume too
    code = cli.main(["train", str(DEBUG), f"data.root={tmp_path / 'no_data'}", f"train.output_dir={run}",
                     "train.resume=auto"])
    one_line(capsys, code, "recipe.yaml: missing")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["folder", "link", "fifo"])
def test_a_run_recipe_that_is_not_a_file_is_one_line(tmp_path, secret, capsys, monkeypatch, kind):
    from iiae.training import trainer

    run = _marked_run(tmp_path)
    elsewhere = (run / "recipe.yaml").rename(tmp_path / "outside" / "recipe.yaml")  # a recipe, but not the run's
    plant = {"folder": Path.mkdir, "link": lambda p: p.symlink_to(elsewhere), "fifo": os.mkfifo}[kind]
    plant(run / "recipe.yaml")
    with pytest.raises(UserError) as err:
        trainer._resume_changes(load_recipe(DEBUG), RunDir(run), resume=True, overwrite=False)
    assert "recipe.yaml" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="recipe.yaml"):  # push and `iiae eval` read it through read_recipe
        RunDir(run).read_recipe()


def test_a_recipe_path_that_is_a_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "recipe.yaml").mkdir()
    with pytest.raises(RecipeError, match="recipe.yaml: is a folder; expected a recipe YAML file"):
        load_recipe(tmp_path / "recipe.yaml")
    one_line(capsys, cli.main(["info", str(tmp_path / "recipe.yaml")]), "is a folder")


# ---- 4. the model card quotes run data without letting it change the card ---------------------------------------
HOSTILE = [
    "x`y``z```", "a\nb\n\n## Injected heading", "```\n</code><script>alert(1)</script>", "a | b | c",
    "<script>alert(1)</script>", "[click](javascript:alert(1))", "![x](https://evil.example/x.png)",
    "<img src=x onerror=alert(1)>", "\u202eevil\u202c", "---\nlicense: mit\n---", "n" * 5000, "&lt;script&gt;",
    "~~~\n```yaml\n*bold* _it_ <!-- c -->",
]


def _render(card: str):
    import markdown_it  # a dev dependency: the card is checked by a real CommonMark parser
    body = card.split("\n---\n", 1)[1]
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    return md.parse(body), md.render(body)


def _structure(card: str) -> dict:
    tokens, html = _render(card)
    fences = [(t.info, t.content) for t in tokens if t.type == "fence"]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    rows = [i for i, t in enumerate(tokens) if t.type == "tr_open"]
    return {"fences": fences, "headings": headings, "rows": len(rows), "html": html,
            "raw_html": [t for t in tokens if t.type == "html_block"] +
                        [c for t in tokens if t.children for c in t.children if c.type == "html_inline"]}


@pytest.mark.parametrize("hostile", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_the_card_keeps_its_structure_whatever_the_run_holds(tmp_path, hostile):
    from huggingface_hub import ModelCard

    recipe = load_recipe(DEBUG)
    plain = build_card(recipe.model, recipe.objective, repo_id="alice/m", recipe=recipe, metrics=METRICS,
                       grids=[1, 2], training={"step": 12, "train_seconds": 90.0, "device": "cpu",
                                               "num_processes": 1, "mixed_precision": "no", "torch": "2.5"})
    bad = recipe.model_copy(update={"name": hostile,
                                    "data": recipe.data.model_copy(update={"root": f"/data/{hostile}",
                                                                           "valid_split": hostile})})
    metrics = {**METRICS, "dataset": hostile, "split": hostile, hostile: 0.5}
    card = str(build_card(recipe.model, recipe.objective, repo_id="alice/m", recipe=bad, metrics=metrics,
                          grids=[1, 2], training={"step": hostile, "train_seconds": hostile, "device": hostile,
                                                  "num_processes": hostile, "mixed_precision": hostile,
                                                  "torch": hostile}))
    front = card.split("\n---\n", 1)[0].removeprefix("---\n")
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "iiae" and meta["license"] == "apache-2.0"  # not overridden by the name
    assert ModelCard(card).data.license == "apache-2.0"
    want, got = _structure(str(plain)), _structure(card)
    assert got["headings"] == want["headings"]  # no section added, none swallowed
    assert [info for info, _ in got["fences"]] == ["python", "yaml", "bibtex"]
    assert yaml.safe_load(dict(got["fences"])["yaml"]) == bad.to_dict()  # the recipe block, whole and exact
    assert got["rows"] == want["rows"] + 1  # one more metric row, no row split or merged
    html = got["html"]
    assert got["raw_html"] == [] and "<script" not in html and 'href="javascript' not in html
    assert re.findall(r"<img [^>]*>", html) == re.findall(r"<img [^>]*>", want["html"])  # the two grids only
    assert re.findall(r"<a [^>]*>", html) == re.findall(r"<a [^>]*>", want["html"])  # no link added
    outside_code = card.replace(dict(got["fences"])["yaml"], "")  # code shows the recipe as it is, never as HTML
    assert "<script" not in outside_code and "<img" not in outside_code and "\u202e" not in card


def test_push_escapes_what_eval_results_json_says(tmp_path, hub):  # noqa: F811
    run = _run_dir(tmp_path)
    (run / "eval_results.json").write_text(json.dumps({**METRICS, "dataset": "evil`\n```\n<script>x</script>"}))
    push(run, "alice/m")
    card = hub["commit"][0][1]["README.md"].decode()
    assert "<script>" not in card and _structure(card)["raw_html"] == []
    assert [info for info, _ in _structure(card)["fences"]] == ["python", "yaml", "bibtex"]


# ---- 5. tampered files, odd paths: one line, exit 2, nothing written --------------------------------------------
TRACKERS = {"not JSON": "{wandb", "a list": "[]", "a string id": '{"wandb": "abc"}', "no id": '{"wandb": {}}',
            "a number id": '{"wandb": {"id": 5}}', "a path as id": '{"wandb": {"id": "../../x"}}',
            "a dot-dot id": '{"wandb": {"id": ".."}}', "an id with a line break": '{"wandb": {"id": "abc\\n"}}',
            "nested too deep": "[" * 100000, "not UTF-8": b"\xff\xfe{"}


@pytest.mark.parametrize("tamper", sorted(TRACKERS) + ["folder", "link"])
def test_a_tampered_trackers_json_on_resume_is_one_line(tmp_path, secret, capsys, monkeypatch, tamper):
    from iiae.training import trainer

    run = _marked_run(tmp_path)
    path = run / "trackers.json"
    if tamper == "folder":
        path.mkdir()
    elif tamper == "link":
        path.symlink_to(secret)
    else:
        raw = TRACKERS[tamper]
        path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    _without_data(monkeypatch)
    before = tree(tmp_path)
    one_line(capsys, _resume(run), "trackers.json")
    assert tree(tmp_path) == before


TRUNCATED = {"run.json": '{"device": "cp', "eval_results.json": '{"model": "run", "dataset": "mn',
             "best/selection.json": '{"step": 1', "best/config.json": '{"model": {"arch"'}
WRONG_TYPE = {"run.json": "[1, 2]", "eval_results.json": '"mnist"', "best/selection.json": "null",
              "best/config.json": "3"}


@pytest.mark.parametrize("name,content", list(TRUNCATED.items()) + list(WRONG_TYPE.items())
                         + [("run.json", "{}" + "\x00" * 10), ("eval_results.json", "[" * 100000)])
def test_push_with_a_tampered_json_file_is_one_line(tmp_path, hub, capsys, name, content):  # noqa: F811
    run = _run_dir(tmp_path)
    (run / name).write_text(content)
    one_line(capsys, cli.main(["push", str(run), "--repo-id", "alice/m"]), Path(name).name)
    assert hub["repo"] == [] and hub["commit"] == []


def test_push_with_odd_values_in_well_formed_files_escapes_them(tmp_path, hub):  # noqa: F811
    run = _run_dir(tmp_path)
    (run / "eval_results.json").write_text('{"dataset": "mnist-cdcb", "recall_at_1_x2y": 1' + "0" * 400 + "}")
    (run / "best" / "selection.json").write_text('{"train_seconds": "90", "step": ["<b>1</b>"]}')
    (run / "run.json").write_text('{"device": {"a": 1}, "torch": "`x`", "num_processes": null}')
    push(run, "alice/m")  # a metric beyond float range stays out of the model index; text is escaped
    card = hub["commit"][0][1]["README.md"].decode()
    assert "unknown time" in card and "<b>" not in card and _structure(card)["raw_html"] == []


def test_a_run_recipe_that_is_a_folder_stops_push_in_one_line(tmp_path, hub, capsys):  # noqa: F811
    run = _run_dir(tmp_path)
    (run / "recipe.yaml").unlink()
    (run / "recipe.yaml").mkdir()
    one_line(capsys, cli.main(["push", str(run), "--repo-id", "alice/m"]), "recipe.yaml", "is a folder")
    assert hub["commit"] == []


@pytest.mark.parametrize("output_dir", ["a" * 300, "x/" + "b" * 300 + "/c", "/".join(["d" * 200] * 25), "e" * 5000,
                                        "x/nul\x00byte"],
                         ids=["one name of 300", "a name of 300 inside", "5000 characters in names of 200",
                              "one name of 5000", "a NUL byte"])
def test_an_output_dir_the_file_system_cannot_take_is_one_line(tmp_path, capsys, monkeypatch, output_dir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        check_output_dir(output_dir)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    code = cli.main(["train", str(DEBUG), f"data.root={tmp_path / 'data'}", f"train.output_dir={output_dir}"])
    one_line(capsys, code, "train.output_dir")
    assert list(tmp_path.iterdir()) == []  # not even a parent folder was made


def test_leftovers_of_an_interrupted_write_are_the_engines_own(tmp_path, hub):  # noqa: F811
    from iiae.safe_files import TEMP_PREFIX

    run = _run_dir(tmp_path)
    (run / "samples" / f"{TEMP_PREFIX}abc.png").write_bytes(b"")  # newest, but half-written: never a grid
    push(run, "alice/m")
    assert hub["commit"][0][1]["translation_grid.png"] == (run / "samples" / "step_000012.png").read_bytes()
    (run / MARKER).write_text("{}\n")
    (run / f"{TEMP_PREFIX}xyz.yaml").write_text("half")
    (run / f"{TEMP_PREFIX}folder").mkdir()  # the engine never makes a folder of that name: not its own
    with pytest.raises(UserError, match=f"did not write \\({TEMP_PREFIX}folder\\)"):
        claim_output_dir(run, resume=False, explicit_resume=False, overwrite=True)
    (run / f"{TEMP_PREFIX}folder").rmdir()
    claim_output_dir(run, resume=False, explicit_resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [MARKER]


def test_claiming_a_folder_that_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(UserError, match="train.output_dir") as err:
        claim_output_dir(tmp_path / ("f" * 300), resume=True, explicit_resume=False, overwrite=False)
    assert "\n" not in str(err.value)


def test_a_model_card_of_a_run_with_tampered_files_still_names_them(tmp_path):
    run = _run_dir(tmp_path)
    (run / "best" / "selection.json").write_text("{")
    with pytest.raises(UserError, match=re.escape(str(run / "best" / "selection.json")) + ": not valid JSON"):
        model_card(run, "alice/m")
