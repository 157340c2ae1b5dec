"""The fused, multithreaded step of an update rule on raw CPU memory, compiled with numba.

Why this kernel exists: the textbook NumPy expression makes about ten passes over memory with
temporaries; one Adam step needs only one (read ``p, g, m, v``, write ``p, m, v``: 28 bytes per
float32 parameter). This kernel makes that one pass on all cores, so it runs at the machine's
memory bandwidth, and it covers a whole group of arrays in *one* call, so a network's hundreds
of tensors cost one launch, not hundreds. The math is the rule's own step body
(:mod:`adamupdate.rules`), compiled into loops by :mod:`adamupdate.kernels._loops`, exactly
(see there); the inputs are checked from their headers by :mod:`adamupdate.kernels._headers`.

The interface is two calls, so that everything that can fail happens before anything is
written (see :mod:`adamupdate._plan`):

- :func:`inspect` checks a table of NumPy arrays (by ``id()``) from their headers in compiled
  code and returns their data addresses.
- :func:`run` steps a table of data addresses. It cannot raise: its callers have checked the
  memory behind every address (contiguous, of the dtype, sized, outputs that *are* their inputs
  or overlap none of them).

:func:`fused_step` and :func:`fused_step_many` are Adam's step with every check made in Python,
naming the offending array (for tests and direct use).

numba is imported lazily (it takes ~0.5 s); importing this module never fails without it --
ask :func:`available` first. The compiled code is cached on disk (``cache=True``), so only the
first run of a rule and dtype on a machine pays the compile time (see :func:`compile`).
Threads are numba's (``numba.set_num_threads``); numba's ``workqueue`` threading layer (the one
without OpenMP or TBB) aborts the process on concurrent launches, so launches are serialised by
a lock unless the layer is known to be thread-safe. A forked child steps on one thread (OpenMP
cannot run there).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from .._extras import notice_once
from ..rules import Rule, adam, rmsprop, sgdm
from . import _headers, _loops
from ._headers import real_dtype

__all__ = [
    "ROLES",
    "SUPPORTED_DTYPES",
    "available",
    "compile",
    "fused_step",
    "fused_step_many",
    "inspect",
    "run",
    "steps",
    "supports",
]

#: Dtypes the kernel computes; anything else (float16, ...) stays with the NumPy ufuncs.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

#: Rows of an address (or id) table, in this order: a rule's states are rows 2-3 and 5-6 (a rule
#: with one state repeats it; one without has its parameter's rows there, never written).
ROLES = ("param", "grad", "avg_grad", "avg_sq_grad", "param_out", "avg_grad_out", "avg_sq_grad_out")

#: MATLAB's solvers, which :func:`compile` builds ahead.
MATLAB_RULES = (adam.RULE, rmsprop.RULE, sgdm.RULE)

_build_lock = threading.Lock()
_launch_lock = threading.Lock()
# "ok": numba works; "inspect": the compiled header check; "layout": header offsets;
# "threads": parallel launches allowed; "safe_layer": launches may run concurrently;
# "numba", "options": what the loops are compiled with.
_state: dict[str, Any] = {}
# Each rule's (real, complex) compiled drivers, made on its first step: programs, no arrays.
_drivers: dict[Rule, tuple[Any, Any]] = {}


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
    """True when the kernel can step ``rule``: any rule of at most two states."""
    return len(rule.states) <= 2


def supports(dtype: Any) -> bool:
    """True when ``dtype`` (of ``params``; complex states: ``avg_sq_grad`` is real) is covered."""
    try:
        return np.dtype(dtype) in SUPPORTED_DTYPES
    except TypeError:
        return False


def compile(
    dtypes: Sequence[Any] = SUPPORTED_DTYPES, rules: Iterable[Rule] = MATLAB_RULES
) -> float:
    """Compile (or load from the on-disk cache) the kernels of ``rules`` for ``dtypes``;
    return seconds taken.

    Call it at start-up to keep the first training step from paying the compile time. On a
    2-core AMD EPYC: a few seconds per rule and dtype to compile, about a second in all when
    loaded from the cache (plus 0.3-0.4 s to import numba).
    """
    start = time.perf_counter()
    _require_numba()
    for dtype in map(np.dtype, dtypes):
        if not supports(dtype):
            raise TypeError(f"the numba kernel does not support dtype {dtype}")
        nothing = (np.zeros((7, 0), np.intp), np.zeros(0, np.intp))
        for rule in rules:
            zeros = rule.coefficients_type(*[0.0] * len(rule.coefficients_type._fields))
            for fresh in (True, False):
                run(*nothing, dtype, fresh, zeros, rule)
        empty = np.empty(0, dtype)
        inspect(np.full((7, 1), id(empty), np.intp), dtype, False)
    return time.perf_counter() - start


def inspect(
    ids: np.ndarray, dtype: np.dtype, fresh: bool, squared: tuple[bool, ...] = (False, True)
) -> tuple[np.ndarray, np.ndarray] | int:
    """Check a ``(7, n)`` table of NumPy array ids (rows :data:`ROLES`) from their headers.

    Every array must be a plain ``ndarray`` of its row's dtype (``dtype``; its real
    counterpart for a state that accumulates ``|g|^2`` — ``squared`` tells, per state, as
    :attr:`adamupdate.rules.Rule.squared` does), C-contiguous, writeable if an output, with
    exactly its parameter's shape. Rows 2 and 3 are not read when ``fresh``. Returns
    ``(addresses, sizes)`` — the data addresses in the same ``(7, n)`` layout and each
    parameter's element count — or the index of the first failing column, or ``-1`` when
    headers cannot be read on this Python (the caller then checks in Python). The ids must be
    of live arrays.
    """
    layout = _state.get("layout")
    if layout is None:
        return -1
    addresses = np.empty(ids.shape, np.intp)
    sizes = np.empty(ids.shape[1], np.intp)
    want = _headers.expected(np.dtype(dtype), squared)
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
    """One step of ``rule`` (Adam by default) with its coefficients ``c`` on every parameter of
    a ``(7, n)`` address table (rows :data:`ROLES`).

    The memory behind each address must be contiguous, of ``dtype`` (real for a squared state)
    and ``sizes[j]`` elements long; an output must *be* its input or overlap no input. Nothing
    is checked here and nothing can raise: see :func:`inspect` and :func:`fused_step_many`.
    """
    # The coefficients in the arrays' (real) precision, as NumPy 2 applies a Python float. A
    # field the body does not use may not fit (Adam's iteration count beyond float32): inf,
    # without a warning or an error under np.seterr, since nothing here may raise.
    with np.errstate(over="ignore"):
        coefficients = np.array(tuple(c), real_dtype(dtype))
    if dtype.kind == "c" and not any(rule.squared):  # no |g|^2: complex as pairs of reals
        dtype, sizes = real_dtype(dtype), 2 * sizes
    real, complex_ = _drivers_of(rule)
    kernel = complex_ if dtype.kind == "c" else real
    parallel = _state["threads"] and int(sizes.sum()) > _loops.BLOCK
    with _compiling(("run", rule.name, dtype.str, parallel)):
        if not parallel or _state["safe_layer"]:
            kernel(addresses, sizes, coefficients, fresh, parallel)
            return
        with _launch_lock:
            kernel(addresses, sizes, coefficients, fresh, parallel)
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
    c: adam.StepCoefficients,
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
    c: adam.StepCoefficients,
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


def _check(dtype: Any, n: int, columns: Sequence[Sequence[Any]], fresh: bool) -> None:
    """Check in Python what the kernel relies on, naming the offending role and index."""
    if not supports(dtype):
        raise TypeError(f"the numba kernel does not support dtype {dtype}")
    real = real_dtype(dtype)
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


def _drivers_of(rule: Rule) -> tuple[Any, Any]:
    found = _drivers.get(rule)
    if found is None:
        with _build_lock:
            found = _drivers.get(rule)
            if found is None:
                found = _drivers[rule] = _loops.drivers(rule, _state["numba"], _state["options"])
    return found


def _build() -> None:
    """Import numba, bind what the compiled code calls, and compile-on-demand the header
    check; a rule's loops are made on its first step (:func:`_drivers_of`)."""
    with _build_lock:
        if "ok" in _state:
            return
        import numba
        import numba.extending
        from numba import types
        from numba.extending import intrinsic

        @intrinsic
        def pointer(typingctx: Any, address: Any, witness: Any) -> Any:
            """``(T*) address`` for the type ``T`` of the scalar ``witness``."""
            ptr_type = types.CPointer(witness)

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

        # The loops call _loops._pointer and _loops._to_fixed_tuple, plain functions compiled
        # as these overloads: numba keys its disk cache of the loops (closures) by what they
        # refer to, and a plain function is found again in a new process, while an intrinsic
        # has a new id each time.
        @numba.extending.overload(_loops._pointer)
        def compiled_pointer(address, witness):  # numba compares its signature: no annotations
            return lambda address, witness: pointer(address, witness)

        from numba.np.unsafe.ndarray import to_fixed_tuple

        @numba.extending.overload(_loops._to_fixed_tuple)
        def compiled_to_fixed_tuple(array, length):  # (an intrinsic too: see above)
            return lambda array, length: to_fixed_tuple(array, length)

        vars(_loops).update(_prange=numba.prange)
        vars(_headers).update(_load_intp=loader(types.intp), _load_int32=loader(types.int32))
        options: dict[str, Any] = {"fastmath": False, "error_model": "numpy"}
        _state["numba"], _state["options"] = numba, options
        _state["inspect"] = numba.njit(cache=True, **options)(_headers.inspect_table)
        _state["layout"] = _headers.probe_layout()
        _state["threads"] = True
        # numba.config sets its options through globals(), which type checkers cannot see.
        layer = numba.config.THREADING_LAYER  # type: ignore[attr-defined]
        _state["safe_layer"] = True if layer in ("omp", "tbb") else None  # None: not known yet
        # OpenMP cannot run in a forked child (numba terminates it): step on one thread there.
        os.register_at_fork(after_in_child=lambda: _state.update(threads=False))
        _state["ok"] = True
