"""Manifest nodes and the entries read → Python objects, optionally like templates."""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._extras import require
from .._tree import is_table
from ._like import (
    check_like_names,
    convert,
    mapping_templates,
    network_parameters,
    sequence_templates,
)
from ._manifest import (
    LIBS,
    SCALAR_LIBS,
    SCALARS,
    BadFile,
    check_depth,
    decode_key,
    get,
    is_module,
    is_namedtuple,
    manifest_variables,
    sub,
    type_name,
)
from ._storage import Raw, restore

_STRING_STORAGES = ("python", "pyarrow")
_INDEX_DTYPES = ("|O", "<i8", "<u8", "<f8", "|b1", "<i4")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # a RangeIndex's bounds and length are int64


class Decoder:
    """Rebuilds the variables of a manifest from the file's (checked) entries."""

    def __init__(self, manifest: Any, entries: Mapping[str, np.ndarray], like: Any) -> None:
        self.manifest = manifest
        self.entries = entries
        self.like = like

    def variables(self) -> dict[str, Any]:
        variables = manifest_variables(self.manifest)
        check_like_names(self.like, (name for name, _ in variables))
        like = self.like or {}
        return {name: self.decode(node, like.get(name), name, 0) for name, node in variables}

    def raw(self, node: dict, where: str) -> Raw:
        return restore(node, self.entries, where)

    def _keys(self, node: dict, where: str) -> list[Any]:
        return [decode_key(k, where) for k in get(node, "keys", list, where)]

    def decode(self, node: Any, template: Any, where: str, depth: int) -> Any:
        check_depth(depth, where)
        kind = get(node, "t", str, where)
        if template is not None and is_module(template):
            return self._decode_for_module(node, kind, template, where, depth)
        if kind == "none":
            return None
        if kind in SCALARS:
            value = node.get("value")
            wanted = {"bool": bool, "int": int, "str": str}[kind]
            if type(value) is not wanted:
                raise BadFile(f"{where}: malformed manifest (bad {kind} value)")
            return value
        if kind == "array":
            lib = get(node, "lib", str, where)
            if lib not in LIBS or (lib in SCALAR_LIBS and node.get("shape") != []):
                raise BadFile(f"{where}: malformed manifest (bad lib {lib!r} or shape)")
            return _finish_leaf(self.raw(node, where), lib, template, where)
        if kind in ("list", "tuple"):
            items = get(node, "items", list, where)
            templates = sequence_templates(template, len(items), where)
            values = [
                self.decode(item, t, sub(where, i), depth + 1)
                for i, (item, t) in enumerate(zip(items, templates))
            ]
            base = list if kind == "list" else tuple
            return _container(base, node.get("type"), template, values, where)
        if kind == "namedtuple":
            return self._namedtuple(node, template, where, depth)
        if kind == "dict":
            keys = self._keys(node, where)
            items = get(node, "items", list, where)
            if len(keys) != len(items):
                raise BadFile(f"{where}: malformed manifest (keys and items differ in length)")
            templates = mapping_templates(template, keys, where)
            values = [
                self.decode(item, t, sub(where, k), depth + 1)
                for k, item, t in zip(keys, items, templates)
            ]
            return _container(dict, node.get("type"), template, list(zip(keys, values)), where)
        if kind == "table":
            return self._table(node, template, where, depth)
        raise BadFile(f"{where}: unknown node type {kind!r} in the manifest")

    def _namedtuple(self, node: dict, template: Any, where: str, depth: int) -> Any:
        fields = get(node, "fields", list, where)
        items = get(node, "items", list, where)
        spec = get(node, "type", str, where)
        if len(fields) != len(items) or not all(isinstance(f, str) for f in fields):
            raise BadFile(f"{where}: malformed manifest (namedtuple fields)")
        if template is not None and not (is_namedtuple(template) or isinstance(template, Mapping)):
            raise ValueError(f"{where}: saved a namedtuple, like has {type(template).__name__}")
        templates = mapping_templates(template, fields, where)
        values = [
            self.decode(item, t, f"{where}.{f}", depth + 1)
            for f, item, t in zip(fields, items, templates)
        ]
        cls = type(template) if is_namedtuple(template) else _lookup_type(spec, tuple)
        if cls is not None and list(getattr(cls, "_fields", ())) == fields:
            return tuple.__new__(cls, values)  # as namedtuple's _make: runs no class code
        warnings.warn(
            f"{where}: saved as namedtuple {spec.replace(':', '.')}, which is not imported (or "
            f"has other fields); returned as a dict. Import its module before load() or pass "
            f"like= to get the namedtuple.",
            stacklevel=4,
        )
        return dict(zip(fields, values))

    def _table(
        self,
        node: dict,
        template: Any,
        where: str,
        depth: int,
        value_templates: list[Any] | None = None,
    ) -> Any:
        pandas = require("pandas", "pandas", "loading a table")
        columns = get(node, "columns", list, where)
        index_spec = get(node, "index", dict, where)
        # the declared row count, checked against every column's declared length before
        # anything of that length is built (a range index is lazy: its length costs nothing)
        rows = _declared_rows(index_spec, where)
        for column in columns:
            _check_column_length(column, rows, where)
        if template is not None and not is_table(template):
            raise ValueError(f"{where}: saved a table, like has {type(template).__name__}")
        if template is not None and "Value" in template.columns:
            value_templates = list(template["Value"])
        if value_templates is not None and len(value_templates) != rows:
            raise ValueError(f"{where}: has {rows} rows, like has {len(value_templates)}")
        index = _decode_index(index_spec, len_hint=None, where=where)
        data = {}
        for position, column in enumerate(columns):
            label = decode_key(column.get("name"), where)
            at = sub(where, label)
            kind = get(column, "kind", str, at)
            values = column.get("values")
            if kind == "numeric":
                raw = self.raw(get(column, "values", dict, at), at)
                series = pandas.Series(raw.numpy(), index=index, copy=False)
            elif kind == "object":
                cells = get(column, "values", list, at)
                templates = value_templates if label == "Value" else None
                decoded = [
                    self.decode(
                        cell, None if templates is None else templates[row], sub(at, row), depth + 1
                    )
                    for row, cell in enumerate(cells)
                ]
                series = pandas.Series(decoded, index=index, dtype=object)
            elif kind == "string":
                strings = get(column, "values", list, at)
                series = pandas.Series(
                    strings, index=index, dtype=_string_dtype(pandas, column, at)
                )
            else:
                raise BadFile(f"{at}: unknown column kind {kind!r} in the manifest")
            if len(series) != rows or not isinstance(values, (list, dict)):
                raise BadFile(f"{at}: column length differs from the index's")
            data[position] = series
        frame = pandas.DataFrame(data, index=index)
        frame.columns = _decode_index(
            get(node, "column_index", dict, where), len_hint=len(columns), where=where
        )
        return frame

    def _decode_for_module(self, node: dict, kind: str, net: Any, where: str, depth: int) -> Any:
        """A network as template: a dict by parameter name, or its learnables by position."""
        if kind == "dict":
            keys = self._keys(node, where)
            items = dict(zip(keys, get(node, "items", list, where)))
            params = network_parameters(net, keys, where)
            for name, parameter in params.items():
                if parameter.requires_grad and name not in items:
                    raise ValueError(f"{sub(where, name)}: missing (the network has it)")
            return {
                name: self.decode(items[name], params[name], sub(where, name), depth + 1)
                for name in params
                if name in items
            }
        templates = [p for p in net.parameters() if p.requires_grad]
        if kind == "table":
            return self._table(node, None, where, depth, value_templates=templates)
        if kind in ("list", "tuple"):
            return self.decode(node, templates, where, depth)
        raise ValueError(f"{where}: a network as like needs a dict, list or table, not {kind}")


