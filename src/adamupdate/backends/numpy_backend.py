"""NumPy arrays and Python/NumPy scalars.

Two routes, chosen per group when it is planned:

- the fused, multithreaded numba kernel (:mod:`adamupdate.kernels.numba_step`) for
  float32/float64/complex64/complex128 groups of some size when numba is installed (the
  ``fast`` extra). The usual group is checked in bulk from the arrays' headers in compiled
  code (:func:`planned_in_bulk`), on every call;
- NumPy ufuncs in cache-sized chunks for small groups (not worth importing numba for), for
  every group without numba, and for half precision (computed in float32, as MATLAB has no
  half type) or averages of another dtype.

Both apply MATLAB's operations in MATLAB's order in the array's precision, so they agree to the
bit (a NaN's sign and payload aside, which IEEE 754 leaves open); complex arrays are computed
componentwise (a real scalar times a complex array multiplies both parts, a complex array
divided by a real one divides both), on their real views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._memory import overlaps_itself, reads_overlap, written_overlap, written_spans
from .._reuse import new_array
from ..kernels import numba_kernel, numba_kernel_ready, table_rows
from ..rules import Rule
from ._numpy_ufuncs import real_dtype as real_dtype  # the Backend protocol's
from ._numpy_ufuncs import ufunc_leaf as _ufunc_leaf

NAME = "numpy"
MUTABLE = True  # arrays are updated in their own buffers

_REAL = (np.dtype(np.float32), np.dtype(np.float64))
_COMPLEX = (np.dtype(np.complex64), np.dtype(np.complex128))
_SUPPORTED = (np.dtype(np.float16), *_REAL, *_COMPLEX)
_HALF = np.dtype(np.float16)
_FUSE_ABOVE_ELEMENTS = 1 << 15
_FUSE_ABOVE_ARRAYS = 32


def _nan_is_an_answer() -> np.errstate:
    """NaN/Inf in a gradient propagate as the formula says, as in MATLAB: not worth a warning."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")


def _canonical(dtype: np.dtype) -> np.dtype:
    """NumPy's own object for a built-in dtype equal to ``dtype`` (one unpickled from another
    process is equal but not the same object, and the kernel's header check compares
    objects), else ``dtype`` itself."""
    own = np.dtype(dtype.char)
    return own if own == dtype and dtype.metadata is None else dtype


def as_array(x: Any) -> np.ndarray:
    """Scalars become 0-d arrays; MATLAB's numbers are 1x1 arrays too."""
    if type(x) is np.ndarray:
        return x
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"expected a floating-point array or number, got bool {x!r}")
    if isinstance(x, int):
        return np.asarray(x, dtype=np.float64)
    return np.asarray(x)


