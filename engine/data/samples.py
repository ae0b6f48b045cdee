"""The sample format inside a shard: `__key__`, `x`/`y` as `.png` (uint8 RGB) or `.npy` (float32), `cls`, `json`.

Encoding is byte-deterministic (fixed PNG level, sorted JSON, no pickle), so a re-run of `iiae prepare` with
the same arguments writes identical shards.
"""
from __future__ import annotations

import io
import json
from typing import Any, Optional

import numpy as np

PNG_COMPRESS_LEVEL = 6  # fixed: Pillow's output then depends only on the pixels (and the zlib build)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def npy_bytes(vector: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def encode_sample(key: str, *, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None,
                  cls: Optional[int] = None, meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One shard record. Images are uint8 HxWx3 arrays (stored as PNG); anything else is a float32 vector (NPY)."""
    sample: dict[str, Any] = {"__key__": key}
    for field, value in (("x", x), ("y", y)):
        if value is None:
            continue
        if value.dtype == np.uint8:
            sample[f"{field}.png"] = png_bytes(value)
        else:
            sample[f"{field}.npy"] = npy_bytes(value)
    if cls is not None:
        sample["cls"] = str(int(cls)).encode("ascii")
    if meta is not None:
        sample["json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return sample


def has_field(sample: dict[str, Any], field: str) -> bool:
    return f"{field}.png" in sample or f"{field}.npy" in sample


def decode_field(sample: dict[str, Any], field: str) -> np.ndarray:
    """uint8 HxWx3 for an image, float32 [F] for a feature vector. Raises on missing or undecodable bytes."""
    if f"{field}.png" in sample:
        from PIL import Image

        with Image.open(io.BytesIO(sample[f"{field}.png"])) as img:
            return np.asarray(img.convert("RGB"))
    if f"{field}.npy" in sample:
        return np.load(io.BytesIO(sample[f"{field}.npy"]), allow_pickle=False).astype(np.float32, copy=False)
    raise KeyError(f"no {field}.png or {field}.npy")


def decode_cls(sample: dict[str, Any]) -> int:
    """The integer label, or -1 where the dataset has none."""
    return int(sample["cls"]) if "cls" in sample else -1
