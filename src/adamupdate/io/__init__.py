"""MATLAB's ``save``/``load`` for training state: parameters, averages, iteration, networks.

``save(path, **variables)`` writes named variables to one file and ``load(path)`` returns them as
a ``{name: value}`` dict, as MATLAB's ``save(file, "params", "avgGrad")`` and ``S = load(file)``
do. The suffix chooses the format:

``.npz`` (NumPy zip) and ``.safetensors``
    Round-trip exactly: nested ``dict`` (key order and key types: ``str``, ``int``, ``float``,
    ``bool``, ``None`` and tuples of those), ``list``, ``tuple``, namedtuples and
    ``collections.OrderedDict``; pandas Learnables tables (``Layer``/``Parameter``/``Value`` and
    any other numeric, string or object columns, the row index and column labels); NumPy arrays
    of any shape (0-d included) with bool, integer, float16/32/64, bfloat16 and complex64/128
    dtypes and either byte order; NumPy scalars; Python ``float``/``int``/``complex``/``bool``/
    ``str``; ``None`` (MATLAB's ``[]``). Every array comes back with its shape, dtype and bits
    (NaN payloads and signed zeros included). PyTorch tensors and JAX arrays are saved as arrays
    (their values, dtype and shape; a ``torch.nn.Module`` as the dict of its
    ``named_parameters()``); they come back as NumPy arrays unless ``load(..., like=...)`` names
    a tensor/array to put them into. Not preserved: memory layout (arrays come back
    C-contiguous), devices and ``requires_grad`` (unless given by ``like``), ``ndarray``
    subclasses (refused), table ``attrs``. The file holds one named entry per array (``params/w``,
    readable by other NumPy/safetensors tools) and a JSON manifest that describes the containers
    (npz: a ``uint8`` entry ``__adamupdate__``; safetensors: the ``adamupdate`` metadata key).
    safetensors has no complex dtype: complex arrays are stored as ``(..., 2)`` real arrays, and
    bfloat16 (also in npz) as its ``uint16`` bits, both tagged in the manifest.

``.mat`` (MATLAB v5, via SciPy)
    Our own files round-trip exactly too (everything above): a MATLAB user sees dicts as
    structures (keys made into valid field names), lists and tuples as cell arrays, tables as a
    structure of columns (``struct2table`` makes it a table), ``None`` as ``[]``, 1-D arrays as
    columns, float16/bfloat16 as ``single`` (exact; the raw ``uint16`` bits in the rare case of
    a signalling NaN). The hidden detail MATLAB cannot hold (1-D and 0-d shapes, list vs tuple,
    Python scalar types, dict key types) is kept in a ``char`` variable ``adamupdate_manifest``.
    A file written by MATLAB (``save -v7`` or older; not ``-v7.3``) loads into Python containers:
    1x1 structures → ``dict``, structure arrays and cell arrays → ``list`` (a matrix → a list of
    rows), ``char`` → ``str`` (a char matrix → a list of its rows), ``logical`` → bool arrays,
    ``[]`` (0x0 ``double``) → ``None``, numeric arrays with MATLAB's shapes (always ≥ 2-D; a scalar
    is ``(1, 1)``) and class (``single`` stays float32, complex stays complex), sparse matrices
    as SciPy sparse matrices. MATLAB objects (``table``, ``string``, ``dlarray``, ``dlnetwork``,
    function handles) cannot be read: convert them in MATLAB first (``table2struct``,
    ``extractdata``, ``char``).

Nothing in a file is executed or unpickled on load: NumPy reads with ``allow_pickle=False``,
container types are looked up, never imported, and a file that is truncated, not in the format
its suffix says, or whose manifest does not match its entries raises ``ValueError`` naming the
file (and the entry). A ``.mat`` file's element structure is checked before SciPy's reader sees it,
since that reader crashes the process on some malformed files (one flipped byte suffices in
SciPy 1.17). Writing is atomic: a temporary file in the same folder is renamed over
``path`` when complete.

MATLAB networks: :func:`matlab_learnables` turns a PyTorch network's ``Conv2d`` and ``Linear``
parameters into MATLAB's Learnables layout (``{layer: {"Weights": ..., "Bias": ...}}``) and
:func:`load_matlab_learnables` puts such a dict (e.g. from a ``.mat`` file) back into a network.

Optional packages: ``.safetensors`` needs ``safetensors``, ``.mat`` needs ``scipy`` (both in
``pip install 'adamupdate[io]'``); tables need pandas, tensors torch, JAX arrays jax. None of
them is imported before it is needed.
"""

from __future__ import annotations

import errno
import importlib
import json
import math
import os
import re
import secrets
import struct
import sys
import warnings
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load", "load_matlab_learnables", "matlab_learnables", "save"]

_FORMAT = "adamupdate.io"
_VERSION = 1
_NPZ_MANIFEST = "__adamupdate__"  # npz entry holding the manifest (UTF-8 JSON as uint8)
_ST_MANIFEST = "adamupdate"  # safetensors metadata key
_MAT_MANIFEST = "adamupdate_manifest"  # .mat char variable
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by adamupdate.io".ljust(116)
_SUFFIXES = {".npz": "npz", ".safetensors": "safetensors", ".mat": "mat"}
_MAX_DEPTH = 200  # nesting accepted in a manifest (a guard against hostile files)
_MATLAB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}\Z")
_NAMED_DTYPES = {"bfloat16": np.dtype("<u2")}  # dtypes NumPy lacks: stored as their bits
_PLAIN_DTYPE = re.compile(r"\|b1|[<>|][iu][1248]|[<>]f[248]|[<>]c(8|16)")  # NumPy's .str
_STRING_DTYPES = ("python", "pyarrow")
_SCALAR_LIBS = ("float", "complex", "numpy-scalar")  # where an array leaf came from
_LIBS = (*_SCALAR_LIBS, "numpy", "torch", "jax")


class _BadFile(Exception):
    """A file that is not what it claims; reported as ``ValueError("<path>: ...")``."""


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def save(path: str | os.PathLike[str], /, **variables: Any) -> None:
    """Save named variables to ``path`` (MATLAB's ``save``), in the format of its suffix.

    Parameters
    ----------
    path : str or path-like
        Ends in ``.npz``, ``.safetensors`` or ``.mat`` (see the module documentation for what
        each preserves). An existing file is replaced atomically.
    **variables
        The values to save, by name: arrays, tensors, scalars, ``None``, nested
        ``dict``/``list``/``tuple``/namedtuples, pandas Learnables tables and
        ``torch.nn.Module`` networks (their ``named_parameters()``). In a ``.mat`` file the names
        must be MATLAB identifiers.

    Raises
    ------
    ValueError
        Unknown suffix, a bad variable name, or a container that contains itself.
    TypeError
        A value that cannot be saved, named by its path (e.g. ``params['fc'][0]``).
    ImportError
        ``safetensors`` or ``scipy`` is missing for that format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from adamupdate import io
    >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
    >>> params = {"w": np.arange(3, dtype=np.float32), "b": [np.float64(0.5), 2.0]}
    >>> io.save(path, params=params, avg_grad=None, iteration=3)
    >>> loaded = io.load(path)
    >>> loaded["params"]["w"], loaded["params"]["b"], loaded["avg_grad"], loaded["iteration"]
    (array([0., 1., 2.], dtype=float32), [np.float64(0.5), 2.0], None, 3)
    """
    target = Path(os.fspath(path))
    fmt = _format_of(target)
    module = {"npz": None, "safetensors": "safetensors", "mat": "scipy.io"}[fmt]
    if module is not None:
        _require(module, f"writing {target.suffix} files")
    encoder = _Encoder(fmt)
    entries = []
    for name, value in variables.items():
        _check_variable_name(name, fmt)
        entries.append([name, encoder.encode(value, name)])
    manifest = {"format": _FORMAT, "version": _VERSION, "variables": entries}
    with _atomic(target) as temporary:
        if fmt == "npz":
            _write_npz(temporary, manifest, encoder.arrays)
        elif fmt == "safetensors":
            _write_safetensors(temporary, manifest, encoder.arrays)
        else:
            _write_mat(temporary, manifest, encoder.arrays)


