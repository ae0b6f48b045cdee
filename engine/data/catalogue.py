"""What the engine knows about datasets by name: the `iiae prepare` sources, and the paper's datasets they make.

One entry per dataset or source: `iiae prepare` builds its sub-commands from SOURCES; `load_dataset_info` asks
prepare_hint for the command that makes a folder without a (readable) dataset.json; model cards ask domain_names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional



@dataclass(frozen=True)
class Source:
    """`iiae prepare NAME ...`: iiae.data.prepare.<module> has add_arguments(parser) and convert(args)."""

    name: str
    help: str

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class Hint:
    """A folder whose name holds `word` (lower-cased) is made by `iiae prepare SOURCE options`; `sized`: a
    `_<image size>` ending of the name adds `--size <image size>`."""

    word: str
    options: str
    sized: bool = False


@dataclass(frozen=True)
class Dataset:
    name: str  # dataset.json `name`
    source: str  # the Source that makes it
    x: str  # what X holds (model cards)
    y: str
    hints: tuple[Hint, ...]


SOURCES = (
    Source("mnist-cdcb", "MNIST-CDCB: white digit on a coloured background <-> coloured digit on black"),
    Source("pix2pix", "pix2pix Facades or Maps: side-by-side JPEG pairs"),
    Source("cars", "3D Cars: car_XXX_mesh.mat renders, azimuth 0 <-> the other azimuths"),
    Source("sketchy", "Sketchy (SketchyVGG features): per-domain sketch and photo features"),
    Source("paired", "your own paired images: side-by-side pair files, or two folders of matching file names"),
    Source("hf", "any Hugging Face dataset with two paired image columns"),
)

# In the order the hints are tried: MNIST last, as "debug" and "mnist" are the vaguest words.
DATASETS = (
    Dataset("sketchy", "sketchy", "sketch (512-d VGG feature)", "photo (512-d VGG feature)",
            hints=(Hint("sketchy", "--src RAW"),)),
    Dataset("cars", "cars", "car at azimuth 0", "the same car at another azimuth", hints=(Hint("cars", "--src RAW"),)),
    Dataset("facades", "pix2pix", "building facade photo", "facade label map",
            hints=(Hint("facades", "--name facades --src RAW"),)),
    Dataset("maps", "pix2pix", "satellite image", "map rendering", hints=(Hint("maps", "--name maps --src RAW"),)),
    Dataset("mnist-cdcb", "mnist-cdcb", "CB: a white digit on a coloured background", "CD: a coloured digit on black",
            hints=(Hint("debug", "--size 32 --limit 64"), Hint("mnist", "", sized=True))),
)
_SIZE_ENDING = re.compile(r"_(\d+)$")


def dataset(name: str) -> Optional[Dataset]:
    """The catalogue entry of a dataset.json `name`, or None for a dataset it does not know."""
    return next((d for d in DATASETS if d.name == name), None)


def domain_names(name: str) -> tuple[str, str]:
    """What X and Y hold in dataset `name`; ("domain X", "domain Y") for one the catalogue does not know."""
    known = dataset(name)
    return (known.x, known.y) if known is not None else ("domain X", "domain Y")


def _hinted(folder_name: str) -> Optional[tuple[Dataset, Hint]]:
    """The first (dataset, hint) whose word the folder name holds."""
    name = folder_name.lower()
    return next(((known, hint) for known in DATASETS for hint in known.hints if hint.word in name), None)


def dataset_of_folder(folder_name: str) -> Optional[str]:
    """The catalogue name of the dataset a folder likely holds ("maps_96" → "maps"), or None."""
    found = dataset(folder_name) or (_hinted(folder_name) or (None,))[0]
    return found.name if found is not None else None


def prepare_hint(root: Path) -> str:
    """The `iiae prepare` call that likely makes folder `root`, guessed from its name."""
    found = _hinted(root.name)
    if found is None:
        return f"iiae prepare {{{'|'.join(s.name for s in SOURCES)}}} ... --out {root}"
    known, hint = found
    command = " ".join(filter(None, ("iiae prepare", known.source, hint.options)))
    size = _SIZE_ENDING.search(root.name.lower()) if hint.sized else None
    if size:
        command += f" --size {size.group(1)}"
    return f"{command} --out {root}"
