"""Recipes by name: `iiae recipes`, every command accepting a shipped recipe's name, and the recipes inside the
built wheel (so an installed engine has them without a clone)."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import RecipeError, load_recipe
from engine.recipes import names, recipes_dir

ROOT = Path(__file__).resolve().parents[1]


def test_list_show_and_copy(tmp_path, capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    assert any(line.startswith("debug ") and "trains in seconds" in line for line in lines)
    assert main(["recipes", "show", "sketchy"]) == 0
    assert capsys.readouterr().out == (ROOT / "recipes" / "sketchy.yaml").read_text()
    assert main(["recipes", "cp", "paired", str(tmp_path)]) == 0
    assert (tmp_path / "paired.yaml").read_bytes() == (ROOT / "recipes" / "paired.yaml").read_bytes()
    (tmp_path / "mine.yaml").write_text("keep me\n")
    assert main(["recipes", "cp", "debug", str(tmp_path / "mine.yaml")]) == 2
    assert (tmp_path / "mine.yaml").read_text() == "keep me\n" and "nothing was copied" in capsys.readouterr().err
    assert main(["recipes", "show", "nope"]) == 2
    assert "no shipped recipe of that name (shipped: cars" in capsys.readouterr().err


def test_a_name_works_wherever_a_path_does(tmp_path, monkeypatch):
    by_path = load_recipe(ROOT / "recipes" / "maps_cpu.yaml", ["optim.lr=1e-3"])
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    assert load_recipe("maps_cpu", ["optim.lr=1e-3"]) == by_path == load_recipe("maps_cpu.yaml", ["optim.lr=1e-3"])
    (tmp_path / "debug.yaml").write_text((ROOT / "recipes" / "debug.yaml").read_text().replace("name: debug",
                                                                                              "name: mine"))
    assert load_recipe("debug.yaml").name == "mine"  # a file at the path given wins over the shipped name
    with pytest.raises(RecipeError, match="elsewhere/maps_cpu.yaml: recipe file not found"):
        load_recipe("elsewhere/maps_cpu.yaml")  # a path that is not there is not taken for a name


def test_the_wheel_ships_the_recipes_and_every_module(tmp_path):
    tree = tmp_path / "tree"
    # what a source checkout holds, without the local venv, data and runs
    top = {".venv", ".git", "data", "runs", "build", "example_paired", ".whl"}
    shutil.copytree(ROOT, tree, ignore=lambda folder, found: [n for n in found if n == "__pycache__" or n.endswith(
        ".egg-info") or (Path(folder) == ROOT and n in top)])
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta; build_meta.build_wheel('dist')"],
                   cwd=tree, check=True, capture_output=True, timeout=300)
    (wheel,) = (tree / "dist").glob("iiae-*.whl")
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        z.extractall(tmp_path / "site")
    shipped = {f"engine/shipped_recipes/{p.relative_to(ROOT / 'recipes').as_posix()}" for p in (ROOT / "recipes").rglob("*")
               if p.suffix in (".yaml", ".json")}
    modules = {p.relative_to(ROOT).as_posix() for d in ("engine", "kernels") for p in (ROOT / d).rglob("*.py")}
    assert shipped <= files and modules <= files
    # installed, away from any clone: the recipes come from the package
    probe = ("from engine.recipes import recipes_dir, names; from engine.config import load_recipe; "
             "print(recipes_dir()); print(load_recipe('sketchy').name)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    where, name = out.stdout.split()
    assert Path(where) == tmp_path / "site" / "engine" / "shipped_recipes" and name == "sketchy"


def test_in_a_clone_the_recipes_folder_is_used():
    assert recipes_dir() == ROOT / "recipes" and "paired" in names()
