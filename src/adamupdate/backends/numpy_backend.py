"""NumPy arrays and Python/NumPy scalars.

Two routes, chosen per group when it is planned, that agree bit for bit:

- the fused, multithreaded numba kernel (:mod:`adamupdate.kernels.numba_adam`) for
  float32/float64/complex64/complex128 groups of some size when numba is installed (the
  ``fast`` extra). A remembered step checks the arrays from their headers in compiled code;
- NumPy ufuncs in cache-sized chunks for small groups (not worth importing numba for), for
  every group without numba, and for half precision (computed in float32, as MATLAB has no
  half type) or averages of another dtype.

Both apply MATLAB's operations in MATLAB's order in the array's precision; complex arrays are
computed componentwise (a real scalar times a complex array multiplies both parts, a complex
array divided by a real one divides both), on their real views.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._algorithm import StepCoefficients
from .._memory import overlaps_itself, reads_overlap, written_spans
from .._recycle import MIN_BYTES, Recycler

NAME = "numpy"
MUTABLE = True  # arrays are updated in their own buffers

_REAL = (np.dtype(np.float32), np.dtype(np.float64))
_COMPLEX = (np.dtype(np.complex64), np.dtype(np.complex128))
_SUPPORTED = (np.dtype(np.float16), *_REAL, *_COMPLEX)
_HALF = np.dtype(np.float16)
_FUSE_ABOVE_ELEMENTS = 1 << 15
_FUSE_ABOVE_ARRAYS = 32
# Elements per chunk of the ufunc route: 4 arrays x 64K x 8 B stays inside a core's L2.
_CHUNK = 1 << 16


def _nan_is_an_answer() -> np.errstate:
    """NaN/Inf in a gradient propagate as the formula says, as in MATLAB: not worth a warning."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")


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


def real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


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


def group(
    dtype: np.dtype,
    state_dtypes: tuple[np.dtype, np.dtype],
    *,
    fresh: bool,
    inplace: bool,
    params: list[Any],
) -> Group:
    return Group(dtype, state_dtypes, fresh=fresh, inplace=inplace, params=params)


