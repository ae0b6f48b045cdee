"""Metric logging: the trackers (TensorBoard, wandb, ...) and `train_log.jsonl` through one call, the training-log
cadence, and the curves PNG."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from iiae.models.objective import TERMS
from iiae.errors import UserError
from iiae.evaluation.retrieval_metrics import EXCLUSIVE_RECALL, SHARED_RECALL
from iiae.run_dir import RunDir
from iiae.safe_files import atomic_path, atomic_write, open_append, refuse_link


# trackers whose runs have an id the run folder keeps, so a resume continues the same tracker run
RESUMABLE_TRACKERS = ("wandb",)
# a tracker run id (wandb's own are 8-12 of [a-z0-9]; it refuses / \ # ? % :): never a path, nor . or ..
_RUN_ID = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,128}")


def read_tracker_ids(path: Path) -> dict:
    """`<run>/trackers.json` ({} when absent): {tracker: {"id": run id}}; anything else (a link, not JSON, other
    types, an id with characters a run id never has) is refused in one line: the file is never trusted."""
    from iiae.run_dir import read_json_object

    what = 'tracker run ids, {"wandb": {"id": "<letters, digits, _ . or ->"}}'
    if not refuse_link(path, what).is_file():
        return {}
    ids = read_json_object(path, what)
    for name, entry in ids.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and _RUN_ID.fullmatch(entry["id"])):
            raise UserError(f"{path}: {name!r:.40}: expected {{\"id\": <1-128 letters, digits, _ . or ->}}, "
                            f"got {entry!r:.80}; remove the file to start new tracker runs")
    return ids


def tracker_init_kwargs(recipe, run_ids: Optional[Path], main: bool) -> dict:
    """`train.tracker_kwargs`, plus for wandb the run id kept in `run_ids` (`<run>/trackers.json`; made at the
    first start) with resume="allow": every resume continues the same wandb run instead of starting a new one."""
    import uuid

    kwargs = {name: dict(values) for name, values in recipe.train.tracker_kwargs.items()}
    if run_ids is None or not any(t in RESUMABLE_TRACKERS for t in recipe.train.trackers):
        return kwargs
    ids = read_tracker_ids(run_ids)
    for name in RESUMABLE_TRACKERS:
        if name in recipe.train.trackers:
            ids.setdefault(name, {"id": kwargs.get(name, {}).get("id") or uuid.uuid4().hex[:12]})
            kwargs[name] = {**kwargs.get(name, {}), "id": ids[name]["id"], "resume": "allow"}
    if main:
        atomic_write(run_ids, json.dumps(ids, indent=2) + "\n", "the run's trackers.json")
    return kwargs


def log_images(accelerator, images: dict, step: int) -> None:
    """PIL images to every tracker that takes images (TensorBoard, wandb, ...), as `name` at `step`."""
    import numpy as np

    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            continue
        if tracker.name == "tensorboard":  # SummaryWriter.add_images: a batch of arrays
            tracker.log_images({k: np.asarray(v)[None] for k, v in images.items()}, step, dataformats="NHWC")
        else:
            tracker.log_images({k: [v] for k, v in images.items()}, step)


class MetricLogger:
    """`log(step, kind, values)` reaches the trackers (as `kind/key`) and appends `{"step", "kind", **values}` to
    the run's train log (main process only). As a trainer component it logs the training terms every
    `train.log_every` steps and on the last one."""

    def __init__(self, accelerator, path: Path, recipe, resumed_step: int = 0, run_ids: Optional[Path] = None):
        from iiae.config import flat_hparams

        self.accelerator, self.path, self.recipe = accelerator, Path(path), recipe
        self.enabled = accelerator.is_main_process
        self.truncate_after(resumed_step)
        init_kwargs = tracker_init_kwargs(recipe, run_ids, accelerator.is_main_process)
        accelerator.init_trackers(recipe.name, config=flat_hparams(recipe), init_kwargs=init_kwargs)

    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        # numbers only to the trackers; labels (a split's name) stay in the train log
        self.accelerator.log({f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=step)
        if self.enabled:  # O_NOFOLLOW: a link planted meanwhile is refused, never appended through
            with open_append(self.path, "the run's train log (a regular file the engine appends to)") as f:
                f.write((json.dumps({"step": step, "kind": kind, **values}) + "\n").encode())

    def truncate_after(self, step: int) -> None:
        """On resume, drop events logged after the checkpoint: they are about to be logged again."""
        if not self.enabled or not refuse_link(self.path, "the run's train log (a regular file)").exists():
            return
        text = self.path.read_bytes().decode(errors="replace")  # a torn or tampered line is dropped below
        kept = [line for line in text.splitlines() if _step_of(line) <= step]
        atomic_write(self.path, "".join(line + "\n" for line in kept), "the run's train log (a regular file)")

    def plot(self) -> None:
        if self.enabled:
            plot_curves(self.path, RunDir(self.path.parent).curves, title=self.recipe.name)

    # ---- trainer component ---------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        cfg = self.recipe.train
        return step % cfg.log_every == 0 or step == cfg.max_steps

    def after_step(self, trainer, terms: dict, micro: list[dict]) -> None:
        step = trainer.state.step
        if not self.due(step):
            return
        values = {k: float(v) for k, v in terms.items()}
        values.update(lr=trainer.scheduler.get_last_lr()[0], train_seconds=trainer.state.train_seconds,
                      skipped_samples=int(micro[-1].get("skipped", 0)), resized_samples=int(micro[-1].get("resized", 0)))
        self.log(step, "train", values)
        trainer.bar.set_postfix(loss=f"{values['loss']:.4g}", c_t=f"{values['c_t']:.3f}")

    def end(self, trainer) -> None:
        self.plot()


def _step_of(line: str) -> float:
    """The step of a logged event; a line torn by a killed process counts as after any checkpoint."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


