"""Translation and exclusive-swap grids (einops + PIL), `iiae translate RUN --data DIR --out grid.png`, and
translations of image files: `iiae translate RUN --input IMG_OR_DIR --to y --out DIR`.

Translation grid, per direction (X->Y block, then Y->X): each row is the input, three translations with the
exclusive code drawn from N(0, I), the guided translation (the exclusive code of the true partner), and the
target. Swap grid, per domain: cell (i, j) decodes the shared code of image i with the exclusive code of image j.
Tiles narrower than 64 px are enlarged (nearest) so the column labels fit and 32-px images stay readable.

Output names of `--input`: a `.png` input keeps its relative path (`A/0001.png` → `<out>/A/0001.png`); any other
input gets `.png` appended to its whole name (`a.jpg` → `a.jpg.png`), so `a.jpg` and `a.png` never meet. A name
still taken (by the contact sheet, by a folder of the output, or by another input whose names differ only in case:
`A.png`, `a.png`) gets the first free `~2`, `~3`, ... before `.png` (`a~2.png`), `.png` inputs first, each group in
input order. The contact sheet is always `<out>/contact_sheet.png` unless an input folder has that name.
An output is refused before any model work when it would replace an input file or lie in an input folder (for a
folder --input) or a model folder, links and `..` included, when --out is an existing file, or when a link
is in the way inside --out. Every file is written to a temporary name and renamed (`iiae.safe_files`), and
SIGTERM stops cleanly (exit 143): what is there is complete.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import torch
from einops import rearrange, repeat
from PIL import Image, ImageDraw, ImageFont

from .errors import UserError
from .image_files import to_uint8
from .safe_files import atomic_path, safe_dir

MIN_TILE = 64  # px: tiles are upscaled by an integer factor to at least this
PAD = 2  # px of white between tiles and around the grid
HEADER = 14  # px: the band of column labels
TITLE = 16  # px: the band holding a block's title
SAMPLES = 3
MAX_N = 64  # --n: translations per file or grid rows; more is no longer a readable strip or grid (a swap grid is n²)
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


def _model_device(model) -> torch.device:
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
    from .models import eval_mode

    if x.dim() != 4:
        raise ValueError(f"translation grids need images [B, C, H, W], got shape {tuple(x.shape)}")
    device = _model_device(model)
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
    cells = model.decode(repeat(z_s, "i ... -> (i j) ...", j=n), repeat(z_d, "j d -> (i j) d", i=n), domain)
    cells = rearrange(cells, "(i j) c h w -> i j c h w", i=n)
    corner = torch.full_like(v[:1], float("nan"))
    top = torch.cat([corner, v])[None]  # [1, n+1, ...]
    body = torch.cat([v[:, None], cells], dim=1)  # [n, n+1, ...]
    return torch.cat([top, body])


def swap_grid(model, v: torch.Tensor, domain: str, n: Optional[int] = None) -> Image.Image:
    """The exclusive-swap grid of the first `n` images (default all) of one domain; eval mode, mode restored."""
    from .models import eval_mode

    v = v[:n].to(_model_device(model))
    with eval_mode(model):
        tiles = swap_tiles(model, v, domain)
    headers = ["shared"] + [f"excl. {j + 1}" for j in range(v.shape[0])]
    return tile_grid(tiles, headers, f"{domain}: shared code of the row, exclusive code of the column")


# ---- image files -------------------------------------------------------------------------------------------
FILE_BATCH = 64  # inputs per forward pass when translating files
FILE_IMAGES = FILE_BATCH * SAMPLES  # translations per forward pass: fewer inputs at once when --n is large
SHEET_ROWS = 32  # inputs shown in the contact sheet (every input gets its own file)
SHEET = "contact_sheet"


def strip(images: torch.Tensor) -> Image.Image:
    """[K, C, H, W] in [−1, 1] → one PIL image of the K side by side, at the model's resolution (no margins)."""
    return Image.fromarray(rearrange(to_uint8(images), "k c h w -> h (k w) c").numpy())