class Group:
    """A group of NumPy leaves of one dtype (see :class:`adamupdate.backends.GroupStep`)."""

    def __init__(
        self,
        dtype: np.dtype,
        state_dtypes: tuple[np.dtype, np.dtype],
        *,
        fresh: bool,
        inplace: bool,
        params: list[Any],
    ) -> None:
        self.dtype = dtype
        self.m_dtype, self.v_dtype = state_dtypes
        self.fresh, self.inplace = fresh, inplace
        elements = sum(as_array(p).size for p in params)
        self.kernel = None
        if (
            dtype in _REAL + _COMPLEX
            and self.m_dtype == dtype
            and _worth(elements, len(params))
            and all(type(p) is np.ndarray for p in params)
        ):
            self.kernel = _fast_kernel()
        self._items = (dtype.itemsize, self.m_dtype.itemsize, self.v_dtype.itemsize)
        self._originals: tuple[list, ...] = ([], [], [])
        self._outputs: tuple[list, ...] = ([], [], [])
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._leaves: list[tuple] = []
        self._write_back: list[tuple[np.ndarray, np.ndarray]] = []
        self._keep: tuple = ()  # staged copies, alive until run()
        self._shapes: list[tuple[int, ...]] = []

    # -- binding ---------------------------------------------------------------------------

    def bind(self, params, grads, avg_grads, avg_sq_grads, *, checked: bool) -> bool:
        self._originals = (params, avg_grads, avg_sq_grads)
        self._write_back, self._table, self._keep, self._leaves = [], None, (), []
        outputs = self._new_outputs(params, avg_grads, avg_sq_grads)
        if self.kernel is not None:
            if not self._bind_kernel(params, grads, avg_grads, avg_sq_grads, outputs):
                if not checked:
                    return False
                self._outputs = outputs
                self._stage(params, grads, avg_grads, avg_sq_grads)
            self._outputs = outputs
            return True
        if checked:
            self._shapes = [np.shape(p) for p in params]
        elif not self._fits(params, grads, avg_grads, avg_sq_grads):
            return False
        self._outputs = outputs
        fresh = self.fresh
        self._leaves = [
            (
                as_array(p),
                as_array(g),
                None if fresh else _full(m, p),
                None if fresh else _full(v, p),
                po,
                mo,
                vo,
            )
            for p, g, m, v, po, mo, vo in zip(params, grads, avg_grads, avg_sq_grads, *outputs)
        ]
        return True

    def _new_outputs(self, params, avg_grads, avg_sq_grads) -> tuple[list, list, list]:
        """The buffers the step writes: the caller's own in place (when full-size arrays);
        otherwise new ones — or the last call's inputs, when nothing refers to them any more
        (see :func:`_new`)."""
        n = len(params)
        if self.inplace:
            ps = list(params)
            ms = list(avg_grads) if not self.fresh else [None] * n
            vs = list(avg_sq_grads) if not self.fresh else [None] * n
        else:
            ps, ms, vs = [None] * n, [None] * n, [None] * n
        dtypes = (self.dtype, self.m_dtype, self.v_dtype)
        columns = (ps, ms, vs)
        for i, p in enumerate(params):
            shape = as_array(p).shape
            for column, dtype in zip(columns, dtypes):
                if self.inplace:
                    if column[i] is None or column[i].shape != shape:
                        column[i] = np.empty(shape, dtype)
                else:
                    column[i] = _new(shape, dtype)
        return ps, ms, vs

    def _bind_kernel(self, params, grads, avg_grads, avg_sq_grads, outputs) -> bool:
        """Check the arrays from their headers in compiled code and take their addresses."""
        states = (params, grads) if self.fresh else (avg_grads, avg_sq_grads)
        rows = (params, grads, *states, *outputs)
        n = len(params)
        try:
            ids = np.array([list(map(id, row)) for row in rows], np.intp).reshape(7, n)
        except TypeError:
            return False
        found = self.kernel.inspect(ids, self.dtype, self.fresh)
        if found == -1:  # headers unreadable on this Python: check through attributes
            found = _addresses(rows, self.dtype, self.m_dtype, self.v_dtype, self.fresh)
        if isinstance(found, int):
            return False
        addresses, sizes = found
        if self.inplace and reads_overlap(
            written_spans(addresses, sizes, self._items), addresses[1], sizes, self._items[0]
        ):
            return False
        self._table = (addresses, sizes)
        return True

    def _stage(self, params, grads, avg_grads, avg_sq_grads) -> None:
        """Contiguous copies of what the kernel cannot walk directly (strided views, scalars,
        MATLAB's scalar-0 averages); outputs that are strided views are written back after the
        step."""
        ps, ms, vs = self._outputs
        staged_out = []
        for column in (ps, ms, vs):
            row = []
            for target in column:
                if target.flags.c_contiguous:
                    row.append(target)
                else:
                    temp = np.empty(target.shape, target.dtype)
                    self._write_back.append((target, temp))
                    row.append(temp)
            staged_out.append(row)
        inputs = [
            [_contiguous(as_array(p)) for p in params],
            [_contiguous(as_array(g)) for g in grads],
        ]
        if self.fresh:
            inputs += [inputs[0], inputs[1]]
        else:
            inputs += [
                [_contiguous(_full(m, p)) for m, p in zip(avg_grads, params)],
                [_contiguous(_full(v, p)) for v, p in zip(avg_sq_grads, params)],
            ]
        rows = (*inputs, *staged_out)
        table = _addresses(rows, self.dtype, self.m_dtype, self.v_dtype, self.fresh)
        assert not isinstance(table, int), "staged copies are contiguous arrays of the dtypes"
        self._table, self._keep = table, rows

    def _fits(self, params, grads, avg_grads, avg_sq_grads) -> bool:
        """A remembered ufunc step: gradients of the parameters' dtype and planned shape, and
        parameters and averages still of their planned shapes (an array can be reshaped or made
        read-only under the same object) — checked before anything is written."""
        dtype, shapes = self.dtype, self._shapes
        for g, p, shape in zip(grads, params, shapes):
            if type(g) is not np.ndarray or g.dtype != dtype or g.shape != shape:
                return False
            if np.shape(p) != shape or (self.inplace and not p.flags.writeable):
                return False
        if not self.fresh:
            for state in (*avg_grads, *avg_sq_grads):
                if type(state) is not np.ndarray:
                    return False
            for m, v, shape in zip(avg_grads, avg_sq_grads, shapes):
                if m.shape != shape or v.shape != shape:
                    return False
                if self.inplace and not (m.flags.writeable and v.flags.writeable):
                    return False
        return True

    # -- running ---------------------------------------------------------------------------

    def run(self, c: StepCoefficients) -> None:
        if self._table is not None:
            addresses, sizes = self._table
            self.kernel.run(addresses, sizes, self.dtype, self.fresh, c)
            for target, temp in self._write_back:
                np.copyto(target, temp)
            self._table, self._keep = None, ()
        else:
            with _nan_is_an_answer():
                for leaf in self._leaves:
                    _ufunc_leaf(*leaf, c)
            self._leaves = []
        if not self.inplace:  # the caller is about to drop these: next call's outputs
            _RECYCLER.keep(
                (a for column in self._originals for a in column if type(a) is np.ndarray),
                _key,
                _nbytes,
            )
        self._originals = ([], [], [])
        self.fresh = False  # the outputs are full averages: a remembered plan passes them back

    def outputs(self) -> tuple[list, list, list]:
        return self._outputs


def _reusable(array: np.ndarray) -> bool:
    """An unreferenced array may take new values when it owns its memory (a view would refer
    to its base, so an unreferenced base has no views)."""
    return array.flags.owndata and array.flags.writeable


def _key(array: np.ndarray) -> tuple:
    return (array.shape, array.dtype)


def _nbytes(array: np.ndarray) -> int:
    return array.nbytes


