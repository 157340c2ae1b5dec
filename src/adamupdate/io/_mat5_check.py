"""A MAT v5 file's element structure, checked before SciPy's reader sees the file.

SciPy's reader (compiled) trusts the file: an element type it does not expect (a flipped byte)
makes it index past its type table and crash the process (SciPy 1.17). :func:`check_mat5`
accepts only well-formed files (every element inside its parent, the types and sizes MATLAB
writes, no MATLAB objects, bounded nesting), so that SciPy sees nothing it cannot handle. The
layout is that of MATLAB's "MAT-File Format" document. A compressed variable is inflated only up
to the size its element tag declares, and only if its compressed bytes can hold that much.
"""

from __future__ import annotations

import math
import struct
import zlib

from ._manifest import BadFile

# MAT v5 element types (miINT8 ...) and array classes (mxCELL_CLASS ...), from MATLAB's
# "MAT-File Format" document; _MI_ITEMSIZE holds the numeric element types.
_MI_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
_MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 6, 14, 15
_MI_INT32S = (5, 6)  # miINT32, miUINT32: dimensions, field name lengths
_MI_STRINGS = (1, 16)  # miINT8, miUTF8: names
_MI_CHARS = (1, 2, 4, 16, 17, 18)  # int8, uint8, uint16, utf8, utf16, utf32
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = range(6, 16)
_MX_FUNCTION, _MX_OPAQUE = 16, 17
_MAT_NESTING = 100
# deflate emits at most 1032 bytes per compressed byte (a 258-byte match in two bits; zlib's
# "zlib tech details"): a variable declaring more cannot hold what it declares
_DEFLATE_MAX_RATIO = 1032


