"""A fused, multithreaded Adam step for NumPy arrays on the CPU, compiled with numba.

Why this kernel exists: the textbook NumPy expression makes about ten passes over memory with
temporaries; one Adam step needs only one (read ``p, g, m, v``, write ``p, m, v``: 28 bytes per
float32 parameter). This kernel makes that one pass on all cores, so it runs at the machine's
memory bandwidth, and it covers a whole list of arrays in *one* call, so a network's hundreds of
tensors cost one launch, not hundreds.

Exactness: every operation is the one NumPy performs, in NumPy's order and precision (the
constants are cast to the array's dtype first, as NumPy 2 does with Python floats), and numba
compiles it with ``fastmath=False`` (no FMA contraction, no reassociation), so for real dtypes
the result is bitwise identical to::

    m_new = b1 * m + omb1 * g                 # fresh state: m_new = omb1 * g
    v_new = b2 * v + omb2 * (g * g)           # fresh state: v_new = omb2 * (g * g)
    p_new = p - (step * m_new) / (sqrt(v_new) + eps)

Complex arrays (``p, g, m`` complex, ``v`` real) are computed componentwise, as MATLAB does for
a real scalar times a complex array and a complex array divided by a real one::

    v_new = b2 * v + omb2 * (g.real * g.real + g.imag * g.imag)
    p_new.real = p.real - (step * m_new.real) / (sqrt(v_new) + eps)     # and .imag alike

This is bitwise equal to that componentwise NumPy expression, and within one rounding of
``reference_step`` on complex arrays, which differs only in ``p`` because NumPy divides a complex
by a real as a complex by a complex (multiplying by a rounded reciprocal).

How a list of arrays becomes one call, at ~0.3 µs per array: the arrays are described by a
table of ``id()`` values (one row per role ``p, g, m, v, p_out, m_out, v_out``, one column per
parameter), gathered with ``map(id, ...)``. Compiled code then reads each array's header --
``PyArrayObject``'s data pointer, dimensions, dtype and flags, whose layout is part of NumPy's
stable ABI and is verified against the Python-visible values when the kernels are built -- to
check every array (C-contiguous ndarray, expected dtype and size, writeable outputs) and to find
its data. The same checks through Python attributes cost several µs per parameter. Where the
layout cannot be trusted (another Python implementation), the same checks run in Python and the
table holds data addresses instead. The kernel splits the concatenation of all arrays into
equal blocks, so big and small arrays balance across threads; work that fits one block runs on
the calling thread.

numba is imported lazily (it takes ~0.5 s); importing this module never fails without it --
ask :func:`available` first. The compiled code is cached on disk (``cache=True``), so only the
first run on a machine pays the compile time (see :func:`compile`). Threads are numba's
(``numba.set_num_threads``); with its OpenMP layer a process must not ``fork`` after a parallel
step (numba stops it): use the ``spawn`` start method, as ``torch.multiprocessing`` does.
"""

from __future__ import annotations

import math
import operator
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .._algorithm import StepCoefficients

__all__ = [
    "ROLES",
    "SUPPORTED_DTYPES",
    "Batch",
    "available",
    "batch",
    "compile",
    "fused_step",
    "fused_step_batch",
    "fused_step_many",
    "step_arrays",
    "supports",
]

#: Dtypes the kernel computes; anything else (float16, ...) stays with the NumPy fallback.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

#: Rows of a :class:`Batch` table, in this order.
ROLES = ("param", "grad", "avg_grad", "avg_sq_grad", "param_out", "avg_grad_out", "avg_sq_grad_out")

# Elements per parallel work item: large enough to amortize finding its arrays, small enough
# that a list of arrays splits evenly across threads.
_BLOCK = 32768

_lock = threading.Lock()
# "ok": numba works; "real"/"complex"/"inspect": compiled functions; "layout": header offsets
_state: dict[str, Any] = {}


def available() -> bool:
    """True when numba imports and the kernels can be built (imports numba on first call)."""
    if "ok" not in _state:
        try:
            _build()
        except ImportError:
            _state["ok"] = False
    return bool(_state["ok"])