def describe(x: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    array = as_array(x)
    return "cpu", array.dtype, array.shape


def check_leaf(x: Any) -> str | None:
    dtype = as_array(x).dtype
    if dtype in _SUPPORTED:
        return None
    if dtype.kind in "fc" and not dtype.isnative:
        return (
            f"dtype {dtype.str} is not in the machine's byte order; "
            f"convert it with .astype('{dtype.newbyteorder('=').str}')"
        )
    return f"dtype {dtype} is not floating point (float16/32/64 or complex64/128)"


def state_dtypes(
    param_dtype: np.dtype, state_dtype: Any = None, like: Any = None
) -> tuple[np.dtype, np.dtype]:
    if state_dtype is None:
        avg = np.dtype(np.float32) if param_dtype == _HALF else param_dtype
    else:
        try:
            avg = np.dtype(state_dtype)
        except TypeError:
            raise TypeError(f"{state_dtype!r} is not a NumPy dtype") from None
        if avg not in _SUPPORTED:
            raise TypeError(f"{avg} cannot hold an average (float16/32/64 or complex64/128)")
        if avg.kind == "c" and param_dtype.kind != "c":
            raise TypeError(f"complex {avg} averages for real {param_dtype} parameters")
    if param_dtype.kind == "c" and avg.kind != "c":
        avg = np.result_type(avg, np.complex64)
    return avg, real_dtype(avg)


def castable(dtype: np.dtype, to: np.dtype) -> bool:
    """Whether a gradient of ``dtype`` may be computed as ``to`` (floating point both, no
    imaginary part dropped)."""
    return dtype in _SUPPORTED and to in _SUPPORTED and (dtype.kind != "c" or to.kind == "c")


def cast(x: Any, dtype: np.dtype) -> np.ndarray:
    """``x`` in ``dtype`` (a copy; see :func:`castable`)."""
    return as_array(x).astype(dtype)


def is_writeable(x: Any) -> bool:
    return type(x) is np.ndarray and x.flags.writeable


def memory(x: Any) -> tuple[int, int] | None:
    if not isinstance(x, np.ndarray):
        return None  # a scalar is copied, never written
    lo, hi = np.lib.array_utils.byte_bounds(x)
    return lo, hi


def internal_overlap(x: Any) -> bool:
    return isinstance(x, np.ndarray) and overlaps_itself(x.shape, x.strides, x.itemsize)


def shares_memory(a: Any, b: Any) -> bool:
    return bool(np.shares_memory(a, b))


def zero_state(dtype: np.dtype, like: Any) -> np.ndarray:
    return np.zeros((), dtype)


def finish(original: Any, updated: np.ndarray) -> Any:
    """Python floats stay Python floats and NumPy scalars stay NumPy scalars."""
    if type(original) is np.ndarray:
        return updated
    if isinstance(original, np.generic):  # before float: np.float64 is a float subclass
        return updated[()]
    if isinstance(original, (float, int, complex)):
        return complex(updated) if updated.dtype.kind == "c" else float(updated)
    return updated


finish_state = finish  # states mirror the gradient's form (a Python float for a Python float)


class Group:
    """A group of NumPy leaves of one dtype (see :class:`adamupdate.backends.GroupStep`)."""

    def __init__(
        self,
        rule: Rule,
        dtype: np.dtype,
        state_dtypes: tuple[np.dtype, ...],
        *,
        fresh: bool,
        inplace: bool,
        params: list[Any],
    ) -> None:
        self.rule, self.dtype = rule, _canonical(dtype)
        self.state_dtypes = tuple(map(_canonical, state_dtypes))
        self.fresh, self.inplace = fresh, inplace
        self.kernel: Any = None  # the numba kernel module, when it takes this group
        if (
            dtype in _REAL + _COMPLEX
            and (
                not rule.states
                or state_dtypes[0] == (real_dtype(dtype) if rule.squared[0] else dtype)
            )
            and all(type(p) is np.ndarray for p in params)
            and _worth(params)
        ):
            kernel = numba_kernel()
            self.kernel = kernel if kernel is not None and kernel.steps(rule) else None
        # The kernel's seven rows: p, g, two states, p out, two states out (a rule with one
        # state repeats it, one without has the parameter's rows there); the dtype of each.
        pair = ((*self.state_dtypes, *self.state_dtypes) or (dtype, dtype))[:2]
        self._row_dtypes = (dtype, dtype, *pair, dtype, *pair)
        # what the kernel writes: p and each state once (a rule with one state repeats it)
        self._items = (dtype.itemsize, *(d.itemsize for d in self.state_dtypes))
        self._originals: tuple[list, ...] = ()
        self._outputs: tuple[list, ...] = ()
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._leaves: list[tuple[np.ndarray, np.ndarray, tuple, np.ndarray, tuple]] = []
        self._write_back: list[tuple[np.ndarray, np.ndarray]] = []
        self._keep: tuple = ()  # staged copies, alive until run()

    # -- binding ---------------------------------------------------------------------------

    def bind(self, params: list, grads: list, states: list[list]) -> None:
        self._originals = (params, *states)
        self._write_back, self._table, self._keep, self._leaves = [], None, (), []
        outputs = self._outputs = self._new_outputs(params, states)
        if self.kernel is not None:
            if not self._bind_kernel(params, grads, states, outputs):
                self._stage(params, grads, states)
            return
        fresh = self.fresh
        self._leaves = [
            (
                as_array(p),
                as_array(g),
                tuple(None if fresh else _full(column[i], p) for column in states),
                outputs[0][i],
                tuple(column[i] for column in outputs[1:]),
            )
            for i, (p, g) in enumerate(zip(params, grads))
        ]

    def _new_outputs(self, params: list, states: list[list]) -> tuple[list, ...]:
        """The buffers the step writes: the caller's own in place (when full-size arrays),
        new ones otherwise."""
        n = len(params)
        if self.inplace:
            columns = [list(params)]
            columns += [[None] * n if self.fresh else list(column) for column in states]
        else:
            columns = [[None] * n for _ in range(1 + len(states))]
        dtypes = (self.dtype, *self.state_dtypes)
        replaced = (params, *(states if not self.fresh else [[None] * n] * len(states)))
        for i, p in enumerate(params):
            shape = as_array(p).shape
            for column, dtype, inputs in zip(columns, dtypes, replaced):
                if self.inplace:
                    if column[i] is None or column[i].shape != shape:
                        column[i] = np.empty(shape, dtype)
                else:
                    column[i] = new_array(shape, dtype, inputs[i])
        return tuple(columns)

    def _bind_kernel(
        self, params: list, grads: list, states: list[list], outputs: tuple[list, ...]
    ) -> bool:
        """Check the arrays from their headers in compiled code and take their addresses; in
        place, the written buffers must be disjoint and no gradient may overlap them (the
        per-leaf plan has checked that already; :func:`planned_in_bulk` relies on it here)."""
        rows = table_rows(params, grads, states, outputs, self.fresh)
        n = len(params)
        try:
            ids = np.array([list(map(id, row)) for row in rows], np.intp).reshape(7, n)
        except TypeError:
            return False
        found = self.kernel.inspect(ids, self.dtype, self.fresh, self.rule.squared)
        if found == -1:  # headers unreadable on this Python: check through attributes
            found = _addresses(rows, self._row_dtypes, self.fresh)
        if isinstance(found, int):
            return False
        addresses, sizes = found
        if self.inplace:
            spans = written_spans(addresses, sizes, self._items)
            if written_overlap(spans) or reads_overlap(spans, addresses[1], sizes, self._items[0]):
                return False
        self._table = (addresses, sizes)
        return True

    def _stage(self, params: list, grads: list, states: list[list]) -> None:
        """Contiguous copies of what the kernel cannot walk directly (strided views, scalars,
        MATLAB's scalar-0 states); outputs that are strided views are written back after the
        step."""
        staged_out = []
        for column in self._outputs:
            row = []
            for target in column:
                if target.flags.c_contiguous:
                    row.append(target)
                else:
                    temp = np.empty(target.shape, target.dtype)
                    self._write_back.append((target, temp))
                    row.append(temp)
            staged_out.append(row)
        staged_params = [_contiguous(as_array(p)) for p in params]
        staged_grads = [_contiguous(as_array(g)) for g in grads]
        staged_states = [
            [_contiguous(_full(x, p)) for x, p in zip(column, params)] if not self.fresh else []
            for column in states
        ]
        rows = table_rows(staged_params, staged_grads, staged_states, staged_out, self.fresh)
        table = _addresses(rows, self._row_dtypes, self.fresh)
        assert not isinstance(table, int), "staged copies are contiguous arrays of the dtypes"
        self._table, self._keep = table, rows

    # -- running ---------------------------------------------------------------------------

    @property
    def writes_in_run(self) -> bool:
        """The kernel writes its outputs as it runs (and cannot fail); the ufuncs compute
        into new arrays, written by :meth:`commit`."""
        return self.kernel is not None

    def run(self, c: Any) -> None:
        if self._table is not None:
            addresses, sizes = self._table
            self.kernel.run(addresses, sizes, self.dtype, self.fresh, c, self.rule)
            self._table = None
        else:
            with _nan_is_an_answer():
                for leaf in self._leaves:
                    p_out, states_out = leaf[3], leaf[4]
                    results = _ufunc_leaf(self.rule, *leaf, c)
                    self._write_back += zip((p_out, *states_out), results)
            self._leaves = []
        self._originals = ()

    def commit(self) -> None:
        for target, result in self._write_back:
            if target is not result:
                np.copyto(target, result, casting="unsafe")
        self._write_back, self._keep = [], ()

    def outputs(self) -> tuple[list, tuple[list, ...]]:
        return self._outputs[0], self._outputs[1:]


group = Group  # the backend's GroupStep factory (see adamupdate.backends.Backend.group)


def planned_in_bulk(
    rule: Rule,
    params: list,
    grads: list,
    states: list[list],
    *,
    fresh: bool,
    inplace: bool,
) -> Group | None:
    """The usual call planned and bound at once, its checks made in compiled code: plain
    C-contiguous arrays of one kernel dtype, gradients and averages of the dtypes and shapes
    the per-leaf plan (:func:`adamupdate._plan.make`) wants, writeable and disjoint in place.
    ``None`` when anything else is found: the per-leaf plan then decides, and names what is
    wrong. Accepts exactly what the per-leaf plan accepts and steps it on the same route.
    """
    p0 = params[0]
    if type(p0) is not np.ndarray or p0.dtype not in _REAL + _COMPLEX:
        return None
    dtype = p0.dtype
    avg, real = state_dtypes(dtype)
    wanted = tuple(real if squared else avg for squared in rule.squared)
    step = Group(rule, dtype, wanted, fresh=fresh, inplace=inplace, params=params)
    if step.kernel is None:
        return None
    step._originals = (params, *states)
    try:
        outputs = step._outputs = step._new_outputs(params, states)
    except (AttributeError, TypeError, ValueError):  # not arrays: the per-leaf plan names it
        return None
    return step if step._bind_kernel(params, grads, states, outputs) else None


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array of the same shape (``np.ascontiguousarray`` would make a
    0-d array 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _addresses(
    rows: Sequence[Sequence[Any]], dtypes: Sequence[np.dtype], fresh: bool
) -> tuple[np.ndarray, np.ndarray] | int:
    """The kernel's address table checked through Python attributes (``dtypes``: each row's);
    the failing column or the table."""
    n = len(rows[0])
    addresses = np.zeros((7, n), np.intp)
    sizes = np.array([a.size for a in rows[0]], np.intp)
    for r, (row, kind) in enumerate(zip(rows, dtypes)):
        if fresh and r in (2, 3):
            continue
        for j, a in enumerate(row):
            if (
                not isinstance(a, np.ndarray)
                or a.dtype != kind
                or not a.flags.c_contiguous
                or a.shape != rows[0][j].shape
                or (r >= 4 and not a.flags.writeable)
            ):
                return j
            addresses[r, j] = a.__array_interface__["data"][0]
    return addresses, sizes


def _worth(params: Sequence[np.ndarray]) -> bool:
    """numba costs ~0.4 s to import (and a one-off compile): not worth it for a few tiny arrays
    until something else has loaded it. Both routes give the same bits."""
    if len(params) >= _FUSE_ABOVE_ARRAYS or sum(p.size for p in params) >= _FUSE_ABOVE_ELEMENTS:
        return True
    return numba_kernel_ready()


def _full(state: Any, param: Any) -> np.ndarray:
    """MATLAB's scalar-0 average (a frozen parameter's) broadcast to the parameter's shape."""
    state = as_array(state)
    shape = np.shape(param)
    if state.shape == shape:
        return state
    return np.full(shape, state, state.dtype)
