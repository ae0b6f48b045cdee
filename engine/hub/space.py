"""A Hugging Face Space that serves the `iiae app` page (`iiae app --export-space DIR`, `iiae push --space`, which publishes these files):
`app.py` (three lines: `serve(MODEL)`),
`requirements.txt` (this release of the package with its app extra) and `README.md` (the Spaces front matter:
sdk gradio, its version, the model, the licence). The model is a Hub id the Space downloads at start, or, for a
local run or model folder, its files copied into `model/` (read as `iiae push` reads them: regular files only,
no links), so the Space holds everything it runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from iiae.errors import UserError
from iiae.version import installed_version

LOCAL_MODEL = "model"  # the Space's folder for a local model's files
INSTALL = "pip install 'iiae[app]'"


def gradio_version() -> str:
    """The installed Gradio's version (the Space's sdk_version); one line saying what to install without it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradio")
    except PackageNotFoundError:
        raise UserError(f"the page needs Gradio, which is not installed: {INSTALL}") from None


def _front_matter(title: str, model_id: Optional[str], gradio_version: str) -> str:
    meta = {"title": title[:30], "emoji": "🔀", "colorFrom": "indigo", "colorTo": "green", "sdk": "gradio",
            "sdk_version": gradio_version, "app_file": "app.py", "license": "apache-2.0", "pinned": False}
    if model_id is not None:
        meta["models"] = [model_id]
    # JSON scalars are valid YAML, and quote whatever a name holds
    return "---\n" + "".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in meta.items()) + "---\n"


def space_files(run: str, model_id: Optional[str] = None) -> dict[str, bytes]:
    """{path in the Space: bytes}. `model_id`: the Hub id the Space loads (default: `run` itself when it is a Hub
    id; a local run or model folder is copied into model/ instead)."""
    from iiae.models.loading import resolve_run, trained_on

    sdk_version = gradio_version()
    weights, run_dir = resolve_run(run)
    files: dict[str, bytes] = {}
    if model_id is None and weights is not None:
        from iiae.hub.published import model_files

        for name, data in model_files(Path(run)).items():
            files[f"{LOCAL_MODEL}/{name}"] = data
        source = LOCAL_MODEL
    else:
        source = model_id or str(run)
    dataset = trained_on(str(run)) if weights is not None else None
    title = f"IIAE {dataset or source.split('/')[-1]}"
    files["app.py"] = (
        f'"""{title}: the `iiae app` page (translate, swap grid, retrieve) as a Hugging Face Space."""\n'
        "from iiae.app import serve\n\n"
        f"serve({source!r}, default_data=False)\n").encode()
    files["requirements.txt"] = f"iiae[app]=={installed_version()}\n".encode()
    files["README.md"] = (
        _front_matter(title, model_id or (None if weights is not None else str(run)), sdk_version)
        + f"\n# {title}\n\nAn interactive page for the IIAE model `{source}`: upload an image of either domain "
          "to translate it (samples of the exclusive code from the prior, or guided by a reference image), or "
          "draw an exclusive-swap grid.\n\nRun it locally:\n\n```bash\n"
          f"pip install -r requirements.txt   # {INSTALL}\npython app.py\n```\n").encode()
    return files

