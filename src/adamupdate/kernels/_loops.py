"""The numba kernel's loops, made for a rule from its one step body.

:func:`drivers` wraps a rule's :attr:`~adamupdate.rules.Rule.step` — the same function the
array routes run — in element loops, and compiles them into two drivers (real and complex
arrays) that walk a whole table of arrays in one call. Nothing here knows a rule's math: only
how many states it has (at most two: the table has two state rows) and which accumulate
``|g|^2``. The step is called on scalars with ``math`` as its ``xp``; on the first iteration
its states are ``None``, and numba compiles the branch for an empty state alone.

Exactness: each operation is the one NumPy performs, in the array's precision (the
coefficients are cast to it first, as NumPy 2 does with Python floats), compiled with
``fastmath=False`` (no FMA contraction, no reassociation). Complex arrays are walked as pairs
of reals: the step runs once for the real parts and once for the imaginary parts, with the
same ``|g|^2``, as MATLAB multiplies a complex array by a real scalar and divides it by a real
array componentwise; a squared state is the same in both runs and is written once. A rule
without squared states steps complex arrays as real arrays of twice the length.

The table (:data:`adamupdate.kernels.numba_step.ROLES`) holds data addresses: ``p, g, s1, s2,
p_out, s1_out, s2_out``. In-place updates get loops called with the *same* pointer for input
and output: with distinct-but-equal pointers LLVM's runtime overlap check fails and it runs
the scalar loop, ~4x slower.

The drivers split the concatenation of all arrays into equal blocks, run in parallel; work
that fits one block runs on the calling thread (waking the pool would cost more than it saves,
and on a busy machine a descheduled worker stalls the whole call). They are closures, cached
on disk by numba for the package's own rules: the cache key includes the step function (by its
module and name) and the coefficients' ``NamedTuple`` class, both found again in a new
process. A rule defined outside the package compiles in each process instead (numba keeps one
index per loop function for all rules, and reading it imports every entry's classes).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from ..rules import Rule
from ._headers import slots

# Elements per parallel work item: large enough to amortize finding its arrays, small enough
# that a list of arrays splits evenly across threads.
BLOCK = 32768

_prange = range  # numba.prange once built


def _to_fixed_tuple(array: Any, length: int) -> tuple:
    """The first ``length`` elements of ``array`` as a tuple (compiled code: an overload
    bound by :func:`adamupdate.kernels.numba_step._build`, ``length`` a constant)."""
    return tuple(array[:length])


def _pointer(address: int, witness: Any) -> Any:
    """``(T*) address`` for the type ``T`` of the scalar ``witness`` (compiled code only: an
    overload bound by :func:`adamupdate.kernels.numba_step._build`)."""
    raise RuntimeError("a numba intrinsic: only compiled code calls it")


def _inlined(numba: Any, options: dict[str, Any], function: Any, rule: Rule, tag: str) -> Any:
    """``function`` compiled inline into its callers (numba drops the branch of an empty state
    there, as the state is a ``None`` constant), under a name that is the same in every
    process: numba keys its disk cache of a closure by what the closure refers to, and a
    compiled function is known by a random id unless it is given one (numba's ``_set_uuid``,
    private; without it the loops compile anew in each process)."""
    dispatcher = numba.njit(inline="always", **options)(function)
    name = f"adamupdate:{rule.name}:{rule.step.__module__}.{rule.step.__qualname__}"
    with contextlib.suppress(AttributeError, AssertionError):
        dispatcher._set_uuid(f"{name}:{function.__qualname__}:{tag}")
    return dispatcher


def drivers(rule: Rule, numba: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    """``(real, complex)`` compiled drivers ``(table, sizes, k, fresh, parallel)`` for ``rule``
    (``k``: the coefficients' values, in their order, as an array of the arrays' real dtype)
    (``complex`` is ``None`` when the rule has no squared state). Called once per rule, after
    :func:`adamupdate.kernels.numba_step._build` has bound the intrinsics."""

    def jitable(function: Any, tag: str = "") -> Any:  # inlined, named for the disk cache
        return _inlined(numba, options, function, rule, tag)

    step = jitable(rule.step)
    count = len(rule.states)
    if count > 2:
        raise ValueError(f"the numba kernel steps rules of up to two states, not {count}")
    sq1, sq2 = slots(rule.squared)
    # numba keeps one disk-cache index per loop function, for every rule, and reading it
    # imports what each entry names: only the package's own rules go there, so that a rule
    # defined elsewhere (a script, a test) cannot break the cache of another process.
    cached = all(
        getattr(x, "__module__", "").startswith("adamupdate.")
        for x in (rule.step, rule.coefficients_type)
    )

    # The coefficients arrive as an array in the arrays' real precision and become the rule's
    # NamedTuple in compiled code: numba types an array argument in C, while a tuple of NumPy
    # scalars can send it through its Python-level typing on some calls.
    coefficients_type = rule.coefficients_type
    fields = len(coefficients_type._fields)

    # The step on the table's two state slots; slots the rule does not have pass through.
    if count == 0:

        def element(c, p, g, g2, s1, s2):  # type: ignore[no-untyped-def]
            (q,) = step(math, c, p, g, g2)
            return q, s1, s2

    elif count == 1:

        def element(c, p, g, g2, s1, s2):  # type: ignore[no-untyped-def]
            q, t1 = step(math, c, p, g, g2, s1)
            return q, t1, s2

    else:

        def element(c, p, g, g2, s1, s2):  # type: ignore[no-untyped-def]
            return step(math, c, p, g, g2, s1, s2)

    element = jitable(element)

    def real_loops(fresh):  # type: ignore[no-untyped-def]
        def loop(c, p, g, s1, s2, po, so1, so2, lo, hi):  # type: ignore[no-untyped-def]
            for i in range(lo, hi):
                gi = g[i]
                if fresh:
                    q, t1, t2 = element(c, p[i], gi, gi * gi, None, None)
                else:
                    q, t1, t2 = element(c, p[i], gi, gi * gi, s1[i], s2[i])
                po[i] = q
                if count >= 1:
                    so1[i] = t1
                if count >= 2:
                    so2[i] = t2

        return jitable(loop, f"real-{fresh}")

    def complex_loops(fresh):  # type: ignore[no-untyped-def]
        def loop(c, p, g, s1, s2, po, so1, so2, lo, hi):  # type: ignore[no-untyped-def]
            for i in range(lo, hi):
                re = 2 * i
                im = re + 1
                gr = g[re]
                gi = g[im]
                g2 = gr * gr + gi * gi
                if fresh:
                    qr, r1, r2 = element(c, p[re], gr, g2, None, None)
                    qi, i1, i2 = element(c, p[im], gi, g2, None, None)
                else:
                    a1 = s1[i] if sq1 else s1[re]
                    b1 = s1[i] if sq1 else s1[im]
                    a2 = s2[i] if sq2 else s2[re]
                    b2 = s2[i] if sq2 else s2[im]
                    qr, r1, r2 = element(c, p[re], gr, g2, a1, a2)
                    qi, i1, i2 = element(c, p[im], gi, g2, b1, b2)
                po[re] = qr
                po[im] = qi
                if count >= 1:
                    if sq1:
                        so1[i] = r1
                    else:
                        so1[re] = r1
                        so1[im] = i1
                if count >= 2:
                    if sq2:
                        so2[i] = r2
                    else:
                        so2[re] = r2
                        so2[im] = i2

        return jitable(loop, f"complex-{fresh}")

    def walker(first, later, kind):  # type: ignore[no-untyped-def]
        """The walk over a table with ``first`` (fresh states) or ``later`` loops."""

        def span(h, j, lo, hi, c, fresh):  # type: ignore[no-untyped-def]
            w = c[0]  # the element type the pointers point to
            p = _pointer(h[0, j], w)
            g = _pointer(h[1, j], w)
            if fresh:  # the state rows are not read
                po = p if h[4, j] == h[0, j] else _pointer(h[4, j], w)
                first(c, p, g, po, po, po, _pointer(h[5, j], w), _pointer(h[6, j], w), lo, hi)
                return
            s1 = _pointer(h[2, j], w)
            s2 = _pointer(h[3, j], w)
            if h[4, j] == h[0, j] and h[5, j] == h[2, j] and h[6, j] == h[3, j]:
                later(c, p, g, s1, s2, p, s1, s2, lo, hi)
            else:
                po = _pointer(h[4, j], w)
                so1 = _pointer(h[5, j], w)
                so2 = _pointer(h[6, j], w)
                later(c, p, g, s1, s2, po, so1, so2, lo, hi)

        span = jitable(span, kind)

        def walk(h, starts, lo, hi, k, fresh):  # type: ignore[no-untyped-def]
            """Elements [lo, hi) of the concatenation of all arrays (``starts``: offsets)."""
            c = coefficients_type(*_to_fixed_tuple(k, fields))
            j = np.searchsorted(starts, lo, side="right") - 1
            while lo < hi:
                stop = min(hi, starts[j + 1])
                if stop > lo:
                    span(h, j, lo - starts[j], stop - starts[j], c, fresh)
                lo = stop
                j += 1

        return jitable(walk, kind)

    def driver(walk):  # type: ignore[no-untyped-def]
        def drive(h, sizes, k, fresh, parallel):  # type: ignore[no-untyped-def]
            # np.empty, not np.zeros: a parallel function would fill zeros in a parallel
            # region of its own, a second wake-up of the thread pool per call
            starts = np.empty(sizes.shape[0] + 1, np.intp)
            starts[0] = 0
            for j in range(sizes.shape[0]):
                starts[j + 1] = starts[j] + sizes[j]
            total = starts[-1]
            if not parallel:
                walk(h, starts, 0, total, k, fresh)
                return
            for b in _prange((total + BLOCK - 1) // BLOCK):
                walk(h, starts, b * BLOCK, min((b + 1) * BLOCK, total), k, fresh)

        return numba.njit(parallel=True, cache=cached, **options)(drive)

    real = driver(walker(real_loops(True), real_loops(False), "real"))
    pairs = any(rule.squared)
    complex_ = (
        driver(walker(complex_loops(True), complex_loops(False), "complex")) if pairs else None
    )
    return real, complex_
