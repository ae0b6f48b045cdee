"""Recipes: every shipped recipe loads; overrides; malformed recipes give one line naming file and key, exit 2."""
import json
from pathlib import Path

import pytest

from iiae.config import load_recipe
from iiae.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
PAPER = {  # docs/ARCHITECTURE.md §6 table: beta, Lambda, recon, w, anneal_steps, batch
    "mnist_cdcb": (0.2, 1, "l1", 1000, 25000, 8),
    "facades": (0.001, 1, "l1", 1000, 25000, 8),
    "maps": (0.02, 1, "l1", 20000, 25000, 8),
    "cars": (0.02, 1, "l1", 1000, 100, 8),
    "sketchy": (0.5, 1, "mse", 10, 2000, 100),
}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_constants(name):
    r = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    o = r.objective
    assert (o.beta, o.Lambda, o.recon, o.recon_weight, o.anneal_steps, r.data.batch_size) == PAPER[name]
    assert (r.optim.lr, r.optim.betas, r.optim.eps, r.optim.weight_decay) == (2e-4, (0.5, 0.999), 1e-8, 0.0)


def test_cpu_recipe_keeps_paper_objective():
    cpu, paper = load_recipe(ROOT / "recipes/mnist_cdcb_cpu.yaml"), load_recipe(ROOT / "recipes/mnist_cdcb.yaml")
    for key in ("beta", "Lambda", "recon", "recon_weight", "exclusive_kl_scale", "logvar_max"):
        assert getattr(cpu.objective, key) == getattr(paper.objective, key)
    assert cpu.model.image_size == 32


def test_overrides_nested_and_typed():
    r = load_recipe(ROOT / "recipes/debug.yaml", ["train.max_steps=3", "optim.betas=[0.9, 0.99]", "data.root=/tmp/x"])
    assert r.train.max_steps == 3 and r.optim.betas == (0.9, 0.99) and r.data.root == "/tmp/x"


BAD = [
    ("unknown key", "train.max_stepz=3", "train.max_stepz: unknown key"),
    ("negative lr", "optim.lr=-1", "optim.lr"),
    ("zero batch", "data.batch_size=0", "data.batch_size"),
    ("wrong type", "train.max_steps=many", "train.max_steps"),
    ("bad arch", "model.arch=resnet", "model.arch"),
    ("bad size", "model.image_size=36", "stride-2 stages do not fit image_size 36"),
    ("decoder mismatch", "model.decoder_channels=[8]", "decoder_channels"),
    ("malformed override", "train.max_steps", "expected key.sub=value"),
]


@pytest.mark.parametrize("case,override,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_one_line(case, override, needle):
    with pytest.raises(RecipeError) as err:
        load_recipe(ROOT / "recipes/debug.yaml", [override])
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_yaml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml.*YAML syntax error"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: x\nmodel: {arch: image}\nobjective: {beta: 1}\ndata: {root: d}\n")
    with pytest.raises(RecipeError, match="missing.yaml: train: required key is missing"):
        load_recipe(missing)


def _iiae(*args):
    """`iiae ARGS` in this process, from the repository root: (returncode, stdout, stderr) like a subprocess."""
    import contextlib
    import io
    import os
    from types import SimpleNamespace

    from iiae.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_info_json_reports_paper_parameter_count():
    out = _iiae("info", "recipes/mnist_cdcb.yaml", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["parameters"] == 16_801_830
    assert info["z_shared"] == [128, 8, 8] and info["z_exclusive"] == {"x": [8], "y": [8]}
    assert info["lambda_paper"] == pytest.approx(5.0)


def test_info_table_and_override():
    out = _iiae("info", "recipes/debug.yaml", "model.z_shared=8")
    assert out.returncode == 0, out.stderr
    assert "total" in out.stdout and "[8, 4, 4]" in out.stdout


def test_info_shows_model_options():
    out = _iiae("info", "recipes/mnist_cdcb_cpu.yaml", "--json")
    model = json.loads(out.stdout)["model"]
    assert model["shared_input_norm"] == "image" and model["shared_channels"] == [64, 128]
    out = _iiae("info", "recipes/mnist_cdcb_cpu.yaml")
    assert "shared_input_norm" in out.stdout and "channels shared [64, 128]" in out.stdout
    model_line = next(l for l in _iiae("info", "recipes/mnist_cdcb.yaml").stdout.splitlines() if l.startswith("model"))
    assert "shared_input_norm" not in model_line


def test_info_prints_the_whole_resolved_recipe_and_overrides_parse_by_field_type(capsys, monkeypatch):
    from iiae.cli import main

    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("DATA", "/srv/data")
    overrides = ["optim.lr=1e-3", "name=off", "train.trackers=wandb", "model.shared_channels=16", "model.decoder_channels=8",
                 "data.root=~/mnist", "train.output_dir=$DATA/runs/x", "data.valid_split=2024"]
    assert main(["info", "recipes/debug.yaml", *overrides, "--json"]) == 0
    recipe = json.loads(capsys.readouterr().out)["recipe"]
    assert recipe["optim"]["lr"] == 0.001 and recipe["seed"] == 0 and recipe["train"]["log_every"] == 2
    assert recipe["name"] == "off" and recipe["data"]["valid_split"] == "2024"  # string fields keep the text
    assert recipe["train"]["trackers"] == ["wandb"] and recipe["model"]["decoder_channels"] == [8]  # one item
    assert recipe["data"]["root"] == "/home/someone/mnist" and recipe["train"]["output_dir"] == "/srv/data/runs/x"
    assert main(["info", "recipes/debug.yaml", "data.root=https://host/~x"]) == 0
    table = capsys.readouterr().out
    assert "resolved recipe" in table and "    lr: 0.0002" in table and "    root: https://host/~x" in table


@pytest.mark.parametrize("args,needle", [
    (["info", "recipes/debug.yaml", "data.batch_size=0"], "recipes/debug.yaml: data.batch_size"),
    (["info", "recipes/nope.yaml"], "recipes/nope.yaml: recipe file not found"),
    (["info", "recipes/debug.yaml", "model.depth=3"], "model.depth: unknown key"),
])
def test_info_errors_are_one_line_exit_2(args, needle):
    out = _iiae(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_version_is_pyprojects(capsys):
    import tomllib

    from iiae.version import __version__
    from iiae.cli import main

    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == want
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"iiae {want}"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_yes_no_on_off_stay_strings(tmp_path):
    """YAML 1.2 booleans (true/false only), in recipe files and overrides: `no` is mixed_precision's value."""
    text = (ROOT / "recipes/debug.yaml").read_text().replace("train:\n", "train:\n  mixed_precision: no\n", 1)
    (tmp_path / "r.yaml").write_text(text.replace("name: debug", "name: off"))
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.train.mixed_precision == "no" and recipe.name == "off"
    recipe = load_recipe(ROOT / "recipes/debug.yaml", ["train.mixed_precision=no", "name=yes", "train.compile=true"])
    assert recipe.train.mixed_precision == "no" and recipe.name == "yes" and recipe.train.compile is True
