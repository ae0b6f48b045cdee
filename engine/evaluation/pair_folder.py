"""`iiae eval RUN --pairs DIR`: the paper's retrieval among the pairs of a folder of side-by-side image files (left
X, right Y; e.g. the published MNIST-CDCB samples), without preparing a dataset: each half is resized to the model's
size as `iiae.data.image_io.load_images` does for users' files, and the shared-code means are scored exactly as a
prepared split is (`retrieval_metrics.paired_scores`)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

from iiae.errors import UserError, shown


def pair_files(folder: Path) -> list[Path]:
    """The image files of `folder` (any depth), numbered names in numeric order (1, 2, ..., 10), else by name."""
    from iiae.data.prepare.images import image_files, source_order

    if not folder.is_dir():
        raise UserError(f"--pairs {shown(folder)}: not a folder")
    files = image_files(folder)
    if len(files) < 2:
        raise UserError(f"--pairs {shown(folder)}: {len(files)} image file(s); retrieval needs at least 2 pairs")
    return source_order(files) if all(f.parent == folder for f in files) else files


def _batches(files: list[Path], size: int, batch_size: int, changed: Counter) -> Iterator[dict]:
    from PIL import Image

    from iiae.data.image_io import load_images
    from iiae.data.prepare.paired import split_halves

    for start in range(0, len(files), batch_size):
        halves = []
        for f in files[start:start + batch_size]:
            try:
                with Image.open(f) as image:
                    image.load()
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise UserError(f"{f}: unreadable image ({err})") from None
            if image.width < 2:
                raise UserError(f"{f}: {image.width} px wide, too narrow to split into X (left) and Y (right)")
            halves.append(split_halves(image, "left"))
        yield {"x": load_images([x for x, _ in halves], size, changed),
               "y": load_images([y for _, y in halves], size, changed)}


def pair_metrics(model, folder: Path, *, batch_size: int = 256, limit: Optional[int] = None, device=None,
                 progress: bool = True) -> dict:
    """`paired_scores` among the first `limit` pairs of `folder` (default all), and n, the pairs read; for an image
    model."""
    from iiae.evaluation.codes import encode_batches
    from iiae.evaluation.retrieval_metrics import paired_scores

    size = model.cfg.image_size
    files = pair_files(folder)[:limit]
    changed: Counter = Counter()
    specs = [("x", "shared"), ("y", "shared"), ("x", "exclusive"), ("y", "exclusive")]
    codes, labels, _ = encode_batches(model, _batches(files, size, batch_size, changed), specs, device, progress,
                                      len(files), unit="pair")
    return {**paired_scores(*codes), "n": len(labels), "resized_halves": sum(
        v for k, v in changed.items() if k.startswith("resized"))}
