"""The model card: what `iiae push`, `save_pretrained` and `push_to_hub` write as the repo's README.md.

Every text it quotes may come from a run folder (eval_results.json, recipe.yaml, run.json), which is never trusted:
it is escaped (`_text`, `_code`, `_slug`, `_fenced`), so nothing can break the card's structure or bring HTML or
links into it.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import yaml

from iiae.data.catalogue import domain_names
from iiae.models.config import ModelConfig, ObjectiveConfig
from iiae.models.registry import input_kind

if TYPE_CHECKING:
    from iiae.config import Recipe

CITATION = """@inproceedings{hwang2020variational,
  title     = {Variational Interaction Information Maximization for Cross-domain Disentanglement},
  author    = {Hwang, HyeongJoo and Kim, Geon-Hyeong and Hong, Seunghoon and Kim, Kee-Eung},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {33},
  year      = {2020}
}"""

GRID_NAME, SWAP_NAME = "translation_grid.png", "swap_grid.png"
_RUN_INFO = {"model", "dataset", "data", "split"}  # the non-metric entries of eval_results.json


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


def _model_index(metrics: dict, dataset_id: Optional[str], split_id: Optional[str], task: str) -> list:
    """The card metadata's eval results: the INDEXED metrics that are finite numbers (only with a dataset)."""
    from huggingface_hub import EvalResult

    if not dataset_id:
        return []
    return [EvalResult(task_type=task, task_name="cross-domain disentanglement", dataset_type=dataset_id,
                       dataset_name=dataset_id, dataset_split=split_id, metric_type=kind, metric_name=label,
                       metric_value=round(value, 6))
            for key, (label, kind) in INDEXED.items()
            if (value := _number(metrics.get(key))) is not None and math.isfinite(value)]


def _inputs(cfg: ModelConfig) -> tuple[str, str, str]:
    """(what the model does, a usage line, how inputs are prepared) for its input kind."""
    if input_kind(cfg) == "feature":
        return ("Zero-shot sketch-based image retrieval: sketches and photos (VGG features) are embedded into a "
                "shared code z^s; photos are ranked by cosine similarity to a sketch's code.",
                'z_sketch = model.encode_shared(sketch_features, "x")   # [B, 512] VGG features -> codes',
                f"Inputs are {cfg.feature_dim}-d float32 feature vectors (`.npy` files for the CLI).")
    size, c = cfg.image_size, cfg.channels
    return ("Cross-domain disentanglement: the shared code z^s (what X and Y have in common) and exclusive codes "
            "z^x, z^y (what only one domain has). Uses: cross-domain retrieval (nearest shared code) and "
            "diverse image-to-image translation (shared code of the input + an exclusive code from N(0, I)).",
            f'ys = model.translate(x, "y", n=3)   # x: [B, {c}, {size}, {size}] in [-1, 1] -> [3, B, {c}, {size}, {size}]',
            f"Images are RGB, resized to {size}×{size} (area filter when shrinking, bicubic when enlarging) and "
            "scaled to [-1, 1]; `model.preprocess(paths_or_pil_images)` does exactly this and "
            "`model.postprocess(tensor)` turns outputs back into PIL images. A tensor of another shape is refused.")


def _metrics_section(metrics: dict) -> list[str]:
    values = {k: v for k, v in metrics.items() if k not in _RUN_INFO and _number(v) is not None}
    if not values:
        return ["## Metrics", "", "Not evaluated yet (`iiae eval RUN --data DIR` writes eval_results.json).", ""]
    return ["## Metrics", "", "| metric | value |", "|---|---|",
            *[f"| {_text(k)} | {_fmt(v)} |" for k, v in values.items()], "",
            "Recall@K is over the whole split as gallery (squared Euclidean on the r means, ties to the lowest "
            "index); the exclusive rows are the ablation (≈ 1/n when the codes are disentangled).", ""]


def _weights(obj: ObjectiveConfig) -> str:
    """The reconstruction weight, or X's and Y's when they differ (objective.recon_weight_y)."""
    if obj.recon_weight_y is None:
        return f"{obj.recon_weight:g}"
    return f"{obj.recon_weight:g} (x), {obj.recon_weight_y:g} (y)"


def _objective_section(obj: ObjectiveConfig) -> list[str]:
    return ["## Objective", "",
            "L = (β+Λ)(R_x + R_y) + c_t(β+Λ)(K_x + K_y) + c_t·β·K_s + Λ(K_rx + K_ry); the paper's λ is Λ/β.", "",
            "| β | Λ | λ_paper = Λ/β | reconstruction | weight | KL anneal steps |", "|---|---|---|---|---|---|",
            f"| {obj.beta:g} | {obj.Lambda:g} | {obj.lambda_paper:g} | {obj.recon} | {_weights(obj)} | "
            f"{obj.anneal_steps} |", ""]


def _samples_section(grids: list) -> list[str]:
    if not grids:
        return []
    lines = ["## Samples", "", "Per row: input, three translations with z ~ N(0, I), the guided translation "
             "(exclusive code of the true partner), the target; X→Y block over Y→X.", "", f"![translations]({GRID_NAME})", ""]
    if len(grids) > 1:
        lines += [f"![exclusive swap: shared code of the row, exclusive code of the column]({SWAP_NAME})", ""]
    return lines


