"""Hostile inputs the user did not write: stored recipes that would run commands, model folders and Hub caches
that declare huge models or hold pickles, `prepare --overwrite` in folders it does not own, and command-line
values that used to end in a traceback (docs/SECURITY.md)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datagen import prepare, write_paired
from iiae import cli
from iiae.config import load_recipe, save_recipe
from iiae.data.location import runs_command
from iiae.errors import UserError
from iiae.models import IIAE
from iiae.models.loading import load_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved debug-recipe model folder (config.json + model.safetensors + recipe.yaml)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "model"
    recipe = load_recipe(RECIPES / "debug.yaml")
    IIAE.from_recipe(recipe).save_pretrained(folder)
    save_recipe(recipe, folder / "recipe.yaml")
    return folder


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def exit_code(argv) -> int:
    """The CLI's exit status in this process, argument errors (argparse exits) included."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


# ---- 1. no code runs that the user did not type ------------------------------------------------------------
COMMAND_ROOTS = [
    "pipe:touch {proof}; cat {{}}",
    "  pipe:touch {proof}",
    "PIPE:touch {proof}",
    "gs://bucket/x';touch {proof};'",
    "hf://datasets/x';touch {proof};'",
    "scp://host/x';touch {proof};'",
]


@pytest.mark.parametrize("template", COMMAND_ROOTS)
@pytest.mark.parametrize("where", ["run", "model"])
@pytest.mark.parametrize("command", ["eval", "translate"])
def test_a_stored_recipe_never_runs_its_data_root(tmp_path, model_dir, capsys, template, where, command):
    """`iiae eval RUN` / `iiae translate RUN` without --data take data.root from the stored recipe: a command
    there is refused, never run, whether the recipe sits in the run folder or in the model folder."""
    proof = tmp_path / "proof"
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "best")
    recipe = load_recipe(RECIPES / "debug.yaml", [f"data.root={template.format(proof=proof)}"])
    (run / "best" / "recipe.yaml").unlink()
    save_recipe(recipe, (run if where == "run" else run / "best") / "recipe.yaml")
    argv = [command, run] + (["--out", tmp_path / "grid.png"] if command == "translate" else [])
    err = one_line_error(capsys, exit_code(argv))
    assert "--data" in err and "never runs" in err
    assert not proof.exists()
    assert not (run / "eval_results.json").exists() and not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("root,command", [
    ("pipe:aws s3 cp s3://b/{} -", True), ("gs://bucket/data", True), ("hf://datasets/u/d", True),
    ("ais://b/d", True), ("sftp://h/d", True), ("data/maps_64", False), ("~/data", False),
    ("file:///data/x", False), ("https://host/x", False), ("http://host/{}", False)])
def test_what_counts_as_a_command(root, command):
    assert runs_command(root) is command


def test_a_pipe_root_the_user_types_still_runs(tmp_path, debug_data, model_dir):
    """The same command given on the command line is the user's own: it is run."""
    code = exit_code(["eval", model_dir, "--data", f"pipe:cat {debug_data}/{{}}", "--limit", 8, "--no-verify",
                      "--json"])
    assert code == 0


