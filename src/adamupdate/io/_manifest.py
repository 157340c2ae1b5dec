"""The manifest: the JSON description of a file's variables, shared by every format.

A manifest is ``{"format": "adamupdate.io", "version": 1, "variables": [[name, node], ...]}``.
A node is a dict whose ``"t"`` says what it is: ``none``, ``bool``, ``int``, ``str`` (with a
``value``), ``array`` (with ``lib``, ``dtype``, ``shape`` and the ``entry`` holding it),
``list``/``tuple``/``namedtuple``/``dict`` (with ``items``; ``keys`` or ``fields``; a ``type`` for
a subclass) or ``table`` (``columns``, ``index``, ``column_index``). Keys that are not strings
are tagged (``{"int": 3}``, ``{"float": "<hex of the double>"}``, ``{"tuple": [...]}``).

This module holds that vocabulary (where each format keeps the manifest, keys, the checks of a
manifest read from a file) and the questions "what is this object?" asked without importing any
optional library (pandas tables: :func:`adamupdate._tree.is_table`).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Iterator
from typing import Any

FORMAT = "adamupdate.io"
VERSION = 1
NPZ_ENTRY = "__adamupdate__"  # npz entry holding the manifest (UTF-8 JSON as uint8)
SAFETENSORS_KEY = "adamupdate"  # safetensors metadata key
MAT_VARIABLE = "adamupdate_manifest"  # .mat char variable
MAX_DEPTH = 200  # nesting accepted in a manifest (a guard against hostile files)
SCALAR_LIBS = ("float", "complex", "numpy-scalar")  # where an array leaf came from
LIBS = (*SCALAR_LIBS, "numpy", "torch", "jax")
CONTAINERS = ("list", "tuple", "namedtuple", "dict")
SCALARS = ("none", "bool", "int", "str")


class BadFile(Exception):
    """A file that is not what it claims; reported as ``ValueError("<path>: ...")``."""


# What an object is, asked without importing an optional library ------------------------------


def is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_jax_array(obj: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(obj, jax.Array)


def is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def sub(where: str, key: Any) -> str:
    """The path of ``key`` inside ``where``, as the user would index it."""
    return f"{where}[{key!r}]"


def type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# Keys ------------------------------------------------------------------------------------------


def encode_key(key: Any, where: str) -> Any:
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
        return {"tuple": [encode_key(item, where) for item in key]}
    raise TypeError(
        f"{where}: cannot save a key of type {kind.__name__} ({key!r}); keys may be str, int, "
        f"float, bool, None or tuples of those"
    )


def decode_key(encoded: Any, where: str) -> Any:
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
            return tuple(decode_key(item, where) for item in value)
    raise BadFile(f"{where}: bad key {encoded!r} in the manifest")


# The manifest as read from a file ---------------------------------------------------------------


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def parse_manifest(text: bytes | str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise BadFile(f"the manifest is not valid JSON ({error})") from None


def get(node: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``node[key]``, which must be a ``kind``; else the manifest is malformed."""
    if not isinstance(node, dict) or key not in node or not isinstance(node[key], kind):
        raise BadFile(f"{where}: malformed manifest (bad or missing {key!r})")
    return node[key]


def manifest_variables(manifest: Any) -> list[Any]:
    """The ``[name, node]`` pairs of a manifest, checked to be distinct and well-formed."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadFile("the manifest is not an adamupdate.io manifest")
    if manifest.get("version") != VERSION:
        raise BadFile(
            f"manifest version {manifest.get('version')!r} is not supported (this adamupdate "
            f"reads version {VERSION})"
        )
    variables = get(manifest, "variables", list, "manifest")
    names = set()
    for item in variables:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise BadFile("malformed manifest (bad variable)")
        if item[0] in names:
            raise BadFile(f"variable {item[0]!r} appears twice in the manifest")
        names.add(item[0])
    return variables


def check_depth(depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise BadFile(f"{where}: nested too deeply")


def array_nodes(node: Any, where: str, depth: int = 0) -> Iterator[tuple[dict, str]]:
    """Every array node below ``node`` with its path, in order (validating the tree)."""
    check_depth(depth, where)
    kind = get(node, "t", str, where)
    if kind == "array":
        yield node, where
    elif kind in CONTAINERS:
        for i, item in enumerate(get(node, "items", list, where)):
            yield from array_nodes(item, sub(where, i), depth + 1)
    elif kind == "table":
        for column in get(node, "columns", list, where):
            values = get(column, "values", (list, dict), where)
            if isinstance(values, dict):
                yield from array_nodes(values, where, depth + 1)
            elif get(column, "kind", str, where) == "object":
                for i, item in enumerate(values):
                    yield from array_nodes(item, sub(where, i), depth + 1)
    elif kind not in SCALARS:
        raise BadFile(f"{where}: unknown node type {kind!r} in the manifest")
