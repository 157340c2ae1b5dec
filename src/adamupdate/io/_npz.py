"""``.npz`` files: one ``.npy`` member per array and the manifest as a ``uint8`` member."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ._entries import EntryReader, Expected, check_declared
from ._manifest import NPZ_ENTRY, BadFile, manifest_bytes, parse_manifest

NAME = "npz"
PACKAGE = None  # NumPy alone reads and writes them
# deflate emits at most 1032 bytes per compressed byte (a 258-byte match in two bits; zlib's
# "zlib tech details"): a member declaring more cannot hold what it declares
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20  # bytes read from a member at a time


def write(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    import zipfile

    manifest_array = np.frombuffer(manifest_bytes(manifest), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in [(NPZ_ENTRY, manifest_array), *arrays.items()]:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The manifest (``None`` in a file of another tool) and the entries, checked.

    Read member by member with :mod:`zipfile` and NumPy's ``.npy`` header functions rather
    than ``np.load``, which allocates whatever shape a member's header declares before reading
    it: here each header is compared with the manifest and the member's size in the zip's
    directory first, and nothing is ever unpickled.
    """
    import zipfile

    with EntryReader(".npz") as reader:
        if not zipfile.is_zipfile(path):
            raise BadFile("not an .npz archive (a zip of .npy arrays)")
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, path.stat().st_size)
            manifest = None
            if NPZ_ENTRY in members:
                reader.current = NPZ_ENTRY
                raw = _read_array(archive, members.pop(NPZ_ENTRY), None)
                if raw.dtype != np.uint8 or raw.ndim != 1:
                    raise BadFile(f"entry {NPZ_ENTRY!r} is not a manifest")
                manifest = parse_manifest(raw.tobytes())

            def read_entry(name: str, expected: Expected | None) -> np.ndarray:
                return _read_array(archive, members[name], expected)

            return manifest, reader.read(manifest, list(members), read_entry)


def _members(archive: Any, file_size: int) -> dict[str, Any]:
    """Entry name (the member's without ``.npy``) → ZipInfo, each checked to be a plain
    (stored or deflated, unencrypted) ``.npy`` member whose declared size its compressed bytes
    can hold, the members not overlapping (their compressed sizes fit in the file)."""
    import zipfile

    members: dict[str, Any] = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy") or info.is_dir():
            raise BadFile(f"member {name!r} is not a NumPy array (.npy)")
        if info.flag_bits & 0x1:
            raise BadFile(f"member {name!r} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            honest = info.file_size == info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            honest = info.file_size <= _DEFLATE_MAX_RATIO * info.compress_size + 1024
        else:
            raise BadFile(f"member {name!r} uses zip compression method {info.compress_type}")
        if not honest:
            raise BadFile(
                f"member {name!r} declares {info.file_size} bytes, more than its "
                f"{info.compress_size} compressed bytes can hold"
            )
        if name[:-4] in members:
            raise BadFile(f"member {name!r} appears twice")
        members[name[:-4]] = info
    if sum(info.compress_size for info in members.values()) > file_size:
        raise BadFile("its members overlap (their compressed sizes exceed the file's)")
    return members


def _read_array(archive: Any, info: Any, expected: Expected | None) -> np.ndarray:
    """One ``.npy`` member: its header checked against ``expected`` (the manifest's dtype and
    shape) and against the member's size before the array is allocated, then read in chunks."""
    fmt = np.lib.format
    entry = info.filename[:-4]
    with archive.open(info) as member:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(member)
        else:
            raise BadFile(f"entry {entry!r}: unsupported .npy format version {version}")
        if dtype.hasobject:
            raise BadFile(f"entry {entry!r} holds Python objects (pickles), which are never read")
        if expected is not None:
            check_declared(entry, dtype, shape, expected)
        nbytes = math.prod(shape) * dtype.itemsize
        if member.tell() + nbytes != info.file_size:
            raise BadFile(
                f"entry {entry!r} declares {dtype} {tuple(shape)} ({nbytes} bytes) but holds "
                f"{info.file_size - member.tell()} bytes"
            )
        array = np.empty(shape[::-1] if fortran_order else shape, dtype=dtype)
        if nbytes:
            view = array.reshape(-1).view(np.uint8).data  # (a memoryview of its bytes)
            done = 0
            while done < nbytes:
                got = member.readinto(view[done : done + _CHUNK])
                if not got:
                    raise BadFile(f"entry {entry!r} is truncated")
                done += got
        if member.read(1):  # (reading to the end also checks the member's CRC)
            raise BadFile(f"entry {entry!r} holds more than it declares")
    return array.T if fortran_order else array