def supports(dtype: Any) -> bool:
    """True when ``dtype`` (of ``params``; complex states: ``avg_sq_grad`` is real) is covered."""
    return np.dtype(dtype) in SUPPORTED_DTYPES


def compile(dtypes: Sequence[Any] = SUPPORTED_DTYPES) -> float:
    """Compile (or load from the on-disk cache) the kernels for ``dtypes``; return seconds taken.

    Call it at start-up to keep the first training step from paying the compile time. On a
    2-core AMD EPYC: 2.5-4.5 s per dtype to compile (13 s for all four), 0.5 s in all when
    loaded from the cache (plus 0.3-0.4 s to import numba).
    """
    start = time.perf_counter()
    _require_numba()
    for dtype in map(np.dtype, dtypes):
        if not supports(dtype):
            raise TypeError(f"the numba kernel does not support dtype {dtype}")
        empty = [np.empty(0, dtype)]
        fused_step_many(
            empty, empty, None, None, empty, empty, [np.empty(0, _real_dtype(dtype))], _ZERO_STEP
        )
    return time.perf_counter() - start


def fused_step(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray | None,
    v: np.ndarray | None,
    p_out: np.ndarray,
    m_out: np.ndarray,
    v_out: np.ndarray,
    c: StepCoefficients,
) -> None:
    """One Adam step on one array, written into ``p_out, m_out, v_out``.

    All arrays are C-contiguous NumPy arrays with the same number of elements and the dtype of
    ``p``, except that ``v`` and ``v_out`` are real for complex ``p``. ``m`` and ``v`` are
    ``None`` on the first iteration (MATLAB's empty state). An output may *be* its input
    (in-place update: ``p_out is p``); otherwise outputs must not overlap any input.
    """
    states = (None, None) if m is None and v is None else ([m], [v])
    fused_step_many([p], [g], *states, [p_out], [m_out], [v_out], c)


def fused_step_many(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    avg_grads: Sequence[np.ndarray] | None,
    avg_sq_grads: Sequence[np.ndarray] | None,
    params_out: Sequence[np.ndarray],
    avg_grads_out: Sequence[np.ndarray],
    avg_sq_grads_out: Sequence[np.ndarray],
    c: StepCoefficients,
) -> None:
    """One Adam step on every array of parallel lists, in a single kernel call.

    Element ``i`` of each list belongs to parameter ``i``; the conventions are those of
    :func:`fused_step`, with one dtype for all. ``avg_grads`` and ``avg_sq_grads`` are ``None``
    together on the first iteration. For in-place updates pass the input lists as outputs.
    Same as ``fused_step_batch(batch(...), c)``; keep the :class:`Batch` to skip the checks.
    """
    lists = (params, grads, avg_grads, avg_sq_grads, params_out, avg_grads_out, avg_sq_grads_out)
    fused_step_batch(batch(*lists), c)


def step_arrays(leaves: Sequence[Sequence[np.ndarray | None]], c: StepCoefficients) -> None:
    """One Adam step on a group of leaves ``(p, g, m, v, p_out, m_out, v_out)`` of one dtype.

    The entry point for :mod:`adamupdate._kernels.numpy_backend`: arrays of any shape; ``m`` and
    ``v`` ``None`` for a fresh state (leaf by leaf); outputs are their inputs (in place) or new
    arrays. Contiguous leaves take at most two kernel calls (fresh and continuing states); a
    leaf with a non-contiguous array is stepped through contiguous copies. Everything is checked
    before anything is written, except that a non-contiguous leaf is checked on its turn.
    """
    groups: dict[bool, list[Sequence[np.ndarray | None]]] = {True: [], False: []}
    for leaf in leaves:
        fresh = leaf[2] is None
        if fresh != (leaf[3] is None):
            raise ValueError("avg_grad and avg_sq_grad must both be given or both be None")
        groups[fresh].append(leaf)
    plans: list[tuple[Batch | None, list[Sequence[np.ndarray | None]]]] = []
    for group in groups.values():
        if not group:
            continue
        try:
            plans.append((batch(*_columns(group)), []))
        except ValueError:  # a non-contiguous leaf, or a real problem that batch() raises again
            direct = [leaf for leaf in group if all(map(_contiguous, leaf))]
            staged = [leaf for leaf in group if not all(map(_contiguous, leaf))]
            plans.append((batch(*_columns(direct)) if direct else None, staged))
    for b, staged in plans:
        if b is not None:
            fused_step_batch(b, c)
        for leaf in staged:
            _step_through_copies(leaf, c)


