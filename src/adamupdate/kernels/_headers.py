"""Reading NumPy array headers in compiled code: the numba kernel's fast check of its inputs.

:func:`adamupdate.kernels.numba_step.inspect` checks a table of arrays (by ``id()``) with
:func:`inspect_table` — type, dtype object, C-contiguity, writeable outputs, every shape equal
to its parameter's — and collects their data addresses. ``PyArrayObject``'s layout is part of
NumPy's stable ABI (compiled extensions read it through macros) and :func:`probe_layout`
verifies it against the Python-visible values before anything is read; the same checks through
Python attributes cost several µs per array.

``_load_intp`` and ``_load_int32`` are numba intrinsics bound by
:func:`adamupdate.kernels.numba_step._build` (numba is imported lazily).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_C_CONTIGUOUS = 0x0001  # NPY_ARRAY_C_CONTIGUOUS
_WRITEABLE = 0x0400  # NPY_ARRAY_WRITEABLE


def _load_intp(address: int) -> int:  # replaced by a numba intrinsic
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


def _load_int32(address: int) -> int:  # replaced by a numba intrinsic
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


def real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def slots(squared: tuple[bool, ...]) -> tuple[bool, bool]:
    """A rule's ``squared`` flags on the table's two state rows: a rule with one state repeats
    it, a rule with none has parameter-like rows there (never written)."""
    padded = (*squared, *squared) if squared else (False, False)
    return padded[0], padded[1]


_expected_cache: dict[tuple, tuple[np.ndarray, tuple]] = {}


def expected(dtype: np.dtype, squared: tuple[bool, ...]) -> np.ndarray:
    """What the header check compares with: each row's dtype object, then ``ndarray``.

    The check compares dtype objects by identity, so the cache is keyed by the identity of
    ``dtype`` (an equal dtype object from a pickle must not stand for NumPy's own), and keeps
    the objects whose ids it holds alive."""
    key = (id(dtype), slots(squared))
    found = _expected_cache.get(key)
    if found is None:
        d, r = dtype, real_dtype(dtype)
        s1, s2 = (r if sq else d for sq in key[1])
        objects = (d, d, s1, s2, d, s1, s2, np.ndarray)
        found = _expected_cache[key] = (np.array([id(x) for x in objects], np.intp), objects)
    return found[0]


def probe_layout() -> np.ndarray | None:
    """Offsets into an ndarray object of its type, data, nd, dimensions, dtype and flags.

    ``PyArrayObject_fields`` is the object header, then ``data, nd, dimensions, strides, base,
    descr, flags``; on CPython ``id()`` is the object's address. Every offset is verified here
    against what Python reports for assorted arrays; ``None`` when anything disagrees.
    """
    import ctypes
    import platform

    if platform.python_implementation() != "CPython":
        return None
    word = ctypes.sizeof(ctypes.c_void_p)
    head = object.__basicsize__
    # type, data, nd, dimensions, descr, flags, word size
    layout = np.array(
        [head - word, head, head + word, head + 2 * word, head + 5 * word, head + 6 * word, word],
        np.intp,
    )
    base = np.arange(24.0).reshape(4, 6)
    frozen = np.zeros(3, np.complex64)
    frozen.flags.writeable = False
    probes = [base, base[1:], base[:, ::2], base.T, np.array(1.0, np.float32), frozen]

    def word_at(address: int) -> int:
        return ctypes.c_ssize_t.from_address(address).value

    for a in probes:
        at = id(a)
        fields = (layout[0], layout[1], layout[4])  # type, data, dtype
        found = [word_at(at + int(offset)) for offset in fields]
        found += [ctypes.c_int.from_address(at + int(layout[i])).value for i in (2, 5)]
        truth = [id(type(a)), a.__array_interface__["data"][0], id(a.dtype), a.ndim, a.flags.num]
        if found != truth:
            return None
        dims = word_at(at + int(layout[3]))  # only now known to be safe to follow
        if tuple(word_at(dims + word * d) for d in range(a.ndim)) != a.shape:
            return None
    return layout


# --- compiled by numba_step._build() ----------------------------------------------------------


def inspect_table(h: Any, want: Any, layout: Any, fresh: bool, sizes: Any, addresses: Any) -> int:
    """Check every array of the table ``h`` (of ids) from its header; fill ``sizes`` and
    ``addresses``.

    Each must be an ``ndarray`` (``want[7]``) with its row's dtype (``want[r]``), C-contiguous,
    writeable if an output, and of its parameter's shape. Returns the first failing column,
    or -1.
    """
    word = layout[6]
    for j in range(h.shape[1]):
        param = h[0, j]
        ndim = _load_int32(param + layout[2])
        dims = _load_intp(param + layout[3])
        size = 1
        for d in range(ndim):
            size *= _load_intp(dims + word * d)
        for r in range(7):
            if fresh and (r == 2 or r == 3):
                addresses[r, j] = 0
                continue
            obj = h[r, j]
            if _load_intp(obj + layout[0]) != want[7] or _load_intp(obj + layout[4]) != want[r]:
                return j
            flags = _load_int32(obj + layout[5])
            if not flags & _C_CONTIGUOUS or (r >= 4 and not flags & _WRITEABLE):
                return j
            if _load_int32(obj + layout[2]) != ndim:
                return j
            own = _load_intp(obj + layout[3])
            for d in range(ndim):
                if _load_intp(own + word * d) != _load_intp(dims + word * d):
                    return j
            addresses[r, j] = _load_intp(obj + layout[1])
        sizes[j] = size
    return -1
