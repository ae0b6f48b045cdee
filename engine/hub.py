"""Publishing to the Hugging Face Hub: the model card, and `iiae push RUN --repo-id user/name [--private]`.

One commit holds `best/` (config.json = the model and objective sections, model.safetensors, recipe.yaml,
selection.json), README.md (the card), eval_results.json and the newest sample grid, so a repo never shows
weights without their card. Nothing read from the run folder is trusted: only those files are uploaded, each a
regular file of its own read without following links, and every text the card quotes from it is escaped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .config import ModelConfig, ObjectiveConfig, Recipe, validated
from .data.catalogue import domain_names
from .errors import UserError, first_line
from .models import input_kind
from .run_dir import WEIGHT_FILES, RunDir, read_json_object
from .safe_files import TEMP_PREFIX, read_regular, refuse_link

CITATION = """@inproceedings{hwang2020variational,
  title     = {Variational Interaction Information Maximization for Cross-domain Disentanglement},
  author    = {Hwang, HyeongJoo and Kim, Geon-Hyeong and Hong, Seunghoon and Kim, Kee-Eung},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {33},
  year      = {2020}
}"""

GRID_NAME, SWAP_NAME = "translation_grid.png", "swap_grid.png"
_RUN_INFO = {"model", "dataset", "data", "split"}  # the non-metric entries of eval_results.json
# the files of best/ a repo gets (the model format); nothing else there is ever uploaded
BEST_FILES = ("config.json", "model.safetensors", "recipe.yaml", "selection.json")
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class _Published:
    """What a card describes: the weights folder, the model's own config, the run's recipe (None for a bare model
    folder) and its latest evaluation."""

    weights: Path
    model: ModelConfig
    objective: ObjectiveConfig
    recipe: Optional[Recipe]
    metrics: dict


def _read_run(run_dir: Path) -> _Published:
    from .run_dir import resolve_run

    weights, run = resolve_run(run_dir)
    if weights is None:
        raise UserError(f"{run_dir}: no such run dir")
    if weights != Path(run_dir):  # <run>/best is the run's own folder: never a link to one elsewhere
        _refuse_linked_folder(weights)
    config = read_json_object(weights / "config.json", "a JSON object with model and objective sections")
    recipe = run.read_recipe() or RunDir(weights).read_recipe()
    model = validated(ModelConfig, config.get("model"), str(weights / "config.json"), "model")
    objective = validated(ObjectiveConfig, config.get("objective"), str(weights / "config.json"), "objective")
    return _Published(weights, model, objective, recipe, run.read_eval_results())


def _refuse_linked_folder(path: Path) -> None:
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; expected the run's own folder (nothing is read or uploaded "
                        "through a link): remove the link")


def sample_grids(run_dir: Path) -> list[tuple[Path, str]]:
    """(local file, name in the repo) of the newest translation grid in `<run>/samples` and its swap grid. A link
    (or a folder, a fifo) among the grids is refused in one line, never followed."""
    samples = Path(run_dir) / "samples"
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


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ---- what the card quotes from a run folder: text that cannot change the card's structure ---------------------
_PLAIN = re.compile(r"[\w .,:/+=-]*")  # reads the same as Markdown, HTML and a code span: no escaping needed
_PUNCTUATION = re.compile(r"([!-%'-/:;=?@\[-`{-~])")  # ASCII punctuation but & < >: backslash-escaped in Markdown
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # shown as typed, yet never a tag (not even in the source)


def _clean(value, limit: int = 100) -> str:
    """`value` as one line of at most `limit` characters: line breaks and other control characters (bidi
    overrides included) become spaces."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value) -> str:
    """`value` as literal Markdown text: as it is when plain, else every ASCII punctuation mark backslash-escaped
    and & < > as entities (no HTML, link, code span, emphasis or table cell boundary survives)."""
    text = _clean(value)
    if _PLAIN.fullmatch(text):
        return text
    return re.sub(r"[&<>]", lambda m: _ENTITIES[m.group()], _PUNCTUATION.sub(r"\\\1", text))


def _code(value) -> str:
    """`value` in a code span when plain, else as escaped text: a backtick in it cannot end the span."""
    text = _clean(value)
    return f"`{text}`" if _PLAIN.fullmatch(text) else _text(text)


