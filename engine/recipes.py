"""The recipes that ship with the engine, by name, and `iiae recipes [show NAME | cp NAME DEST]`.

Every command that takes a recipe (`iiae train/info`, `engine/train.py`, the benchmarks) reads it through
`resolve`: a file when one exists at the path given, otherwise a shipped recipe of that name (`sketchy`,
`sketchy.yaml`). Installed, the recipes are package data (iiae/shipped_recipes/); in a clone, recipes/.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from iiae.errors import UserError

SUFFIXES = (".yaml", ".yml")


def recipes_dir() -> Path:
    """Where the shipped recipes are: installed, the package data beside this module; in a clone (or an
    editable install), the recipes/ folder."""
    installed = Path(__file__).resolve().parent / "shipped_recipes"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "recipes"


def names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A recipe file: the path itself when it exists, else the shipped recipe of that name; RecipeError naming
    both places and the shipped names otherwise."""
    from iiae.errors import RecipeError

    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = path.name[: -len(path.suffix)] if path.suffix in SUFFIXES else path.name
    shipped = recipes_dir() / f"{name}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise RecipeError(f"{name_or_path}: recipe file not found, and no shipped recipe of that name "
                      f"(shipped: {', '.join(names())}; `iiae recipes` lists them)")


def summary(path: Path, width: int = 96) -> str:
    """The first sentence of a recipe's opening comment (what it is for), at most `width` characters."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    first = text.split(". ")[0].split("; ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="the shipped recipes, one line each (the default)")
    show = sub.add_parser("show", help="print a shipped recipe")
    show.add_argument("name")
    cp = sub.add_parser("cp", help="copy a shipped recipe to edit it")
    cp.add_argument("name")
    cp.add_argument("dest", type=Path, help="a file, or a folder to copy NAME.yaml into")


def run(args: argparse.Namespace) -> int:
    if args.action in (None, "list"):
        for name in names():
            print(f"{name:<16} {summary(recipes_dir() / f'{name}.yaml')}")
        print(f"({recipes_dir()}; use a name wherever a recipe path goes: `iiae train debug`)")
        return 0
    source = resolve(args.name)
    if args.action == "show":
        print(source.read_text(), end="")
        return 0
    dest = args.dest / source.name if args.dest.is_dir() else args.dest
    if dest.exists():
        raise UserError(f"{dest}: exists; nothing was copied (choose another DEST or remove it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    print(f"copied {source.name} to {dest}")
    return 0
