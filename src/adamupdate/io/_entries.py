"""A file's named entries, read one by one and checked against its manifest (npz, safetensors).

The manifest must name every entry once, and each entry must have the dtype and shape its node
says. The reading function is told that dtype and shape before it reads, so that it can compare
them with what the file declares before it allocates or inflates anything. Any error while
reading that is not already a :class:`BadFile` (zipfile, zlib, NumPy and safetensors each raise
their own kinds) becomes one that names the format and the entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import numpy as np

from ._manifest import BadFile, array_nodes, get, manifest_variables
from ._storage import stored_form


def _referenced(manifest: Any, names: set[str]) -> dict[str, tuple[dict, str]]:
    """Entry name → (node, path) for every array; the manifest must name each entry once."""
    referenced: dict[str, tuple[dict, str]] = {}
    for name, node in manifest_variables(manifest):
        for array_node, where in array_nodes(node, name):
            entry = get(array_node, "entry", str, where)
            if entry in referenced:
                raise BadFile(f"entry {entry!r} is named twice in the manifest")
            referenced[entry] = (array_node, where)
    missing = [entry for entry in referenced if entry not in names]
    if missing:
        raise BadFile(f"entry {missing[0]!r} is in the manifest but not in the file")
    extra = [name for name in names if name not in referenced]
    if extra:
        raise BadFile(f"entry {extra[0]!r} is in the file but not in its manifest")
    return referenced


Expected = tuple[np.dtype, tuple[int, ...]]  # an entry's dtype and shape as the manifest says


def check_declared(entry: str, dtype: np.dtype, shape: tuple[int, ...], expected: Expected) -> None:
    """An entry's dtype and shape (as read, or as its file declares them) against the
    manifest's (byte order aside: entries are read in the order they were stored)."""
    want_dtype, want_shape = expected
    if dtype.newbyteorder("<") != want_dtype.newbyteorder("<") or tuple(shape) != want_shape:
        raise BadFile(
            f"entry {entry!r} is {dtype} {tuple(shape)}; the manifest says {want_dtype} "
            f"{want_shape}"
        )


def _check_entry(entry: str, array: Any, expected: Expected) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise BadFile(f"entry {entry!r} is not an array")
    check_declared(entry, array.dtype, array.shape, expected)
    return array


class EntryReader:
    """``with EntryReader(".npz") as reader: entries = reader.read(manifest, names, get)``.

    ``current`` names the entry being read, for the error message (set it by hand while reading
    something else, such as the manifest).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.current: str | None = None

    def __enter__(self) -> EntryReader:
        return self

    def __exit__(
        self, cls: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(error, Exception) and not isinstance(error, BadFile):
            where = f" (entry {self.current!r})" if self.current else ""
            raise BadFile(f"not a readable {self.kind} file{where}: {error}") from None

    def read(
        self,
        manifest: Any,
        names: Iterable[str],
        read: Callable[[str, Expected | None], Any],
    ) -> dict[str, np.ndarray]:
        """Each of ``names`` read by ``read(name, expected)``, checked against ``manifest`` (if
        not None). ``expected`` is the manifest's ``(dtype, shape)`` for the entry, or ``None``
        in a file without a manifest; the whole manifest is checked before any entry is read."""
        names = list(names)
        referenced = _referenced(manifest, set(names)) if manifest is not None else None
        expected = (
            {name: stored_form(node, where) for name, (node, where) in referenced.items()}
            if referenced is not None
            else None
        )
        entries: dict[str, np.ndarray] = {}
        for name in names:
            self.current = name
            if expected is not None:
                array = _check_entry(name, read(name, expected[name]), expected[name])
            else:
                array = read(name, None)
                if not isinstance(array, np.ndarray):
                    raise BadFile(f"entry {name!r} is not a NumPy array")
            entries[name] = array
        return entries