def _finish_leaf(raw: Raw, lib: str, template: Any, where: str) -> Any:
    if template is not None:
        return convert(raw, template, where)
    if lib == "float":
        return float(raw.data[()])
    if lib == "complex":
        return complex(raw.data[()])
    if lib == "numpy-scalar":
        return raw.numpy()[()]
    return raw.numpy()


def _string_dtype(pandas: Any, spec: dict, where: str) -> Any:
    storage, na = spec.get("storage"), spec.get("na")
    if storage not in _STRING_STORAGES or na not in ("nan", "NA"):
        raise BadFile(f"{where}: unknown string dtype in the manifest")
    if na == "NA":
        return pandas.StringDtype(storage)
    try:
        return pandas.StringDtype(storage, na_value=np.nan)
    except TypeError:
        # pandas < 2.3 has no NaN-valued strings: the same strings, missing ones as pd.NA
        return pandas.StringDtype(storage)


def _range_bounds(spec: dict, where: str) -> tuple[int, int, int]:
    bounds = spec["range"]
    if not (
        isinstance(bounds, list)
        and len(bounds) == 3
        and all(type(b) is int and _INT64_MIN <= b <= _INT64_MAX for b in bounds)
        and bounds[2] != 0
    ):
        raise BadFile(f"{where}: bad range index {str(bounds)[:80]} in the manifest")
    start, stop, step = bounds
    return start, stop, step