def output_names(names: Sequence[str]) -> tuple[list[str], str]:
    """(the output name of each input name (relative, POSIX), the contact sheet's name): see the module doc."""
    wanted = [name if name.endswith(".png") else name + ".png" for name in names]
    # a file may not take a folder's name (compared case-folded: outputs may go to a case-insensitive disk)
    folders = {str(parent).casefold() for name in wanted for parent in PurePosixPath(name).parents}
    taken: set[str] = set()

    def claim(name: str) -> str:
        base, k = name[:-len(".png")], 1
        while name.casefold() in taken or name.casefold() in folders:
            k += 1
            name = f"{base}~{k}.png"
        taken.add(name.casefold())
        return name

    sheet = claim(f"{SHEET}.png")
    out: list[str] = [""] * len(names)
    for i in sorted(range(len(names)), key=lambda i: not names[i].endswith(".png")):  # stable: input order
        out[i] = claim(wanted[i])
    return out, sheet


def output_paths(files: Sequence[Path], root: Path, out: Path) -> tuple[list[Path], Path]:
    """(per input file, the contact sheet): where `translate_files` writes them."""
    names, sheet = output_names([f.relative_to(root).as_posix() for f in files])
    return [out / name for name in names], out / sheet


def check_outputs(out: Path, targets: Sequence[Path], inputs: Sequence[Path],
                  folders: Sequence[tuple[str, Path]]) -> None:
    """Before anything is written: one line when --out is an existing file, or when any output would replace an
    input, land in one of `folders`, or be written through a link or onto a folder (`out` itself may be a link
    the user named; below it nothing is followed)."""
    from .image_files import path_kind, plain_output, refuse_overwrite

    if path_kind(out, "--out") not in ("missing", "folder"):
        raise UserError(f"--out {out}: is an existing file; expected a folder (new or existing) for the translations")
    top = refuse_overwrite("--out", out, files=inputs, folders=folders)
    resolved = {Path(f).resolve() for f in inputs}
    folders = [(what, Path(f).expanduser().resolve()) for what, f in folders]
    for target in targets:
        name = target.relative_to(out)
        refuse_overwrite("--out", target, files=resolved, folders=folders, given=out)
        if target.resolve() != top / name:
            raise UserError(f"--out {out}: would write {target} through a link (to {target.resolve()}); expected "
                            "plain folders and files inside --out: remove the link")
        for parent in list(target.parents)[:len(name.parts) - 1]:
            if path_kind(parent, "--out") not in ("missing", "folder"):
                raise UserError(f"--out {out}: {parent} is a file where the folder of {target.name} goes; expected "
                                "a folder or nothing there")
        plain_output(target, "--out", "a PNG file (or nothing) where a translation goes")


