"""Publishing to the Hugging Face Hub: the model card, and `iiae push RUN --repo-id user/name [--private]`.

One commit holds `best/` (config.json = the resolved recipe, model.safetensors, selection.json), README.md (the
card), metrics.json and the newest sample grid, so a repo never shows weights without their card.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import yaml

from .config import recipe_from_dict
from .errors import UserError

CITATION = """@inproceedings{hwang2020variational,
  title     = {Variational Interaction Information Maximization for Cross-domain Disentanglement},
  author    = {Hwang, HyeongJoo and Kim, Geon-Hyeong and Hong, Seunghoon and Kim, Kee-Eung},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {33},
  year      = {2020}
}"""

# what X and Y hold in the paper's datasets (dataset.json names); other datasets fall back to "domain X / Y"
DOMAIN_NAMES = {
    "mnist-cdcb": ("CB: a white digit on a coloured background", "CD: a coloured digit on black"),
    "facades": ("building facade photo", "facade label map"),
    "maps": ("satellite image", "map rendering"),
    "cars": ("car at azimuth 0", "the same car at another azimuth"),
    "sketchy": ("sketch (512-d VGG feature)", "photo (512-d VGG feature)"),
}
GRID_NAME, SWAP_NAME = "translation_grid.png", "swap_grid.png"
_RUN_INFO = {"model", "dataset", "split"}  # the non-metric entries of metrics.json


def _read_run(run_dir: Path) -> tuple[Path, dict, dict]:
    """(folder with the weights, resolved recipe dict, metrics dict or {}) of a run dir or model folder."""
    from .evaluate import resolve_run

    weights, metrics_dir = resolve_run(run_dir)
    if weights is None:
        raise UserError(f"{run_dir}: no such run dir")
    try:
        config = json.loads((weights / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{weights / 'config.json'}: invalid JSON ({err})") from None
    metrics_file = metrics_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return weights, config, metrics


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
    _, config, metrics = _read_run(run_dir)
    recipe = recipe_from_dict(config, "config.json")
    obj, arch = recipe.objective, recipe.model.arch
    dataset = metrics.get("dataset") or Path(recipe.data.root).name
    x_name, y_name = DOMAIN_NAMES.get(dataset, ("domain X", "domain Y"))
    meta = {
        "library_name": "iiae",
        "license": "apache-2.0",
        "pipeline_tag": "feature-extraction" if arch == "mlp" else "image-to-image",
        "tags": ["iiae", "cross-domain-disentanglement", "cross-domain-retrieval", "vae", "pytorch"],
    }
    if arch == "mlp":
        task = ("Zero-shot sketch-based image retrieval: sketches and photos (VGG features) are embedded into a "
                "shared code z^s; photos are ranked by cosine similarity to a sketch's code.")
        usage = ('z_sketch = model.encode_shared(sketch_features, "x")   # [B, 512] VGG features -> [B, 64]')
    else:
        size = recipe.model.image_size
        task = ("Cross-domain disentanglement: the shared code z^s (what X and Y have in common) and exclusive codes "
                "z^x, z^y (what only one domain has). Uses: cross-domain retrieval (nearest shared code) and "
                "diverse image-to-image translation (shared code of the input + an exclusive code from N(0, I)).")
        usage = (f'ys = model.translate(x, "y", n=3)   # x: [B, {recipe.model.channels}, {size}, {size}] in [-1, 1] '
                 f'-> [3, B, {recipe.model.channels}, {size}, {size}]')
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"An **IIAE** (Interaction Information Auto-Encoder; Hwang et al., NeurIPS 2020) trained with the "
        f"`{recipe.name}` recipe (arch `{arch}`).", "",
        "## Task", "", task, "",
        "## Data", "",
        f"- dataset: `{dataset}`" + (f" (metrics on the `{metrics['split']}` split)" if "split" in metrics else ""),
        f"- X: {x_name}", f"- Y: {y_name}", "",
        "## Metrics", "",
    ]
    values = {k: v for k, v in metrics.items() if k not in _RUN_INFO}
    if values:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in values.items()]
    else:
        lines.append("Not evaluated yet (`iiae eval RUN --data DIR` writes metrics.json).")
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
        "## Recipe (resolved; also `config.json`)", "", "```yaml",
        yaml.safe_dump(recipe.to_dict(), sort_keys=False).strip(), "```", "",
        "## Citation", "", "```bibtex", CITATION, "```", "",
    ]
    return "\n".join(lines)


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Upload the selected model, its card, metrics and sample grids to `repo_id` in one commit; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    from .evaluate import load_model

    run_dir = Path(run_dir)
    weights, _, _ = _read_run(run_dir)
    load_model(weights)  # refuse to publish weights that do not load strictly
    card = model_card(run_dir, repo_id)
    # save_pretrained's generic README is replaced by the card
    ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(weights.iterdir()) if p.is_file() and p.name != "README.md"]
    ops.append(CommitOperationAdd("README.md", card.encode()))
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file() and weights != run_dir:
        ops.append(CommitOperationAdd("metrics.json", str(metrics_file)))
    ops += [CommitOperationAdd(name, str(path)) for path, name in sample_grids(run_dir)]
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, ops, commit_message=f"Upload IIAE ({run_dir.resolve().name})", repo_type="model")
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"push to {repo_id} failed: {first}") from err
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
