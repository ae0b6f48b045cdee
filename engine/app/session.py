"""What the page does with the model, without the page: read an upload safely, translate it (N(0, I) samples or
guided by a reference), draw a swap grid, retrieve from a gallery. One lock serialises the model, so two users'
requests never interleave on it (the page's queue already runs one at a time; the lock holds for any caller)."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from PIL import Image

from iiae.errors import UserError, shown
from iiae.models.iiae import OTHER

MAX_PIXELS = 40_000_000  # an upload larger than this (6× a 4K frame) is refused from its header, before decoding
MAX_SAMPLES = 8  # prior translations per request
MAX_SWAP = 8  # images per domain in a swap grid (the grid is n × n decodes)
MAX_K = 20  # matches shown per query


@dataclass(frozen=True)
class Domain:
    key: str  # "x" or "y"
    name: str  # what it holds, from the dataset catalogue ("satellite image"), else "domain X"

    @property
    def label(self) -> str:
        return f"{self.key.upper()}: {self.name}"


def read_upload(path: Optional[str], what: str) -> Image.Image:
    """An uploaded file as a loaded PIL image; one line naming `what` when it is missing, not an image, or larger
    than MAX_PIXELS (read from the header: a decompression bomb is never decoded)."""
    if not path:
        raise UserError(f"{what}: no image given; upload one")
    try:
        image = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{what}: not an image this page can read ({type(err).__name__})") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UserError(f"{what}: {width}×{height} px is more than the {MAX_PIXELS // 10**6} MP this page "
                            "accepts; shrink it first")
        try:
            image.load()
        except (OSError, ValueError) as err:
            raise UserError(f"{what}: a damaged image file ({shown(str(err), 80)})") from None
        return image.copy()  # palette and transparency kept: load_images converts them as it converts files


def conversion_note(changed: Counter, size: int) -> str:
    """What `load_images` did to the uploads, in one line ("" when nothing)."""
    if not changed:
        return ""
    done = ", ".join(f"{n} {what}" for what, n in sorted(changed.items()))
    return f"Converted as the training data was: {done}; the model reads {size}×{size} RGB."


class Session:
    """A loaded model with its domain names and (optionally) a retrieval gallery."""

    def __init__(self, model, source: str, dataset: Optional[str], gallery=None):
        from iiae.data.catalogue import dataset_of_folder, domain_names

        self.model, self.source, self.dataset, self.gallery = model.eval(), source, dataset, gallery
        names = domain_names(dataset_of_folder(dataset or "") or "")
        self.domains = {"x": Domain("x", names[0]), "y": Domain("y", names[1])}
        self.size = model.cfg.image_size
        self.lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _load(self, images: Sequence[Image.Image], changed: Counter) -> torch.Tensor:
        from iiae.data.image_io import load_images

        return load_images(images, self.size, changed).to(self.device)

    @torch.no_grad()
    def translate(self, upload: Optional[str], source: str, *, n: int = 3, seed: int = 0,
                  reference: Optional[str] = None) -> tuple[list[Image.Image], Optional[Image.Image], str]:
        """(n prior translations of the upload (domain `source`) into the other domain, the guided translation
        when a reference image of that domain is given, a note on what was converted)."""
        from iiae.data.image_io import to_pil

        target = OTHER[source]
        if not 1 <= n <= MAX_SAMPLES:
            raise UserError(f"samples: {n}; expected 1 to {MAX_SAMPLES}")
        image = read_upload(upload, f"the {self.domains[source].label} image")
        style = read_upload(reference, f"the {self.domains[target].label} reference") if reference else None
        changed: Counter = Counter()
        with self.lock:
            v = self._load([image], changed)
            samples = self.model.translate(v, target, n=n, generator=torch.Generator().manual_seed(seed))[:, 0]
            guided = None
            if style is not None:
                z = self.model.encode_exclusive(self._load([style], changed), target)
                guided = to_pil(self.model.translate(v, target, exclusive=z))[0]
        return to_pil(samples), guided, conversion_note(changed, self.size)

    @torch.no_grad()
    def swap(self, uploads: dict[str, Sequence[str]]) -> tuple[Image.Image, str]:
        """The exclusive-swap grid (`iiae.grids.swap_grid`) of each domain's uploads, one under the other."""
        from iiae.grids import swap_grid, vstack

        if not any(uploads.values()):
            raise UserError("swap grid: no images given; upload two or more images of a domain")
        blocks, changed = [], Counter()
        for key, files in uploads.items():
            if not files:
                continue
            if len(files) > MAX_SWAP:
                raise UserError(f"swap grid: {len(files)} {self.domains[key].label} images; at most {MAX_SWAP}")
            images = [read_upload(f, f"{self.domains[key].label} image {i + 1}") for i, f in enumerate(files)]
            with self.lock:
                blocks.append(swap_grid(self.model, self._load(images, changed), key))
        return vstack(blocks), conversion_note(changed, self.size)

    @torch.no_grad()
    def retrieve(self, upload: Optional[str], source: str, k: int = 5
                 ) -> tuple[list[tuple[Image.Image, str]], list[list], str]:
        """The k nearest gallery images of the other domain by squared Euclidean distance between shared-code
        means (the paper's Recall@1 distance): ((image, caption) best first, table rows, a note)."""
        from iiae.evaluation.retrieval_metrics import top_k

        target = OTHER[source]
        if self.gallery is None or target not in self.gallery.codes:
            have = "no gallery" if self.gallery is None else f"a gallery of {self.gallery.domains_text(self.domains)}"
            raise UserError(f"retrieve: this page has {have}; start it with --gallery DIR --gallery-domain "
                            f"{target} (or --data DIR, a prepared dataset) to search {self.domains[target].label} "
                            "images")
        if not 1 <= k <= MAX_K:
            raise UserError(f"k: {k}; expected 1 to {MAX_K}")
        image = read_upload(upload, f"the {self.domains[source].label} query")
        changed: Counter = Counter()
        with self.lock:
            code = self.model.encode_shared(self._load([image], changed), source).flatten(1).float().cpu()
        indices, distances = top_k(code, self.gallery.codes[target], k, "euclidean")
        hits = list(zip(indices[0].tolist(), distances[0].tolist()))
        names = self.gallery.names[target]
        matches = [(self.gallery.image(target, j), f"{r}. {names[j]} · {d:.2f}") for r, (j, d) in enumerate(hits, 1)]
        rows = [[r, names[j], round(d, 4)] for r, (j, d) in enumerate(hits, 1)]
        return matches, rows, conversion_note(changed, self.size)
