"""The architecture registry: arch name → builder module, and what a model config says about the data it reads.

Each module provides INPUT_KIND ("image" | "feature"), check(cfg) (raises ValueError naming the key),
build(cfg) -> IIAEParts and latent_shapes(cfg) -> (z_shared shape, {domain: z_exclusive shape}). A new architecture
is one module here, one line in ARCHITECTURES and its name in `ModelConfig.arch` (models/config.py).
"""
from __future__ import annotations

import sys

from iiae.models import flat, image, mlp

ARCHITECTURES = {"image": image, "flat": flat, "mlp": mlp}
IMAGE_CHANNELS = 3  # shards decode every image to RGB


def input_kind(cfg) -> str:
    return ARCHITECTURES[cfg.arch].INPUT_KIND


def check_fits(cfg, info, where: str = "model", notice: bool = False) -> None:
    """Refuse, in one line, a model config (`ModelConfig`) that cannot read a dataset (`DatasetInfo`): another
    input kind, channel count or a larger image size (upscaling would train on blurred data). A smaller model
    size is allowed (batches are downscaled); `notice` says so on stderr (once per command, not per evaluation)."""
    from iiae.errors import DataError

    wants = input_kind(cfg)
    if info.kind != wants:
        raise DataError(f"{where}.arch: {cfg.arch} reads {wants}s but {info.root} holds {info.kind}s; "
                        f"expected arch {' or '.join(a for a, m in ARCHITECTURES.items() if m.INPUT_KIND == info.kind)}")
    if wants != "image":
        return
    if cfg.channels != IMAGE_CHANNELS:
        raise DataError(f"{where}.channels: {cfg.channels}, but {info.root} holds RGB images; expected "
                        f"{IMAGE_CHANNELS}")
    if info.image_size is not None and cfg.image_size > info.image_size:
        raise DataError(f"{where}.image_size: {cfg.image_size}, but {info.root} holds {info.image_size}-px images; "
                        f"expected at most {info.image_size}, or a dataset prepared with --size {cfg.image_size}")
    if notice and info.image_size is not None and cfg.image_size < info.image_size:
        print(f"notice: {info.root} holds {info.image_size}-px images; the model reads {cfg.image_size} px, so "
              "batches are downscaled", file=sys.stderr)