@dataclass(frozen=True)
class Batch:
    """Arrays as the kernel sees them, checked once: step them as often as you like.

    ``table`` is a ``(7, n)`` ``intp`` array, one row per role in :data:`ROLES` and one column per
    parameter, of ``id()`` values of ``ndarray`` objects (``objects=True``; the kernel reads
    each array's data pointer from it at every step) or of data addresses (``objects=False``:
    ``arr.ctypes.data``, a CPU ``torch.Tensor.data_ptr()``). ``keep`` holds the arrays or tensors
    behind the table so that they live as long as the batch; they must not be resized.
    ``sizes[i]`` counts the elements of parameter ``i`` (complex elements for a complex
    ``dtype``). Rows 2 and 3 (the states) are not read when ``fresh``.

    A batch built by :func:`batch` is checked. One built by hand is not: the memory behind every
    entry must be contiguous, of ``dtype`` (its real counterpart in the ``avg_sq_grad`` rows),
    and outputs must *be* their inputs or overlap none of them. A wrong table can crash Python.
    """

    table: np.ndarray
    sizes: np.ndarray
    dtype: np.dtype
    fresh: bool
    objects: bool
    keep: tuple[Any, ...] = ()


def batch(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    avg_grads: Sequence[np.ndarray] | None,
    avg_sq_grads: Sequence[np.ndarray] | None,
    params_out: Sequence[np.ndarray],
    avg_grads_out: Sequence[np.ndarray],
    avg_sq_grads_out: Sequence[np.ndarray],
) -> Batch:
    """Check parallel lists of arrays (see :func:`fused_step_many`) and describe them as a
    :class:`Batch`; ~0.3 µs per parameter. Raises ``TypeError``/``ValueError`` naming the role
    and index of the first bad array (wrong type or dtype, not C-contiguous, wrong size,
    read-only output)."""
    _require_numba()
    n = len(params)
    fresh = avg_grads is None
    if fresh != (avg_sq_grads is None):
        raise ValueError("avg_grad and avg_sq_grad must both be given or both be None")
    dtype = getattr(params[0], "dtype", None) if n else np.dtype(np.float64)
    states = (params, grads) if fresh else (avg_grads, avg_sq_grads)  # fresh: rows not read
    columns = (params, grads, *states, params_out, avg_grads_out, avg_sq_grads_out)
    layout = _state["layout"]
    if layout is None or not supports(dtype) or any(len(col) != n for col in columns):
        _check(dtype, n, columns, fresh)  # raises, or passes on a runtime without the layout
        return _table(columns, dtype, fresh, _data_address)
    b = _table(columns, dtype, fresh, id)
    if _state["inspect"](b.table, _expected(dtype), layout, fresh, b.sizes) >= 0:
        # A fast check failed: name the problem, or accept what it is too strict about
        # (ndarray subclasses; dtypes equal to the builtin one but not the same object).
        _check(dtype, n, columns, fresh)
        b.sizes[:] = [a.size for a in params]
    return b


def still_valid(b: Batch) -> bool:
    """Recheck, in compiled code, that every array of a batch of ``id()``s still suits the kernel
    (type, dtype, C-contiguous, size, writeable outputs) — flags can change between steps."""
    layout = _state["layout"]
    if not b.objects or layout is None:
        return False
    return _state["inspect"](b.table, _expected(b.dtype), layout, b.fresh, b.sizes) < 0


