"""``.safetensors`` files: one tensor per array and the manifest as a metadata string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from ._entries import EntryReader, Expected, check_declared
from ._manifest import SAFETENSORS_KEY, BadFile, manifest_bytes, parse_manifest

NAME = "safetensors"
PACKAGE = "safetensors"
# safetensors' dtype names (its header's "dtype") → the NumPy dtype it reads them as
_DTYPES = {
    "BOOL": np.dtype("|b1"),
    **{f"U{8 * n}": np.dtype(f"<u{n}") for n in (1, 2, 4, 8)},
    **{f"I{8 * n}": np.dtype(f"<i{n}") for n in (1, 2, 4, 8)},
    **{f"F{8 * n}": np.dtype(f"<f{n}") for n in (2, 4, 8)},
}


def write(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    metadata = {SAFETENSORS_KEY: manifest_bytes(manifest).decode("ascii")}
    save_file(arrays, str(path), metadata=metadata)


def read(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The manifest (``None`` in a file of another tool) and the entries, checked."""
    safetensors = require(PACKAGE, "io", "reading a .safetensors file")
    with (
        EntryReader(".safetensors") as reader,
        safetensors.safe_open(str(path), framework="numpy") as archive,
    ):
        metadata = archive.metadata() or {}
        manifest = None
        if SAFETENSORS_KEY in metadata:
            manifest = parse_manifest(metadata[SAFETENSORS_KEY])

        def copy(name: str, expected: Expected | None) -> np.ndarray:
            if expected is not None:  # the header's dtype and shape, before any data is read
                declared = archive.get_slice(name)
                dtype = _DTYPES.get(declared.get_dtype())
                if dtype is None:
                    raise BadFile(f"entry {name!r} has dtype {declared.get_dtype()}")
                check_declared(name, dtype, tuple(declared.get_shape()), expected)
            return np.array(archive.get_tensor(name))  # a copy the caller owns

        return manifest, reader.read(manifest, archive.keys(), copy)
