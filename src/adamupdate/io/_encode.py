"""Python objects → manifest nodes and the arrays to write (see :mod:`._manifest`)."""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np

from .. import _tree
from .._tree import is_table
from ._manifest import (
    MAX_DEPTH,
    NPZ_ENTRY,
    encode_key,
    is_jax_array,
    is_module,
    is_namedtuple,
    is_tensor,
    sub,
    type_name,
)
from ._storage import dtype_tag, store


class Encoder:
    """Walks the saved values once, building the manifest's nodes and the entries to write.

    ``fmt`` (``"npz"``, ``"safetensors"`` or ``"mat"``) decides how an array is stored
    (:func:`._storage.store`); ``arrays`` collects the entries by name.
    """

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.arrays: dict[str, np.ndarray] = {}
        self._active: set[int] = set()

    def encode(self, value: Any, name: str) -> dict[str, Any]:
        return self._node(value, name, (name,), 0)

    def _entry(self, parts: tuple[Any, ...], array: np.ndarray) -> str:
        base = "/".join(re.sub(r"[^A-Za-z0-9_.\-]", "_", str(part)) for part in parts)
        name, count = base, 1
        while name in self.arrays or name == NPZ_ENTRY:
            count += 1
            name = f"{base}~{count}"
        self.arrays[name] = array
        return name

    def _node(self, obj: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        container = isinstance(obj, (list, tuple, dict)) or is_table(obj) or is_module(obj)
        if not container:
            return self._leaf(obj, where, parts)
        if id(obj) in self._active:
            raise ValueError(f"{where}: contains itself")
        self._active.add(id(obj))
        try:
            return self._container(obj, where, parts, depth + 1)
        finally:
            self._active.discard(id(obj))

    def _items(self, pairs: Any, where: str, parts: tuple, depth: int) -> list[dict[str, Any]]:
        """The nodes of ``(key, value)`` pairs, each at ``where[key]``."""
        return [self._node(value, sub(where, key), (*parts, key), depth) for key, value in pairs]

    def _container(self, obj: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        if is_namedtuple(obj):
            fields = list(type(obj)._fields)
            return {
                "t": "namedtuple",
                "type": type_name(type(obj)),
                "fields": fields,
                "items": [
                    self._node(item, f"{where}.{field}", (*parts, field), depth)
                    for field, item in zip(fields, obj)
                ],
            }
        # The states adamupdate returns are plain containers that carry a plan: saved as such.
        kind = _tree.PLAIN.get(type(obj), type(obj))
        if isinstance(obj, (list, tuple)):
            node: dict[str, Any] = {"t": "list" if isinstance(obj, list) else "tuple"}
            if kind not in (list, tuple):
                node["type"] = type_name(kind)
            node["items"] = self._items(enumerate(obj), where, parts, depth)
            return node
        if isinstance(obj, dict):
            node = {"t": "dict"}
            if kind is not dict:
                node["type"] = type_name(kind)
            node["keys"] = [encode_key(key, where) for key in obj]
            node["items"] = self._items(obj.items(), where, parts, depth)
            return node
        if is_module(obj):
            named = list(obj.named_parameters())
            return {
                "t": "dict",
                "module": type(obj).__qualname__,
                "keys": [name for name, _ in named],
                "items": self._items(named, where, parts, depth),
            }
        return self._table(obj, where, parts, depth)

    def _table(self, frame: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        pandas = sys.modules["pandas"]
        # Our own Learnables tables differ from a DataFrame only in how they print.
        plain = type(frame) is pandas.DataFrame or getattr(frame, "_adamupdate_plain_table", False)
        if not plain:
            raise TypeError(f"{where}: cannot save a {type(frame).__name__} (a DataFrame subclass)")
        columns = []
        for position, label in enumerate(frame.columns):
            series = frame.iloc[:, position]
            at = sub(where, label)
            column: dict[str, Any] = {"name": encode_key(label, where)}
            dtype = series.dtype
            if isinstance(dtype, pandas.StringDtype):
                column.update(kind="string", **_string_dtype(dtype, pandas))
                column["values"] = [value if isinstance(value, str) else None for value in series]
            elif isinstance(dtype, np.dtype) and dtype.kind in "biufc":
                column["kind"] = "numeric"
                column["values"] = self._array(series.to_numpy(), "numpy", at, (*parts, label))
            elif isinstance(dtype, np.dtype) and dtype.kind == "O":
                column["kind"] = "object"
                column["values"] = self._items(enumerate(series), at, (*parts, label), depth)
            else:
                raise TypeError(
                    f"{at}: cannot save a table column of dtype {dtype} (use .astype(object))"
                )
            columns.append(column)
        return {
            "t": "table",
            "columns": columns,
            "column_index": _encode_index(frame.columns, where),
            "index": _encode_index(frame.index, where),
        }

    def _leaf(self, obj: Any, where: str, parts: tuple) -> dict[str, Any]:
        if obj is None:
            return {"t": "none"}
        kind = type(obj)
        if kind in (bool, int, str):
            return {"t": kind.__name__, "value": obj}
        if kind is float:
            return self._array(np.array(obj, np.float64), "float", where, parts)
        if kind is complex:
            return self._array(np.array(obj, np.complex128), "complex", where, parts)
        if isinstance(obj, np.generic):
            return self._array(np.asarray(obj), "numpy-scalar", where, parts)
        if kind is np.ndarray:
            return self._array(obj, "numpy", where, parts)
        if is_tensor(obj):
            array, tag = _torch_to_numpy(obj, where)
            return self._array(array, "torch", where, parts, tag=tag)
        if is_jax_array(obj):
            return self._array(np.asarray(obj), "jax", where, parts)
        raise TypeError(
            f"{where}: cannot save a {kind.__module__}.{kind.__qualname__} (expected an array, a "
            f"tensor, a scalar, a string, None or a list/tuple/dict/table of those)"
        )

    def _array(
        self, array: np.ndarray, lib: str, where: str, parts: tuple, tag: str | None = None
    ) -> dict[str, Any]:
        tag = tag or dtype_tag(array.dtype, where)
        data, how = store(array, tag, self.fmt)
        node = {"t": "array", "lib": lib, "dtype": tag, "shape": list(array.shape), **how}
        node["entry"] = self._entry(parts, data)
        return node


def _torch_to_numpy(tensor: Any, where: str) -> tuple[np.ndarray, str]:
    torch = sys.modules["torch"]
    if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized:
        raise TypeError(f"{where}: cannot save a {tensor.layout} / meta / quantized tensor")
    tensor = tensor.detach()
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    tensor = tensor.cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view("<u2"), "bfloat16"
    try:
        array = tensor.numpy()
    except TypeError as error:
        raise TypeError(f"{where}: cannot save a tensor of dtype {tensor.dtype}") from error
    return array, dtype_tag(array.dtype, where)


def _string_dtype(dtype: Any, pandas: Any) -> dict[str, Any]:
    """A pandas ``StringDtype`` as the manifest keeps it (read by ``_decode._string_dtype``)."""
    return {"storage": dtype.storage, "na": "nan" if dtype.na_value is not pandas.NA else "NA"}


def _encode_index(index: Any, where: str) -> dict[str, Any]:
    pandas = sys.modules["pandas"]
    name = encode_key(index.name, where)
    if type(index) is pandas.RangeIndex:
        return {"range": [index.start, index.stop, index.step], "name": name}
    if type(index) is not pandas.Index:
        raise TypeError(f"{where}: cannot save a table with a {type(index).__name__}")
    dtype = index.dtype
    if isinstance(dtype, pandas.StringDtype):
        kind: Any = _string_dtype(dtype, pandas)
    elif isinstance(dtype, np.dtype) and dtype.kind in "Obiuf":
        kind = dtype.str
    else:
        raise TypeError(f"{where}: cannot save a table index of dtype {dtype}")
    labels = [encode_key(label, where) for label in index.tolist()]
    return {"labels": labels, "dtype": kind, "name": name}