# ---- 3. declared sizes are checked before anything is built -------------------------------------------------
def _peak_mb_of_loading(folders: list[Path]) -> tuple[float, list[str]]:
    """(growth of the peak resident memory in MB, each load's error) of loading `folders` in one fresh process."""
    code = ("import resource, sys\n"
            "import torch\nfrom iiae.models.loading import load_model\nfrom iiae.errors import UserError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "for folder in sys.argv[1:]:\n"
            "    try:\n        load_model(folder)\n        print('loaded', file=sys.stderr)\n"
            "    except UserError as err:\n        print(err, file=sys.stderr)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, folders)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1]), done.stderr.strip().splitlines()[-len(folders):]


HUGE = [  # each > 2 GB of float32 weights if it were built
    {"shared_channels": [4096] * 4, "exclusive_channels": [4096] * 4, "decoder_channels": [4096] * 4},
    {"decoder_channels": [2048, 2048]},
    {"z_shared": 4096},
]


@pytest.mark.integration  # seconds: a subprocess or a long loop
def test_a_config_declaring_a_huge_model_allocates_nothing(tmp_path, model_dir):
    """A 4 KB config.json declaring 4096-wide layers beside small weights: refused on the weights' shapes, with
    the peak memory of the loading process growing by far less than any of the declared models."""
    folders = []
    for i, change in enumerate(HUGE):
        folder = tmp_path / f"model{i}"
        shutil.copytree(model_dir, folder)
        config = json.loads((folder / "config.json").read_text())
        config["model"].update(change)
        (folder / "config.json").write_text(json.dumps(config))
        folders.append(folder)
    grown, errors = _peak_mb_of_loading(folders)
    assert len(errors) == len(HUGE)
    for err in errors:
        assert "the config and the weights are of different models" in err and "tensor parts." in err
    assert grown < 300, f"loading grew the peak memory by {grown:.0f} MB"


@pytest.mark.parametrize("key,value", [("image_size", 20000), ("shared_channels", [1 << 20]), ("z_exclusive", 10 ** 9),
                                       ("decoder_channels", [8] * 40), ("feature_dim", 10 ** 8), ("channels", 4096)])
def test_declared_sizes_beyond_sane_limits_are_one_line(tmp_path, model_dir, key, value):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=rf"{folder}/config.json: model.{key}"):
        load_model(folder)


def test_a_huge_config_json_is_not_parsed(tmp_path, model_dir):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["padding"] = "x" * (2 << 20)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config.json: 2,09\d,\d{3} bytes; expected a model config.json of at most"):
        load_model(folder)


class _Trap:
    """Unpickling it creates a file: proof that a pickle was loaded."""

    def __init__(self, proof):
        self.proof = str(proof)

    def __reduce__(self):
        return (Path.mkdir, (Path(self.proof),))


def _pickled_weights(model_dir: Path, folder: Path, proof: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(model_dir / "config.json", folder / "config.json")
    state = dict(IIAE.from_pretrained(str(model_dir)).state_dict())
    torch.save({**state, "trap": _Trap(proof)}, folder / "pytorch_model.bin")


def test_a_model_folder_with_only_a_pickle_is_refused(tmp_path, model_dir):
    proof = tmp_path / "proof"
    _pickled_weights(model_dir, tmp_path / "m", proof)
    with pytest.raises(UserError, match=r"holds no model.safetensors; the engine loads safetensors weights only"):
        IIAE.from_pretrained(str(tmp_path / "m"))
    assert not proof.exists()


def test_a_hub_cache_holding_only_a_pickle_is_refused(tmp_path, model_dir, monkeypatch):
    """A Hub repo in the local cache with config.json + pytorch_model.bin (the mixin's fallback): refused, in
    one line, without any network and without unpickling."""
    import huggingface_hub.constants as hub_constants

    cache, proof, commit = tmp_path / "hub", tmp_path / "proof", "0" * 40
    repo = cache / "models--alice--pickled"
    _pickled_weights(model_dir, repo / "snapshots" / commit, proof)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"alice/pickled: .*holds no model.safetensors; the engine loads safetensors"):
        load_model("alice/pickled")
    assert not proof.exists()


# ---- 2. prepare --overwrite deletes only what a prepare wrote ------------------------------------------------
@pytest.fixture
def pairs_src(tmp_path):
    src = tmp_path / "src"
    write_paired(src, 12, size=16)
    return src


def _prepare(src, out, *extra):
    return prepare("paired", "--src", src, "--size", 16, "--valid", 2, "--test", 2, "--out", out, *extra)


