"""Colour fidelity on MNIST-CDCB, where the exclusive attribute has ground truth: each pair's `json` holds `bg`, the
background colour of X (a white digit on it), and `fg`, the colour of Y's digit (on black), on the 0-255 scale.

Each true image gives its own digit mask m ∈ [0, 1] from its colour, per pixel by least squares over the three
channels: X = (1 − m)·bg + 255·m, Y = m·fg (per domain: the `original` rendering gives X a thinner digit than Y,
so one mask for both would misread both). A decoded image's colour is read under the true image's mask, on its
confident pixels only, by least squares: Y's digit colour fg = Σ_w Ŷ / Σ_w m over the pixels with m > CONFIDENT,
X's background bg = Σ_w (X̂ − 255·m) / Σ_w (1 − m) over those with m < 1 − CONFIDENT (all pixels, weighted, when
none is). On a linear blend (`--render area`, `direct`) this gives back the stored colours up to the 8-bit
rounding; on the `original` rendering (grey edge pixels, bicubic overshoot) within a few levels
(`colour_read_error_{x,y}`: the floor of the two errors below).

    guided_colour_error_x2y   decode_y(r^x mean of x, q(z^y | y) mean of the true y): its digit colour vs fg
    guided_colour_error_y2x   decode_x(r^y mean of y, q(z^x | x) mean of the true x): its background vs bg
    prior_colour_spread_*     the standard deviation of that colour over PRIOR_DRAWS exclusive codes z ~ N(0, I)
                              per input (population std per channel, averaged), to compare with the spread of the
                              real colours, U{0..255}: REAL_SPREAD = 73.9. ~0: the decoder ignores its exclusive
                              code; ~REAL_SPREAD: the prior covers every colour
    prior_colour_spread_ratio_*  the spread / REAL_SPREAD

Errors are mean absolute differences per channel (0-255). Decoded images are read as saved: rounded to uint8.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from iiae.errors import UserError
from iiae.data.image_io import to_uint8
from iiae.progress import progress_bar

PRIOR_DRAWS = 8
REAL_SPREAD = math.sqrt((256 ** 2 - 1) / 12)  # std of a uniform draw from {0, ..., 255}
COLOURS = ("bg", "fg")  # the json keys: X's background, Y's digit colour


def has_colours(info) -> bool:
    return info.name == "mnist-cdcb" and info.kind == "image" and info.layout == "paired"


CONFIDENT = 0.7  # a pixel is read as digit above this mask value, as background below 1 − it


def digit_masks(x: torch.Tensor, y: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"x": m_x, "y": m_y}, each [B, H, W] in [0, 1]: the least-squares digit mask of the true X (from bg) and of
    the true Y (from fg), all on the 0-255 scale; 0 where a colour leaves it undefined (bg white, fg black)."""
    a_x, a_y = (255.0 - bg)[..., None, None], fg[..., None, None]  # each equation's slope per channel
    m_x = ((x - bg[..., None, None]) * a_x).sum(1) / a_x.square().sum(1).clamp_min(1e-6)
    m_y = (y * a_y).sum(1) / a_y.square().sum(1).clamp_min(1e-6)
    return {"x": m_x.clamp(0.0, 1.0), "y": m_y.clamp(0.0, 1.0)}


def _confident(weights: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] weights: the confident pixels of each image, or `m` itself where an image has none."""
    none = weights.flatten(1).sum(1) == 0
    return torch.where(none[:, None, None], m, weights)[:, None]


def foreground_colour(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B, 3] colour c that best explains y ≈ m·c on the digit's confident pixels (a digit of colour c on black)."""
    w = _confident((m > CONFIDENT).float(), m)
    return (w * y).flatten(2).sum(2) / (w * m[:, None]).flatten(2).sum(2).clamp_min(1e-6)


