"""``.npz`` files: one ``.npy`` member per array and the manifest as a ``uint8`` member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._entries import EntryReader
from ._manifest import NPZ_ENTRY, BadFile, manifest_bytes, parse_manifest

NAME = "npz"
PACKAGE = None  # NumPy alone reads and writes them


def write(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    import zipfile

    manifest_array = np.frombuffer(manifest_bytes(manifest), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in [(NPZ_ENTRY, manifest_array), *arrays.items()]:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The manifest (``None`` in a file of another tool) and the entries, checked."""
    with EntryReader(".npz") as reader:
        archive = np.load(path, allow_pickle=False)  # never unpickles
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise BadFile("not an .npz archive (a single .npy array)")
        with archive:
            names = list(archive.files)
            manifest = None
            if NPZ_ENTRY in names:
                reader.current = NPZ_ENTRY
                raw = archive[NPZ_ENTRY]
                if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
                    raise BadFile(f"entry {NPZ_ENTRY!r} is not a manifest")
                manifest = parse_manifest(raw.tobytes())
                names.remove(NPZ_ENTRY)
            return manifest, reader.read(manifest, names, archive.__getitem__)
