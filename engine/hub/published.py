"""What a push publishes of a run or model folder, read without trusting it: the model format's files of best/,
eval_results.json and the newest sample grids (`uploads`), and what the card describes (`read_run`). Each file is
a regular file of its own, read without following a link; shared by `iiae push` and the Space export."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from iiae.config import Recipe
from iiae.errors import UserError, first_line
from iiae.models.card import GRID_NAME, SWAP_NAME
from iiae.models.config import ModelConfig, ObjectiveConfig
from iiae.run_dir import ModelFolder, RunDir, read_json_object
from iiae.safe_files import TEMP_PREFIX, read_regular, refuse_link
from iiae.schema import validated

_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Published:
    """What a card describes: the weights folder, the model's own config, the run's recipe (None for a bare model
    folder) and its latest evaluation."""

    weights: Path
    model: ModelConfig
    objective: ObjectiveConfig
    recipe: Optional[Recipe]
    metrics: dict


def read_run(run_dir: Path) -> Published:
    from iiae.models.loading import resolve_run

    weights, run = resolve_run(run_dir)
    if weights is None:
        raise UserError(f"{run_dir}: no such run dir")
    if weights != Path(run_dir):  # <run>/best is the run's own folder: never a link to one elsewhere
        _refuse_linked_folder(weights)
    config_file = ModelFolder(weights).config
    config = read_json_object(config_file, "a JSON object with model and objective sections")
    recipe = run.read_recipe() or RunDir(weights).read_recipe()
    model = validated(ModelConfig, config.get("model"), str(config_file), "model")
    objective = validated(ObjectiveConfig, config.get("objective"), str(config_file), "objective")
    return Published(weights, model, objective, recipe, run.read_eval_results())


def _refuse_linked_folder(path: Path) -> None:
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; expected the run's own folder (nothing is read or uploaded "
                        "through a link): remove the link")


def sample_grids(run_dir: Path) -> list[tuple[Path, str]]:
    """(local file, name in the repo) of the newest translation grid in `<run>/samples` and its swap grid. A link
    (or a folder, a fifo) among the grids is refused in one line, never followed."""
    samples = RunDir(run_dir).samples
    _refuse_linked_folder(samples)
    # not the temporary file of an interrupted write (iiae.safe_files): never a grid
    found = sorted(p for p in samples.glob("*.png") if not p.name.startswith(TEMP_PREFIX)) \
        if samples.is_dir() else []
    for path in found:  # every one, not only the newest: a planted link is named wherever it is
        refuse_link(path, "a sample grid (a PNG the engine wrote)")
        if path.lstat().st_nlink > 1:
            raise UserError(f"{path}: is a hard link (another name of a file elsewhere); expected a sample grid the "
                            "engine wrote")
    grids = [p for p in found if not p.stem.endswith("_swap")]
    if not grids:
        return []
    newest = max(grids, key=lambda p: (p.lstat().st_mtime, p.name))
    swap = newest.with_name(f"{newest.stem}_swap.png")
    return [(newest, GRID_NAME)] + ([(swap, SWAP_NAME)] if swap in found else [])


def model_files(run_dir: Path, weights: Optional[Path] = None) -> dict[str, bytes]:
    """What `iiae push` uploads besides the card (and an exported Space copies): see `_uploads`. `weights`: the
    model folder when the caller has already read the run (`read_run(run_dir).weights`)."""
    return _uploads(run_dir, weights if weights is not None else read_run(run_dir).weights)


def _uploads(run_dir: Path, weights: Path) -> dict[str, bytes]:
    """{name in the repo: bytes} of what a push uploads besides the card: the model format's files of best/
    (nothing else there), eval_results.json and the newest sample grids. Each is read without following a link
    and must be a regular file of its own (not a hard link to a file elsewhere, such as a token): a link anywhere
    in best/, or a link, a folder or a fifo at any of those names, is refused in one line and nothing is uploaded."""
    for path in sorted(weights.iterdir()):  # a planted link is named, even where it would not be uploaded
        if path.is_symlink():
            refuse_link(path, "a regular file of the model (the engine never uploads through a link)")
    model = ModelFolder(weights)
    files = {p.name: read_regular(p, f"{p.name} of the model (a regular file)", hard_links=False)
             for p in model.files if p in model.hub_files or os.path.lexists(p)}
    for path in (model.config, model.selection):  # each upload is what its name says, or refused
        if path.name in files:
            read_json_object(path, f"{path.name} of the model (a JSON object)", raw=files[path.name])
    if model.recipe.name in files:
        _check_recipe(model.recipe, files[model.recipe.name])
    results = RunDir(run_dir).eval_results
    if weights != run_dir and os.path.lexists(results):
        files[results.name] = read_regular(results, "eval_results.json (a regular file)", hard_links=False)
        read_json_object(results, "eval_results.json (a JSON object)", raw=files[results.name])
    for path, name in sample_grids(run_dir):
        files[name] = read_regular(path, "a sample grid (a PNG the engine wrote)", hard_links=False)
        if not files[name].startswith(_PNG):
            raise UserError(f"{path}: not a PNG file; expected a sample grid the engine wrote")
    return files


def _check_recipe(path: Path, raw: bytes) -> None:
    from iiae.config import _yaml, recipe_from_dict

    try:
        data = _yaml(raw.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a recipe YAML file ({first_line(err)})") from None
    recipe_from_dict(data, source=str(path))