def background_colour(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B, 3] colour c that best explains x ≈ (1 − m)·c + 255·m on the background's confident pixels (a white digit
    on colour c)."""
    w = _confident((m < 1.0 - CONFIDENT).float(), 1.0 - m)
    return (w * (x - 255.0 * m[:, None])).flatten(2).sum(2) / (w * (1.0 - m[:, None])).flatten(2).sum(2).clamp_min(1e-6)


def read_colour(image: torch.Tensor, m: torch.Tensor, domain: str) -> torch.Tensor:
    """The exclusive colour of an X (background) or Y (digit) image on the 0-255 scale."""
    return background_colour(image, m) if domain == "x" else foreground_colour(image, m)


def _scale(v: torch.Tensor) -> torch.Tensor:
    """Model-space images in [−1, 1] → float 0-255, rounded as a saved PNG would be."""
    return to_uint8(v).float()


@torch.no_grad()
def colour_metrics(model, info, split: str, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                   seed: int = 0, progress: bool = True) -> dict:
    """The keys of the module docstring, averaged over the pairs of `split` (the first `limit`)."""
    from iiae.data import iter_eval_batches
    from iiae.models.iiae import eval_mode

    if not has_colours(info):
        raise UserError(f"dataset {info.name}: colour fidelity needs MNIST-CDCB pairs with their colours "
                        "(`iiae prepare mnist-cdcb`)")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(["read_x", "read_y", "guided_x2y", "guided_y2x", "spread_x2y", "spread_y2x"], 0.0)
    n = 0
    total = info.split(split).count if limit is None else min(limit, info.split(split).count)
    bar = progress_bar(total=total, unit="pair", desc="colour fidelity", disable=not progress, leave=False)
    batches = iter_eval_batches(info, split, batch_size, image_size=model.cfg.image_size, limit=limit, meta=True)
    with eval_mode(model), bar:
        for b in batches:
            if any(not all(k in meta for k in COLOURS) for meta in b["meta"]):
                raise UserError(f"{info.root}: split {split} has pairs without their colours (json bg, fg): "
                                f"re-create it with `{info.fix_command()}`")
            v = {d: b[d].to(device) for d in ("x", "y")}
            # colours are read on the CPU, where to_uint8 puts the images
            true = {"x": torch.tensor([meta["bg"] for meta in b["meta"]], dtype=torch.float32),
                    "y": torch.tensor([meta["fg"] for meta in b["meta"]], dtype=torch.float32)}
            real = {d: _scale(v[d]) for d in ("x", "y")}
            m = digit_masks(real["x"], real["y"], true["x"], true["y"])
            for d in ("x", "y"):
                sums[f"read_{d}"] += (read_colour(real[d], m[d], d) - true[d]).abs().mean(1).sum().item()
            for src, dst in (("x", "y"), ("y", "x")):
                guided = model.translate(v[src], dst, exclusive=model.encode_exclusive(v[dst], dst))
                sums[f"guided_{src}2{dst}"] += (read_colour(_scale(guided), m[dst], dst) - true[dst]).abs().mean(1).sum().item()
                drawn = model.translate(v[src], dst, n=PRIOR_DRAWS, generator=gen)  # [K, B, 3, H, W]
                colours = torch.stack([read_colour(_scale(img), m[dst], dst) for img in drawn])  # [K, B, 3]
                sums[f"spread_{src}2{dst}"] += colours.std(0, correction=0).mean(1).sum().item()
            n += len(b["key"])
            bar.update(len(b["key"]))
    out = {f"colour_read_error_{d}": sums[f"read_{d}"] / n for d in ("x", "y")}
    for direction in ("x2y", "y2x"):
        out[f"guided_colour_error_{direction}"] = sums[f"guided_{direction}"] / n
        out[f"prior_colour_spread_{direction}"] = sums[f"spread_{direction}"] / n
        out[f"prior_colour_spread_ratio_{direction}"] = out[f"prior_colour_spread_{direction}"] / REAL_SPREAD
    return out
