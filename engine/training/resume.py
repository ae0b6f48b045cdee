"""What a resumed run may change: the recipe on the command line against the one the run trained with.

Keys that change what the checkpoint means (the model, the objective, the data stream, the optimizer, the seed)
are refused before anything is written; the others (length, cadences, trackers, where the data is read from,
loader workers) are allowed and reported. A cosine schedule follows a changed `train.max_steps` from where the
run is (closed form at the current step): it is stretched, never restarted.
"""
from __future__ import annotations

import math
from typing import Any

from iiae.errors import UserError

# keys (or sections, ending in ".") a resumed run may change
ALLOWED = ("name", "train.", "data.root", "data.num_workers", "data.cache", "data.verify", "data.valid_limit",
           "data.monitor_split")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _allowed(key: str) -> bool:
    return any(key == a or (a.endswith(".") and key.startswith(a)) for a in ALLOWED)


def recipe_changes(old, new) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} of the allowed changes; UserError (one line, naming every refused key) otherwise."""
    before, after = _flat(old.to_dict()), _flat(new.to_dict())
    changed = {k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())
               if before.get(k) != after.get(k)}
    refused = [k for k in changed if not _allowed(k)]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise UserError(f"--resume: the recipe differs from the run's in {shown}{more}; these change what the "
                        "checkpoint means, so nothing was written: resume with the run's values, or start a new "
                        "run (train.output_dir=<new folder>, train.init_from=<this run> for its weights)")
    return changed


def cosine_lr(base: float, step: int, steps: int, min_ratio: float) -> float:
    """The cosine schedule's learning rate after `step` optimizer steps of `steps` (the closed form)."""
    eta_min = base * min_ratio
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * min(step, steps) / steps)) / 2


def stretch_schedule(scheduler, recipe) -> None:
    """After a checkpoint is loaded: a cosine schedule saved for another `train.max_steps` continues on the new
    length from the current step (torch's CosineAnnealingLR would keep its old T_max, or climb back to the peak
    if only T_max changed, as its update is recursive)."""
    import torch

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps it
    steps = recipe.train.max_steps
    if not isinstance(inner, torch.optim.lr_scheduler.CosineAnnealingLR) or inner.T_max == steps:
        return
    inner.T_max = steps
    lrs = [cosine_lr(base, inner.last_epoch, steps, recipe.optim.min_lr_ratio) for base in inner.base_lrs]
    for group, lr in zip(inner.optimizer.param_groups, lrs):
        group["lr"] = lr
    inner._last_lr = lrs