def fused_step_batch(b: Batch, c: StepCoefficients) -> None:
    """One Adam step on every array of ``b``, in a single kernel call (parallel if large)."""
    _require_numba()
    if b.objects and _state["layout"] is None:
        raise RuntimeError("array objects cannot be read directly on this Python; pass addresses")
    coef = np.array(
        (
            c.grad_decay,
            c.one_minus_grad_decay,
            c.sq_grad_decay,
            c.one_minus_sq_grad_decay,
            c.step_size,
            c.epsilon,
        ),
        _real_dtype(b.dtype),
    )
    offset = int(_state["layout"][1]) if b.objects else -1
    kernel = _state["complex" if b.dtype.kind == "c" else "real"]
    kernel(b.table, b.sizes, coef, b.fresh, offset, _state["threads"])


# --- helpers ---------------------------------------------------------------------------------


class _ZeroStep:
    """Coefficients for compile(): any values do, nothing is stepped."""

    grad_decay = one_minus_grad_decay = sq_grad_decay = one_minus_sq_grad_decay = 0.0
    step_size = epsilon = 0.0


_ZERO_STEP: Any = _ZeroStep()


def _require_numba() -> None:
    if not available():
        raise RuntimeError("numba is not installed; the numba kernel is unavailable")


def _real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def _contiguous(a: np.ndarray | None) -> bool:
    return a is None or a.flags.c_contiguous


def _columns(leaves: Sequence[Sequence[np.ndarray | None]]) -> list[Any]:
    """Leaves (rows of 7) as the 7 lists :func:`batch` takes; fresh leaves get ``None`` states."""
    columns: list[Any] = list(zip(*leaves, strict=True))
    if leaves[0][2] is None:
        columns[2] = columns[3] = None
    for out, source in ((4, 0), (5, 2), (6, 3)):  # in place: gather each list's handles once
        if columns[source] is not None and all(map(operator.is_, columns[out], columns[source])):
            columns[out] = columns[source]
    return columns


def _data_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _table(columns: Sequence[Sequence[Any]], dtype: Any, fresh: bool, handle: Any) -> Batch:
    """The handle table of ``columns`` (each distinct list gathered once), sizes to be filled."""
    n = len(columns[0])
    table = np.empty((len(ROLES), n), np.intp)
    rows: dict[int, np.ndarray] = {}
    keep = []  # the arrays themselves: the caller's lists may change after this call
    for r, column in enumerate(columns):
        row = rows.get(id(column))
        if row is None:
            keep.append(tuple(column))
            row = rows[id(column)] = np.fromiter(map(handle, keep[-1]), np.intp, n)
        table[r] = row
    sizes = np.empty(n, np.intp)
    if handle is not id:
        sizes[:] = [a.size for a in columns[0]]
    return Batch(table, sizes, np.dtype(dtype), fresh, handle is id, tuple(keep))


_expected_cache: dict[np.dtype, np.ndarray] = {}


def _expected(dtype: np.dtype) -> np.ndarray:
    """What the header check compares with: each role's dtype object, then ``ndarray``."""
    want = _expected_cache.get(dtype)
    if want is None:
        d, r = dtype, _real_dtype(dtype)
        want = np.array([id(x) for x in (d, d, d, r, d, d, r, np.ndarray)], np.intp)
        _expected_cache[dtype] = want  # the dtype objects stay referenced as keys
    return want


def _check(dtype: Any, n: int, columns: Sequence[Sequence[Any]], fresh: bool) -> None:
    """Check in Python what the kernel relies on, naming the offending role and index."""
    if dtype is None or not supports(dtype):
        raise TypeError(f"the numba kernel does not support dtype {dtype}")
    real = _real_dtype(dtype)
    sizes = [getattr(a, "size", -1) for a in columns[0]]
    for role, column in zip(ROLES, columns, strict=True):
        if fresh and role in ("avg_grad", "avg_sq_grad"):
            continue
        if len(column) != n:
            raise ValueError(f"{role}: {len(column)} arrays for {n} parameters")
        want = real if role.startswith("avg_sq_grad") else dtype
        for i, (a, size) in enumerate(zip(column, sizes, strict=True)):
            if not isinstance(a, np.ndarray) or a.dtype != want:
                raise TypeError(f"{role}[{i}]: expected a numpy array of {want}")
            if not a.flags.c_contiguous or a.size != size:
                raise ValueError(f"{role}[{i}]: expected C-contiguous with {size} elements")
            if role.endswith("_out") and not a.flags.writeable:
                raise ValueError(f"{role}[{i}]: read-only output")