def _declared_rows(spec: dict, where: str) -> int:
    """The length of the index a manifest describes, computed without building it."""
    if "range" in spec:
        start, stop, step = _range_bounds(spec, where)
        rows = max(0, -((start - stop) // step))  # len(range(...)), past sys.maxsize too
        if rows > _INT64_MAX:
            raise BadFile(f"{where}: a range index of {rows} rows in the manifest")
        return rows
    return len(get(spec, "labels", list, where))


def _check_column_length(column: Any, rows: int, where: str) -> None:
    """A column's length, as the manifest gives it (its list of values, or its array node's
    shape, which the file's entry was checked to have), must be the index's."""
    values = column.get("values") if isinstance(column, dict) else None
    if isinstance(values, list):
        length: Any = len(values)
    elif isinstance(values, dict) and isinstance(values.get("shape"), list):
        shape = values["shape"]
        length = shape[0] if len(shape) == 1 else None
    else:
        raise BadFile(f"{where}: malformed manifest (bad column)")
    if length != rows:
        raise BadFile(f"{where}: a column holds {length} values, the index declares {rows} rows")


def _decode_index(spec: dict, len_hint: int | None, where: str) -> Any:
    pandas = sys.modules["pandas"]
    name = decode_key(spec.get("name"), where)
    if "range" in spec:
        index = pandas.RangeIndex(*_range_bounds(spec, where), name=name)
    else:
        labels = [decode_key(k, where) for k in get(spec, "labels", list, where)]
        kind = spec.get("dtype")
        if isinstance(kind, dict):
            dtype: Any = _string_dtype(pandas, kind, where)
        elif isinstance(kind, str) and kind in _INDEX_DTYPES:
            dtype = np.dtype(kind)
        else:
            raise BadFile(f"{where}: bad index dtype {kind!r} in the manifest")
        index = pandas.Index(labels, dtype=dtype, name=name)
    if len_hint is not None and len(index) != len_hint:
        raise BadFile(f"{where}: the table's column labels do not match its columns")
    return index


def _lookup_type(spec: str, base: type) -> type | None:
    """A class named ``module:qualname``, if its module is already imported (never imports)."""
    module_name, _, qualname = spec.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None or part.startswith("<"):
            return None
        # vars(), not getattr(): a module's __getattr__ (lazy imports) must not run
        namespace = getattr(obj, "__dict__", None)
        obj = namespace.get(part) if isinstance(namespace, Mapping) else None
    return obj if isinstance(obj, type) and issubclass(obj, base) else None


def _container(base: type, spec: Any, template: Any, values: Any, where: str) -> Any:
    """``values`` as ``base`` or as the saved subclass (OrderedDict, or like's own type)."""
    if spec is None:
        return base(values)
    if not isinstance(spec, str):
        raise BadFile(f"{where}: malformed manifest (bad type)")
    if template is not None and type_name(type(template)) == spec:
        if isinstance(template, defaultdict):
            return type(template)(template.default_factory, values)
        return type(template)(values)
    if spec == "collections:OrderedDict":
        return OrderedDict(values)
    warnings.warn(
        f"{where}: saved as {spec.replace(':', '.')}; returned as a {base.__name__} (pass like= "
        f"with an object of that type to get it back)",
        stacklevel=4,
    )
    return base(values)