class _Mat5Check:
    """Walks the element tree of a MAT v5 file's data (``order``: its byte order)."""

    def __init__(self, data: bytes, order: str) -> None:
        self.data = data
        self.order = order

    def tag(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """``(type, nbytes, data start, next element)`` of the element at ``pos``."""
        if pos + 8 > end:
            raise BadFile("truncated (an element runs past the end of its parent)")
        first, second = struct.unpack_from(self.order + "II", self.data, pos)
        if first >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
            if first >> 16 > 4:
                raise BadFile("malformed small data element")
            return first & 0xFFFF, first >> 16, pos + 4, pos + 8
        following = pos + 8 + (second + 7) // 8 * 8
        if pos + 8 + second > end or following > end:
            raise BadFile("truncated (an element runs past the end of its parent)")
        return first, second, pos + 8, following

    def variable(self, pos: int, end: int) -> str:
        """Check the top-level miMATRIX at ``pos`` (spanning to ``end``); return its name."""
        kind, size, start, _ = self.tag(pos, end)
        if kind != _MI_MATRIX or size == 0 or start + size != end:
            raise BadFile("malformed variable")
        names: list[str] = []
        if self.array(start, end, "", 0, names) != end:
            raise BadFile(f"variable {names[0]!r} is not the size it claims")
        return names[0]

    def matrix(self, pos: int, end: int, where: str, depth: int) -> int:
        kind, size, start, following = self.tag(pos, end)
        if kind != _MI_MATRIX or size % 8:
            raise BadFile(f"{where}: malformed element")
        if size and self.array(start, start + size, where, depth, []) != start + size:
            raise BadFile(f"{where}: not the size it claims")
        return following

    def refuse_object(self, where: str, kind: int, start: int, size: int) -> None:
        if not where and kind in _MI_STRINGS:
            where = bytes(self.data[start : start + size]).decode("latin1")
        raise BadFile(
            f"{where or 'a variable'} is a MATLAB object or function handle, which cannot be "
            f"read outside MATLAB; convert it there (e.g. table2struct, extractdata, char) and "
            f"save again"
        )

    def numeric(self, pos: int, end: int, count: int | None, where: str) -> int:
        kind, size, _, following = self.tag(pos, end)
        itemsize = _MI_ITEMSIZE.get(kind)
        if itemsize is None or (count is not None and size != count * itemsize):
            raise BadFile(f"{where}: malformed numeric data")
        return following

    def array(self, pos: int, end: int, where: str, depth: int, names: list[str]) -> int:
        """Check a matrix's contents (flags, dims, name, data); return where they end."""
        if depth > _MAT_NESTING:
            raise BadFile(f"{where}: nested more than {_MAT_NESTING} levels deep")
        kind, size, start, pos = self.tag(pos, end)
        if kind != _MI_UINT32 or size != 8:
            raise BadFile(f"{where}: malformed array flags")
        (flags,) = struct.unpack_from(self.order + "I", self.data, start)
        mclass, complex_ = flags & 0xFF, bool(flags & 0x800)
        kind, size, start, pos = self.tag(pos, end)
        if mclass == _MX_OPAQUE:  # a classdef object: its name follows the flags
            self.refuse_object(where, kind, start, size)
        if kind not in _MI_INT32S or size % 4 or not 8 <= size <= 128:
            raise BadFile(f"{where}: malformed dimensions")
        dims = struct.unpack_from(f"{self.order}{size // 4}i", self.data, start)
        if min(dims) < 0:
            raise BadFile(f"{where}: negative dimensions")
        count = math.prod(dims)
        kind, size, start, pos = self.tag(pos, end)
        if kind not in _MI_STRINGS:
            raise BadFile(f"{where}: malformed name")
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
                raise BadFile(f"{where}: malformed characters")
            return pos
        if mclass == _MX_SPARSE:
            if len(dims) != 2:
                raise BadFile(f"{where}: malformed sparse matrix")
            # row indices, column pointers, values (MATLAB may store logical values as bytes
            # under a double tag, so their sizes are left to SciPy, which checks them)
            for _ in range(4 if complex_ else 3):
                pos = self.numeric(pos, end, None, where)
            return pos
        if mclass == _MX_CELL:
            if count * 8 > end - pos:
                raise BadFile(f"{where}: truncated cell array")
            for i in range(count):
                pos = self.matrix(pos, end, f"{where}{{{i + 1}}}", depth + 1)
            return pos
        if mclass not in (_MX_STRUCT, _MX_OBJECT):
            raise BadFile(f"{where}: unknown MATLAB class {mclass}")
        if mclass == _MX_OBJECT:  # class name, then as a structure
            kind, _, _, pos = self.tag(pos, end)
            if kind not in _MI_STRINGS:
                raise BadFile(f"{where}: malformed class name")
        kind, size, start, pos = self.tag(pos, end)
        if kind not in _MI_INT32S or size != 4:
            raise BadFile(f"{where}: malformed field name length")
        (length,) = struct.unpack_from(self.order + "i", self.data, start)
        kind, size, start, pos = self.tag(pos, end)
        if kind not in _MI_STRINGS or length <= 0 or size % length:
            raise BadFile(f"{where}: malformed field names")
        fields = [self.data[start + i : start + i + length] for i in range(0, size, length)]
        if not all(b"\0" in field for field in fields):  # SciPy reads each up to a NUL
            raise BadFile(f"{where}: malformed field names")
        if count * len(fields) * 8 > end - pos:
            raise BadFile(f"{where}: truncated structure")
        for i in range(count * len(fields)):
            field = bytes(fields[i % len(fields)]).split(b"\0")[0].decode("latin1")
            pos = self.matrix(pos, end, f"{where}.{field}", depth + 1)
        return pos


def _inflate(compressed: bytes, order: str, at: int) -> bytes:
    """A compressed variable's miMATRIX element, inflated no further than the size its tag
    declares, and that size first checked against what the compressed bytes can hold."""
    inflater = zlib.decompressobj()
    try:
        head = inflater.decompress(compressed, 8)
        if len(head) < 8:
            raise BadFile(f"the compressed variable at byte {at} is truncated")
        first, second = struct.unpack(order + "II", head)
        size = 8 + (second if not first >> 16 else 0)  # (a small element: rejected later)
        if size > _DEFLATE_MAX_RATIO * len(compressed) + 1024:
            raise BadFile(
                f"the compressed variable at byte {at} declares {size} bytes, more than its "
                f"{len(compressed)} compressed bytes can hold"
            )
        # one byte past the declared size tells a stream that inflates further
        rest = inflater.decompress(inflater.unconsumed_tail, size - 8 + 1)
    except zlib.error as error:
        raise BadFile(f"the compressed variable at byte {at} is corrupt ({error})") from None
    if len(rest) > size - 8:
        raise BadFile(f"the compressed variable at byte {at} inflates past its declared size")
    if not inflater.eof:
        raise BadFile(f"the compressed variable at byte {at} is truncated")
    return head + rest


def check_mat5(data: bytes) -> None:
    """Refuse anything but a well-formed MAT v5 (MATLAB -v6/-v7) file; see _Mat5Check."""
    if len(data) < 128:
        raise BadFile("too short to be a MAT-file")
    order = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
    if order is None:
        raise BadFile("not a MATLAB v5/v7 MAT-file")
    (version,) = struct.unpack_from(order + "H", data, 124)
    if version == 0x0200:
        raise BadFile("MATLAB v7.3 (HDF5) MAT-files are not supported; in MATLAB, save with -v7")
    if version != 0x0100:
        raise BadFile(f"unknown MAT-file version {version:#x}")
    check, pos = _Mat5Check(data, order), 128
    while pos < len(data):
        if pos + 8 > len(data):
            raise BadFile("truncated")
        kind, size = struct.unpack_from(order + "II", data, pos)
        stop = pos + 8 + size
        if stop > len(data):
            raise BadFile("truncated")
        if kind == _MI_COMPRESSED:
            inner = _inflate(data[pos + 8 : stop], order, pos)
            _Mat5Check(inner, order).variable(0, len(inner))
        elif kind == _MI_MATRIX:
            check.variable(pos, stop)
        else:
            raise BadFile(f"unexpected element type {kind} at byte {pos}")
        pos = stop