def _step_through_copies(leaf: Sequence[np.ndarray | None], c: StepCoefficients) -> None:
    """A leaf with a non-contiguous array: step contiguous copies, then write the outputs back."""
    inputs = [None if a is None else np.ascontiguousarray(a) for a in leaf[:4]]
    outputs = [a if _contiguous(a) else np.empty(a.shape, a.dtype) for a in leaf[4:]]
    # An output that *is* a copied input is updated in its copy (the kernel's in-place case).
    outputs = [
        inputs[i] if original is leaf[i] and inputs[i] is not original else out
        for i, original, out in zip((0, 2, 3), leaf[4:], outputs, strict=True)
    ]
    fused_step(*inputs, *outputs, c)  # type: ignore[arg-type]
    for original, out in zip(leaf[4:], outputs, strict=True):
        if out is not original:
            original[...] = out  # type: ignore[index]


def _probe_layout() -> np.ndarray | None:
    """Offsets into an ndarray object of its type, data, nd, dimensions, dtype and flags.

    ``PyArrayObject_fields`` is the object header, then ``data, nd, dimensions, strides, base,
    descr, flags``; NumPy keeps it fixed (compiled extensions read it through macros), and on
    CPython ``id()`` is the object's address. Every offset is verified here against what
    Python reports for assorted arrays; ``None`` when anything disagrees.
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


def _build() -> None:
    """Import numba and compile-on-demand the kernels below (decorating them now, not at import).

    The kernel bodies are plain module-level functions so that numba's disk cache can find
    them again in a new process (closures are not cached). Their module globals ``_prange``,
    ``_pointer``, ``_load_intp`` and ``_load_int32`` are bound here to numba objects first.
    """
    with _lock:
        if "ok" in _state:
            return
        import numba
        from numba import types
        from numba.extending import intrinsic

        @intrinsic
        def pointer(typingctx: Any, address: Any, witness: Any) -> Any:
            """``(T*) address`` for the element type ``T`` of the array ``witness``."""
            ptr_type = types.CPointer(witness.dtype)

            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                return builder.inttoptr(args[0], context.get_value_type(ptr_type))

            return ptr_type(types.intp, witness), codegen

        def loader(result: Any) -> Any:
            @intrinsic
            def load(typingctx: Any, address: Any) -> Any:
                """``*(result *) address``."""

                def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                    ptr = context.get_value_type(result).as_pointer()
                    return builder.load(builder.inttoptr(args[0], ptr))

                return result(types.intp), codegen

            return load

        ns = globals()
        ns["_prange"] = numba.prange
        ns["_pointer"] = pointer
        ns["_load_intp"] = loader(types.intp)
        ns["_load_int32"] = loader(types.int32)
        options = {"fastmath": False, "error_model": "numpy"}
        for name in ("_real_fresh", "_real_continue", "_complex_fresh", "_complex_continue"):
            ns[name] = numba.njit(inline="always", **options)(ns[name])
        for name in (
            "_resolve",
            "_real_span",
            "_complex_span",
            "_real_range",
            "_complex_range",
            "_starts",
        ):
            ns[name] = numba.njit(**options)(ns[name])
        _state["real"] = numba.njit(parallel=True, cache=True, **options)(_drive_real)
        _state["complex"] = numba.njit(parallel=True, cache=True, **options)(_drive_complex)
        _state["inspect"] = numba.njit(cache=True, **options)(_inspect)
        _state["layout"] = _probe_layout()
        _state["threads"] = True
        # OpenMP cannot run in a forked child (numba terminates it): step on one thread there.
        os.register_at_fork(after_in_child=lambda: _state.update(threads=False))
        _state["ok"] = True


# --- compiled code, jitted by _build() -------------------------------------------------------

_prange = range  # numba.prange once built


def _pointer(address: int, witness: Any) -> Any:  # replaced by a numba intrinsic
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


def _load_intp(address: int) -> int:  # replaced by a numba intrinsic
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


def _load_int32(address: int) -> int:  # replaced by a numba intrinsic
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


_C_CONTIGUOUS = 0x0001  # NPY_ARRAY_C_CONTIGUOUS
_WRITEABLE = 0x0400  # NPY_ARRAY_WRITEABLE


def _inspect(h, want, layout, fresh, sizes):  # type: ignore[no-untyped-def]
    """Check every array of the table ``h`` (of ids) from its header; fill ``sizes``.

    Each must be an ``ndarray`` (``want[7]``) with its role's dtype (``want[r]``), C-contiguous,
    writeable if an output, and as large as its parameter. Returns the first failing column,
    or -1.
    """
    word = layout[6]
    for j in range(h.shape[1]):
        size = 0
        for r in range(7):
            if fresh and (r == 2 or r == 3):
                continue
            obj = h[r, j]
            if _load_intp(obj + layout[0]) != want[7] or _load_intp(obj + layout[4]) != want[r]:
                return j
            flags = _load_int32(obj + layout[5])
            if not flags & _C_CONTIGUOUS or (r >= 4 and not flags & _WRITEABLE):
                return j
            dims = _load_intp(obj + layout[3])
            n = 1
            for d in range(_load_int32(obj + layout[2])):
                n *= _load_intp(dims + word * d)
            if r == 0:
                size = n
            elif n != size:
                return j
        sizes[j] = size
    return -1


# Element loops. Pointers: p, g, m, v inputs; po, mo, vo outputs; elements [lo, hi). The
# coefficient array k holds b1, 1-b1, b2, 1-b2, step, eps already in the array's (real) dtype.


def _real_fresh(p, g, po, mo, vo, lo, hi, k):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        gi = g[i]
        mi = k[1] * gi
        vi = k[3] * (gi * gi)
        mo[i] = mi
        vo[i] = vi
        po[i] = p[i] - (k[4] * mi) / (math.sqrt(vi) + k[5])


def _real_continue(p, g, m, v, po, mo, vo, lo, hi, k):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        gi = g[i]
        mi = k[0] * m[i] + k[1] * gi
        vi = k[2] * v[i] + k[3] * (gi * gi)
        mo[i] = mi
        vo[i] = vi
        po[i] = p[i] - (k[4] * mi) / (math.sqrt(vi) + k[5])


def _complex_fresh(p, g, po, mo, vo, lo, hi, k):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        re = 2 * i
        im = re + 1
        gr = g[re]
        gi = g[im]
        mr = k[1] * gr
        mi = k[1] * gi
        vi = k[3] * (gr * gr + gi * gi)
        mo[re] = mr
        mo[im] = mi
        vo[i] = vi
        d = math.sqrt(vi) + k[5]
        po[re] = p[re] - (k[4] * mr) / d
        po[im] = p[im] - (k[4] * mi) / d


def _complex_continue(p, g, m, v, po, mo, vo, lo, hi, k):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        re = 2 * i
        im = re + 1
        gr = g[re]
        gi = g[im]
        mr = k[0] * m[re] + k[1] * gr
        mi = k[0] * m[im] + k[1] * gi
        vi = k[2] * v[i] + k[3] * (gr * gr + gi * gi)
        mo[re] = mr
        mo[im] = mi
        vo[i] = vi
        d = math.sqrt(vi) + k[5]
        po[re] = p[re] - (k[4] * mr) / d
        po[im] = p[im] - (k[4] * mi) / d


def _resolve(handle, offset):  # type: ignore[no-untyped-def]
    """A handle is the data address itself, or (offset >= 0) an ndarray to read it from."""
    return _load_intp(handle + offset) if offset >= 0 else handle


# The span functions resolve one array's pointers and pick a loop. In-place updates get loops
# called with the *same* pointer for input and output: with distinct-but-equal pointers LLVM's
# runtime overlap check fails and it runs the scalar loop, ~4x slower.


def _real_span(h, j, lo, hi, k, fresh, offset):  # type: ignore[no-untyped-def]
    p, g = _resolve(h[0, j], offset), _pointer(_resolve(h[1, j], offset), k)
    po, mo, vo = _resolve(h[4, j], offset), _resolve(h[5, j], offset), _resolve(h[6, j], offset)
    if fresh:
        pp = _pointer(p, k)
        ppo = pp if po == p else _pointer(po, k)
        _real_fresh(pp, g, ppo, _pointer(mo, k), _pointer(vo, k), lo, hi, k)
        return
    m, v = _resolve(h[2, j], offset), _resolve(h[3, j], offset)
    pp, mp, vp = _pointer(p, k), _pointer(m, k), _pointer(v, k)
    if po == p and mo == m and vo == v:
        _real_continue(pp, g, mp, vp, pp, mp, vp, lo, hi, k)
    else:
        ppo, mpo, vpo = _pointer(po, k), _pointer(mo, k), _pointer(vo, k)
        _real_continue(pp, g, mp, vp, ppo, mpo, vpo, lo, hi, k)


def _complex_span(h, j, lo, hi, k, fresh, offset):  # type: ignore[no-untyped-def]
    p, g = _resolve(h[0, j], offset), _pointer(_resolve(h[1, j], offset), k)
    po, mo, vo = _resolve(h[4, j], offset), _resolve(h[5, j], offset), _resolve(h[6, j], offset)
    if fresh:
        pp = _pointer(p, k)
        ppo = pp if po == p else _pointer(po, k)
        _complex_fresh(pp, g, ppo, _pointer(mo, k), _pointer(vo, k), lo, hi, k)
        return
    m, v = _resolve(h[2, j], offset), _resolve(h[3, j], offset)
    pp, mp, vp = _pointer(p, k), _pointer(m, k), _pointer(v, k)
    if po == p and mo == m and vo == v:
        _complex_continue(pp, g, mp, vp, pp, mp, vp, lo, hi, k)
    else:
        ppo, mpo, vpo = _pointer(po, k), _pointer(mo, k), _pointer(vo, k)
        _complex_continue(pp, g, mp, vp, ppo, mpo, vpo, lo, hi, k)


def _real_range(h, starts, lo, hi, k, fresh, offset):  # type: ignore[no-untyped-def]
    """Elements [lo, hi) of the concatenation of all arrays (``starts``: their offsets)."""
    j = np.searchsorted(starts, lo, side="right") - 1
    while lo < hi:
        stop = min(hi, starts[j + 1])
        if stop > lo:
            _real_span(h, j, lo - starts[j], stop - starts[j], k, fresh, offset)
        lo = stop
        j += 1


def _complex_range(h, starts, lo, hi, k, fresh, offset):  # type: ignore[no-untyped-def]
    """As :func:`_real_range`, counting complex elements."""
    j = np.searchsorted(starts, lo, side="right") - 1
    while lo < hi:
        stop = min(hi, starts[j + 1])
        if stop > lo:
            _complex_span(h, j, lo - starts[j], stop - starts[j], k, fresh, offset)
        lo = stop
        j += 1


def _starts(sizes):  # type: ignore[no-untyped-def]
    starts = np.zeros(sizes.shape[0] + 1, np.intp)
    for j in range(sizes.shape[0]):
        starts[j + 1] = starts[j] + sizes[j]
    return starts


# The drivers split the concatenation of all arrays into equal blocks, run in parallel; work
# that fits one block runs on the calling thread (waking the pool would cost more than it saves,
# and on a busy machine a descheduled worker stalls the whole call).


def _drive_real(h, sizes, k, fresh, offset, threads):  # type: ignore[no-untyped-def]
    starts = _starts(sizes)
    total = starts[-1]
    if total <= _BLOCK or not threads:
        _real_range(h, starts, 0, total, k, fresh, offset)
        return
    for b in _prange((total + _BLOCK - 1) // _BLOCK):
        _real_range(h, starts, b * _BLOCK, min((b + 1) * _BLOCK, total), k, fresh, offset)


def _drive_complex(h, sizes, k, fresh, offset, threads):  # type: ignore[no-untyped-def]
    starts = _starts(sizes)
    total = starts[-1]
    if total <= _BLOCK or not threads:
        _complex_range(h, starts, 0, total, k, fresh, offset)
        return
    for b in _prange((total + _BLOCK - 1) // _BLOCK):
        _complex_range(h, starts, b * _BLOCK, min((b + 1) * _BLOCK, total), k, fresh, offset)
