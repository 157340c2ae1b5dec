"""``.mat`` files (MATLAB v5, via SciPy): our own, and those MATLAB writes.

Ours hold each variable as MATLAB sees it (structures, cell arrays, numeric arrays ≥ 2-D) and
the manifest as a ``char`` variable; reading walks each variable along its manifest node to
collect the arrays (:func:`read`). A MATLAB-written file has no manifest: its variables become
Python containers (:func:`_from_matlab_file`). Every file's structure is checked before SciPy
reads it (:mod:`._mat5_check`).
"""

from __future__ import annotations

import re
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from ._manifest import (
    MAT_VARIABLE,
    SCALARS,
    BadFile,
    check_depth,
    decode_key,
    get,
    manifest_bytes,
    manifest_variables,
    parse_manifest,
    sub,
)
from ._mat5_check import check_mat5
from ._storage import stored_form

NAME = "mat"
PACKAGE = "scipy.io"
_HEADER = b"MATLAB 5.0 MAT-file, written by adamupdate.io".ljust(116)
# A file for MATLAB only (no manifest) is not signed as ours: it loads as MATLAB's files do.
_MATLAB_ONLY_HEADER = b"MATLAB 5.0 MAT-file, written by adamupdate.io for MATLAB".ljust(116)
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}\Z")


def is_identifier(name: str) -> bool:
    """A valid MATLAB variable or field name."""
    return _IDENTIFIER.match(name) is not None


def matlab_names(keys: list[Any]) -> list[str]:
    """Valid, distinct MATLAB field names for ``keys`` (in order): each character other than
    a letter, a digit or ``_`` becomes ``_``; a name that does not start with a letter gets an
    ``x`` in front; names are cut to 63 characters; a name already taken gets ``_2``, ``_3``…

    >>> matlab_names(["0.weight", "fc.bias", "fc_bias", "_x"])
    ['x0_weight', 'fc_bias', 'fc_bias_2', 'x_x']
    """
    names: list[str] = []
    used: set[str] = set()
    for key in keys:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(key))
        if not base or not ("a" <= base[0].lower() <= "z"):
            base = "x" + base
        base = base[:63]
        name, count = base, 1
        while name in used:
            count += 1
            suffix = f"_{count}"
            name = base[: 63 - len(suffix)] + suffix
        used.add(name)
        names.append(name)
    return names


