"""Publishing to the Hugging Face Hub: `iiae push RUN --repo-id user/name [--private] [--space user/demo]` (the
card is `card.py`; `--space` also publishes the `iiae app` page for the pushed model as a Gradio Space).

One commit holds `best/` (config.json = the model and objective sections, model.safetensors, recipe.yaml,
selection.json), README.md (the card), eval_results.json and the newest sample grid, so a repo never shows
weights without their card. Nothing read from the run folder is trusted: only those files are uploaded, each a
regular file of its own read without following links, and every text the card quotes from it is escaped.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from iiae.errors import UserError, first_line
from iiae.hub.published import model_files, read_run, sample_grids
from iiae.models.card import build_card
from iiae.run_dir import ModelFolder, RunDir, read_json_object
from iiae.safe_files import refuse_link


def _training(run_dir: Path, selection: dict) -> Optional[dict]:
    """Steps, time and hardware of the run that made `best/`, from run.json and selection.json."""
    run_info = RunDir(run_dir).run_info
    if not refuse_link(run_info, "the run's run.json (a JSON object)").is_file():
        return None
    info = read_json_object(run_info, "the run's run.json (a JSON object)")
    return {"step": selection.get("step"), "train_seconds": selection.get("train_seconds"),
            "selection": selection.get("selection"), "reason": selection.get("reason"),
            "device": info.get("device"), "num_processes": info.get("num_processes"),
            "mixed_precision": info.get("mixed_precision"), "torch": info.get("torch")}


def model_card(run_dir: str | Path, repo_id: str) -> str:
    """The README.md of the Hub repo for a run (or a model folder): its eval results, samples and training."""
    run_dir = Path(run_dir)
    pub = read_run(run_dir)
    selection = refuse_link(ModelFolder(pub.weights).selection, "the selection record (a JSON object)")
    chosen = read_json_object(selection, "the selection record (a JSON object)") if selection.is_file() else {}
    return str(build_card(pub.model, pub.objective, repo_id=repo_id, recipe=pub.recipe, metrics=pub.metrics,
                          grids=sample_grids(run_dir), training=_training(run_dir, chosen)))


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Upload the selected model, its card, metrics and sample grids to `repo_id` in one commit; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from iiae.models.loading import load_model

    run_dir = Path(run_dir)
    weights = read_run(run_dir).weights
    files = model_files(run_dir, weights)  # read (and checked) before anything else: what is checked is what goes
    load_model(weights)  # refuse to publish weights that do not load strictly
    card = model_card(run_dir, repo_id)  # save_pretrained's generic README is replaced by the card
    ops = [CommitOperationAdd(name, data) for name, data in files.items()]
    ops.append(CommitOperationAdd("README.md", card.encode()))
    return _commit(HfApi(token=token), repo_id, ops, f"Upload IIAE ({run_dir.resolve().name})", "model",
                   private=private)


def push_space(space_id: str, model_id: str, run_dir: str | Path, private: bool = False,
               token: Optional[str] = None) -> str:
    """Publish the `iiae app` page for the Hub model `model_id` (its name and dataset read from `run_dir`) as the
    Gradio Space `space_id` (`iiae.hub.space`), in one commit; returns its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from iiae.hub.space import space_files

    ops = [CommitOperationAdd(name, data) for name, data in space_files(str(run_dir), model_id=model_id).items()]
    return _commit(HfApi(token=token), space_id, ops, f"iiae app for {model_id}", "space", private=private,
                  space_sdk="gradio")


def _commit(api, repo_id: str, ops: list, message: str, repo_type: str, **create) -> str:
    """Create the repo (kept when it exists) and add one commit; a Hub failure is one line naming the repo."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    try:
        api.create_repo(repo_id, exist_ok=True, repo_type=repo_type, **create)
        info = api.create_commit(repo_id, ops, commit_message=message, repo_type=repo_type)
    except (HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OSError) as err:
        raise UserError(f"push to {repo_id} failed: {first_line(err)}") from err
    return info.commit_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run dir (uploads <run>/best) or model folder")
    p.add_argument("--repo-id", required=True, help="user/name on the Hugging Face Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    p.add_argument("--space", metavar="USER/NAME", default=None,
                   help="also publish the `iiae app` page for the pushed model as this Gradio Space (needs "
                        "`pip install 'iiae[app]'`)")


def run(args: argparse.Namespace) -> int:
    from iiae.hub.space import gradio_version

    if args.space is not None:
        gradio_version()  # before anything is pushed: the Space records it
    url = push(args.run, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    if args.space is not None:
        url = push_space(args.space, args.repo_id, args.run, private=args.private, token=args.token)
        print(f"pushed the app for {args.repo_id} to the Space {args.space}: {url}")
    return 0
