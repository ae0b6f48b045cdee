"""IIAE engine: recipes, models, objective, data, training, evaluation and Hub publishing.

The package `iiae` is the folder engine/ of the source tree; its fused kernels, kernels/, are `iiae.kernels`.

    from iiae import IIAE
    model = IIAE.from_pretrained("user/model")
"""

from iiae.version import __version__

__all__ = ["IIAE", "__version__"]


def __getattr__(name: str):
    # PEP 562: `import iiae` (e.g. `iiae --version`) stays free of torch until the model is asked for
    if name == "IIAE":
        from iiae.models import IIAE

        return IIAE
    raise AttributeError(f"module 'iiae' has no attribute {name!r}")
