"""How an array is stored in a file's entry, and how it is read back.

The manifest tags an array with its own dtype: NumPy's ``dtype.str`` (``'<f4'``), or the name of
a dtype NumPy lacks (``'bfloat16'``). Its entry is C-contiguous and little-endian; a named dtype
is stored as its bits (``uint16``). Two formats need more, recorded in the node so that reading
needs no knowledge of the format: safetensors has no complex dtype (``"pairs"``: a ``(..., 2)``
real array) and MATLAB no half precision (``"store"``: ``'<f4'`` when float16/bfloat16 widen to
single exactly, else ``'<u2'``, the bits).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._manifest import BadFile, get

NAMED_DTYPES = {"bfloat16": np.dtype("<u2")}  # dtypes NumPy lacks: stored as their bits
_PLAIN_DTYPE = re.compile(r"\|b1|[<>|][iu][1248]|[<>]f[248]|[<>]c(8|16)")  # NumPy's .str


def dtype_tag(dtype: np.dtype, where: str) -> str:
    """The manifest's name of a dtype: NumPy's ``dtype.str`` (``'<f4'``) or ``'bfloat16'``."""
    if dtype.name in NAMED_DTYPES and dtype.kind == "V" and dtype.itemsize == 2:
        return dtype.name
    if dtype.kind in "biufc" and dtype.fields is None and dtype.subdtype is None:
        return dtype.str
    raise TypeError(f"{where}: cannot save an array of dtype {dtype}")


def parse_tag(tag: Any, where: str) -> np.dtype:
    """The stored dtype of a manifest tag (a named dtype's bits), validated."""
    if isinstance(tag, str) and tag in NAMED_DTYPES:
        return NAMED_DTYPES[tag]
    plain = isinstance(tag, str) and _PLAIN_DTYPE.fullmatch(tag)  # no other text reaches np.dtype
    dtype = np.dtype(tag) if plain else None
    if dtype is None or dtype.str != tag:
        raise BadFile(f"{where}: unknown dtype {tag!r} in the manifest")
    return dtype


def little(array: np.ndarray) -> np.ndarray:
    """C-contiguous, little-endian (the byte order safetensors and our files use)."""
    array = np.asarray(array, order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _real_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"<f{dtype.itemsize // 2}")


def _widen_half(bits_or_half: np.ndarray, tag: str) -> np.ndarray:
    """float16/bfloat16 → float32 for MATLAB (``single``) if exactly reversible, else bits."""
    if tag == "bfloat16":  # bfloat16 is the top half of a float32: always exact
        return np.asarray(bits_or_half.astype("<u4") << 16).view("<f4")  # (0-d stays 0-d)
    wide = bits_or_half.astype("<f4")
    if np.array_equal(wide.astype("<f2").view("<u2"), bits_or_half.view("<u2")):
        return wide
    return bits_or_half.view("<u2")  # a signalling NaN would come back quiet: keep the bits


def _narrow_half(stored: np.ndarray, tag: str) -> np.ndarray:
    if tag == "bfloat16":
        bits = stored.view("<u4")
        if np.any(bits & 0xFFFF):
            raise BadFile("a bfloat16 array stored as single has bits bfloat16 cannot hold")
        return np.asarray(bits >> 16).astype("<u2")
    return stored.astype("<f2")


def store(array: np.ndarray, tag: str, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The entry that stores ``array`` (of dtype ``tag``) in format ``fmt``, and the node's
    fields that say how (``{}``, ``{"pairs": True}`` or ``{"store": ...}``)."""
    data = little(array)
    if tag in NAMED_DTYPES:
        data = data.view(NAMED_DTYPES[tag])
    if fmt == "safetensors" and data.dtype.kind == "c":
        return data.reshape((*array.shape, 1)).view(_real_dtype(data.dtype)), {"pairs": True}
    if fmt == "mat" and (tag == "bfloat16" or data.dtype == np.dtype("<f2")):
        data = _widen_half(data, tag)  # MATLAB has no half precision
        return data, {"store": data.dtype.str}
    return data, {}


def stored_form(node: dict, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a node's entry in the file (before .mat's ≥ 2-D shapes)."""
    tag = get(node, "dtype", str, where)
    stored = parse_tag(tag, where)
    shape = get(node, "shape", list, where)
    if not all(type(n) is int and n >= 0 for n in shape):
        raise BadFile(f"{where}: bad shape {shape!r} in the manifest")
    shape = tuple(shape)
    if node.get("pairs") is True and stored.kind == "c":
        return _real_dtype(stored), (*shape, 2)
    store = node.get("store")
    if store is not None:
        half = tag == "bfloat16" or stored.newbyteorder("<") == np.dtype("<f2")
        if not half or store not in ("<f4", "<u2"):
            raise BadFile(f"{where}: bad stored dtype {store!r} in the manifest")
        return np.dtype(store), shape
    return stored, shape


class Raw:
    """A loaded array before it is given its final type: ``data`` holds a named dtype's bits."""

    __slots__ = ("data", "tag")

    def __init__(self, data: np.ndarray, tag: str) -> None:
        self.data = data
        self.tag = tag

    def numpy(self) -> np.ndarray:
        if self.tag in NAMED_DTYPES:
            ml_dtypes = _require_ml_dtypes(self.tag)
            return self.data.view(getattr(ml_dtypes, self.tag))
        return self.data


def _require_ml_dtypes(tag: str) -> Any:
    try:
        import ml_dtypes
    except ImportError as error:
        raise ImportError(
            f"a {tag} array needs ml_dtypes to become a NumPy array: pip install ml_dtypes "
            f"(installed with jax), or load it into a torch tensor with like="
        ) from error
    return ml_dtypes


def restore(node: dict, entries: Mapping[str, np.ndarray], where: str) -> Raw:
    """The array of an (already checked) array node, from its entry: :func:`store` undone."""
    tag = get(node, "dtype", str, where)
    data = entries[get(node, "entry", str, where)]
    dtype = parse_tag(tag, where)
    store = node.get("store")
    if node.get("pairs") is True and dtype.kind == "c":
        data = np.ascontiguousarray(data).view(dtype.newbyteorder("<"))
        data = data.reshape(tuple(node["shape"]))
    elif store == "<f4":
        data = _narrow_half(data, tag)
    elif store == "<u2" and tag != "bfloat16":
        data = data.view("<f2")
    data = data.astype(dtype, copy=False)
    if not data.flags.writeable:
        data = data.copy()
    return Raw(data, tag)
