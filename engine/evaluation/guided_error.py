"""Guided translation against the true partner, for any paired image dataset.

X→Y guided: decode_y(r^x mean of x, z^y mean of the true y), compared with y; Y→X likewise. Beside it, the
joint reconstruction decode_y(q(z^s | x, y) mean, z^y mean of y) (the same decoder given everything: an upper
bound) and the copy baseline (x itself as the guess for y). Mean absolute error on the 0-255 scale and mean
per-image PSNR (dB, peak 255); images are compared after rounding to uint8, as they would be saved.
"""
from __future__ import annotations

from typing import Optional

import torch

from iiae.models.iiae import eval_mode
from iiae.progress import progress_bar
from iiae.data.image_io import to_uint8

DIRECTIONS = {"x2y": ("x", "y"), "y2x": ("y", "x")}


def l1_psnr_sums(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    """(sum of per-image mean absolute errors, sum of per-image PSNRs) of uint8 image batches."""
    diff = pred.flatten(1).float() - true.flatten(1).float()
    mse = diff.pow(2).mean(1).clamp_min(1e-10)
    return diff.abs().mean(1).sum().item(), (10 * torch.log10(255.0 ** 2 / mse)).sum().item()


def l1_psnr(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    """Mean absolute error (0-255) and mean per-image PSNR (dB) of uint8 image batches."""
    l1, psnr = l1_psnr_sums(pred, true)
    return l1 / len(pred), psnr / len(pred)


@torch.no_grad()
def translation_error(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                      progress: bool = True) -> dict:
    """Keys `guided_{l1,psnr}_{x2y,y2x}`, `reconstruction_{l1,psnr}_{x,y}` and `copy_{l1,psnr}_{x2y,y2x}`."""
    from iiae.data import iter_eval_batches

    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums: dict[str, list[float]] = {}
    n = 0

    def add(name: str, pred: torch.Tensor, true: torch.Tensor) -> None:
        l1, psnr = l1_psnr_sums(to_uint8(pred), to_uint8(true))
        total = sums.setdefault(name, [0.0, 0.0])
        total[0], total[1] = total[0] + l1, total[1] + psnr

    total = info.split(split).count if limit is None else min(limit, info.split(split).count)
    batches = iter_eval_batches(info, split, batch_size, image_size=model.cfg.image_size, limit=limit)
    bar = progress_bar(total=total, unit="pair", desc="translation error", disable=not progress, leave=False)
    with eval_mode(model), bar:
        for b in batches:
            v = {d: b[d].to(device) for d in ("x", "y")}
            out = model(v["x"], v["y"])  # eval mode: every code is its posterior mean
            means = {name: mu for name, (mu, _) in out.posteriors.items()}
            for direction, (src, dst) in DIRECTIONS.items():
                # what translate(src, dst, exclusive=q mean of dst) decodes; the forward already encoded both
                add(f"guided_{{}}_{direction}", model.decode(means[f"r{src}"], means[dst], dst), v[dst])
                add(f"copy_{{}}_{direction}", v[src], v[dst])
            add("reconstruction_{}_x", out.x_hat, v["x"])
            add("reconstruction_{}_y", out.y_hat, v["y"])
            n += len(b["key"])
            bar.update(len(b["key"]))
    return {name.format(metric): value / n for name, (l1, psnr) in sums.items()
            for metric, value in (("l1", l1), ("psnr", psnr))}
