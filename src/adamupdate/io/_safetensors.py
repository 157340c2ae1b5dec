"""``.safetensors`` files: one tensor per array and the manifest as a metadata string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from ._entries import EntryReader
from ._manifest import SAFETENSORS_KEY, manifest_bytes, parse_manifest

NAME = "safetensors"
PACKAGE = "safetensors"


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

        def copy(name: str) -> np.ndarray:
            return np.array(archive.get_tensor(name))  # a copy the caller owns

        return manifest, reader.read(manifest, archive.keys(), copy)