@torch.no_grad()
def translate_files(model, files: list[Path], root: Path, to_domain: str, out: Path, *, n: int = 3,
                    exclusive_from: Optional[Path] = None, seed: int = 0, progress: bool = True) -> list[Path]:
    """Translate image files (of the other domain) into `to_domain`: per input, one PNG in `out` (named as the
    module doc says: `out/<relative path>` for a `.png`) holding the n translations side by side (exclusive codes
    from N(0, I), seeded), or the one guided translation with the exclusive code of `exclusive_from` (an image of
    `to_domain`); then `out/contact_sheet.png` (the first SHEET_ROWS inputs beside their translations, labelled).
    Every file is renamed into place once complete. Sizes and modes are converted as training data was, with a
    notice on stderr. Returns the files written, the contact sheet last."""
    from collections import Counter

    from .image_files import load_images, make_folder, notice, one_file
    from .models import eval_mode
    from .models.iiae import OTHER
    from .progress import progress_bar

    device, size = _model_device(model), model.cfg.image_size
    targets, sheet_path = output_paths(files, root, out)
    changed: Counter = Counter()
    guide = style = None
    if exclusive_from is not None:
        style = load_images([exclusive_from], size, changed)
        guide = model.encode_exclusive(style.to(device), to_domain)
    gen = torch.Generator().manual_seed(seed)
    batch = max(1, min(FILE_BATCH, FILE_IMAGES // (1 if guide is not None else n)))
    written, sheet_rows = [], []
    make_folder(out, "--out")  # --out itself is the user's: its parents may be links
    made = {out}

    def folder_of(target: Path) -> None:  # below --out, one level at a time, never through a link
        for depth in range(1, len(target.relative_to(out).parts)):
            folder = out.joinpath(*target.relative_to(out).parts[:depth])
            if folder not in made:
                safe_dir(folder, "a folder of the translations")
                made.add(folder)

    with eval_mode(model), progress_bar(total=len(files), unit="image", desc="translating",
                                        disable=not progress) as bar:
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            v = load_images(chunk, size, changed).to(device)
            if guide is not None:
                outs = model.translate(v, to_domain, exclusive=guide.expand(len(v), -1))[None]
            else:
                outs = model.translate(v, to_domain, n=n, generator=gen)  # [n, B, ...]
            for i, target in enumerate(targets[start:start + batch]):
                folder_of(target)
                with one_file(), atomic_path(target, "a PNG file") as tmp:
                    strip(outs[:, i]).save(tmp, format="PNG")
                written.append(target)
            if start < SHEET_ROWS:
                rows = torch.cat([v[:, None], rearrange(outs, "k b ... -> b k ...")], dim=1)
                sheet_rows.append(rows[:SHEET_ROWS - start].cpu())
            bar.update(len(chunk))
    notice(changed, len(files) + (exclusive_from is not None), size)
    rows = torch.cat(sheet_rows)
    if guide is not None:
        source = style.expand(len(rows), -1, -1, -1)
        rows = torch.cat([rows[:, :1], source[:, None], rows[:, 1:]], dim=1)
        headers = ["input", "excl. from", "guided"]
    else:
        headers = ["input"] + [f"sample {k + 1}" for k in range(n)]
    shown = f"the first {len(rows)} of {len(files)}" if len(rows) < len(files) else f"{len(files)}"
    sheet = tile_grid(rows, headers, f"{OTHER[to_domain]} -> {to_domain}: {shown} file(s) from {root.name}/")
    with one_file(), atomic_path(sheet_path, "a PNG file") as tmp:
        sheet.save(tmp, format="PNG")
    return written + [sheet_path]


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR_OR_HUB_ID", help="run dir (uses <run>/best), model folder, or Hub repo id")
    p.add_argument("--input", metavar="IMG_OR_DIR",
                   help="translate these image files (of the other domain than --to) instead of drawing grids")
    p.add_argument("--to", choices=("x", "y"), help="with --input: the domain to translate into")
    p.add_argument("--exclusive-from", metavar="IMG",
                   help="with --input: take the exclusive code (style) from this image of the --to domain")
    p.add_argument("--data", help="grids: prepared dataset folder (default: the recipe's data.root)")
    p.add_argument("--out", help="grids: PNG to write (default: <run>/samples/translation.png for a run dir; the "
                                 "swap grid goes next to it as <stem>_swap.png); --input: the output folder")
    # counts are checked in run() (whole_number): one line, where argparse's type=int prints its usage
    p.add_argument("--n", default=None,
                   help=f"grids: rows (pairs) per grid (default 6); --input: translations per file (default 3); "
                        f"at most {MAX_N}")
    p.add_argument("--split", default="test", help="grids: the dataset split to draw from")
    p.add_argument("--seed", default=0, help="seed of the N(0, I) exclusive codes")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")


def _run_files(args: argparse.Namespace, n: Optional[int], seed: int) -> int:
    from .image_files import find_inputs, model_folders, stop_on_sigterm
    from .device import resolve_device
    from .run_dir import load_model

    if args.to is None:
        raise UserError("--to: required with --input (x or y: the domain to translate into)")
    if args.out is None:
        raise UserError("--out: required with --input (the folder for the translated images)")
    if args.exclusive_from is not None and n is not None:
        raise UserError("--n and --exclusive-from: pick one (N(0, I) samples, or the style of one image)")
    device = resolve_device(args.device)
    root, files = find_inputs(args.input)
    style = None
    if args.exclusive_from is not None:
        style = find_inputs(args.exclusive_from, option="--exclusive-from")[1][0]
    out = Path(args.out).expanduser()
    # a folder --input is read whole next time: nothing may be written into it (a single file's folder may be)
    folders = [("the --input folder", root)] if Path(args.input).expanduser().is_dir() else []
    targets, sheet = output_paths(files, root, out)
    check_outputs(out, targets + [sheet], files + ([style] if style else []), folders + model_folders(args.run))
    model = load_model(args.run, device)
    if len(model.input_shape) != 3:
        raise UserError(f"{args.run}: a feature model (arch {model.cfg.arch}) translates vectors, not image files")
    with stop_on_sigterm("the translations written so far are complete"):
        written = translate_files(model, files, root, args.to, out, n=n or SAMPLES, exclusive_from=style, seed=seed)
    print(f"wrote {len(written) - 1} translation(s) into {out}/ and {written[-1]}")
    return 0


def run(args: argparse.Namespace) -> int:
    from .data import iter_eval_batches, load_dataset_info
    from .image_files import (
        make_folder, model_folders, one_file, refuse_overwrite, stop_on_sigterm, whole_number,
    )
    from .device import resolve_device
    from .run_dir import data_root, load_model, resolve_run

    # counts first, before any model work: a huge --n would allocate n translations per input (n² for a swap grid)
    n = None if args.n is None else whole_number(args.n, "--n", high=MAX_N)
    seed = whole_number(args.seed, "--seed", low=-2 ** 63, high=2 ** 64 - 1)  # what torch.manual_seed takes
    if args.input is None and (args.to or args.exclusive_from):
        raise UserError("--to and --exclusive-from apply to --input IMG_OR_DIR")
    weights, run_dir = resolve_run(args.run)
    if args.input is not None:
        return _run_files(args, n, seed)
    n = n or 6
    if args.out is None and run_dir is None:
        raise UserError("--out is required when RUN is a Hub repo id")
    out = Path(args.out).expanduser() if args.out else run_dir.samples / "translation.png"
    if out.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"--out {out}: expected an image file name such as translation.png")
    swap = out.with_name(f"{out.stem}_swap{out.suffix}")
    device = resolve_device(args.device)
    root = data_root(args.run, args.data)
    # a model folder is its own run folder, and the default goes into its samples/: there only the model's own
    # files are protected; a run's best/ (and checkpoints/) are protected whole
    folders = model_folders(args.run)
    model_files = []
    if weights is not None and run_dir is not None and Path(weights) == Path(run_dir.root):
        folders = [(what, f) for what, f in folders if what != "the model folder"]
        model_files = [p for p in Path(weights).iterdir() if p.is_file()]
    for path in (out, swap):
        refuse_overwrite("--out", path, files=model_files, folders=folders + [("the dataset", Path(root))])
    model = load_model(args.run, device)
    info = load_dataset_info(root)
    if info.kind != "image":
        raise UserError(f"dataset {info.name} holds {info.kind}s, not images: translation grids apply to image datasets")
    batch = next(iter(iter_eval_batches(info, args.split, n, image_size=model.cfg.image_size, limit=n)), None)
    if batch is None:
        raise UserError(f"{info.name}/{args.split} is empty")
    gen = torch.Generator().manual_seed(seed)
    make_folder(out.parent, "--out")
    with stop_on_sigterm("the grids written so far are complete"):
        grid = translation_grid(model, batch["x"], batch["y"], n, gen)
        with one_file(), atomic_path(out, "an image file") as tmp:
            grid.save(tmp)
        grid = vstack([swap_grid(model, batch["x"], "x"), swap_grid(model, batch["y"], "y")])
        with one_file(), atomic_path(swap, "an image file") as tmp:
            grid.save(tmp)
    print(f"wrote {out}\nwrote {swap}")
    return 0