def matlab_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """MATLAB's dims of a shape: at least 2, trailing singletons dropped."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (shape[0], 1)
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


# Writing --------------------------------------------------------------------------------------


def _cell(values: list[Any], column: bool = False) -> np.ndarray:
    cell = np.empty((len(values), 1) if column else (1, len(values)), dtype=object)
    for i, value in enumerate(values):
        cell.flat[i] = value
    return cell


def display_key(key: Any) -> str:
    """A dict key as MATLAB users should see it (before it is made a valid field name)."""
    return "_".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _display_key(encoded: Any) -> str:
    return display_key(decode_key(encoded, ""))


def _to_matlab(node: dict, arrays: dict[str, np.ndarray]) -> Any:
    """The MATLAB value of a manifest node (annotating structures with their field names)."""
    kind = node["t"]
    if kind == "none":
        return np.zeros((0, 0))
    if kind == "bool":
        return np.array([[node["value"]]], dtype=bool)
    if kind == "int":
        # MATLAB holds numbers as double: an iteration stored as int64 would make MATLAB's
        # 100*iteration/numIterations integer arithmetic. The manifest keeps the int.
        value = node["value"]
        if abs(value) <= 2**53:  # every such int is exact in double
            return np.array([[float(value)]])
        return np.array([[value]], np.int64) if -(2**63) <= value < 2**63 else str(value)
    if kind == "str":
        try:
            node["value"].encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: MATLAB cannot show it, the manifest has it
            return np.zeros((0, 0))
        return np.str_(node["value"])
    if kind == "array":
        shape = tuple(node["shape"])  # MATLAB needs >= 2 dims: 0-d is 1x1, 1-D a column
        return arrays[node["entry"]].reshape(matlab_shape(shape) if len(shape) < 2 else shape)
    if kind in ("list", "tuple"):
        return _cell([_to_matlab(item, arrays) for item in node["items"]])
    if kind in ("dict", "namedtuple"):
        keys = node["fields"] if kind == "namedtuple" else node["keys"]
        names = matlab_names([_display_key(k) for k in keys])
        node["fields"] = names
        return {name: _to_matlab(item, arrays) for name, item in zip(names, node["items"])}
    # table: a structure of columns (struct2table in MATLAB makes it a table)
    names = matlab_names([_display_key(c["name"]) for c in node["columns"]])
    node["fields"] = names
    struct_ = {}
    for name, column in zip(names, node["columns"]):
        if column["kind"] == "numeric":
            values = column["values"]
            struct_[name] = arrays[values["entry"]].reshape(-1, 1)
        elif column["kind"] == "string":
            struct_[name] = _cell(
                [np.zeros((0, 0)) if v is None else np.str_(v) for v in column["values"]],
                column=True,
            )
        else:
            struct_[name] = _cell([_to_matlab(v, arrays) for v in column["values"]], column=True)
    return struct_


def write(
    path: Path, manifest: dict, arrays: dict[str, np.ndarray], *, with_manifest: bool = True
) -> None:
    """Write the variables; ``with_manifest=False`` leaves out the ``adamupdate_manifest``
    variable (a file for MATLAB only, which loads back as MATLAB's own files do)."""
    import scipy.io
    import scipy.io.matlab

    # SciPy before 1.15 has no MatWriteWarning: its savemat warns with a UserWarning
    dropped_field = getattr(scipy.io.matlab, "MatWriteWarning", UserWarning)

    values = {name: _to_matlab(node, arrays) for name, node in manifest["variables"]}
    mdict = values
    if with_manifest:
        mdict = {MAT_VARIABLE: np.str_(manifest_bytes(manifest).decode("ascii")), **values}
    with warnings.catch_warnings():
        warnings.simplefilter("error", dropped_field)  # never let SciPy drop a field
        with open(path, "wb") as stream:
            scipy.io.savemat(
                stream,
                mdict,
                format="5",
                long_field_names=False,
                do_compression=False,
                oned_as="column",
            )
            # Sign the header's free text, so that a file cut short before its manifest is
            # recognised as ours (and broken) rather than read as an empty MATLAB file.
            stream.seek(0)
            stream.write(_HEADER if with_manifest else _MATLAB_ONLY_HEADER)


# Reading --------------------------------------------------------------------------------------


def _loadmat(data: bytes, path: Path, mat_dtype: bool) -> dict[str, Any]:
    scipy_io = require(PACKAGE, "io", "reading a .mat file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            contents = scipy_io.loadmat(
                BytesIO(data),
                mat_dtype=mat_dtype,
                squeeze_me=False,
                chars_as_strings=True,
                struct_as_record=True,
                verify_compressed_data_integrity=True,
            )
        except Exception as error:  # SciPy raises many kinds on a corrupt file
            raise BadFile(f"not a readable .mat file: {type(error).__name__}: {error}") from None
    for warning in caught:
        text = str(warning.message)
        if "Unreadable variable" in text or "Read error" in text:
            raise BadFile(f"not a readable .mat file: {text}")
        if not mat_dtype:
            warnings.warn(f"{path}: {text}", warning.category, stacklevel=3)
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def read(path: Path) -> tuple[Any, dict[str, Any]]:
    """The manifest and its entries; for a MATLAB-written file ``None`` and its variables."""
    data = path.read_bytes()
    check_mat5(data)
    contents = _loadmat(data, path, mat_dtype=False)
    if MAT_VARIABLE not in contents:
        if data.startswith(_HEADER):
            raise BadFile(f"written by adamupdate.io but {MAT_VARIABLE!r} is missing")
        typed = _loadmat(data, path, mat_dtype=True)  # each array's class (logical, double...)
        return None, {
            name: _from_matlab_file(value, typed[name], name) for name, value in contents.items()
        }
    text = contents.pop(MAT_VARIABLE)
    if not (isinstance(text, np.ndarray) and text.dtype.kind == "U" and text.size == 1):
        raise BadFile(f"variable {MAT_VARIABLE!r} is not a manifest")
    manifest = parse_manifest(str(text.flat[0]))
    variables = manifest_variables(manifest)
    names = [name for name, _ in variables]
    for name in contents:
        if name not in names:
            raise BadFile(f"variable {name!r} is in the file but not in its manifest")
    entries: dict[str, np.ndarray] = {}
    for name, node in variables:
        if name not in contents:
            raise BadFile(f"variable {name!r} is in the manifest but not in the file")
        _collect(node, contents[name], entries, name, 0)
    return manifest, entries


def _field(value: Any, node: dict, position: int, where: str) -> Any:
    fields = get(node, "fields", list, where)
    if not (isinstance(value, np.ndarray) and value.dtype.names and value.size == 1):
        raise BadFile(f"{where}: expected a MATLAB structure")
    if position >= len(fields) or fields[position] not in value.dtype.names:
        raise BadFile(f"{where}: the structure lacks the field its manifest names")
    return value.flat[0][fields[position]]


def _cells(value: Any, size: int, where: str) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.dtype == object and value.size == size):
        raise BadFile(f"{where}: expected a cell array of {size} elements")
    return value.reshape(-1)