def _slug(value) -> Optional[str]:
    """`value` as a metadata identifier (letters, digits, . _ -), or None when nothing of it is left."""
    if value is None:
        return None
    return re.sub(r"[^\w.-]+", "-", _clean(value), flags=re.ASCII).strip("-.")[:96] or None


def _fenced(body: str, info: str) -> list[str]:
    """A fenced code block that no line of `body` can close: its fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, body, fence]


def _number(value) -> Optional[float]:
    """A JSON number as a float; None for anything else (bools, strings, integers beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


ARXIV = "2012.04251"
# metrics reported in the card's model-index: key -> (name, type)
INDEXED = {
    "recall_at_1_x2y": ("Recall@1 X→Y (shared codes)", "recall@1"),
    "recall_at_1_y2x": ("Recall@1 Y→X (shared codes)", "recall@1"),
    "recall_at_5_x2y": ("Recall@5 X→Y (shared codes)", "recall@5"),
    "recall_at_5_y2x": ("Recall@5 Y→X (shared codes)", "recall@5"),
    "exclusive_recall_at_1_x2y": ("Recall@1 X→Y (exclusive codes, ablation)", "recall@1"),
    "exclusive_recall_at_1_y2x": ("Recall@1 Y→X (exclusive codes, ablation)", "recall@1"),
    "map_all": ("mAP@all", "map"),
    "precision_at_100": ("P@100", "precision@100"),
    "map_at_200": ("mAP@200", "map@200"),
    "precision_at_200": ("P@200", "precision@200"),
    "guided_psnr_x2y": ("guided translation PSNR X→Y (dB)", "psnr"),
    "guided_psnr_y2x": ("guided translation PSNR Y→X (dB)", "psnr"),
}


def _training(run_dir: Path, selection: dict) -> Optional[dict]:
    """Steps, time and hardware of the run that made `best/`, from run.json and selection.json."""
    run_info = RunDir(run_dir).run_info
    if not refuse_link(run_info, "the run's run.json (a JSON object)").is_file():
        return None
    info = read_json_object(run_info, "the run's run.json (a JSON object)")
    return {"step": selection.get("step"), "train_seconds": selection.get("train_seconds"),
            "device": info.get("device"), "num_processes": info.get("num_processes"),
            "mixed_precision": info.get("mixed_precision"), "torch": info.get("torch")}


def build_card(cfg: ModelConfig, obj: ObjectiveConfig, *, repo_id: Optional[str] = None,
               recipe: Optional[Recipe] = None, metrics: Optional[dict] = None, grids: list = (),
               training: Optional[dict] = None):
    """The model card (`huggingface_hub.ModelCard`): metadata with a model-index of the metrics, then task, data,
    metrics, objective, install, preprocessing, usage, training, limitations, recipe, citation. `metrics`: an
    eval_results.json (with dataset and split) or a selection record. What `iiae push`, `save_pretrained` and
    `push_to_hub` all write."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from . import __version__

    # every text below may come from a run folder (eval_results.json, recipe.yaml, run.json): quoted through
    # _text/_code/_slug/_fenced, so none can break the card's structure or bring HTML or links into it
    metrics = dict(metrics or {})
    name = recipe.name if recipe is not None else "iiae"
    title = repo_id.split("/")[-1] if repo_id else name
    features = input_kind(cfg) == "feature"
    dataset = metrics.get("dataset") or (Path(recipe.data.root).name if recipe is not None else None)
    split = metrics.get("split") or (recipe.data.valid_split if recipe is not None and metrics else None)
    dataset = _clean(dataset) if dataset not in (None, "") else None
    split = _clean(split) if split not in (None, "") else None
    x_name, y_name = domain_names(dataset or "")
    task = "feature-extraction" if features else "image-to-image"
    dataset_id, split_id = _slug(dataset), _slug(split)
    results = [EvalResult(task_type=task, task_name="cross-domain disentanglement", dataset_type=dataset_id,
                          dataset_name=dataset_id, dataset_split=split_id, metric_type=kind, metric_name=label,
                          metric_value=round(value, 6))
               for key, (label, kind) in INDEXED.items()
               if (value := _number(metrics.get(key))) is not None and math.isfinite(value) and dataset_id]
    data = ModelCardData(
        model_name=_slug(title) or "iiae", library_name="iiae", license="apache-2.0", pipeline_tag=task,
        tags=["iiae", "cross-domain-disentanglement", "cross-domain-retrieval", "vae", "pytorch", f"arxiv:{ARXIV}"],
        datasets=[dataset_id] if dataset_id else None, eval_results=results or None)
    if features:
        what = ("Zero-shot sketch-based image retrieval: sketches and photos (VGG features) are embedded into a "
                "shared code z^s; photos are ranked by cosine similarity to a sketch's code.")
        usage = 'z_sketch = model.encode_shared(sketch_features, "x")   # [B, 512] VGG features -> codes'
        prep = f"Inputs are {cfg.feature_dim}-d float32 feature vectors (`.npy` files for the CLI)."
    else:
        size = cfg.image_size
        what = ("Cross-domain disentanglement: the shared code z^s (what X and Y have in common) and exclusive codes "
                "z^x, z^y (what only one domain has). Uses: cross-domain retrieval (nearest shared code) and "
                "diverse image-to-image translation (shared code of the input + an exclusive code from N(0, I)).")
        usage = (f'ys = model.translate(x, "y", n=3)   # x: [B, {cfg.channels}, {size}, {size}] in [-1, 1] '
                 f'-> [3, B, {cfg.channels}, {size}, {size}]')
        prep = (f"Images are RGB, resized to {size}×{size} (area filter when shrinking, bicubic when enlarging) and "
                "scaled to [-1, 1]; `model.preprocess(paths_or_pil_images)` does exactly this and "
                "`model.postprocess(tensor)` turns outputs back into PIL images. A tensor of another shape is "
                "refused.")
    lines = [
        f"# {_text(title)}", "",
        f"An **IIAE** (Interaction Information Auto-Encoder; Hwang et al., NeurIPS 2020, "
        f"[arXiv:{ARXIV}](https://arxiv.org/abs/{ARXIV})) trained with the {_code(name)} recipe (arch `{cfg.arch}`).",
        "", "## Task", "", what, "",
        "## Data", "",
        f"- dataset: {_code(dataset or 'unknown')}" + (f" (metrics on the {_code(split)} split)" if split else ""),
        f"- X: {x_name}", f"- Y: {y_name}", "",
        "## Metrics", "",
    ]
    values = {k: v for k, v in metrics.items() if k not in _RUN_INFO and _number(v) is not None}
    if values:
        lines += ["| metric | value |", "|---|---|"] + [f"| {_text(k)} | {_fmt(v)} |" for k, v in values.items()]
        lines += ["", "Recall@K is over the whole split as gallery (squared Euclidean on the r means, ties to the "
                  "lowest index); the exclusive rows are the ablation (≈ 1/n when the codes are disentangled)."]
    else:
        lines.append("Not evaluated yet (`iiae eval RUN --data DIR` writes eval_results.json).")
    lines += [
        "", "## Objective", "",
        "L = (β+Λ)(R_x + R_y) + c_t(β+Λ)(K_x + K_y) + c_t·β·K_s + Λ(K_rx + K_ry); the paper's λ is Λ/β.", "",
        "| β | Λ | λ_paper = Λ/β | reconstruction | weight | KL anneal steps |", "|---|---|---|---|---|---|",
        f"| {obj.beta:g} | {obj.Lambda:g} | {obj.lambda_paper:g} | {obj.recon} | {obj.recon_weight:g} | {obj.anneal_steps} |",
        "",
    ]
    if grids:
        lines += ["## Samples", "", "Per row: input, three translations with z ~ N(0, I), the guided translation "
                  "(exclusive code of the true partner), the target; X→Y block over Y→X.", "",
                  f"![translations]({GRID_NAME})", ""]
        if len(grids) > 1:
            lines += [f"![exclusive swap: shared code of the row, exclusive code of the column]({SWAP_NAME})", ""]
    load = json.dumps(repo_id or "path/to/this/folder")  # a Python string literal, whatever the id holds
    lines += [
        "## Install", "",
        f"The `iiae` engine that wrote this model (version {__version__}): `pip install .` in its source folder "
        f"(or `pip install iiae=={__version__}` where it is published).", "",
        "## Preprocessing", "", prep, "",
        "## Usage", "",
        *_fenced("\n".join(["from iiae.models import IIAE",
                             f"model = IIAE.from_pretrained({load})   # strict loading, eval mode", usage]), "python"),
        "",
    ]
    if not features:
        lines += ["On image files: `iiae translate MODEL --input IMG_OR_DIR --to y --out DIR`, "
                  "`iiae retrieve MODEL --query IMG_OR_DIR --gallery DIR`.", ""]
    if training:
        seconds = _number(training.get("train_seconds"))
        minutes = f"{seconds / 60:.1f} min" if seconds and math.isfinite(seconds) else "unknown time"
        t = {key: _text(training.get(key)) for key in ("step", "num_processes", "device", "mixed_precision", "torch")}
        lines += ["## Training", "",
                  f"Selected at step {t['step']} after {minutes} of training on {t['num_processes']} × "
                  f"{t['device']} (mixed precision {t['mixed_precision']}, torch {t['torch']}).", ""]
    lines += [
        "## Limitations", "",
        "- It knows only the two domains it was trained on, at its own resolution; inputs are resized to it.",
        "- Retrieval assumes the gallery comes from the same data distribution; the exclusive codes carry no "
        "cross-domain information by design.",
        "- Translations are decoded from a VAE: blurrier than adversarial image-to-image models.", "",
    ]
    if recipe is not None:
        lines += ["## Recipe (resolved; `recipe.yaml`; the model's own sections are `config.json`)", "",
                  *_fenced(yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "yaml"), ""]
    lines += ["## Citation", "", *_fenced(CITATION, "bibtex"), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def model_card(run_dir: str | Path, repo_id: str) -> str:
    """The README.md of the Hub repo for a run (or a model folder): its eval results, samples and training."""
    run_dir = Path(run_dir)
    pub = _read_run(run_dir)
    selection = refuse_link(pub.weights / "selection.json", "the selection record (a JSON object)")
    chosen = read_json_object(selection, "the selection record (a JSON object)") if selection.is_file() else {}
    return str(build_card(pub.model, pub.objective, repo_id=repo_id, recipe=pub.recipe, metrics=pub.metrics,
                          grids=sample_grids(run_dir), training=_training(run_dir, chosen)))


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Upload the selected model, its card, metrics and sample grids to `repo_id` in one commit; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    from .run_dir import load_model

    run_dir = Path(run_dir)
    weights = _read_run(run_dir).weights
    files = _uploads(run_dir, weights)  # read (and checked) before anything else: what is checked is what goes
    load_model(weights)  # refuse to publish weights that do not load strictly
    card = model_card(run_dir, repo_id)  # save_pretrained's generic README is replaced by the card
    ops = [CommitOperationAdd(name, data) for name, data in files.items()]
    ops.append(CommitOperationAdd("README.md", card.encode()))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, ops, commit_message=f"Upload IIAE ({run_dir.resolve().name})", repo_type="model")
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OSError) as err:
        raise UserError(f"push to {repo_id} failed: {first_line(err)}") from err
    return info.commit_url


def _uploads(run_dir: Path, weights: Path) -> dict[str, bytes]:
    """{name in the repo: bytes} of what a push uploads besides the card: the model format's files of best/
    (nothing else there), eval_results.json and the newest sample grids. Each is read without following a link
    and must be a regular file of its own (not a hard link to a file elsewhere, such as a token): a link anywhere
    in best/, or a link, a folder or a fifo at any of those names, is refused in one line and nothing is uploaded."""
    for path in sorted(weights.iterdir()):  # a planted link is named, even where it would not be uploaded
        if path.is_symlink():
            refuse_link(path, "a regular file of the model (the engine never uploads through a link)")
    files = {name: read_regular(weights / name, f"{name} of the model (a regular file)", hard_links=False)
             for name in BEST_FILES if name in WEIGHT_FILES or os.path.lexists(weights / name)}
    for name in ("config.json", "selection.json"):  # each upload is what its name says, or refused
        if name in files:
            read_json_object(weights / name, f"{name} of the model (a JSON object)", raw=files[name])
    if "recipe.yaml" in files:
        _check_recipe(weights / "recipe.yaml", files["recipe.yaml"])
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
    from .config import _yaml, recipe_from_dict

    try:
        data = _yaml(raw.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a recipe YAML file ({first_line(err)})") from None
    recipe_from_dict(data, source=str(path))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run dir (uploads <run>/best) or model folder")
    p.add_argument("--repo-id", required=True, help="user/name on the Hugging Face Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")


def run(args: argparse.Namespace) -> int:
    url = push(args.run, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    return 0
