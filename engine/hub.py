"""Publishing to the Hugging Face Hub: the model card, and `iiae push RUN --repo-id user/name [--private]`.

One commit holds `best/` (config.json = the model and objective sections, model.safetensors, recipe.yaml,
selection.json), README.md (the card), eval_results.json and the newest sample grid, so a repo never shows
weights without their card.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .config import ModelConfig, ObjectiveConfig, Recipe, validated
from .data.catalogue import domain_names
from .errors import UserError, first_line
from .models import input_kind
from .run_dir import RunDir

CITATION = """@inproceedings{hwang2020variational,
  title     = {Variational Interaction Information Maximization for Cross-domain Disentanglement},
  author    = {Hwang, HyeongJoo and Kim, Geon-Hyeong and Hong, Seunghoon and Kim, Kee-Eung},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {33},
  year      = {2020}
}"""

GRID_NAME, SWAP_NAME = "translation_grid.png", "swap_grid.png"
_RUN_INFO = {"model", "dataset", "split"}  # the non-metric entries of eval_results.json


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
    try:
        config = json.loads((weights / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{weights / 'config.json'}: invalid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{weights / 'config.json'}: expected a JSON object with model and objective sections")
    recipe = run.read_recipe() or RunDir(weights).read_recipe()
    model = validated(ModelConfig, config.get("model"), str(weights / "config.json"), "model")
    objective = validated(ObjectiveConfig, config.get("objective"), str(weights / "config.json"), "objective")
    return _Published(weights, model, objective, recipe, run.read_eval_results())


def sample_grids(run_dir: Path) -> list[tuple[Path, str]]:
    """(local file, name in the repo) of the newest translation grid in `<run>/samples` and its swap grid."""
    samples = Path(run_dir) / "samples"
    grids = [p for p in samples.glob("*.png") if not p.stem.endswith("_swap")] if samples.is_dir() else []
    if not grids:
        return []
    newest = max(grids, key=lambda p: (p.stat().st_mtime, p.name))
    swap = newest.with_name(f"{newest.stem}_swap.png")
    return [(newest, GRID_NAME)] + ([(swap, SWAP_NAME)] if swap.is_file() else [])


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(run_dir: str | Path, repo_id: str) -> str:
    """The README.md of the Hub repo: metadata, task, data, metrics, objective weights, recipe, usage, citation."""
    run_dir = Path(run_dir)
    pub = _read_run(run_dir)
    obj, cfg, recipe, metrics = pub.objective, pub.model, pub.recipe, pub.metrics
    name = recipe.name if recipe is not None else pub.weights.resolve().name
    arch, features = cfg.arch, input_kind(cfg) == "feature"
    dataset = metrics.get("dataset") or (Path(recipe.data.root).name if recipe is not None else "unknown")
    x_name, y_name = domain_names(dataset)
    meta = {
        "library_name": "iiae",
        "license": "apache-2.0",
        "pipeline_tag": "feature-extraction" if features else "image-to-image",
        "tags": ["iiae", "cross-domain-disentanglement", "cross-domain-retrieval", "vae", "pytorch"],
    }
    if features:
        task = ("Zero-shot sketch-based image retrieval: sketches and photos (VGG features) are embedded into a "
                "shared code z^s; photos are ranked by cosine similarity to a sketch's code.")
        usage = ('z_sketch = model.encode_shared(sketch_features, "x")   # [B, 512] VGG features -> [B, 64]')
    else:
        size = cfg.image_size
        task = ("Cross-domain disentanglement: the shared code z^s (what X and Y have in common) and exclusive codes "
                "z^x, z^y (what only one domain has). Uses: cross-domain retrieval (nearest shared code) and "
                "diverse image-to-image translation (shared code of the input + an exclusive code from N(0, I)).")
        usage = (f'ys = model.translate(x, "y", n=3)   # x: [B, {cfg.channels}, {size}, {size}] in [-1, 1] '
                 f'-> [3, B, {cfg.channels}, {size}, {size}]')
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"An **IIAE** (Interaction Information Auto-Encoder; Hwang et al., NeurIPS 2020) trained with the "
        f"`{name}` recipe (arch `{arch}`).", "",
        "## Task", "", task, "",
        "## Data", "",
        f"- dataset: `{dataset}`" + (f" (metrics on the `{metrics['split']}` split)" if "split" in metrics else ""),
        f"- X: {x_name}", f"- Y: {y_name}", "",
        "## Metrics", "",
    ]
    values = {k: v for k, v in metrics.items() if k not in _RUN_INFO and not isinstance(v, list)}
    if values:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in values.items()]
    else:
        lines.append("Not evaluated yet (`iiae eval RUN --data DIR` writes eval_results.json).")
    lines += [
        "", "Recall@1 is over the whole split as gallery (squared Euclidean on the r means, ties to the lowest "
        "index); the exclusive rows are the ablation (≈ 1/n when the codes are disentangled).", "",
        "## Objective", "",
        "L = (β+Λ)(R_x + R_y) + c_t(β+Λ)(K_x + K_y) + c_t·β·K_s + Λ(K_rx + K_ry); the paper's λ is Λ/β.", "",
        "| β | Λ | λ_paper = Λ/β | reconstruction | weight | KL anneal steps |", "|---|---|---|---|---|---|",
        f"| {obj.beta:g} | {obj.Lambda:g} | {obj.lambda_paper:g} | {obj.recon} | {obj.recon_weight:g} | {obj.anneal_steps} |",
        "",
    ]
    grids = sample_grids(run_dir)
    if grids:
        lines += ["## Samples", "", "Per row: input, three translations with z ~ N(0, I), the guided translation "
                  "(exclusive code of the true partner), the target; X→Y block over Y→X.", "",
                  f"![translations]({GRID_NAME})", ""]
        if len(grids) > 1:
            lines += [f"![exclusive swap: shared code of the row, exclusive code of the column]({SWAP_NAME})", ""]
    lines += [
        "## Usage", "", "With the `iiae` package installed:", "", "```python",
        "from engine.models import IIAE",
        f'model = IIAE.from_pretrained("{repo_id}")   # strict loading, eval mode',
        usage, "```", "",
        "## Recipe (resolved; `recipe.yaml`; the model's own sections are `config.json`)", "", "```yaml",
        yaml.safe_dump(recipe.to_dict() if recipe is not None else {"model": cfg.model_dump(mode="json"),
                       "objective": obj.model_dump(mode="json")}, sort_keys=False).strip(), "```", "",
        "## Citation", "", "```bibtex", CITATION, "```", "",
    ]
    return "\n".join(lines)


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Upload the selected model, its card, metrics and sample grids to `repo_id` in one commit; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    from .run_dir import load_model

    run_dir = Path(run_dir)
    weights = _read_run(run_dir).weights
    load_model(weights)  # refuse to publish weights that do not load strictly
    card = model_card(run_dir, repo_id)
    # save_pretrained's generic README is replaced by the card
    ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(weights.iterdir()) if p.is_file() and p.name != "README.md"]
    ops.append(CommitOperationAdd("README.md", card.encode()))
    results = RunDir(run_dir).eval_results
    if results.is_file() and weights != run_dir:
        ops.append(CommitOperationAdd(results.name, str(results)))
    ops += [CommitOperationAdd(name, str(path)) for path, name in sample_grids(run_dir)]
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, ops, commit_message=f"Upload IIAE ({run_dir.resolve().name})", repo_type="model")
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OSError) as err:
        raise UserError(f"push to {repo_id} failed: {first_line(err)}") from err
    return info.commit_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run dir (uploads <run>/best) or model folder")
    p.add_argument("--repo-id", required=True, help="user/name on the Hugging Face Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")


def run(args: argparse.Namespace) -> int:
    url = push(args.run, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    return 0