def _collect(node: Any, value: Any, entries: dict[str, np.ndarray], where: str, depth: int) -> None:
    """Walk a MATLAB value along its manifest node, collecting each array's entry."""
    check_depth(depth, where)
    kind = get(node, "t", str, where)
    if kind == "array":
        entry = get(node, "entry", str, where)
        dtype, shape = stored_form(node, where)
        if entry in entries:
            raise BadFile(f"entry {entry!r} is named twice in the manifest")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            raise BadFile(f"entry {entry!r} ({where}) is not a numeric array")
        if dtype.kind == "b" and value.dtype == np.uint8:
            value = value.astype(bool)  # SciPy reads MATLAB's logical as uint8
        same_dtype = value.dtype.newbyteorder("<") == dtype.newbyteorder("<")
        if not same_dtype or matlab_shape(value.shape) != matlab_shape(shape):
            raise BadFile(
                f"entry {entry!r} ({where}) is {value.dtype} {value.shape}; the manifest says "
                f"{dtype} {shape}"
            )
        entries[entry] = np.asarray(value.reshape(shape), order="C")
    elif kind in ("list", "tuple"):
        items = get(node, "items", list, where)
        for i, (item, cell) in enumerate(zip(items, _cells(value, len(items), where))):
            _collect(item, cell, entries, sub(where, i), depth + 1)
    elif kind in ("dict", "namedtuple"):
        for i, item in enumerate(get(node, "items", list, where)):
            _collect(item, _field(value, node, i, where), entries, sub(where, i), depth + 1)
    elif kind == "table":
        for i, column in enumerate(get(node, "columns", list, where)):
            at = sub(where, i)
            data = _field(value, node, i, where)
            values = column.get("values") if isinstance(column, dict) else None
            if isinstance(values, dict):
                _collect(values, data, entries, at, depth + 1)
            elif isinstance(values, list) and column.get("kind") == "object":
                for row, (cell, item) in enumerate(zip(values, _cells(data, len(values), at))):
                    _collect(cell, item, entries, sub(at, row), depth + 1)
    elif kind not in SCALARS:
        raise BadFile(f"{where}: unknown node type {kind!r} in the manifest")


# MATLAB's own files ---------------------------------------------------------------------------


def _arrange(items: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """MATLAB's elements (column-major) as a list, or a list of rows for a matrix."""
    if sum(n != 1 for n in shape) <= 1:
        return items
    return _cell(items).reshape(shape, order="F").tolist()  # (objects stay as they are)


def _elements(value: np.ndarray, typed: np.ndarray) -> Any:
    """A structure or cell array's elements, as stored and in their class, in MATLAB's order."""
    return zip(value.reshape(-1, order="F"), typed.reshape(-1, order="F"))


def _from_matlab_file(value: Any, typed: Any, where: str) -> Any:
    """A MATLAB-written value (read twice: as stored, and in its MATLAB class) as Python."""
    from scipy.io.matlab import MatlabFunction, MatlabOpaque

    if isinstance(value, (MatlabOpaque, MatlabFunction)):
        kind = "a function handle" if isinstance(value, MatlabFunction) else "a MATLAB object"
        raise BadFile(
            f"{where} is {kind}, which cannot be read outside MATLAB; convert it there first "
            f"(e.g. table2struct, extractdata, char) and save again"
        )
    if not isinstance(value, np.ndarray):  # sparse matrices
        return value
    if value.dtype.names:  # structure (array)
        names = value.dtype.names
        structs = [
            {name: _from_matlab_file(v[name], t[name], f"{where}.{name}") for name in names}
            for v, t in _elements(value, typed)
        ]
        return structs[0] if value.size == 1 else _arrange(structs, value.shape)
    if value.dtype == object:  # cell array
        cells = [
            _from_matlab_file(v, t, f"{where}{{{i + 1}}}")
            for i, (v, t) in enumerate(_elements(value, typed))
        ]
        return _arrange(cells, value.shape)
    if value.dtype.kind == "U":  # char
        strings = [str(s) for s in value.reshape(-1)]
        if len(strings) <= 1:
            return strings[0] if strings else ""
        return strings
    if value.shape == (0, 0) and typed.dtype == np.float64 and value.dtype.kind != "c":
        return None  # MATLAB's []
    target = typed.dtype
    if value.dtype.kind == "c":
        target = np.result_type(target, np.complex64)
    return value.astype(target, copy=False)
