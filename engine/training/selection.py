"""Validation and model selection as in the paper: keep the weights with the best validation shared Recall@1
(X→Y + Y→X) among those whose exclusive codes retrieve at most `exclusive_max_hits` pairs (the official code:
at most 1 per direction) and at most the fraction `exclusive_limit`, from step `select_after` on."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from iiae.evaluation.retrieval_metrics import EXCLUSIVE_RECALL, SHARED_RECALL


@dataclass
class Selector:
    select_after: int
    exclusive_limit: Optional[float] = None
    exclusive_max_hits: Optional[int] = 1
    best_step: Optional[int] = None
    best_score: float = float("-inf")
    best_metrics: dict = field(default_factory=dict)

    @staticmethod
    def score(metrics: dict) -> float:
        return sum(metrics[key] for key in SHARED_RECALL)

    def eligible(self, step: int, metrics: dict) -> bool:
        exclusive = max(metrics[key] for key in EXCLUSIVE_RECALL)
        hits = round(exclusive * metrics["n"])  # the recall is hits / n exactly
        return (step >= self.select_after
                and (self.exclusive_max_hits is None or hits <= self.exclusive_max_hits)
                and (self.exclusive_limit is None or exclusive <= self.exclusive_limit))

    def update(self, step: int, metrics: dict) -> bool:
        """True when `metrics` at `step` is the new best (ties keep the earlier step)."""
        if not self.eligible(step, metrics) or self.score(metrics) <= self.best_score:
            return False
        self.best_step, self.best_score, self.best_metrics = step, self.score(metrics), dict(metrics)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Validation:
    """Trainer component: validation metrics every `train.eval_every` steps and on the last one (main process),
    model selection on them (`Selector`, in the checkpointed train state), and the selected model in `best/`."""

    def __init__(self, recipe, info, best: Path):
        self.recipe, self.info, self.best = recipe, info, Path(best)
        self.last: Optional[tuple[int, dict]] = None  # (step, metrics) of the newest validation

    def metrics(self, model, device, split: Optional[str] = None) -> dict:
        from iiae.evaluation.evaluate import evaluate

        limit = self.recipe.data.valid_limit if self.info.layout == "paired" else None
        return evaluate(model, self.info, split or self.recipe.data.valid_split, limit=limit, device=device)

    def due(self, step: int) -> bool:
        cfg = self.recipe.train
        return step % cfg.eval_every == 0 or step == cfg.max_steps

    def after_step(self, trainer, terms: dict, micro: list[dict]) -> None:
        step, cfg = trainer.state.step, self.recipe.train
        if not self.due(step):
            return
        if trainer.accelerator.is_main_process:
            metrics = {**self.metrics(trainer.eval_model, trainer.accelerator.device),
                       "train_seconds": trainer.state.train_seconds}
            trainer.logger.log(step, "valid", {**metrics, "split": self.recipe.data.valid_split})
            self.last = (step, metrics)
            if cfg.selection == "best" and SHARED_RECALL[0] in metrics and trainer.state.selector.update(step, metrics):
                save_best(trainer.eval_model, self.best, step, metrics, self.recipe)
            trainer.bar.write(f"step {step}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                          if isinstance(v, float)))
            monitor = self.recipe.data.monitor_split
            if monitor is not None:
                seen = self.metrics(trainer.eval_model, trainer.accelerator.device, monitor)
                trainer.logger.log(step, "monitor", {**seen, "split": monitor,
                                                     "train_seconds": trainer.state.train_seconds})
                trainer.bar.write(f"step {step} ({monitor}, not used for selection): " + "  ".join(
                    f"{k}={seen[k]:.4f}" for k in SHARED_RECALL if k in seen))
            trainer.logger.plot()
        trainer.accelerator.wait_for_everyone()

    def end(self, trainer) -> None:
        """Without a selected model (selection: last, or no validation point met the rule): the final weights."""
        cfg = self.recipe.train
        if trainer.accelerator.is_main_process and (cfg.selection == "last" or trainer.state.selector.best_step is None):
            meta = {"selection": "last", "train_seconds": trainer.state.train_seconds}
            if cfg.selection == "best":  # recorded, so tables and model cards can say these are not selected weights
                meta["reason"] = "no validation point met the selection rule"
                trainer.accelerator.print(f"warning: {meta['reason']}; saving the final weights")
            save_best(trainer.eval_model, self.best, trainer.state.step, meta, self.recipe)


def save_best(model, best: Path, step: int, metrics: dict, recipe) -> None:
    """The model in Hub format with `selection.json` and the resolved `recipe.yaml` beside it. Written into a
    fresh temporary folder, then moved into best/ file by file (atomic renames: nothing is written through a link;
    a link or a folder at one of the names is refused first), weights before selection.json: a crash at any
    moment leaves a best/ that loads."""
    import tempfile

    from iiae.config import save_recipe
    from iiae.run_dir import ModelFolder
    from iiae.safe_files import TEMP_PREFIX, refuse_link, safe_dir

    safe_dir(best, "the run's best/ folder")
    # a new name each time (mkdtemp: never an existing folder or link), so nothing is written outside the run
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=best))
    try:
        model.save_pretrained(tmp, model_card_kwargs={"recipe": recipe, "metrics": metrics})
        staged = ModelFolder(tmp)
        save_recipe(recipe, staged.recipe)
        staged.selection.write_text(json.dumps({"step": step, **metrics}, indent=2))
        last = staged.selection.name  # written last: its presence says the rest is complete
        names = sorted(p.name for p in tmp.iterdir() if p.name != last) + [last]
        for name in names:  # a folder (or other non-file) where a file goes: refused before any is replaced
            refuse_link(best / name, f"best/{name} (a regular file the engine writes)")
        for name in names:
            os.replace(tmp / name, best / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
