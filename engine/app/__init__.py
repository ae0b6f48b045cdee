"""`iiae app MODEL`: an interactive page for a trained model (Gradio; `pip install 'iiae[app]'`): translate an
uploaded image (prior samples, or guided by a reference), draw exclusive-swap grids, retrieve from a gallery.
It listens on 127.0.0.1 only (no public link unless --share), reads only the uploads and the files named on the
command line, and takes requests one at a time. `--export-space DIR` writes the same page as a Hugging Face
Space folder (`iiae.hub.space`); `iiae push --space NAME` publishes one.

Modules: `session` (the model's side, no Gradio), `gallery` (what Retrieve searches, cached), `page` (the Gradio
Blocks).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Optional

from iiae.errors import UserError

DEFAULT_PORT = 7860
MAX_UPLOAD = "25mb"  # Gradio refuses larger uploads before any of them reaches the model


def require_gradio() -> None:
    from iiae.hub.space import INSTALL

    if importlib.util.find_spec("gradio") is None:
        raise UserError(f"the page needs Gradio, which is not installed: {INSTALL}")


def _gallery(model, run: str, sha256: str, *, data: Optional[str], split: str, folder: Optional[str],
             domain: Optional[str], limit: int, default_data: bool):
    """The Retrieve tab's gallery: a folder (--gallery), a dataset split (--data, or the recipe's data.root when it
    is a local prepared dataset), or None (with a notice saying how to add one)."""
    from iiae.app import gallery

    if folder is not None:
        if domain is None:
            raise UserError("--gallery-domain: required with --gallery (x or y: the domain of its images)")
        return gallery.from_folder(model, folder, domain, limit, sha256)
    if data is None and default_data:
        from iiae.models.loading import data_root

        try:
            data = data_root(run, None)
        except UserError:
            data = None
        if data is None or not (Path(data) / "dataset.json").is_file():
            why = "no recipe names its data" if data is None else f"{data} is not a prepared dataset here"
            print(f"notice: no gallery for Retrieve ({why}); pass --data DIR or --gallery DIR --gallery-domain x|y",
                  file=sys.stderr)
            return None
    if data is None:
        return None
    return gallery.from_split(model, data, split, limit, sha256)


def build_session(run: str, *, device=None, data: Optional[str] = None, split: str = "test",
                  gallery: Optional[str] = None, gallery_domain: Optional[str] = None, limit: Optional[int] = None,
                  default_data: bool = True):
    """The loaded model with its gallery (embedded now, or read from the cache)."""
    from iiae.app.gallery import DEFAULT_LIMIT
    from iiae.app.session import Session
    from iiae.device import resolve_device
    from iiae.inference.embed import weights_sha256
    from iiae.models import input_kind
    from iiae.models.loading import load_model, trained_on

    model = load_model(run, resolve_device(device))
    if input_kind(model.cfg) != "image":
        raise UserError(f"{run}: a feature model (arch {model.cfg.arch}); the page shows image models only")
    found = _gallery(model, str(run), weights_sha256(model), data=data, split=split, folder=gallery,
                     domain=gallery_domain, limit=limit or DEFAULT_LIMIT, default_data=default_data)
    return Session(model, str(run), (found.dataset if found is not None else None) or trained_on(str(run)), found)


def serve(run: str, *, host: Optional[str] = None, port: Optional[int] = None, share: bool = False,
          block: bool = True, **gallery):
    """Build the page for `run` and serve it (see `launch`); `gallery`: what `build_session` takes."""
    require_gradio()
    return launch(build_session(run, **gallery), host=host, port=port, share=share, block=block)


def launch(session, *, host: Optional[str] = None, port: Optional[int] = None, share: bool = False,
           block: bool = True):
    """Serve the page of `session` (host/port None: Gradio's GRADIO_SERVER_NAME / _PORT, else 127.0.0.1:7860;
    a Space sets them). block=False returns (page, url) with the server running in the background."""
    from iiae.app.page import CSS, build

    page = build(session)
    page.queue(max_size=32, default_concurrency_limit=1)
    _, url, _ = page.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD,
                            show_error=True, quiet=not block, prevent_thread_lock=not block, ssr_mode=False,
                            footer_links=[], css=CSS)
    return page, url


def export_space(run: str, folder: Path) -> Path:
    """Write `iiae.hub.space.space_files(run)` into `folder` (new, or empty: nothing there is replaced)."""
    from iiae.hub.space import space_files
    from iiae.inference.image_files import make_folder, model_folders, path_kind, refuse_overwrite
    from iiae.safe_files import atomic_write, safe_dir

    folder = folder.expanduser()
    kind = path_kind(folder, "--export-space")
    if kind not in ("missing", "folder") or (kind == "folder" and any(folder.iterdir())):
        raise UserError(f"--export-space {folder}: exists and is not an empty folder; expected a new folder "
                        "(nothing already there is replaced)")
    refuse_overwrite("--export-space", folder, folders=model_folders(run))
    files = space_files(run)  # everything read and checked before anything is written
    make_folder(folder, "--export-space")
    for name, data in files.items():
        path = folder / name
        if path.parent != folder and not path.parent.is_dir():
            safe_dir(path.parent, "a folder of the Space")
        atomic_write(path, data, "a file of the Space")
    return folder


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from iiae.models.loading import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--data", metavar="DIR", help="Retrieve searches this prepared dataset's --split (default: the "
                                                 "recipe's data.root, when it is a prepared dataset here)")
    p.add_argument("--split", default="test", help="with --data: the split to search (default test)")
    p.add_argument("--gallery", metavar="DIR", help="Retrieve searches the images in this folder instead")
    p.add_argument("--gallery-domain", choices=("x", "y"), help="with --gallery: the domain of its images")
    p.add_argument("--gallery-limit", default=None, help="at most this many gallery images per domain (default 2000)")
    p.add_argument("--export-space", metavar="DIR", help="write a Hugging Face Space folder for the model instead "
                                                         "of serving the page")


def run(args: argparse.Namespace) -> int:
    from iiae.inference.image_files import whole_number

    port = whole_number(args.port, "--port", high=65_535)
    limit = None if args.gallery_limit is None else whole_number(args.gallery_limit, "--gallery-limit")
    if args.gallery_domain is not None and args.gallery is None:
        raise UserError("--gallery-domain: applies to --gallery DIR")
    if args.gallery is not None and args.gallery_domain is None:
        raise UserError("--gallery-domain: required with --gallery (x or y: the domain of its images)")
    if args.gallery is not None and args.data is not None:
        raise UserError("--data and --gallery: pick one gallery (a prepared dataset, or a folder of images)")
    if args.export_space is not None:
        folder = export_space(args.run, Path(args.export_space))
        print(f"wrote the Space into {folder}/ (app.py, requirements.txt, README.md); try it with "
              f"`cd {folder} && python app.py`, publish it with `iiae push {args.run} --repo-id USER/MODEL "
              "--space USER/SPACE`")
        return 0
    require_gradio()
    serve(args.run, host=args.host, port=port, share=args.share, device=args.device, data=args.data,
          split=args.split, gallery=args.gallery, gallery_domain=args.gallery_domain, limit=limit)
    return 0