_RECYCLER = Recycler(_reusable)


def _new(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new output array: an input of an earlier call that the caller has dropped (see
    :mod:`adamupdate._recycle`), or a fresh one."""
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    spare = _RECYCLER.take((shape, dtype))
    return spare if spare is not None else np.empty(shape, dtype)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array of the same shape (``np.ascontiguousarray`` would make a
    0-d array 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _addresses(rows, dtype, m_dtype, v_dtype, fresh) -> tuple[np.ndarray, np.ndarray] | int:
    """The kernel's address table checked through Python attributes; the failing column or
    the table."""
    n = len(rows[0])
    want = (dtype, dtype, m_dtype, v_dtype, dtype, m_dtype, v_dtype)
    addresses = np.zeros((7, n), np.intp)
    sizes = np.array([a.size for a in rows[0]], np.intp)
    for r, (row, kind) in enumerate(zip(rows, want)):
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


def _worth(elements: int, arrays: int) -> bool:
    """numba costs ~0.4 s to import (and a one-off compile): not worth it for a few tiny arrays
    until something else has loaded it. Both routes give the same bits."""
    if elements >= _FUSE_ABOVE_ELEMENTS or arrays >= _FUSE_ABOVE_ARRAYS:
        return True
    loaded = sys.modules.get("adamupdate.kernels.numba_adam")
    return loaded is not None and bool(loaded._state.get("ok"))


def _fast_kernel() -> Any:
    """The numba kernel module when numba is installed, else ``None`` (NumPy ufuncs)."""
    try:
        from ..kernels import numba_adam
    except ImportError:
        return None
    return numba_adam if numba_adam.available() else None


def _full(state: Any, param: Any) -> np.ndarray:
    """MATLAB's scalar-0 average (a frozen parameter's) broadcast to the parameter's shape."""
    state = as_array(state)
    shape = np.shape(param)
    if state.shape == shape:
        return state
    return np.full(shape, state, state.dtype)


def _ufunc_leaf(p, g, m, v, p_out, m_out, v_out, c: StepCoefficients) -> None:
    """One leaf with ufuncs: directly in its own precision when all dtypes agree, else through
    float32 (half precision) or the averages' precision."""
    compute = np.result_type(np.float32 if p.dtype == _HALF else p.dtype, m_out.dtype)
    if p.dtype == compute and m_out.dtype == compute and p.flags.c_contiguous:
        direct = (p, g, m, v, p_out, m_out, v_out)
        if all(a is None or a.flags.c_contiguous for a in direct):
            _chunked(direct, c)
            return
    real = real_dtype(compute)
    work = [
        p.astype(compute),
        g.astype(compute),
        None if m is None else m.astype(compute),
        None if v is None else v.astype(real),
    ]
    outs = [np.empty(p.shape, compute), np.empty(p.shape, compute), np.empty(p.shape, real)]
    _chunked((*work, *outs), c)
    for target, result in zip((p_out, m_out, v_out), outs):
        np.copyto(target, result, casting="unsafe")


def _chunked(leaf: tuple, c: StepCoefficients) -> None:
    """Contiguous arrays of one precision, in chunks whose temporaries stay in cache; complex
    arrays as pairs of reals."""
    flat = [None if a is None else a.reshape(-1) for a in leaf]
    if flat[0].dtype.kind == "c":
        flat = [
            None
            if a is None
            else (
                a.view(real_dtype(a.dtype)).reshape(-1, 2)
                if a.dtype.kind == "c"
                else a.reshape(-1, 1)
            )
            for a in flat
        ]
    for start in range(0, flat[0].shape[0], _CHUNK):
        chunk = slice(start, start + _CHUNK)
        _ufunc_step(*(None if a is None else a[chunk] for a in flat), c)


def _ufunc_step(p, g, m, v, p_out, m_out, v_out, c: StepCoefficients) -> None:
    """MATLAB's step with ufuncs writing into preallocated outputs, in the kernel's order.

    Complex arrays arrive as ``(n, 2)`` real pairs with ``v`` as ``(n, 1)``: ``|g|^2`` is
    ``re*re + im*im`` and the real denominator divides both parts.
    """
    scalar = p.dtype.type
    if g.ndim == 2 and g.shape[1] == 2:
        square = np.multiply(g[:, :1], g[:, :1])
        square += g[:, 1:] * g[:, 1:]
    else:
        square = np.multiply(g, g)
    square *= scalar(c.one_minus_sq_grad_decay)
    if v is None:
        np.copyto(v_out, square)
    else:
        np.multiply(v, scalar(c.sq_grad_decay), out=v_out)
        v_out += square
    work = np.multiply(g, scalar(c.one_minus_grad_decay))
    if m is None:
        np.copyto(m_out, work)
    else:
        np.multiply(m, scalar(c.grad_decay), out=m_out)
        m_out += work
    denom = np.sqrt(v_out)
    denom += scalar(c.epsilon)
    np.multiply(m_out, scalar(c.step_size), out=work)
    work /= denom
    np.subtract(p, work, out=p_out)
