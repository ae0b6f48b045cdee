"""Recipes by name: `iiae recipes` and every command accepting a shipped recipe's name (the recipes inside the
built wheel: test_packaging.py)."""
from pathlib import Path

import pytest

from iiae.cli import main
from iiae.config import load_recipe
from iiae.errors import RecipeError
from iiae.recipes import names, recipes_dir

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


def test_in_a_clone_the_recipes_folder_is_used():
    assert recipes_dir() == ROOT / "recipes" and "paired" in names()
