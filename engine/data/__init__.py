"""Data: `iiae prepare` converters → webdataset shards + dataset.json → training and evaluation batches.

format: the folder (dataset.json schema, shard names); samples: one record in a shard; write / read: the two
directions (read also evaluation's batches); transforms: decoded values → tensors; stream, matched, loader:
training batches; catalogue: the datasets and prepare sources known by name; prepare: the converters.

Names load on first use (PEP 562), so importing `iiae.data` costs nothing.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetInfo": "format",
    "ShardInfo": "format",
    "SplitInfo": "format",
    "sha256_file": "format",
    "encode_sample": "samples",
    "decode_field": "samples",
    "decode_cls": "samples",
    "write_dataset": "write",
    "load_dataset_info": "read",
    "read_shard": "read",
    "CorruptDataWarning": "read",
    "iter_eval_batches": "read",
    "TrainLoader": "loader",
    "train_batches_per_epoch": "loader",
    "make_train_loader": "loader",
    "domain_names": "catalogue",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
