"""The one embedding loop: flattened posterior means of every batch, in order, for any set of (domain, which)
codes at once — what evaluation (dataset splits) and `iiae embed` / `iiae retrieve` (users' files) both run."""
from __future__ import annotations

from typing import Iterable

import torch

from iiae.errors import UserError
from iiae.models.iiae import eval_mode
from iiae.progress import progress_bar


def _device(model: torch.nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def encode_batches(model, batches: Iterable[dict], specs: list[tuple[str, str]], device=None, progress=True,
                   total=None, desc: str = "embedding", unit: str = "sample"):
    """One pass over `batches` computing every (domain, which) embedding of `specs` (which: "shared" = r means,
    "exclusive" = q means), on `device` (default the model's); also returns the labels (-1 where a batch has
    none) and how many images had another size or mode than the dataset's (converted on the way)."""
    device = _device(model, device)
    outs: list[list[torch.Tensor]] = [[] for _ in specs]
    labels: list[torch.Tensor] = []
    resized = 0
    encoders = {"shared": model.encode_shared, "exclusive": model.encode_exclusive}
    unknown = {w for _, w in specs} - encoders.keys()
    if unknown:
        raise ValueError(f"which must be 'shared' or 'exclusive', got {unknown.pop()!r}")
    bar = progress_bar(total=total, unit=unit, desc=desc, disable=not progress, leave=False)
    with eval_mode(model), bar:
        for batch in batches:
            for out, (domain, which) in zip(outs, specs):
                # paired batches hold both domains; per-domain (Sketchy) batches hold one, as "v"
                v = batch[domain] if domain in batch else batch["v"]
                out.append(encoders[which](v.to(device), domain).flatten(1).float())
            n = outs[0][-1].shape[0]
            labels.append(batch["cls"] if "cls" in batch else torch.full((n,), -1))  # unlabelled batches: -1
            resized = batch.get("resized", 0)  # a running count: the last batch holds the total
            bar.update(n)
    if not labels:
        raise UserError("the evaluation split is empty")
    return [torch.cat(o) for o in outs], torch.cat(labels), resized
