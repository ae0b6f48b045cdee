"""The sample format inside a shard: `__key__`, `x`/`y` as `.png` (uint8 RGB) or `.npy` (float32), `cls`, `json`.

Encoding is byte-deterministic (fixed PNG level, sorted JSON, no pickle), so a re-run of `iiae prepare` with
the same arguments writes identical shards.
"""
from __future__ import annotations

import io
import json
from typing import Any, Optional

import numpy as np

from iiae.data.format import MAX_CLASSES, MAX_FEATURE_DIM

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
    return decode_fitted(sample, field, None)[0]


def decode_fitted(sample: dict[str, Any], field: str, size: Optional[int]) -> tuple[np.ndarray, Optional[str]]:
    """decode_field, with an image of another mode or (given `size`) another size than size×size converted to
    RGB uint8 (`to_rgb`: 16-bit scaled, alpha on white) and resized (bilinear, antialiased when shrinking). Also
    returns what was changed ("48×32 L"), or None. Pillow's decompression-bomb limit is a decode error, warning zone included."""
    if f"{field}.png" in sample:
        from PIL import Image

        with Image.open(io.BytesIO(sample[f"{field}.png"])) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:  # Pillow only warns below twice its limit
                raise Image.DecompressionBombError(f"{img.width}×{img.height} image exceeds Pillow's limit of "
                                                   f"{limit} pixels (decompression bomb?)")
            if img.mode == "RGB" and (size is None or img.size == (size, size)):
                return np.asarray(img), None
            from iiae.data.prepare.images import to_rgb

            odd = f"{img.width}×{img.height} {img.mode}"
            img = to_rgb(img)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)  # Pillow's filters antialias downscaling
            return np.asarray(img), odd
    if f"{field}.npy" in sample:
        stream = io.BytesIO(sample[f"{field}.npy"])
        # the declared shape is read first: a huge one is refused before anything is allocated
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(stream)
        if len(shape) != 1 or not 0 < shape[0] <= MAX_FEATURE_DIM:
            raise ValueError(f"a feature of shape {shape}; expected a vector of at most {MAX_FEATURE_DIM} values")
        stream.seek(0)
        return np.load(stream, allow_pickle=False).astype(np.float32, copy=False), None
    raise KeyError(f"no {field}.png or {field}.npy")


def decode_cls(sample: dict[str, Any]) -> int:
    """The integer label, or -1 where the dataset has none; ValueError outside -1 .. MAX_CLASSES - 1 (a label sizes
    what is built over the labels, e.g. a fidelity classifier's outputs)."""
    label = int(sample["cls"]) if "cls" in sample else -1
    if not -1 <= label < MAX_CLASSES:
        raise ValueError(f"cls {label} is outside 0..{MAX_CLASSES - 1}")
    return label


def decode_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's `json` metadata (e.g. MNIST-CDCB's colours), or {} where it has none."""
    return json.loads(sample["json"]) if "json" in sample else {}
