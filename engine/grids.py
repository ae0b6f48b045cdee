"""Pictures of a model at work (einops + PIL): translation and exclusive-swap grids, drawn by training (sample
grids), `iiae translate`, `iiae eval` (Cars3D views) and `iiae retrieve` (the top-k picture).

Translation grid, per direction (X->Y block, then Y->X): each row is the input, three translations with the
exclusive code drawn from N(0, I), the guided translation (the exclusive code of the true partner), and the
target. Swap grid, per domain: cell (i, j) decodes the shared code of image i with the exclusive code of image j.
Tiles narrower than 64 px are enlarged (nearest) so the column labels fit and 32-px images stay readable.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from einops import rearrange, repeat
from PIL import Image, ImageDraw, ImageFont

from iiae.data.image_io import to_uint8

MIN_TILE = 64  # px: tiles are upscaled by an integer factor to at least this
PAD = 2  # px of white between tiles and around the grid
HEADER = 14  # px: the band of column labels
TITLE = 16  # px: the band holding a block's title
SAMPLES = 3  # N(0, I) translations per row of a translation grid
TRANSLATION_HEADERS = ["input", "sample 1", "sample 2", "sample 3", "guided", "target"]


def tile_size(image_size: int) -> int:
    return image_size * math.ceil(MIN_TILE / image_size)


def grid_size(rows: int, cols: int, image_size: int, *, headers: bool = True, title: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of `tile_grid` output: what callers and tests can rely on."""
    t = tile_size(image_size)
    return cols * (t + PAD) + PAD, TITLE * title + HEADER * headers + rows * (t + PAD) + PAD


def tile_grid(tiles: torch.Tensor, headers: Optional[Sequence[str]] = None, title: Optional[str] = None) -> Image.Image:
    """Lay out tiles [R, K, C, H, W] (in [-1, 1]; NaN = blank) as an R x K grid with column labels and a title."""
    rows, cols, _, h, _ = tiles.shape  # square tiles
    if headers is not None and len(headers) != cols:
        raise ValueError(f"{len(headers)} headers for {cols} columns")
    blank = torch.isnan(tiles).flatten(2).all(2)
    img = to_uint8(tiles.nan_to_num(1.0))
    img[blank] = 255
    t = tile_size(h)
    img = repeat(img, "r k c h w -> r k c (h sh) (w sw)", sh=t // h, sw=t // h)
    img = torch.nn.functional.pad(img, (0, PAD, 0, PAD), value=255)  # white right/bottom margin per tile
    body = rearrange(img, "r k c h w -> (r h) (k w) c").numpy()
    width, height = grid_size(rows, cols, h, headers=headers is not None, title=title is not None)
    canvas = Image.new("RGB", (width, height), "white")
    top = TITLE * (title is not None) + HEADER * (headers is not None)
    canvas.paste(Image.fromarray(body), (PAD, top + PAD))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    if title is not None:
        draw.text((PAD + 2, 2), title, fill="black", font=font)
    for k, label in enumerate(headers or []):
        x = PAD + k * (t + PAD) + (t - draw.textlength(label, font=font)) / 2
        draw.text((max(x, PAD + k * (t + PAD)), TITLE * (title is not None) + 2), label, fill="black", font=font)
    return canvas


def vstack(images: Sequence[Image.Image]) -> Image.Image:
    """Images one under the other, left-aligned, on white."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for im in images:
        out.paste(im, (0, top))
        top += im.height
    return out


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def translation_tiles(model, src: torch.Tensor, dst: torch.Tensor, to_domain: str,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[B, 6, C, H, W]: input, three N(0, I) translations, the guided one (dst's exclusive code), the target."""
    samples = model.translate(src, to_domain, n=SAMPLES, generator=generator)
    guided = model.translate(src, to_domain, exclusive=model.encode_exclusive(dst, to_domain))
    return torch.stack([src, *samples, guided, dst], dim=1)


def translation_grid(model, x: torch.Tensor, y: torch.Tensor, n_rows: int = 4,
                     generator: Optional[torch.Generator] = None) -> Image.Image:
    """Both directions for the first `n_rows` pairs: an X→Y block over a Y→X block (see the module doc).

    Runs in eval mode without gradients and restores the model's mode; the inputs are not modified."""
    from iiae.models import eval_mode

    if x.dim() != 4:
        raise ValueError(f"translation grids need images [B, C, H, W], got shape {tuple(x.shape)}")
    device = model_device(model)
    x, y = x[:n_rows].to(device), y[:n_rows].to(device)
    with eval_mode(model):
        blocks = [
            tile_grid(translation_tiles(model, x, y, "y", generator), TRANSLATION_HEADERS, "X -> Y"),
            tile_grid(translation_tiles(model, y, x, "x", generator), TRANSLATION_HEADERS, "Y -> X"),
        ]
    return vstack(blocks)


@torch.no_grad()
def swap_tiles(model, v: torch.Tensor, domain: str) -> torch.Tensor:
    """[n+1, n+1, C, H, W]: row 0 the exclusive sources, column 0 the shared sources (corner blank), and cell
    (i, j) = decode(shared code of v[i-1], exclusive code of v[j-1])."""
    n = v.shape[0]
    z_s, z_d = model.encode_shared(v, domain), model.encode_exclusive(v, domain)
    cells = model.decode(repeat(z_s, "i ... -> (i j) ...", j=n), repeat(z_d, "j ... -> (i j) ...", i=n), domain)
    cells = rearrange(cells, "(i j) c h w -> i j c h w", i=n)
    corner = torch.full_like(v[:1], float("nan"))
    top = torch.cat([corner, v])[None]  # [1, n+1, ...]
    body = torch.cat([v[:, None], cells], dim=1)  # [n, n+1, ...]
    return torch.cat([top, body])


def swap_grid(model, v: torch.Tensor, domain: str, n: Optional[int] = None) -> Image.Image:
    """The exclusive-swap grid of the first `n` images (default all) of one domain; eval mode, mode restored."""
    from iiae.models import eval_mode

    v = v[:n].to(model_device(model))
    with eval_mode(model):
        tiles = swap_tiles(model, v, domain)
    headers = ["shared"] + [f"excl. {j + 1}" for j in range(v.shape[0])]
    return tile_grid(tiles, headers, f"{domain}: shared code of the row, exclusive code of the column")