def test_overwrite_keeps_shard_named_files_of_a_folder_that_never_held_a_dataset(tmp_path, pairs_src, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("train-000000.tar", "notes-000001.tar"):
        (out / name).write_bytes(b"my own archive")
    assert _prepare(pairs_src, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "shard-named files no earlier `iiae prepare` wrote there" in err and "nothing was deleted" in err
    assert (out / "train-000000.tar").read_bytes() == b"my own archive"
    assert (out / "notes-000001.tar").read_bytes() == b"my own archive"
    assert not (out / "dataset.json").exists()


def test_overwrite_replaces_its_own_dataset_and_keeps_the_rest(tmp_path, pairs_src):
    out = tmp_path / "data"
    assert _prepare(pairs_src, out) == 0
    (out / "README.md").write_text("my notes")
    assert _prepare(pairs_src, out, "--overwrite") == 0
    assert (out / "README.md").read_text() == "my notes"
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["count"] == 8


def test_overwrite_of_an_unmarked_dataset_deletes_only_listed_shards(tmp_path, pairs_src, capsys):
    """A folder prepared before the marker existed: its dataset.json's shards are its own; a link among them is
    removed itself (its target kept); a shard-named file it does not list is refused."""
    out = tmp_path / "old"
    assert _prepare(pairs_src, out) == 0
    (out / ".iiae-dataset").unlink()
    outside = tmp_path / "precious.tar"
    outside.write_bytes(b"keep")
    (out / "test-000000.tar").unlink()
    (out / "test-000000.tar").symlink_to(outside)
    (out / "extra-000000.tar").write_bytes(b"mine")
    assert _prepare(pairs_src, out, "--overwrite") == 2
    assert "extra-000000.tar" in capsys.readouterr().err and (out / "extra-000000.tar").exists()
    (out / "extra-000000.tar").unlink()
    assert _prepare(pairs_src, out, "--overwrite") == 0
    assert outside.read_bytes() == b"keep" and not (out / "test-000000.tar").is_symlink()


# ---- 5. one line, never a traceback ------------------------------------------------------------------------
@pytest.mark.parametrize("argv,expected", [
    (["eval", "RUN", "--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
    (["eval", "RUN", "--limit", "-3"], "--limit: expected a positive integer, got -3"),
    (["eval", "RUN", "--limit", "1e3"], "--limit: expected an integer, got '1e3'"),
    (["prepare", "mnist-cdcb", "--size", "60000", "--out", "OUT"], "--size: expected an image side of 8 to 2048 px"),
    (["prepare", "paired", "--src", "SRC", "--x-dir", "/etc", "--y-dir", "B", "--out", "OUT"],
     "--x-dir: expected a folder inside --src"),
    (["prepare", "paired", "--src", "SRC", "--x-dir", "A", "--y-dir", "../../B", "--out", "OUT"],
     "--y-dir: expected a folder inside --src"),
    (["prepare", "paired", "--src", "SRC", "--shard-size", "many", "--out", "OUT"],
     "--shard-size: expected an integer, got 'many'"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path / a) if a in ("RUN", "OUT", "SRC") else a for a in argv]
    err = one_line_error(capsys, exit_code(argv))
    assert expected in err and "--help" in err
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("command", ["eval", "translate", "embed", "retrieve", "push"])
def test_a_run_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys, command):
    extra = {"translate": ["--out", tmp_path / "g.png"], "embed": ["--input", tmp_path, "--domain", "x", "--out",
                                                                     tmp_path / "e.npz"],
             "retrieve": ["--query", tmp_path, "--gallery", tmp_path], "push": ["--repo-id", "u/m"]}[command] \
        if command != "eval" else []
    err = one_line_error(capsys, exit_code([command, "r" * 300, *extra]))
    assert "cannot be read as a run or model folder (File name too long)" in err


@pytest.mark.parametrize("device", ["bogus", "meta", "xpu", "cuda:99", "cpu:x"])
def test_a_device_name_is_checked_in_one_line(tmp_path, model_dir, debug_data, capsys, device):
    err = one_line_error(capsys, exit_code(["eval", model_dir, "--data", debug_data, "--device", device]))
    assert err.startswith("iiae eval: error: --device")
