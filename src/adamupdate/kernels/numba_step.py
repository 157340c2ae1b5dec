"""The fused, multithreaded Adam step on raw CPU memory, compiled with numba.

Why this kernel exists: the textbook NumPy expression makes about ten passes over memory with
temporaries; one Adam step needs only one (read ``p, g, m, v``, write ``p, m, v``: 28 bytes per
float32 parameter). This kernel makes that one pass on all cores, so it runs at the machine's
memory bandwidth, and it covers a whole group of arrays in *one* call, so a network's hundreds
of tensors cost one launch, not hundreds.

Exactness: every operation is the one NumPy performs, in MATLAB's order and the array's
precision (the constants are cast to the array's dtype first, as NumPy 2 does with Python
floats), and numba compiles it with ``fastmath=False`` (no FMA contraction, no reassociation)::

    m_new = b1 * m + omb1 * g                 # fresh state: m_new = omb1 * g
    v_new = b2 * v + omb2 * (g * g)           # fresh state: v_new = omb2 * (g * g)
    p_new = p - (step * m_new) / (sqrt(v_new) + eps)

``g * g`` is squared before it is scaled, as MATLAB writes ``(1-b2) .* g.^2``: a float32
gradient of 1e20 squares to inf. Complex arrays (``p, g, m`` complex, ``v`` real) are computed
componentwise, as MATLAB multiplies a complex array by a real scalar and divides it by a real
array::

    v_new = b2 * v + omb2 * (g.real * g.real + g.imag * g.imag)
    p_new.real = p.real - (step * m_new.real) / (sqrt(v_new) + eps)     # and .imag alike

The interface is two calls, so that everything that can fail happens before anything is
written (see :mod:`adamupdate._plan`):

- :func:`inspect` checks a table of NumPy arrays (by ``id()``) from their headers in compiled
  code — type, dtype, C-contiguity, writeable outputs, every shape equal to its parameter's —
  and returns their data addresses. ``PyArrayObject``'s layout is part of NumPy's stable ABI and
  is verified against the Python-visible values when the kernels are built; the same checks
  through Python attributes cost several µs per array.
- :func:`run` steps a table of data addresses. It cannot raise: its callers have checked the
  memory behind every address (contiguous, of the dtype, sized, outputs that *are* their inputs
  or overlap none of them).

numba is imported lazily (it takes ~0.5 s); importing this module never fails without it --
ask :func:`available` first. The compiled code is cached on disk (``cache=True``), so only the
first run on a machine pays the compile time (see :func:`compile`). Threads are numba's
(``numba.set_num_threads``); numba's ``workqueue`` threading layer (the one without OpenMP or
TBB) aborts the process on concurrent launches, so launches are serialised by a lock unless the
layer is known to be thread-safe. A forked child steps on one thread (OpenMP cannot run there).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from .._extras import notice_once
from ..rules import adam, rmsprop, sgdm

if TYPE_CHECKING:
    from ..rules import Rule
    from ..rules.adam import StepCoefficients

__all__ = [
    "ROLES",
    "SUPPORTED_DTYPES",
    "available",
    "compile",
    "fused_step",
    "fused_step_many",
    "inspect",
    "run",
    "supports",
]

#: Dtypes the kernel computes; anything else (float16, ...) stays with the NumPy ufuncs.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

#: Rows of an address (or id) table, in this order.
ROLES = ("param", "grad", "avg_grad", "avg_sq_grad", "param_out", "avg_grad_out", "avg_sq_grad_out")

# Elements per parallel work item: large enough to amortize finding its arrays, small enough
# that a list of arrays splits evenly across threads.
_BLOCK = 32768

_build_lock = threading.Lock()
_launch_lock = threading.Lock()
# "ok": numba works; "real"/"complex"/"inspect": compiled functions; "layout": header offsets;
# "threads": parallel launches allowed; "safe_layer": launches may run concurrently.
_state: dict[str, Any] = {}


def available() -> bool:
    """True when numba imports and the kernels can be built (imports numba on first call)."""
    if "ok" not in _state:
        try:
            _build()
        except ImportError:
            _state["ok"] = False
    return bool(_state["ok"])


def built() -> bool:
    """True when the kernels are already built in this process (imports nothing)."""
    return bool(_state.get("ok"))


def steps(rule: Rule) -> bool:
    """True when this kernel has loops for ``rule`` (MATLAB's three solvers)."""
    return rule in _KERNEL_ORDER


def supports(dtype: Any) -> bool:
    """True when ``dtype`` (of ``params``; complex states: ``avg_sq_grad`` is real) is covered."""
    try:
        return np.dtype(dtype) in SUPPORTED_DTYPES
    except TypeError:
        return False


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
        real = [np.empty(0, _real_dtype(dtype))]
        fused_step_many(empty, empty, empty, real, empty, empty, real, _ZERO_STEP)
        fused_step_many(empty, empty, None, None, empty, empty, real, _ZERO_STEP)
        inspect(np.full((7, 1), id(empty[0]), np.intp), dtype, False)
    return time.perf_counter() - start


def inspect(
    ids: np.ndarray, dtype: np.dtype, fresh: bool, squared: tuple[bool, ...] = (False, True)
) -> tuple[np.ndarray, np.ndarray] | int:
    """Check a ``(7, n)`` table of NumPy array ``id()``\\ s (rows :data:`ROLES`) from their headers.

    Every array must be a plain ``ndarray`` of its role's dtype (``dtype``; its real
    counterpart for a state that accumulates ``|g|^2`` — ``squared`` tells, per state, as
    :attr:`adamupdate.rules.Rule.squared` does; a rule with one state repeats it in rows 3 and
    6), C-contiguous, writeable if an output, with exactly its parameter's shape. Rows 2 and 3
    are not read when ``fresh``. Returns ``(addresses,
    sizes)`` — the data addresses in the same ``(7, n)`` layout and each parameter's element
    count — or the index of the first failing column, or ``-1`` when headers cannot be read on
    this Python (the caller then checks in Python). The ids must be of live arrays.
    """
    layout = _state.get("layout")
    if layout is None:
        return -1
    addresses = np.empty(ids.shape, np.intp)
    sizes = np.empty(ids.shape[1], np.intp)
    want = _expected(np.dtype(dtype), (*squared, *squared)[:2])
    with _compiling(("inspect",)):
        failed = _state["inspect"](ids, want, layout, fresh, sizes, addresses)
    return (addresses, sizes) if failed < 0 else int(failed)


def run(
    addresses: np.ndarray,
    sizes: np.ndarray,
    dtype: np.dtype,
    fresh: bool,
    c: Any,
    rule: Rule = adam.RULE,
) -> None:
    """One step of ``rule`` (one of :func:`steps`; Adam by default) with coefficients ``c`` on
    every parameter of a ``(7, n)`` address table (rows :data:`ROLES`; a rule with one state
    reads rows 2 and 5).

    The memory behind each address must be contiguous, of ``dtype`` (real for a squared state)
    and ``sizes[j]`` elements long; an output must *be* its input or overlap no input. Nothing
    is checked here and nothing can raise: see :func:`inspect` and :func:`fused_step_many`.
    """
    number, order = _KERNEL_ORDER[rule]
    coef = np.array([getattr(c, name) for name in order], _real_dtype(dtype))
    if dtype.kind == "c" and number == _SGDM:  # no |g|^2: complex numbers are pairs of reals
        dtype, sizes = _real_dtype(dtype), 2 * sizes
    kernel = _state["complex" if dtype.kind == "c" else "real"]
    parallel = _state["threads"] and int(sizes.sum()) > _BLOCK
    with _compiling(("run", dtype.str, parallel, number)):
        if not parallel or _state["safe_layer"]:
            kernel(addresses, sizes, coef, fresh, parallel, number)
            return
        with _launch_lock:
            kernel(addresses, sizes, coef, fresh, parallel, number)
        if _state["safe_layer"] is None:
            import numba

            _state["safe_layer"] = numba.threading_layer() in ("omp", "tbb")


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
    """One Adam step on one array, written into ``p_out, m_out, v_out`` (checked).

    All arrays are C-contiguous NumPy arrays with the shape and dtype of ``p``, except that
    ``v`` and ``v_out`` are real for complex ``p``. ``m`` and ``v`` are ``None`` on the first
    iteration (MATLAB's empty state). An output may *be* its input (``p_out is p``); otherwise
    outputs must not overlap any input.
    """
    states: tuple[Any, Any] = (None, None) if m is None and v is None else ([m], [v])
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
    """One Adam step on every array of parallel lists, in a single kernel call (checked).

    Element ``i`` of each list belongs to parameter ``i``; the conventions are those of
    :func:`fused_step`, with one dtype for all. ``avg_grads`` and ``avg_sq_grads`` are ``None``
    together on the first iteration. Raises ``TypeError``/``ValueError`` naming the role and
    index of the first bad array before anything is written.
    """
    _require_numba()
    fresh = avg_grads is None
    if fresh != (avg_sq_grads is None):
        raise ValueError("avg_grad and avg_sq_grad must both be given or both be None")
    n = len(params)
    dtype = np.dtype(getattr(params[0], "dtype", np.float64)) if n else np.dtype(np.float64)
    # fresh: the state rows are not read
    states: tuple[Any, Any] = (params, grads) if fresh else (avg_grads, avg_sq_grads)
    columns = (params, grads, *states, params_out, avg_grads_out, avg_sq_grads_out)
    _check(dtype, n, columns, fresh)
    addresses = np.array(
        [[a.__array_interface__["data"][0] for a in column] for column in columns], np.intp
    ).reshape(7, n)
    sizes = np.array([a.size for a in params], np.intp)
    run(addresses, sizes, dtype, fresh, c)


# --- helpers ---------------------------------------------------------------------------------


# Coefficients for compile(): any values do, nothing is stepped.
_ZERO_STEP = adam.StepCoefficients(*[0.0] * len(adam.StepCoefficients._fields))


def _compiling(key: tuple) -> AbstractContextManager[None]:
    """A one-line notice on stderr if this kernel's first call in the process takes more than a
    second — numba compiling it (once per machine: the result is cached on disk; call
    :func:`compile` at start-up to do it ahead); later calls get a no-op context."""
    return notice_once(
        ("numba", *key),
        "adamupdate: compiling the numba kernel (once per machine, cached on disk; "
        "adamupdate.kernels.numba_step.compile() does it ahead)",
    )


def _require_numba() -> None:
    if not available():
        raise RuntimeError("numba is not installed; the numba kernel is unavailable")


def _real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


_expected_cache: dict[tuple, tuple[np.ndarray, tuple]] = {}


def _expected(dtype: np.dtype, squared: tuple[bool, ...] = (False, True)) -> np.ndarray:
    """What the header check compares with: each role's dtype object, then ``ndarray``.

    The check compares dtype objects by identity, so the cache is keyed by the identity of
    ``dtype`` (an equal dtype object from a pickle must not stand for NumPy's own), and keeps
    the objects whose ids it holds alive."""
    found = _expected_cache.get((id(dtype), squared))
    if found is None:
        d, r = dtype, _real_dtype(dtype)
        s1, s2 = (r if sq else d for sq in squared)
        objects = (d, d, s1, s2, d, s1, s2, np.ndarray)
        found = _expected_cache[id(dtype), squared] = (
            np.array([id(x) for x in objects], np.intp),
            objects,
        )
    return found[0]


def _check(dtype: Any, n: int, columns: Sequence[Sequence[Any]], fresh: bool) -> None:
    """Check in Python what the kernel relies on, naming the offending role and index."""
    if not supports(dtype):
        raise TypeError(f"the numba kernel does not support dtype {dtype}")
    real = _real_dtype(dtype)
    shapes = [getattr(a, "shape", None) for a in columns[0]]
    inputs = [a for column in columns[:4] for a in column]
    for role, column in zip(ROLES, columns, strict=True):
        if fresh and role in ("avg_grad", "avg_sq_grad"):
            continue  # not read on a first iteration
        if len(column) != n:
            raise ValueError(f"{role}: {len(column)} arrays for {n} parameters")
        want = real if role.startswith("avg_sq_grad") else dtype
        for i, (a, shape) in enumerate(zip(column, shapes, strict=True)):
            if not isinstance(a, np.ndarray) or a.dtype != want:
                raise TypeError(f"{role}[{i}]: expected a numpy array of {want}")
            if not a.flags.c_contiguous or a.shape != shape:
                raise ValueError(f"{role}[{i}]: expected C-contiguous with shape {shape}")
            if role.endswith("_out"):
                if not a.flags.writeable:
                    raise ValueError(f"{role}[{i}]: read-only output")
                own = columns[ROLES.index(role[: -len("_out")])][i]
                if any(b is not own and np.shares_memory(a, b) for b in inputs):
                    raise ValueError(f"{role}[{i}]: overlaps an input it is not")


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
    with _build_lock:
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
        options: dict[str, Any] = {"fastmath": False, "error_model": "numpy"}
        for name in (
            "_real_fresh",
            "_real_continue",
            "_complex_fresh",
            "_complex_continue",
            "_rmsprop_real_fresh",
            "_rmsprop_real_continue",
            "_rmsprop_complex_fresh",
            "_rmsprop_complex_continue",
            "_sgdm_fresh",
            "_sgdm_continue",
        ):
            ns[name] = numba.njit(inline="always", **options)(ns[name])
        for name in ("_real_span", "_complex_span", "_real_range", "_complex_range", "_starts"):
            ns[name] = numba.njit(**options)(ns[name])
        _state["real"] = numba.njit(parallel=True, cache=True, **options)(_drive_real)
        _state["complex"] = numba.njit(parallel=True, cache=True, **options)(_drive_complex)
        _state["inspect"] = numba.njit(cache=True, **options)(_inspect)
        _state["layout"] = _probe_layout()
        _state["threads"] = True
        # numba.config sets its options through globals(), which type checkers cannot see.
        layer = numba.config.THREADING_LAYER  # type: ignore[attr-defined]
        _state["safe_layer"] = True if layer in ("omp", "tbb") else None  # None: not known yet
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


_ADAM, _RMSPROP, _SGDM = 0, 1, 2  # the loops' number of each rule
# Each rule's number and its coefficients in the order the loops read them (k[0], k[1], ...).
_KERNEL_ORDER: dict[Any, tuple[int, tuple[str, ...]]] = {
    adam.RULE: (
        _ADAM,
        (
            "grad_decay",
            "one_minus_grad_decay",
            "sq_grad_decay",
            "one_minus_sq_grad_decay",
            "step_size",
            "epsilon",
        ),
    ),
    rmsprop.RULE: (_RMSPROP, ("sq_grad_decay", "one_minus_sq_grad_decay", "learn_rate", "epsilon")),
    sgdm.RULE: (_SGDM, ("momentum", "learn_rate")),
}
_C_CONTIGUOUS = 0x0001  # NPY_ARRAY_C_CONTIGUOUS
_WRITEABLE = 0x0400  # NPY_ARRAY_WRITEABLE


def _inspect(h, want, layout, fresh, sizes, addresses):
    """Check every array of the table ``h`` (of ids) from its header; fill ``sizes`` and
    ``addresses``.

    Each must be an ``ndarray`` (``want[7]``) with its role's dtype (``want[r]``), C-contiguous,
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


# Element loops. Pointers: p, g, m, v inputs; po, mo, vo outputs; elements [lo, hi). The
# coefficient array k holds b1, 1-b1, b2, 1-b2, step, eps already in the array's (real) dtype.


def _real_fresh(p, g, po, mo, vo, lo, hi, k):
    for i in range(lo, hi):
        gi = g[i]
        mi = k[1] * gi
        vi = k[3] * (gi * gi)
        mo[i] = mi
        vo[i] = vi
        po[i] = p[i] - (k[4] * mi) / (math.sqrt(vi) + k[5])


def _real_continue(p, g, m, v, po, mo, vo, lo, hi, k):
    for i in range(lo, hi):
        gi = g[i]
        mi = k[0] * m[i] + k[1] * gi
        vi = k[2] * v[i] + k[3] * (gi * gi)
        mo[i] = mi
        vo[i] = vi
        po[i] = p[i] - (k[4] * mi) / (math.sqrt(vi) + k[5])


def _complex_fresh(p, g, po, mo, vo, lo, hi, k):
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


def _complex_continue(p, g, m, v, po, mo, vo, lo, hi, k):
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


# RMSProp: k holds b2, 1-b2, lr, eps.


def _rmsprop_real_fresh(p, g, po, vo, lo, hi, k):
    for i in range(lo, hi):
        gi = g[i]
        vi = k[1] * (gi * gi)
        vo[i] = vi
        po[i] = p[i] - (k[2] * gi) / (math.sqrt(vi) + k[3])


def _rmsprop_real_continue(p, g, v, po, vo, lo, hi, k):
    for i in range(lo, hi):
        gi = g[i]
        vi = k[0] * v[i] + k[1] * (gi * gi)
        vo[i] = vi
        po[i] = p[i] - (k[2] * gi) / (math.sqrt(vi) + k[3])


def _rmsprop_complex_fresh(p, g, po, vo, lo, hi, k):
    for i in range(lo, hi):
        re = 2 * i
        im = re + 1
        gr = g[re]
        gi = g[im]
        vi = k[1] * (gr * gr + gi * gi)
        vo[i] = vi
        d = math.sqrt(vi) + k[3]
        po[re] = p[re] - (k[2] * gr) / d
        po[im] = p[im] - (k[2] * gi) / d


def _rmsprop_complex_continue(p, g, v, po, vo, lo, hi, k):
    for i in range(lo, hi):
        re = 2 * i
        im = re + 1
        gr = g[re]
        gi = g[im]
        vi = k[0] * v[i] + k[1] * (gr * gr + gi * gi)
        vo[i] = vi
        d = math.sqrt(vi) + k[3]
        po[re] = p[re] - (k[2] * gr) / d
        po[im] = p[im] - (k[2] * gi) / d


# SGDM: k holds momentum, lr. An empty velocity is 0: 0 - lr*g.


def _sgdm_fresh(p, g, po, so, lo, hi, k):
    for i in range(lo, hi):
        vel = 0.0 - k[1] * g[i]
        so[i] = vel
        po[i] = p[i] + vel


def _sgdm_continue(p, g, s, po, so, lo, hi, k):
    for i in range(lo, hi):
        vel = k[0] * s[i] - k[1] * g[i]
        so[i] = vel
        po[i] = p[i] + vel


# The span functions resolve one array's pointers and pick a loop. In-place updates get loops
# called with the *same* pointer for input and output: with distinct-but-equal pointers LLVM's
# runtime overlap check fails and it runs the scalar loop, ~4x slower.


def _real_span(h, j, lo, hi, k, fresh, rule):
    p, g, po = h[0, j], _pointer(h[1, j], k), h[4, j]
    pp = _pointer(p, k)
    if rule == _ADAM:
        mo, vo = h[5, j], h[6, j]
        if fresh:
            ppo = pp if po == p else _pointer(po, k)
            _real_fresh(pp, g, ppo, _pointer(mo, k), _pointer(vo, k), lo, hi, k)
            return
        m, v = h[2, j], h[3, j]
        mp, vp = _pointer(m, k), _pointer(v, k)
        if po == p and mo == m and vo == v:
            _real_continue(pp, g, mp, vp, pp, mp, vp, lo, hi, k)
        else:
            ppo, mpo, vpo = _pointer(po, k), _pointer(mo, k), _pointer(vo, k)
            _real_continue(pp, g, mp, vp, ppo, mpo, vpo, lo, hi, k)
        return
    s, so = h[2, j], h[5, j]  # the one state of RMSProp (v) or SGDM (velocity)
    if fresh:
        ppo = pp if po == p else _pointer(po, k)
        if rule == _RMSPROP:
            _rmsprop_real_fresh(pp, g, ppo, _pointer(so, k), lo, hi, k)
        else:
            _sgdm_fresh(pp, g, ppo, _pointer(so, k), lo, hi, k)
        return
    sp = _pointer(s, k)
    if po == p and so == s:
        if rule == _RMSPROP:
            _rmsprop_real_continue(pp, g, sp, pp, sp, lo, hi, k)
        else:
            _sgdm_continue(pp, g, sp, pp, sp, lo, hi, k)
    else:
        ppo, spo = _pointer(po, k), _pointer(so, k)
        if rule == _RMSPROP:
            _rmsprop_real_continue(pp, g, sp, ppo, spo, lo, hi, k)
        else:
            _sgdm_continue(pp, g, sp, ppo, spo, lo, hi, k)


def _complex_span(h, j, lo, hi, k, fresh, rule):
    """Adam and RMSProp on complex arrays (SGDM has no |g|^2: it runs as real pairs)."""
    p, g, po = h[0, j], _pointer(h[1, j], k), h[4, j]
    pp = _pointer(p, k)
    if rule == _RMSPROP:
        v, vo = h[2, j], h[5, j]
        vpo = _pointer(vo, k)
        ppo = pp if po == p else _pointer(po, k)
        if fresh:
            _rmsprop_complex_fresh(pp, g, ppo, vpo, lo, hi, k)
        else:
            _rmsprop_complex_continue(pp, g, _pointer(v, k), ppo, vpo, lo, hi, k)
        return
    mo, vo = h[5, j], h[6, j]
    if fresh:
        ppo = pp if po == p else _pointer(po, k)
        _complex_fresh(pp, g, ppo, _pointer(mo, k), _pointer(vo, k), lo, hi, k)
        return
    m, v = h[2, j], h[3, j]
    mp, vp = _pointer(m, k), _pointer(v, k)
    if po == p and mo == m and vo == v:
        _complex_continue(pp, g, mp, vp, pp, mp, vp, lo, hi, k)
    else:
        ppo, mpo, vpo = _pointer(po, k), _pointer(mo, k), _pointer(vo, k)
        _complex_continue(pp, g, mp, vp, ppo, mpo, vpo, lo, hi, k)


def _real_range(h, starts, lo, hi, k, fresh, rule):
    """Elements [lo, hi) of the concatenation of all arrays (``starts``: their offsets)."""
    j = np.searchsorted(starts, lo, side="right") - 1
    while lo < hi:
        stop = min(hi, starts[j + 1])
        if stop > lo:
            _real_span(h, j, lo - starts[j], stop - starts[j], k, fresh, rule)
        lo = stop
        j += 1


def _complex_range(h, starts, lo, hi, k, fresh, rule):
    """As :func:`_real_range`, counting complex elements."""
    j = np.searchsorted(starts, lo, side="right") - 1
    while lo < hi:
        stop = min(hi, starts[j + 1])
        if stop > lo:
            _complex_span(h, j, lo - starts[j], stop - starts[j], k, fresh, rule)
        lo = stop
        j += 1


def _starts(sizes):
    starts = np.zeros(sizes.shape[0] + 1, np.intp)
    for j in range(sizes.shape[0]):
        starts[j + 1] = starts[j] + sizes[j]
    return starts


# The drivers split the concatenation of all arrays into equal blocks, run in parallel; work
# that fits one block runs on the calling thread (waking the pool would cost more than it saves,
# and on a busy machine a descheduled worker stalls the whole call).


def _drive_real(h, sizes, k, fresh, parallel, rule):
    starts = _starts(sizes)
    total = starts[-1]
    if not parallel:
        _real_range(h, starts, 0, total, k, fresh, rule)
        return
    for b in _prange((total + _BLOCK - 1) // _BLOCK):
        _real_range(h, starts, b * _BLOCK, min((b + 1) * _BLOCK, total), k, fresh, rule)


def _drive_complex(h, sizes, k, fresh, parallel, rule):
    starts = _starts(sizes)
    total = starts[-1]
    if not parallel:
        _complex_range(h, starts, 0, total, k, fresh, rule)
        return
    for b in _prange((total + _BLOCK - 1) // _BLOCK):
        _complex_range(h, starts, b * _BLOCK, min((b + 1) * _BLOCK, total), k, fresh, rule)