def read_metrics(path: Path) -> list[dict]:
    """The events of a train log; a line torn by a killed process (or not an event) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_bytes().decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("step"), (int, float)):
            events.append(event)
    return events


def _series(events: Iterable[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(e["step"], e[key]) for e in events if e.get("kind") == kind and isinstance(e.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(metrics_path: Path, out: Path, title: str = "") -> None:
    """Loss terms (log scale) and validation Recall@1 over steps, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read_metrics(metrics_path)
    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", *TERMS):
        steps, vals = _series(events, "train", key)
        vals = [v if v > 0 and math.isfinite(v) else float("nan") for v in vals]
        if steps:
            ax_loss.plot(steps, vals, label=key, lw=1.5 if key == "loss" else 1)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("loss terms")
    if ax_loss.get_legend_handles_labels()[0]:  # a run shorter than log_every has no loss points yet
        ax_loss.legend(fontsize=7, ncol=2)
    # shared codes near 100 % and exclusive ones near 0 %: one axis each, so both stay readable
    ax_excl = ax_rec.twinx()
    axes = [ax_rec, ax_rec, ax_excl, ax_excl]
    for ax, key, style in zip(axes, SHARED_RECALL + EXCLUSIVE_RECALL, ("-o", "-s", "--^", "--v")):
        steps, vals = _series(events, "valid", key)
        if steps:
            ax.plot(steps, [100 * v for v in vals], style, label=key, ms=3, color=None if ax is ax_rec else "grey")
    monitored = next((e["split"] for e in events if e.get("kind") == "monitor"), None)
    for key, style in zip(SHARED_RECALL, (":o", ":s")):  # data.monitor_split: seen, never selected on
        steps, vals = _series(events, "monitor", key)
        if steps:
            ax_rec.plot(steps, [100 * v for v in vals], style, label=f"{key} ({monitored})", ms=3, mfc="none")
    ax_rec.set_xlabel("step")
    ax_rec.set_ylabel("shared Recall@1 (%)")
    ax_excl.set_ylabel("exclusive Recall@1 (%, grey)")
    ax_excl.set_ylim(bottom=0)
    ax_rec.set_title("validation Recall@1" + (f" (dotted: {monitored}, not selected on)" if monitored else ""))
    handles = [h for ax in (ax_rec, ax_excl) for h in ax.get_legend_handles_labels()[0]]
    if handles:
        ax_rec.legend(handles=handles, fontsize=7, loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(out, "a PNG the engine writes") as tmp:  # renamed into place: never through a link
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