def load(path: str | os.PathLike[str], *, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load the variables saved in ``path`` (MATLAB's ``S = load(file)``).

    Parameters
    ----------
    path : str or path-like
        A ``.npz``, ``.safetensors`` or ``.mat`` file: one written by :func:`save` (restored
        exactly), or one written by other tools (``numpy.savez``, safetensors, MATLAB): see the
        module documentation for how those are read.
    like : mapping of str to object, optional
        Templates by variable name: each array of a variable is put into the library, device
        and dtype of the corresponding leaf of its template — a ``torch.Tensor`` (on the
        template's device, a plain tensor without ``requires_grad``), a JAX array (on the
        template's sharding), a NumPy array or scalar, or a Python scalar. Shapes are the
        file's (a frozen parameter's scalar state stays 0-d). A ``torch.nn.Module`` as template
        stands for its parameters: a dict keyed by parameter name comes back in
        ``named_parameters()`` order with each tensor like its parameter; a list or a table is
        matched with the learnables (``requires_grad`` parameters) by position. A namedtuple
        template also gives the namedtuple type. Variables without a template (or a template
        ``None`` anywhere) come back as NumPy arrays, NumPy scalars and Python scalars as saved.
        ``dict.fromkeys(["params", "avg_grad", "avg_sq_grad"], params)`` is a typical value.

    Returns
    -------
    dict
        ``{name: value}`` in the order saved. Containers come back as saved: ``dict`` (keys and
        their order), ``list``, ``tuple``, ``OrderedDict``, pandas tables. A namedtuple comes
        back as its own class if ``like`` gives it or its module is already imported (``load``
        never imports a module a file names); otherwise as a ``dict`` of its fields, with a
        warning. Other ``list``/``tuple``/``dict`` subclasses likewise need ``like``.

    Raises
    ------
    ValueError
        The file is truncated, corrupt, not of its suffix's format, holds pickled objects, or
        its manifest does not match its entries; or ``like`` does not match the saved
        structure. The message names the file and the entry or path.
    ImportError
        A package needed to read the file or build the result is missing.

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> from adamupdate import io
    >>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
    >>> params = {"w": torch.ones(2, dtype=torch.bfloat16), "b": torch.zeros(1)}
    >>> io.save(path, params=params, iteration=7)
    >>> state = io.load(path, like={"params": params})
    >>> state["params"]["w"], state["iteration"]
    (tensor([1., 1.], dtype=torch.bfloat16), 7)
    """
    source = Path(os.fspath(path))
    fmt = _format_of(source)
    if like is not None and not isinstance(like, Mapping):
        raise TypeError(
            f"like must be a mapping of variable name to template, got {type(like).__name__} "
            f"(e.g. like={{'params': params}})"
        )
    if not source.is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file", str(source))
    try:
        if fmt == "npz":
            manifest, entries = _read_npz(source)
        elif fmt == "safetensors":
            manifest, entries = _read_safetensors(source)
        else:
            manifest, entries = _read_mat(source)
        if manifest is None:  # written by another tool: entries are the variables
            variables: Mapping[str, Any] = entries
            _check_like_names(like, variables)
            return {
                name: _like_plain(value, (like or {}).get(name), name)
                for name, value in variables.items()
            }
        return _Decoder(manifest, entries, like).variables()
    except (_BadFile, ValueError) as error:  # a broken file, or like= does not fit it
        raise ValueError(f"{source}: {error}") from None
    except RecursionError:
        raise ValueError(f"{source}: nested too deeply to read") from None


# --------------------------------------------------------------------------------------------
# Helpers shared by both directions
# --------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; use .npz, .safetensors or .mat"
        )
    return fmt


def _require(module: str, purpose: str, extra: str = "io") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.partition(".")[0]
        raise ImportError(
            f"{purpose} needs {package}: pip install 'adamupdate[{extra}]'"
        ) from error


def _check_variable_name(name: str, fmt: str) -> None:
    if not name:
        raise ValueError("variable names must not be empty")
    if name in (_NPZ_MANIFEST, _MAT_MANIFEST):
        raise ValueError(f"variable name {name!r} is reserved for the file's manifest")
    if fmt == "mat" and not _MATLAB_NAME.match(name):
        raise ValueError(
            f"variable name {name!r}: .mat variables must be MATLAB identifiers (a letter, then "
            f"letters, digits or underscores; at most 63 characters)"
        )


def _torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _jax_array(obj: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(obj, jax.Array)


def _frame(obj: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def _namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def _sub(where: str, key: Any) -> str:
    return f"{where}[{key!r}]"


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _dtype_tag(dtype: np.dtype, where: str) -> str:
    """The manifest's name of a dtype: NumPy's ``dtype.str`` (``'<f4'``) or ``'bfloat16'``."""
    if dtype.name in _NAMED_DTYPES and dtype.kind == "V" and dtype.itemsize == 2:
        return dtype.name
    if dtype.kind in "biufc" and dtype.fields is None and dtype.subdtype is None:
        return dtype.str
    raise TypeError(f"{where}: cannot save an array of dtype {dtype}")


def _parse_tag(tag: Any, where: str) -> np.dtype:
    """The stored dtype of a manifest tag (a named dtype's bits), validated."""
    if isinstance(tag, str) and tag in _NAMED_DTYPES:
        return _NAMED_DTYPES[tag]
    plain = isinstance(tag, str) and _PLAIN_DTYPE.fullmatch(tag)  # no other text reaches np.dtype
    dtype = np.dtype(tag) if plain else None
    if dtype is None or dtype.str != tag:
        raise _BadFile(f"{where}: unknown dtype {tag!r} in the manifest")
    return dtype


def _little(array: np.ndarray) -> np.ndarray:
    """C-contiguous, little-endian (the byte order safetensors and our files use)."""
    array = np.asarray(array, order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _real_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"<f{dtype.itemsize // 2}")


# --------------------------------------------------------------------------------------------
# Encoding: Python objects → manifest nodes + named arrays
# --------------------------------------------------------------------------------------------


class _Encoder:
    """Walks the saved values once, building the manifest and the entries to write."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.arrays: dict[str, np.ndarray] = {}
        self._active: set[int] = set()

    def encode(self, value: Any, name: str) -> dict[str, Any]:
        return self._node(value, name, (name,), 0)

    def _entry(self, parts: tuple[Any, ...], array: np.ndarray) -> str:
        base = "/".join(re.sub(r"[^A-Za-z0-9_.\-]", "_", str(part)) for part in parts)
        name, count = base, 1
        while name in self.arrays or name == _NPZ_MANIFEST:
            count += 1
            name = f"{base}~{count}"
        self.arrays[name] = array
        return name

    def _node(self, obj: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise ValueError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
        container = isinstance(obj, (list, tuple, dict)) or _frame(obj) or _torch_module(obj)
        if not container:
            return self._leaf(obj, where, parts)
        if id(obj) in self._active:
            raise ValueError(f"{where}: contains itself")
        self._active.add(id(obj))
        try:
            return self._container(obj, where, parts, depth + 1)
        finally:
            self._active.discard(id(obj))

    def _container(self, obj: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        if isinstance(obj, (list, tuple)) and not _namedtuple(obj):
            kind = "list" if isinstance(obj, list) else "tuple"
            node: dict[str, Any] = {"t": kind}
            if type(obj) not in (list, tuple):
                node["type"] = _type_name(type(obj))
            node["items"] = [
                self._node(item, _sub(where, i), (*parts, i), depth) for i, item in enumerate(obj)
            ]
            return node
        if _namedtuple(obj):
            fields = list(type(obj)._fields)
            return {
                "t": "namedtuple",
                "type": _type_name(type(obj)),
                "fields": fields,
                "items": [
                    self._node(item, f"{where}.{field}", (*parts, field), depth)
                    for field, item in zip(fields, obj)
                ],
            }
        if isinstance(obj, dict):
            node = {"t": "dict"}
            if type(obj) is not dict:
                node["type"] = _type_name(type(obj))
            node["keys"] = [_encode_key(key, where) for key in obj]
            node["items"] = [
                self._node(value, _sub(where, key), (*parts, key), depth)
                for key, value in obj.items()
            ]
            return node
        if _torch_module(obj):
            named = list(obj.named_parameters())
            return {
                "t": "dict",
                "module": type(obj).__qualname__,
                "keys": [name for name, _ in named],
                "items": [
                    self._node(p, _sub(where, name), (*parts, name), depth) for name, p in named
                ],
            }
        return self._table(obj, where, parts, depth)

    def _table(self, frame: Any, where: str, parts: tuple, depth: int) -> dict[str, Any]:
        pandas = sys.modules["pandas"]
        if type(frame) is not pandas.DataFrame:
            raise TypeError(f"{where}: cannot save a {type(frame).__name__} (a DataFrame subclass)")
        columns = []
        for position, label in enumerate(frame.columns):
            series = frame.iloc[:, position]
            at = f"{where}[{label!r}]"
            column: dict[str, Any] = {"name": _encode_key(label, where)}
            dtype = series.dtype
            if isinstance(dtype, pandas.StringDtype):
                na = "nan" if dtype.na_value is not pandas.NA else "NA"
                column.update(kind="string", storage=dtype.storage, na=na)
                column["values"] = [value if isinstance(value, str) else None for value in series]
            elif isinstance(dtype, np.dtype) and dtype.kind in "biufc":
                column["kind"] = "numeric"
                column["values"] = self._array(series.to_numpy(), "numpy", at, (*parts, label))
            elif isinstance(dtype, np.dtype) and dtype.kind == "O":
                column["kind"] = "object"
                column["values"] = [
                    self._node(value, f"{at}[{row}]", (*parts, label, row), depth)
                    for row, value in enumerate(series)
                ]
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
        if kind is bool:
            return {"t": "bool", "value": obj}
        if kind is int:
            return {"t": "int", "value": obj}
        if kind is str:
            return {"t": "str", "value": obj}
        if kind is float:
            return self._array(np.array(obj, np.float64), "float", where, parts)
        if kind is complex:
            return self._array(np.array(obj, np.complex128), "complex", where, parts)
        if isinstance(obj, np.generic):
            return self._array(np.asarray(obj), "numpy-scalar", where, parts)
        if kind is np.ndarray:
            return self._array(obj, "numpy", where, parts)
        if _torch_tensor(obj):
            array, tag = _torch_to_numpy(obj, where)
            return self._array(array, "torch", where, parts, tag=tag)
        if _jax_array(obj):
            return self._array(np.asarray(obj), "jax", where, parts)
        raise TypeError(
            f"{where}: cannot save a {kind.__module__}.{kind.__qualname__} (expected an array, a "
            f"tensor, a scalar, a string, None or a list/tuple/dict/table of those)"
        )

    def _array(
        self, array: np.ndarray, lib: str, where: str, parts: tuple, tag: str | None = None
    ) -> dict[str, Any]:
        tag = tag or _dtype_tag(array.dtype, where)
        data = _little(array)
        if tag in _NAMED_DTYPES:
            data = data.view(_NAMED_DTYPES[tag])
        node: dict[str, Any] = {"t": "array", "lib": lib, "dtype": tag, "shape": list(array.shape)}
        if self.fmt == "safetensors" and data.dtype.kind == "c":
            data = data.reshape((*array.shape, 1)).view(_real_dtype(data.dtype))
            node["pairs"] = True
        elif self.fmt == "mat" and (tag == "bfloat16" or data.dtype == np.dtype("<f2")):
            data = _widen_half(data, tag)  # MATLAB has no half precision
            node["store"] = data.dtype.str
        node["entry"] = self._entry(parts, data)
        return node


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
            raise _BadFile("a bfloat16 array stored as single has bits bfloat16 cannot hold")
        return np.asarray(bits >> 16).astype("<u2")
    return stored.astype("<f2")


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
    return array, _dtype_tag(array.dtype, where)


def _encode_key(key: Any, where: str) -> Any:
    kind = type(key)
    if kind is str:
        return key
    if kind is bool:
        return {"bool": key}
    if kind is int:
        return {"int": key}
    if kind is float:
        return {"float": struct.pack("<d", key).hex()}
    if key is None:
        return {"none": None}
    if kind is tuple:
        return {"tuple": [_encode_key(item, where) for item in key]}
    raise TypeError(
        f"{where}: cannot save a key of type {kind.__name__} ({key!r}); keys may be str, int, "
        f"float, bool, None or tuples of those"
    )


def _decode_key(encoded: Any, where: str) -> Any:
    if isinstance(encoded, str):
        return encoded
    if isinstance(encoded, dict) and len(encoded) == 1:
        ((kind, value),) = encoded.items()
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and type(value) is int:
            return value
        if kind == "float" and isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value):
            return struct.unpack("<d", bytes.fromhex(value))[0]
        if kind == "none" and value is None:
            return None
        if kind == "tuple" and isinstance(value, list):
            return tuple(_decode_key(item, where) for item in value)
    raise _BadFile(f"{where}: bad key {encoded!r} in the manifest")


def _encode_index(index: Any, where: str) -> dict[str, Any]:
    pandas = sys.modules["pandas"]
    name = _encode_key(index.name, where)
    if type(index) is pandas.RangeIndex:
        return {"range": [index.start, index.stop, index.step], "name": name}
    if type(index) is not pandas.Index:
        raise TypeError(f"{where}: cannot save a table with a {type(index).__name__}")
    dtype = index.dtype
    if isinstance(dtype, pandas.StringDtype):
        na = "nan" if dtype.na_value is not pandas.NA else "NA"
        kind: Any = {"storage": dtype.storage, "na": na}
    elif isinstance(dtype, np.dtype) and dtype.kind in "Obiuf":
        kind = dtype.str
    else:
        raise TypeError(f"{where}: cannot save a table index of dtype {dtype}")
    labels = [_encode_key(label, where) for label in index.tolist()]
    return {"labels": labels, "dtype": kind, "name": name}


# --------------------------------------------------------------------------------------------
# Decoding: manifest + entries → Python objects (optionally like templates)
# --------------------------------------------------------------------------------------------


class _Raw:
    """A loaded array before it is given its final type: ``data`` holds a named dtype's bits."""

    __slots__ = ("data", "tag")

    def __init__(self, data: np.ndarray, tag: str) -> None:
        self.data = data
        self.tag = tag

    def numpy(self) -> np.ndarray:
        if self.tag in _NAMED_DTYPES:
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


def _get(node: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(node, dict) or key not in node or not isinstance(node[key], kind):
        raise _BadFile(f"{where}: malformed manifest (bad or missing {key!r})")
    return node[key]


def _manifest_variables(manifest: Any) -> list[Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise _BadFile("the manifest is not an adamupdate.io manifest")
    if manifest.get("version") != _VERSION:
        raise _BadFile(
            f"manifest version {manifest.get('version')!r} is not supported (this adamupdate "
            f"reads version {_VERSION})"
        )
    variables = _get(manifest, "variables", list, "manifest")
    names = set()
    for item in variables:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise _BadFile("malformed manifest (bad variable)")
        if item[0] in names:
            raise _BadFile(f"variable {item[0]!r} appears twice in the manifest")
        names.add(item[0])
    return variables


def _array_nodes(node: Any, where: str, depth: int = 0) -> Iterator[tuple[dict, str]]:
    """Every array node below ``node`` with its path, in order (validating the tree)."""
    if depth > _MAX_DEPTH:
        raise _BadFile(f"{where}: nested too deeply")
    kind = _get(node, "t", str, where)
    if kind == "array":
        yield node, where
    elif kind in ("list", "tuple", "namedtuple", "dict"):
        for i, item in enumerate(_get(node, "items", list, where)):
            yield from _array_nodes(item, _sub(where, i), depth + 1)
    elif kind == "table":
        for column in _get(node, "columns", list, where):
            values = _get(column, "values", (list, dict), where)
            if isinstance(values, dict):
                yield from _array_nodes(values, where, depth + 1)
            elif _get(column, "kind", str, where) == "object":
                for i, item in enumerate(values):
                    yield from _array_nodes(item, _sub(where, i), depth + 1)
    elif kind not in ("none", "bool", "int", "str"):
        raise _BadFile(f"{where}: unknown node type {kind!r} in the manifest")


def _stored_form(node: dict, where: str) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a node's entry in the file (before .mat's ≥ 2-D shapes)."""
    tag = _get(node, "dtype", str, where)
    stored = _parse_tag(tag, where)
    shape = _get(node, "shape", list, where)
    if not all(type(n) is int and n >= 0 for n in shape):
        raise _BadFile(f"{where}: bad shape {shape!r} in the manifest")
    shape = tuple(shape)
    if node.get("pairs") is True and stored.kind == "c":
        return _real_dtype(stored), (*shape, 2)
    store = node.get("store")
    if store is not None:
        half = tag == "bfloat16" or stored.newbyteorder("<") == np.dtype("<f2")
        if not half or store not in ("<f4", "<u2"):
            raise _BadFile(f"{where}: bad stored dtype {store!r} in the manifest")
        return np.dtype(store), shape
    return stored, shape


def _check_entries(manifest: Any, names: set[str]) -> dict[str, tuple[dict, str]]:
    """Entry name → (node, path) for every array; the manifest must name each entry once."""
    referenced: dict[str, tuple[dict, str]] = {}
    for name, node in _manifest_variables(manifest):
        for array_node, where in _array_nodes(node, name):
            entry = _get(array_node, "entry", str, where)
            if entry in referenced:
                raise _BadFile(f"entry {entry!r} is named twice in the manifest")
            referenced[entry] = (array_node, where)
    missing = [entry for entry in referenced if entry not in names]
    if missing:
        raise _BadFile(f"entry {missing[0]!r} is in the manifest but not in the file")
    extra = [name for name in names if name not in referenced]
    if extra:
        raise _BadFile(f"entry {extra[0]!r} is in the file but not in its manifest")
    return referenced


def _check_entry(entry: str, array: Any, node: dict, where: str) -> np.ndarray:
    dtype, shape = _stored_form(node, where)
    if not isinstance(array, np.ndarray):
        raise _BadFile(f"entry {entry!r} is not an array")
    if array.dtype.newbyteorder("<") != dtype.newbyteorder("<") or array.shape != shape:
        raise _BadFile(
            f"entry {entry!r} is {array.dtype} {array.shape}; the manifest says {dtype} {shape}"
        )
    return array


class _Decoder:
    def __init__(self, manifest: Any, entries: Mapping[str, np.ndarray], like: Any) -> None:
        self.manifest = manifest
        self.entries = entries
        self.like = like

    def variables(self) -> dict[str, Any]:
        variables = _manifest_variables(self.manifest)
        _check_like_names(self.like, {name: None for name, _ in variables})
        like = self.like or {}
        return {name: self.decode(node, like.get(name), name, 0) for name, node in variables}

    def raw(self, node: dict, where: str) -> _Raw:
        tag = _get(node, "dtype", str, where)
        entry = _get(node, "entry", str, where)
        data = self.entries[entry]
        dtype = _parse_tag(tag, where)
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
        return _Raw(data, tag)

    def decode(self, node: Any, template: Any, where: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _BadFile(f"{where}: nested too deeply")
        kind = _get(node, "t", str, where)
        if template is not None and _torch_module(template):
            return self._decode_for_module(node, kind, template, where, depth)
        if kind == "none":
            return None
        if kind in ("bool", "int", "str"):
            value = node.get("value")
            wanted = {"bool": bool, "int": int, "str": str}[kind]
            if type(value) is not wanted:
                raise _BadFile(f"{where}: malformed manifest (bad {kind} value)")
            return value
        if kind == "array":
            lib = _get(node, "lib", str, where)
            if lib not in _LIBS or (lib in _SCALAR_LIBS and node.get("shape") != []):
                raise _BadFile(f"{where}: malformed manifest (bad lib {lib!r} or shape)")
            return _finish_leaf(self.raw(node, where), lib, template, where)
        if kind in ("list", "tuple"):
            items = _get(node, "items", list, where)
            templates = _sequence_templates(template, len(items), where)
            values = [
                self.decode(item, t, _sub(where, i), depth + 1)
                for i, (item, t) in enumerate(zip(items, templates))
            ]
            base = list if kind == "list" else tuple
            return _container(base, node.get("type"), template, values, where)
        if kind == "namedtuple":
            return self._namedtuple(node, template, where, depth)
        if kind == "dict":
            keys = [_decode_key(k, where) for k in _get(node, "keys", list, where)]
            items = _get(node, "items", list, where)
            if len(keys) != len(items):
                raise _BadFile(f"{where}: malformed manifest (keys and items differ in length)")
            templates = _mapping_templates(template, keys, where)
            values = [
                self.decode(item, t, _sub(where, k), depth + 1)
                for k, item, t in zip(keys, items, templates)
            ]
            return _container(dict, node.get("type"), template, list(zip(keys, values)), where)
        if kind == "table":
            return self._table(node, template, where, depth)
        raise _BadFile(f"{where}: unknown node type {kind!r} in the manifest")

    def _namedtuple(self, node: dict, template: Any, where: str, depth: int) -> Any:
        fields = _get(node, "fields", list, where)
        items = _get(node, "items", list, where)
        spec = _get(node, "type", str, where)
        if len(fields) != len(items) or not all(isinstance(f, str) for f in fields):
            raise _BadFile(f"{where}: malformed manifest (namedtuple fields)")
        if template is not None and not (_namedtuple(template) or isinstance(template, Mapping)):
            raise ValueError(f"{where}: saved a namedtuple, like has {type(template).__name__}")
        templates = _mapping_templates(template, fields, where)
        values = [
            self.decode(item, t, f"{where}.{f}", depth + 1)
            for f, item, t in zip(fields, items, templates)
        ]
        cls = type(template) if _namedtuple(template) else _lookup_type(spec, tuple)
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
        pandas = _require("pandas", "loading a table", extra="pandas")
        columns = _get(node, "columns", list, where)
        index = _decode_index(_get(node, "index", dict, where), len_hint=None, where=where)
        rows = len(index)
        if template is not None and not _frame(template):
            raise ValueError(f"{where}: saved a table, like has {type(template).__name__}")
        if template is not None and "Value" in template.columns:
            value_templates = list(template["Value"])
        if value_templates is None:
            value_templates = [None] * rows
        elif len(value_templates) != rows:
            raise ValueError(f"{where}: has {rows} rows, like has {len(value_templates)}")
        data = {}
        for position, column in enumerate(columns):
            label = _decode_key(column.get("name"), where)
            at = f"{where}[{label!r}]"
            kind = _get(column, "kind", str, at)
            values = column.get("values")
            if kind == "numeric":
                raw = self.raw(_get(column, "values", dict, at), at)
                series = pandas.Series(raw.numpy(), index=index, copy=False)
            elif kind == "object":
                cells = _get(column, "values", list, at)
                cell_templates = value_templates if label == "Value" else [None] * len(cells)
                decoded = [
                    self.decode(cell, t, f"{at}[{row}]", depth + 1)
                    for row, (cell, t) in enumerate(zip(cells, cell_templates))
                ]
                series = pandas.Series(decoded, index=index, dtype=object)
            elif kind == "string":
                series = pandas.Series(
                    _get(column, "values", list, at),
                    index=index,
                    dtype=_string_dtype(pandas, column, at),
                )
            else:
                raise _BadFile(f"{at}: unknown column kind {kind!r} in the manifest")
            if len(series) != rows or not isinstance(values, (list, dict)):
                raise _BadFile(f"{at}: column length differs from the index's")
            data[position] = series
        frame = pandas.DataFrame(data, index=index)
        frame.columns = _decode_index(
            _get(node, "column_index", dict, where), len_hint=len(columns), where=where
        )
        return frame

    def _decode_for_module(self, node: dict, kind: str, net: Any, where: str, depth: int) -> Any:
        params = dict(net.named_parameters())
        learnable = [name for name, p in params.items() if p.requires_grad]
        if kind == "dict":
            keys = [_decode_key(k, where) for k in _get(node, "keys", list, where)]
            items = dict(zip(keys, _get(node, "items", list, where)))
            for key in keys:
                if key not in params:
                    raise ValueError(f"{_sub(where, key)}: the network has no parameter {key!r}")
            for name in learnable:
                if name not in items:
                    raise ValueError(f"{_sub(where, name)}: missing (the network has it)")
            return {
                name: self.decode(items[name], params[name], _sub(where, name), depth + 1)
                for name in params
                if name in items
            }
        templates = [params[name] for name in learnable]
        if kind == "table":
            return self._table(node, None, where, depth, value_templates=templates)
        if kind in ("list", "tuple"):
            return self.decode(node, templates, where, depth)
        raise ValueError(f"{where}: a network as like needs a dict, list or table, not {kind}")


def _string_dtype(pandas: Any, spec: dict, where: str) -> Any:
    storage, na = spec.get("storage"), spec.get("na")
    if storage not in _STRING_DTYPES or na not in ("nan", "NA"):
        raise _BadFile(f"{where}: unknown string dtype in the manifest")
    return pandas.StringDtype(storage, na_value=np.nan if na == "nan" else pandas.NA)


def _decode_index(spec: dict, len_hint: int | None, where: str) -> Any:
    pandas = sys.modules["pandas"]
    name = _decode_key(spec.get("name"), where)
    if "range" in spec:
        bounds = spec["range"]
        if not (
            isinstance(bounds, list)
            and len(bounds) == 3
            and all(type(b) is int for b in bounds)
            and bounds[2] != 0
        ):
            raise _BadFile(f"{where}: bad range index in the manifest")
        index = pandas.RangeIndex(*bounds, name=name)
    else:
        labels = [_decode_key(k, where) for k in _get(spec, "labels", list, where)]
        kind = spec.get("dtype")
        if isinstance(kind, dict):
            dtype: Any = _string_dtype(pandas, kind, where)
        elif isinstance(kind, str) and kind in ("|O", "<i8", "<u8", "<f8", "|b1", "<i4"):
            dtype = np.dtype(kind)
        else:
            raise _BadFile(f"{where}: bad index dtype {kind!r} in the manifest")
        index = pandas.Index(labels, dtype=dtype, name=name)
    if len_hint is not None and len(index) != len_hint:
        raise _BadFile(f"{where}: the table's column labels do not match its columns")
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
        raise _BadFile(f"{where}: malformed manifest (bad type)")
    if template is not None and _type_name(type(template)) == spec:
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


def _check_like_names(like: Mapping[str, Any] | None, variables: Mapping[str, Any]) -> None:
    for name in like or {}:
        if name not in variables:
            raise ValueError(f"like[{name!r}]: the file has no variable {name!r}")


def _sequence_templates(template: Any, size: int, where: str) -> list[Any]:
    if template is None:
        return [None] * size
    if not isinstance(template, (list, tuple)):
        raise ValueError(f"{where}: saved a list/tuple, like has a {type(template).__name__}")
    if len(template) != size:
        raise ValueError(f"{where}: has {size} elements, like has {len(template)}")
    return list(template)


def _mapping_templates(template: Any, keys: list[Any], where: str) -> list[Any]:
    if template is None:
        return [None] * len(keys)
    if _namedtuple(template):
        template = template._asdict()
    if not isinstance(template, Mapping):
        raise ValueError(f"{where}: saved a dict, like has a {type(template).__name__}")
    for key in keys:
        if key not in template:
            raise ValueError(f"{_sub(where, key)}: not in like")
    if len(template) != len(keys):
        extra = next(k for k in template if k not in set(keys))
        raise ValueError(f"{_sub(where, extra)}: in like but not in the file")
    return [template[key] for key in keys]


def _finish_leaf(raw: _Raw, lib: str, template: Any, where: str) -> Any:
    if template is not None:
        return _convert(raw, template, where)
    if lib == "float":
        return float(raw.data[()])
    if lib == "complex":
        return complex(raw.data[()])
    if lib == "numpy-scalar":
        return raw.numpy()[()]
    return raw.numpy()


def _convert(raw: _Raw, template: Any, where: str) -> Any:
    """A loaded array in the library, device and dtype of ``template``."""
    if _torch_tensor(template):
        torch = sys.modules["torch"]
        data = raw.data
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        if raw.tag == "bfloat16":
            tensor = torch.from_numpy(data.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(data)
        return tensor.to(device=template.device, dtype=template.dtype)
    if _jax_array(template):
        jax = sys.modules["jax"]
        return jax.device_put(np.asarray(raw.numpy(), dtype=template.dtype), template.sharding)
    if type(template) is np.ndarray:
        return np.asarray(raw.numpy(), dtype=template.dtype)
    scalar_type = type(template)
    if isinstance(template, np.generic) or scalar_type in (float, int, complex, bool):
        data = raw.numpy()
        if data.size != 1:
            raise ValueError(
                f"{where}: like has a scalar ({scalar_type.__name__}), the file an array of "
                f"shape {data.shape}"
            )
        value = data.reshape(())[()]
        return (
            template.dtype.type(value) if isinstance(template, np.generic) else (scalar_type(value))
        )
    raise ValueError(
        f"{where}: like has a {scalar_type.__name__}, which is not an array, tensor or scalar"
    )


def _like_plain(value: Any, template: Any, where: str) -> Any:
    """Apply ``like`` to a foreign file's plain values (dicts, lists, arrays)."""
    if template is None:
        return value
    if _torch_module(template) and isinstance(value, dict):
        params = dict(template.named_parameters())
        for key in value:
            if key not in params:
                raise ValueError(f"{_sub(where, key)}: the network has no parameter {key!r}")
        return {
            name: _like_plain(value[name], params[name], _sub(where, name))
            for name in params
            if name in value
        }
    if isinstance(value, dict):
        keys = list(value)
        templates = _mapping_templates(template, keys, where)
        return {k: _like_plain(value[k], t, _sub(where, k)) for k, t in zip(keys, templates)}
    if isinstance(value, list):
        templates = _sequence_templates(template, len(value), where)
        return [_like_plain(v, t, _sub(where, i)) for i, (v, t) in enumerate(zip(value, templates))]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "V" and value.dtype.name in _NAMED_DTYPES:  # e.g. BF16 entries
            return _convert(
                _Raw(value.view(_NAMED_DTYPES[value.dtype.name]), "bfloat16"), template, where
            )
        return _convert(_Raw(value, value.dtype.str), template, where)
    return value


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, fsync it and rename it to ``path``."""
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "No such directory", str(path.parent))
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(descriptor)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _parse_manifest(text: bytes | str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _BadFile(f"the manifest is not valid JSON ({error})") from None


def _write_npz(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    import zipfile

    manifest_array = np.frombuffer(_manifest_bytes(manifest), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in [(_NPZ_MANIFEST, manifest_array), *arrays.items()]:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _read_npz(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    entries: dict[str, np.ndarray] = {}
    current = None
    try:
        archive = np.load(path, allow_pickle=False)  # never unpickles
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _BadFile("not an .npz archive (a single .npy array)")
        with archive:
            names = list(archive.files)
            manifest = None
            if _NPZ_MANIFEST in names:
                current = _NPZ_MANIFEST
                raw = archive[_NPZ_MANIFEST]
                if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
                    raise _BadFile(f"entry {_NPZ_MANIFEST!r} is not a manifest")
                manifest = _parse_manifest(raw.tobytes())
                names.remove(_NPZ_MANIFEST)
                referenced = _check_entries(manifest, set(names))
            for name in names:
                current = name
                array = archive[name]
                if manifest is not None:
                    node, where = referenced[name]
                    array = _check_entry(name, array, node, where)
                elif not isinstance(array, np.ndarray):
                    raise _BadFile(f"entry {name!r} is not a NumPy array")
                entries[name] = array
    except _BadFile:
        raise
    except Exception as error:  # zipfile, zlib, struct and NumPy each raise their own kinds
        where = f" (entry {current!r})" if current else ""
        raise _BadFile(f"not a readable .npz file{where}: {error}") from None
    return manifest, entries


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def _write_safetensors(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    metadata = {_ST_MANIFEST: _manifest_bytes(manifest).decode("ascii")}
    save_file(arrays, str(path), metadata=metadata)


def _read_safetensors(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    safetensors = _require("safetensors", "reading .safetensors files")
    entries: dict[str, np.ndarray] = {}
    current = None
    try:
        with safetensors.safe_open(str(path), framework="numpy") as archive:
            metadata = archive.metadata() or {}
            manifest = None
            names = list(archive.keys())
            if _ST_MANIFEST in metadata:
                manifest = _parse_manifest(metadata[_ST_MANIFEST])
                referenced = _check_entries(manifest, set(names))
            for name in names:
                current = name
                array = np.array(archive.get_tensor(name))  # a copy the caller owns
                if manifest is not None:
                    node, where = referenced[name]
                    array = _check_entry(name, array, node, where)
                entries[name] = array
    except _BadFile:
        raise
    except Exception as error:  # safetensors raises its own SafetensorError and others
        where = f" (entry {current!r})" if current else ""
        raise _BadFile(f"not a readable .safetensors file{where}: {error}") from None
    return manifest, entries


# --------------------------------------------------------------------------------------------
# .mat (MATLAB v5)
# --------------------------------------------------------------------------------------------


def _matlab_names(keys: list[Any]) -> list[str]:
    """Valid, distinct MATLAB field names for ``keys`` (in order)."""
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


def _matlab_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """MATLAB's dims of a shape: at least 2, trailing singletons dropped."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (shape[0], 1)
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


def _cell(values: list[Any], column: bool = False) -> np.ndarray:
    cell = np.empty((len(values), 1) if column else (1, len(values)), dtype=object)
    for i, value in enumerate(values):
        cell.flat[i] = value
    return cell


def _to_matlab(node: dict, arrays: dict[str, np.ndarray]) -> Any:
    """The MATLAB value of a manifest node (annotating structures with their field names)."""
    kind = node["t"]
    if kind == "none":
        return np.zeros((0, 0))
    if kind == "bool":
        return np.array([[node["value"]]], dtype=bool)
    if kind == "int":
        value = node["value"]
        return np.array([[value]], np.int64) if -(2**63) <= value < 2**63 else str(value)
    if kind == "str":
        try:
            node["value"].encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: MATLAB cannot show it, the manifest has it
            return np.zeros((0, 0))
        return np.str_(node["value"])
    if kind == "array":
        shape = tuple(node["shape"])  # MATLAB needs >= 2 dims: 0-d is 1x1, 1-D a column
        return arrays[node["entry"]].reshape(_matlab_shape(shape) if len(shape) < 2 else shape)
    if kind in ("list", "tuple"):
        return _cell([_to_matlab(item, arrays) for item in node["items"]])
    if kind in ("dict", "namedtuple"):
        keys = node["fields"] if kind == "namedtuple" else node["keys"]
        names = _matlab_names([_display_key(k) for k in keys])
        node["fields"] = names
        return {name: _to_matlab(item, arrays) for name, item in zip(names, node["items"])}
    # table: a structure of columns (struct2table in MATLAB makes it a table)
    names = _matlab_names([_display_key(c["name"]) for c in node["columns"]])
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


def _display_key(encoded: Any) -> str:
    """A key as MATLAB users should see it (before it is made a valid field name)."""
    key = _decode_key(encoded, "")
    return "_".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _write_mat(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    import scipy.io
    from scipy.io.matlab import MatWriteWarning

    values = {name: _to_matlab(node, arrays) for name, node in manifest["variables"]}
    mdict = {_MAT_MANIFEST: np.str_(_manifest_bytes(manifest).decode("ascii")), **values}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MatWriteWarning)  # never let SciPy drop a field
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
            stream.write(_MAT_HEADER)


# MAT v5 element types (miINT8 ...) and array classes (mxCELL_CLASS ...), from MATLAB's
# "MAT-File Format" document; _MI_ITEMSIZE holds the numeric element types.
_MI_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
_MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 6, 14, 15
_MI_STRINGS = (1, 16)  # miINT8, miUTF8: names
_MI_CHARS = (1, 2, 4, 16, 17, 18)  # int8, uint8, uint16, utf8, utf16, utf32
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = range(6, 16)
_MX_FUNCTION, _MX_OPAQUE = 16, 17
_MAT_NESTING = 100


class _Mat5Check:
    """Walks a MAT v5 file's element tree before SciPy reads it.

    SciPy's reader (compiled) trusts the file: an element type it does not expect (a flipped
    byte) makes it index past its type table and crash the process. This check accepts only
    well-formed files (every element inside its parent, the types and sizes MATLAB writes,
    no MATLAB objects, bounded nesting), so that SciPy sees nothing it cannot handle.
    """

    def __init__(self, data: bytes, order: str) -> None:
        self.data = data
        self.order = order

    def tag(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """``(type, nbytes, data start, next element)`` of the element at ``pos``."""
        if pos + 8 > end:
            raise _BadFile("truncated (an element runs past the end of its parent)")
        first, second = struct.unpack_from(self.order + "II", self.data, pos)
        if first >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
            if first >> 16 > 4:
                raise _BadFile("malformed small data element")
            return first & 0xFFFF, first >> 16, pos + 4, pos + 8
        following = pos + 8 + (second + 7) // 8 * 8
        if pos + 8 + second > end or following > end:
            raise _BadFile("truncated (an element runs past the end of its parent)")
        return first, second, pos + 8, following

    def variable(self, pos: int, end: int) -> str:
        """Check the top-level miMATRIX at ``pos`` (spanning to ``end``); return its name."""
        kind, size, start, _ = self.tag(pos, end)
        if kind != _MI_MATRIX or size == 0 or start + size != end:
            raise _BadFile("malformed variable")
        names: list[str] = []
        if self.array(start, end, "", 0, names) != end:
            raise _BadFile(f"variable {names[0]!r} is not the size it claims")
        return names[0]

    def matrix(self, pos: int, end: int, where: str, depth: int) -> int:
        kind, size, start, following = self.tag(pos, end)
        if kind != _MI_MATRIX or size % 8:
            raise _BadFile(f"{where}: malformed element")
        if size and self.array(start, start + size, where, depth, []) != start + size:
            raise _BadFile(f"{where}: not the size it claims")
        return following

    def refuse_object(self, where: str, kind: int, start: int, size: int) -> None:
        if not where and kind in _MI_STRINGS:
            where = bytes(self.data[start : start + size]).decode("latin1")
        raise _BadFile(
            f"{where or 'a variable'} is a MATLAB object or function handle, which cannot be "
            f"read outside MATLAB; convert it there (e.g. table2struct, extractdata, char) and "
            f"save again"
        )

    def numeric(self, pos: int, end: int, count: int | None, where: str) -> int:
        kind, size, _, following = self.tag(pos, end)
        itemsize = _MI_ITEMSIZE.get(kind)
        if itemsize is None or (count is not None and size != count * itemsize):
            raise _BadFile(f"{where}: malformed numeric data")
        return following

    def array(self, pos: int, end: int, where: str, depth: int, names: list[str]) -> int:
        """Check a matrix's contents (flags, dims, name, data); return where they end."""
        if depth > _MAT_NESTING:
            raise _BadFile(f"{where}: nested more than {_MAT_NESTING} levels deep")
        kind, size, start, pos = self.tag(pos, end)
        if kind != _MI_UINT32 or size != 8:
            raise _BadFile(f"{where}: malformed array flags")
        (flags,) = struct.unpack_from(self.order + "I", self.data, start)
        mclass, complex_ = flags & 0xFF, bool(flags & 0x800)
        kind, size, start, pos = self.tag(pos, end)
        if mclass == _MX_OPAQUE:  # a classdef object: its name follows the flags
            self.refuse_object(where, kind, start, size)
        if kind not in (5, 6) or size % 4 or not 8 <= size <= 128:
            raise _BadFile(f"{where}: malformed dimensions")
        dims = struct.unpack_from(f"{self.order}{size // 4}i", self.data, start)
        if min(dims) < 0:
            raise _BadFile(f"{where}: negative dimensions")
        count = math.prod(dims)
        kind, size, start, pos = self.tag(pos, end)
        if kind not in _MI_STRINGS:
            raise _BadFile(f"{where}: malformed name")
        if mclass == _MX_FUNCTION:
            self.refuse_object(where, kind, start, size)
        name = bytes(self.data[start : start + size]).decode("latin1")
        names.append(name)
        where = where or name
        if mclass in _MX_NUMERIC:
            pos = self.numeric(pos, end, count, where)
            return self.numeric(pos, end, count, where) if complex_ else pos
        if mclass == _MX_CHAR:
            kind, _, _, pos = self.tag(pos, end)
            if kind not in _MI_CHARS:
                raise _BadFile(f"{where}: malformed characters")
            return pos
        if mclass == _MX_SPARSE:
            if len(dims) != 2:
                raise _BadFile(f"{where}: malformed sparse matrix")
            # row indices, column pointers, values (MATLAB may store logical values as bytes
            # under a double tag, so their sizes are left to SciPy, which checks them)
            for _ in range(4 if complex_ else 3):
                pos = self.numeric(pos, end, None, where)
            return pos
        if mclass == _MX_CELL:
            if count * 8 > end - pos:
                raise _BadFile(f"{where}: truncated cell array")
            for i in range(count):
                pos = self.matrix(pos, end, f"{where}{{{i + 1}}}", depth + 1)
            return pos
        if mclass not in (_MX_STRUCT, _MX_OBJECT):
            raise _BadFile(f"{where}: unknown MATLAB class {mclass}")
        if mclass == _MX_OBJECT:  # class name, then as a structure
            kind, _, _, pos = self.tag(pos, end)
            if kind not in _MI_STRINGS:
                raise _BadFile(f"{where}: malformed class name")
        kind, size, start, pos = self.tag(pos, end)
        if kind not in (5, 6) or size != 4:
            raise _BadFile(f"{where}: malformed field name length")
        (length,) = struct.unpack_from(self.order + "i", self.data, start)
        kind, size, start, pos = self.tag(pos, end)
        if kind not in _MI_STRINGS or length <= 0 or size % length:
            raise _BadFile(f"{where}: malformed field names")
        fields = [self.data[start + i : start + i + length] for i in range(0, size, length)]
        if not all(b"\0" in field for field in fields):  # SciPy reads each up to a NUL
            raise _BadFile(f"{where}: malformed field names")
        if count * len(fields) * 8 > end - pos:
            raise _BadFile(f"{where}: truncated structure")
        for i in range(count * len(fields)):
            field = bytes(fields[i % len(fields)]).split(b"\0")[0].decode("latin1")
            pos = self.matrix(pos, end, f"{where}.{field}", depth + 1)
        return pos


def _check_mat5(data: bytes) -> None:
    """Refuse anything but a well-formed MAT v5 (MATLAB -v6/-v7) file; see _Mat5Check."""
    if len(data) < 128:
        raise _BadFile("too short to be a MAT-file")
    order = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
    if order is None:
        raise _BadFile("not a MATLAB v5/v7 MAT-file")
    (version,) = struct.unpack_from(order + "H", data, 124)
    if version == 0x0200:
        raise _BadFile("MATLAB v7.3 (HDF5) MAT-files are not supported; in MATLAB, save with -v7")
    if version != 0x0100:
        raise _BadFile(f"unknown MAT-file version {version:#x}")
    check, pos = _Mat5Check(data, order), 128
    while pos < len(data):
        if pos + 8 > len(data):
            raise _BadFile("truncated")
        kind, size = struct.unpack_from(order + "II", data, pos)
        stop = pos + 8 + size
        if stop > len(data):
            raise _BadFile("truncated")
        if kind == _MI_COMPRESSED:
            try:
                inner = zlib.decompress(data[pos + 8 : stop])
            except zlib.error as error:
                raise _BadFile(f"a compressed variable is corrupt ({error})") from None
            _Mat5Check(inner, order).variable(0, len(inner))
        elif kind == _MI_MATRIX:
            check.variable(pos, stop)
        else:
            raise _BadFile(f"unexpected element type {kind} at byte {pos}")
        pos = stop


def _loadmat(data: bytes, path: Path, mat_dtype: bool) -> dict[str, Any]:
    scipy_io = _require("scipy.io", "reading .mat files")
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
            raise _BadFile(f"not a readable .mat file: {type(error).__name__}: {error}") from None
    for warning in caught:
        text = str(warning.message)
        if "Unreadable variable" in text or "Read error" in text:
            raise _BadFile(f"not a readable .mat file: {text}")
        if not mat_dtype:
            warnings.warn(f"{path}: {text}", warning.category, stacklevel=3)
    return {k: v for k, v in contents.items() if not k.startswith("__")}


def _read_mat(path: Path) -> tuple[Any, dict[str, Any]]:
    data = path.read_bytes()
    _check_mat5(data)
    contents = _loadmat(data, path, mat_dtype=False)
    if _MAT_MANIFEST not in contents:
        if data.startswith(_MAT_HEADER):
            raise _BadFile(f"written by adamupdate.io but {_MAT_MANIFEST!r} is missing")
        typed = _loadmat(data, path, mat_dtype=True)  # each array's class (logical, double...)
        return None, {
            name: _from_matlab_file(value, typed[name], name) for name, value in contents.items()
        }
    text = contents.pop(_MAT_MANIFEST)
    if not (isinstance(text, np.ndarray) and text.dtype.kind == "U" and text.size == 1):
        raise _BadFile(f"variable {_MAT_MANIFEST!r} is not a manifest")
    manifest = _parse_manifest(str(text.flat[0]))
    variables = _manifest_variables(manifest)
    names = [name for name, _ in variables]
    for name in contents:
        if name not in names:
            raise _BadFile(f"variable {name!r} is in the file but not in its manifest")
    entries: dict[str, np.ndarray] = {}
    for name, node in variables:
        if name not in contents:
            raise _BadFile(f"variable {name!r} is in the manifest but not in the file")
        _collect_mat(node, contents[name], entries, name, 0)
    return manifest, entries


def _field(value: Any, node: dict, position: int, where: str) -> Any:
    fields = _get(node, "fields", list, where)
    if not (isinstance(value, np.ndarray) and value.dtype.names and value.size == 1):
        raise _BadFile(f"{where}: expected a MATLAB structure")
    if position >= len(fields) or fields[position] not in value.dtype.names:
        raise _BadFile(f"{where}: the structure lacks the field its manifest names")
    return value.flat[0][fields[position]]


def _cells(value: Any, size: int, where: str) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.dtype == object and value.size == size):
        raise _BadFile(f"{where}: expected a cell array of {size} elements")
    return value.reshape(-1)


def _collect_mat(
    node: Any, value: Any, entries: dict[str, np.ndarray], where: str, depth: int
) -> None:
    """Walk a MATLAB value along its manifest node, collecting each array's entry."""
    if depth > _MAX_DEPTH:
        raise _BadFile(f"{where}: nested too deeply")
    kind = _get(node, "t", str, where)
    if kind == "array":
        entry = _get(node, "entry", str, where)
        dtype, shape = _stored_form(node, where)
        if entry in entries:
            raise _BadFile(f"entry {entry!r} is named twice in the manifest")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            raise _BadFile(f"entry {entry!r} ({where}) is not a numeric array")
        if dtype.kind == "b" and value.dtype == np.uint8:
            value = value.astype(bool)  # SciPy reads MATLAB's logical as uint8
        if value.dtype.newbyteorder("<") != dtype.newbyteorder("<") or _matlab_shape(
            value.shape
        ) != _matlab_shape(shape):
            raise _BadFile(
                f"entry {entry!r} ({where}) is {value.dtype} {value.shape}; the manifest says "
                f"{dtype} {shape}"
            )
        entries[entry] = np.asarray(value.reshape(shape), order="C")
    elif kind in ("list", "tuple"):
        items = _get(node, "items", list, where)
        for i, (item, cell) in enumerate(zip(items, _cells(value, len(items), where))):
            _collect_mat(item, cell, entries, _sub(where, i), depth + 1)
    elif kind in ("dict", "namedtuple"):
        for i, item in enumerate(_get(node, "items", list, where)):
            _collect_mat(item, _field(value, node, i, where), entries, _sub(where, i), depth + 1)
    elif kind == "table":
        for i, column in enumerate(_get(node, "columns", list, where)):
            at = _sub(where, i)
            data = _field(value, node, i, where)
            values = column.get("values") if isinstance(column, dict) else None
            if isinstance(values, dict):
                _collect_mat(values, data, entries, at, depth + 1)
            elif isinstance(values, list) and column.get("kind") == "object":
                for row, (cell, item) in enumerate(zip(values, _cells(data, len(values), at))):
                    _collect_mat(cell, item, entries, _sub(at, row), depth + 1)
    elif kind not in ("none", "bool", "int", "str"):
        raise _BadFile(f"{where}: unknown node type {kind!r} in the manifest")


def _arrange(items: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """MATLAB's elements (column-major) as a list, or a list of rows for a matrix."""
    if sum(n != 1 for n in shape) <= 1:
        return items
    flat = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        flat[i] = item
    return _nested(flat.reshape(shape, order="F"))


def _nested(grid: np.ndarray) -> list[Any]:
    if grid.ndim == 1:
        return list(grid)
    return [_nested(row) for row in grid]


def _from_matlab_file(value: Any, typed: Any, where: str) -> Any:
    """A MATLAB-written value (read twice: as stored, and in its MATLAB class) as Python."""
    from scipy.io.matlab import MatlabFunction, MatlabOpaque

    if isinstance(value, (MatlabOpaque, MatlabFunction)):
        kind = "a function handle" if isinstance(value, MatlabFunction) else "a MATLAB object"
        raise _BadFile(
            f"{where} is {kind}, which cannot be read outside MATLAB; convert it there first "
            f"(e.g. table2struct, extractdata, char) and save again"
        )
    if not isinstance(value, np.ndarray):  # sparse matrices
        return value
    if value.dtype.names:  # structure (array)
        names = value.dtype.names
        order = "F"
        elements = [
            {name: _from_matlab_file(v[name], t[name], f"{where}.{name}") for name in names}
            for v, t in zip(value.reshape(-1, order=order), typed.reshape(-1, order=order))
        ]
        if value.size == 1:
            return elements[0]
        return _arrange(elements, value.shape)
    if value.dtype == object:  # cell array
        elements = [
            _from_matlab_file(v, t, f"{where}{{{i + 1}}}")
            for i, (v, t) in enumerate(
                zip(value.reshape(-1, order="F"), typed.reshape(-1, order="F"))
            )
        ]
        return _arrange(elements, value.shape)
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


# --------------------------------------------------------------------------------------------
# MATLAB Learnables ↔ torch layers
# --------------------------------------------------------------------------------------------


def _layers(net: Any) -> list[tuple[str, str, Any]]:
    """``(torch name, MATLAB name, module)`` of every module owning parameters."""
    torch = _require("torch", "converting a network", extra="torch")
    owners = []
    for name, module in net.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        label = name or "(the network itself)"
        if isinstance(module, torch.nn.Conv2d):
            if module.groups != 1:
                raise ValueError(
                    f"layer {label!r}: a grouped Conv2d (groups={module.groups}) has MATLAB's "
                    f"groupedConvolution2dLayer layout, which is not supported"
                )
        elif not isinstance(module, torch.nn.Linear):
            raise ValueError(
                f"layer {label!r} ({type(module).__name__}) has learnables, but only Conv2d and "
                f"Linear layers can be converted to MATLAB's layout"
            )
        for parameter in own.values():
            if isinstance(parameter, torch.nn.parameter.UninitializedParameter):
                raise ValueError(f"layer {label!r}: its parameters are not initialized yet")
        owners.append((name, module))
    matlab = _matlab_names([name or "net" for name, _ in owners])
    return [(name, m, module) for (name, module), m in zip(owners, matlab)]


def _flat_input(layer: str, shapes: Mapping[str, Any] | None, features: int) -> tuple | None:
    if not shapes or layer not in shapes:
        return None
    shape = tuple(int(n) for n in shapes[layer])
    if len(shape) != 3 or int(np.prod(shape)) != features:
        raise ValueError(
            f"layer {layer!r}: input_shapes gives {shape}, which is not (C, H, W) with "
            f"C*H*W = {features} input features"
        )
    return shape


def _check_input_shapes(shapes: Mapping[str, Any] | None, layers: list) -> None:
    torch = sys.modules["torch"]
    linear = {name for name, _, module in layers if isinstance(module, torch.nn.Linear)}
    for name in shapes or {}:
        if name not in linear:
            raise ValueError(f"input_shapes[{name!r}]: the network has no Linear layer {name!r}")


def matlab_learnables(
    net: Any, *, input_shapes: Mapping[str, tuple[int, int, int]] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """A PyTorch network's parameters in MATLAB's ``dlnetwork`` Learnables layout.

    Each ``Conv2d`` and ``Linear`` layer becomes ``{"Weights": ..., "Bias": ...}`` (``Bias``
    only if the layer has one) under a MATLAB field name made from its module name (``conv_1``
    stays ``conv_1``; ``features.0`` becomes ``features_0``). Layouts:

    ================  =========================  ==========================
    layer             MATLAB                     PyTorch
    ================  =========================  ==========================
    Conv2d weights    ``[h w cin cout]``         ``[cout cin h w]``
    Conv2d bias       ``[1 1 cout]``             ``[cout]``
    Linear weights    ``[out in]``               ``[out in]``
    Linear bias       ``[out 1]``                ``[out]``
    ================  =========================  ==========================

    Both convolve the same way (cross-correlation, no kernel flip), so a MATLAB network with the
    same layers computes the same function. A ``Linear`` layer that follows convolutions is the
    one subtlety: MATLAB's ``fullyConnectedLayer`` flattens its ``[H W C]`` input in column-major
    order and ``torch.flatten`` flattens ``[C H W]`` in row-major order; name such layers in
    ``input_shapes`` with the ``(C, H, W)`` of their input to reorder the weight's columns.

    Save the result with ``save("net.mat", learnables=matlab_learnables(net))``; in MATLAB,
    ``S = load("net.mat")`` then, for each row ``i`` of ``net.Learnables``,
    ``net.Learnables.Value{i} = dlarray(S.learnables.(L.Layer(i)).(L.Parameter(i)))``.

    Parameters
    ----------
    net : torch.nn.Module
        Every module that owns parameters must be a ``Conv2d`` (``groups=1``) or ``Linear``.
    input_shapes : mapping, optional
        ``{linear layer name: (C, H, W)}`` for fully connected layers fed by a flattened image.

    Returns
    -------
    dict
        ``{layer: {"Weights": ndarray, "Bias": ndarray}}`` in module order; NumPy copies on the
        CPU, float16/bfloat16 widened to float32 (MATLAB has neither).

    Raises
    ------
    ValueError
        A layer of another type owns parameters (named in the message), or bad ``input_shapes``.

    Examples
    --------
    >>> import torch
    >>> from adamupdate.io import matlab_learnables
    >>> net = torch.nn.Sequential()
    >>> net.add_module("conv_1", torch.nn.Conv2d(1, 20, 5))
    >>> net.add_module("fc", torch.nn.Linear(20, 10))
    >>> for layer, learnables in matlab_learnables(net).items():
    ...     print(layer, {name: value.shape for name, value in learnables.items()})
    conv_1 {'Weights': (5, 5, 1, 20), 'Bias': (1, 1, 20)}
    fc {'Weights': (10, 20), 'Bias': (10, 1)}
    """
    torch = _require("torch", "converting a network", extra="torch")
    layers = _layers(net)
    _check_input_shapes(input_shapes, layers)
    result: dict[str, dict[str, np.ndarray]] = {}
    for name, matlab, module in layers:
        weight = _cpu_numpy(module.weight, torch)
        if isinstance(module, torch.nn.Conv2d):
            weights = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
            bias_shape: tuple[int, ...] = (1, 1, weight.shape[0])
        else:
            out, features = weight.shape
            flat = _flat_input(name, input_shapes, features)
            if flat is not None:
                c, h, w = flat
                weight = weight.reshape(out, c, h, w).transpose(0, 1, 3, 2).reshape(out, -1)
            weights = np.ascontiguousarray(weight)
            bias_shape = (out, 1)
        entry = {"Weights": weights}
        if module.bias is not None:
            entry["Bias"] = _cpu_numpy(module.bias, torch).reshape(bias_shape)
        result[matlab] = entry
    return result


def _cpu_numpy(parameter: Any, torch: Any) -> np.ndarray:
    tensor = parameter.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy().copy()


def load_matlab_learnables(
    net: Any,
    learnables: Mapping[str, Mapping[str, Any]],
    *,
    input_shapes: Mapping[str, tuple[int, int, int]] | None = None,
) -> Any:
    """Copy MATLAB-layout Learnables (as from :func:`matlab_learnables`) into a PyTorch network.

    The inverse of :func:`matlab_learnables`: ``learnables`` is ``{layer: {"Weights": ...,
    "Bias": ...}}`` keyed by the MATLAB names that function gives, e.g. a structure read from a
    ``.mat`` file with :func:`load` (MATLAB: ``S.(L.Layer(i)).(L.Parameter(i)) =
    extractdata(L.Value{i})`` for each row of ``L = net.Learnables``, then ``save("net.mat",
    "S")``). Arrays may have MATLAB's shapes (trailing singleton dimensions dropped, a bias of
    ``[1 1 n]`` or ``[n 1]``). Everything is checked before any parameter is written; values are
    cast to each parameter's dtype and device.

    Parameters
    ----------
    net : torch.nn.Module
        Its ``Conv2d``/``Linear`` parameters are overwritten in place.
    learnables : mapping
        ``{layer: {"Weights": array, "Bias": array}}``; arrays are NumPy arrays or anything
        ``numpy.asarray`` accepts.
    input_shapes : mapping, optional
        As for :func:`matlab_learnables`.

    Returns
    -------
    torch.nn.Module
        ``net``.

    Raises
    ------
    ValueError
        A missing or extra layer or parameter, or a shape that does not fit, named by layer.

    Examples
    --------
    >>> import torch
    >>> from adamupdate.io import load_matlab_learnables, matlab_learnables
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> values = matlab_learnables(net)
    >>> values["x0"]["Bias"][:] = 1.0
    >>> load_matlab_learnables(net, values)[0].bias
    Parameter containing:
    tensor([1., 1.], requires_grad=True)
    """
    torch = _require("torch", "converting a network", extra="torch")
    layers = _layers(net)
    _check_input_shapes(input_shapes, layers)
    if not isinstance(learnables, Mapping):
        raise TypeError(
            f"learnables must be a mapping of layer name to parameters, got "
            f"{type(learnables).__name__}"
        )
    known = {matlab for _, matlab, _ in layers}
    for layer in learnables:
        if layer not in known:
            raise ValueError(
                f"layer {layer!r}: the network has no Conv2d/Linear layer of that name"
            )
    writes = []
    for name, matlab, module in layers:
        if matlab not in learnables or not isinstance(learnables[matlab], Mapping):
            raise ValueError(f"layer {matlab!r}: missing from the learnables")
        given = learnables[matlab]
        wanted = {"Weights": module.weight}
        if module.bias is not None:
            wanted["Bias"] = module.bias
        for key in given:
            if key not in wanted:
                raise ValueError(f"layer {matlab!r}: unexpected parameter {key!r}")
        for key, parameter in wanted.items():
            if key not in given:
                raise ValueError(f"layer {matlab!r}: missing {key!r}")
            value = np.asarray(given[key])
            if value.dtype.kind not in "biuf":
                raise ValueError(f"layer {matlab!r}: {key} has dtype {value.dtype}")
            value = _to_torch_layout(value, module, key, name, matlab, input_shapes, torch)
            writes.append((parameter, value))
    with torch.no_grad():
        for parameter, value in writes:
            parameter.copy_(torch.from_numpy(value).to(parameter.device, parameter.dtype))
    return net


def _to_torch_layout(
    value: np.ndarray,
    module: Any,
    key: str,
    name: str,
    matlab: str,
    input_shapes: Mapping[str, Any] | None,
    torch: Any,
) -> np.ndarray:
    shape = tuple(module.weight.shape)
    conv = isinstance(module, torch.nn.Conv2d)
    if key == "Bias":
        expected: tuple[int, ...] = (1, 1, shape[0]) if conv else (shape[0], 1)
        fits = value.size == shape[0] and sum(n != 1 for n in value.shape) <= 1
    else:
        expected = (shape[2], shape[3], shape[1], shape[0]) if conv else shape
        fits = _matlab_shape(value.shape) == _matlab_shape(expected)
    if not fits:
        raise ValueError(
            f"layer {matlab!r}: {key} has shape {value.shape}, MATLAB's layout of this layer "
            f"is {list(expected)}"
        )
    value = value.reshape(expected)
    if key == "Bias":
        return np.ascontiguousarray(value.reshape(-1))
    if conv:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    flat = _flat_input(name, input_shapes, shape[1])
    if flat is not None:
        c, h, w = flat
        value = value.reshape(shape[0], c, w, h).transpose(0, 1, 3, 2).reshape(shape)
    return np.ascontiguousarray(value)
