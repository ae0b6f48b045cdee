"""Model registry (arch name → builder module) and the public `IIAE` model."""
from __future__ import annotations

from . import flat, image, mlp

# each module provides build(cfg) -> IIAEParts and latent_shapes(cfg) -> (z_shared shape, z_exclusive shape)
ARCHITECTURES = {"image": image, "flat": flat, "mlp": mlp}

from .iiae import IIAE, IIAEOutput  # noqa: E402  (needs ARCHITECTURES)

__all__ = ["ARCHITECTURES", "IIAE", "IIAEOutput"]
