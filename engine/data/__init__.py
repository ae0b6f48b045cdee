"""Data: `iiae prepare` converters → webdataset shards + dataset.json → training and evaluation batches.

Names load on first use (PEP 562), so importing `engine.data` costs nothing.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetInfo": "shards",
    "ShardInfo": "shards",
    "SplitInfo": "shards",
    "CorruptDataWarning": "shards",
    "load_dataset_info": "shards",
    "write_dataset": "shards",
    "TrainLoader": "loader",
    "train_batches_per_epoch": "loader",
    "make_train_loader": "loader",
    "iter_eval_batches": "loader",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