def _usage_section(cfg: ModelConfig, repo_id: Optional[str]) -> list[str]:
    from iiae.version import __version__

    _, usage, prep = _inputs(cfg)
    load = json.dumps(repo_id or "path/to/this/folder")  # a Python string literal, whatever the id holds
    lines = ["## Install", "",
             f"The `iiae` engine that wrote this model (version {__version__}): `pip install .` in its source folder "
             f"(or `pip install iiae=={__version__}` where it is published).", "",
             "## Preprocessing", "", prep, "",
             "## Usage", "",
             *_fenced("\n".join(["from iiae.models import IIAE",
                                  f"model = IIAE.from_pretrained({load})   # strict loading, eval mode", usage]), "python"),
             ""]
    if input_kind(cfg) != "feature":
        lines += ["On image files: `iiae translate MODEL --input IMG_OR_DIR --to y --out DIR`, "
                  "`iiae retrieve MODEL --query IMG_OR_DIR --gallery DIR`.", ""]
    return lines


def _training_section(training: Optional[dict]) -> list[str]:
    if not training:
        return []
    seconds = _number(training.get("train_seconds"))
    minutes = f"{seconds / 60:.1f} min" if seconds and math.isfinite(seconds) else "unknown time"
    t = {key: _text(training.get(key)) for key in ("step", "num_processes", "device", "mixed_precision", "torch")}
    chosen = f"Selected at step {t['step']}"
    if training.get("selection") == "last":  # not selected on validation: the recipe's choice, or no point qualified
        reason = training.get("reason")
        chosen = f"The final weights (step {t['step']}{'; ' + _text(reason) if reason else ''})"
    return ["## Training", "",
            f"{chosen} after {minutes} of training on {t['num_processes']} × {t['device']} "
            f"(mixed precision {t['mixed_precision']}, torch {t['torch']}).", ""]


LIMITATIONS = [
    "## Limitations", "",
    "- It knows only the two domains it was trained on, at its own resolution; inputs are resized to it.",
    "- Retrieval assumes the gallery comes from the same data distribution; the exclusive codes carry no "
    "cross-domain information by design.",
    "- Translations are decoded from a VAE: blurrier than adversarial image-to-image models.", "",
]


def _recipe_section(recipe: Optional["Recipe"]) -> list[str]:
    if recipe is None:
        return []
    return ["## Recipe (resolved; `recipe.yaml`; the model's own sections are `config.json`)", "",
            *_fenced(yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "yaml"), ""]


def build_card(cfg: ModelConfig, obj: ObjectiveConfig, *, repo_id: Optional[str] = None,
               recipe: Optional["Recipe"] = None, metrics: Optional[dict] = None, grids: list = (),
               training: Optional[dict] = None):
    """The model card (`huggingface_hub.ModelCard`): metadata with a model-index of the metrics, then task, data,
    metrics, objective, samples, install, preprocessing, usage, training, limitations, recipe, citation. `metrics`:
    an eval_results.json (with dataset and split) or a selection record. What `iiae push`, `save_pretrained` and
    `push_to_hub` all write."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics = dict(metrics or {})
    name = recipe.name if recipe is not None else "iiae"
    title = repo_id.split("/")[-1] if repo_id else name
    dataset = metrics.get("dataset") or (Path(recipe.data.root).name if recipe is not None else None)
    split = metrics.get("split") or (recipe.data.valid_split if recipe is not None and metrics else None)
    dataset = _clean(dataset) if dataset not in (None, "") else None
    split = _clean(split) if split not in (None, "") else None
    x_name, y_name = domain_names(dataset or "")
    task = "feature-extraction" if input_kind(cfg) == "feature" else "image-to-image"
    dataset_id = _slug(dataset)
    data = ModelCardData(
        model_name=_slug(title) or "iiae", library_name="iiae", license="apache-2.0", pipeline_tag=task,
        tags=["iiae", "cross-domain-disentanglement", "cross-domain-retrieval", "vae", "pytorch", f"arxiv:{ARXIV}"],
        datasets=[dataset_id] if dataset_id else None,
        eval_results=_model_index(metrics, dataset_id, _slug(split), task) or None)
    lines = [
        f"# {_text(title)}", "",
        f"An **IIAE** (Interaction Information Auto-Encoder; Hwang et al., NeurIPS 2020, "
        f"[arXiv:{ARXIV}](https://arxiv.org/abs/{ARXIV})) trained with the {_code(name)} recipe (arch `{cfg.arch}`).",
        "", "## Task", "", _inputs(cfg)[0], "",
        "## Data", "",
        f"- dataset: {_code(dataset or 'unknown')}" + (f" (metrics on the {_code(split)} split)" if split else ""),
        f"- X: {x_name}", f"- Y: {y_name}", "",
        *_metrics_section(metrics), *_objective_section(obj), *_samples_section(grids), *_usage_section(cfg, repo_id),
        *_training_section(training), *LIMITATIONS, *_recipe_section(recipe),
        "## Citation", "", *_fenced(CITATION, "bibtex"), "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
