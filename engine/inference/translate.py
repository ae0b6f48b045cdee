"""`iiae translate RUN --data DIR --out grid.png` (the translation and exclusive-swap grids of `iiae.grids` on a
dataset split) and translations of image files: `iiae translate RUN --input IMG_OR_DIR --to y --out DIR`.

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
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import torch
from einops import rearrange
from PIL import Image

from iiae.errors import UserError
from iiae.data.image_io import to_uint8
from iiae.grids import SAMPLES, model_device, swap_grid, tile_grid, translation_grid, vstack
from iiae.safe_files import atomic_path, safe_dir

MAX_N = 64  # --n: translations per file or grid rows; more is no longer a readable strip or grid (a swap grid is n²)


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
    from iiae.inference.image_files import path_kind, plain_output, refuse_overwrite

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

    from iiae.inference.image_files import make_folder, notice, one_file
    from iiae.data.image_io import load_images
    from iiae.models import eval_mode
    from iiae.models.iiae import OTHER
    from iiae.progress import progress_bar

    device, size = model_device(model), model.cfg.image_size
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
                outs = model.translate(v, to_domain, exclusive=guide.expand(len(v), *guide.shape[1:]))[None]
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
    from iiae.models.loading import add_model_arguments

    add_model_arguments(p)
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


def _run_files(args: argparse.Namespace, n: Optional[int], seed: int) -> int:
    from iiae.inference.image_files import find_inputs, model_folders, stop_on_sigterm
    from iiae.device import resolve_device
    from iiae.models.loading import load_model

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
    from iiae.data import iter_eval_batches, load_dataset_info
    from iiae.inference.image_files import (
        make_folder, model_folders, one_file, refuse_overwrite, stop_on_sigterm, whole_number,
    )
    from iiae.device import resolve_device
    from iiae.models.loading import data_root, load_model, resolve_run

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
