"""NumPy arrays and Python/NumPy scalars.

float32/float64/complex64/complex128 groups of some size take the fused, multithreaded numba
kernel (:mod:`.numba_kernel`) when numba is installed (the ``fast`` extra); small groups, and
every group without numba, take a chunked in-place NumPy loop whose temporaries stay in cache.
For real dtypes both apply MATLAB's operations in MATLAB's order in the array's precision and
agree bit for bit. For complex, the kernel divides real and imaginary parts by the real
denominator separately (as MATLAB divides a complex array by a real one), NumPy divides as
complex by complex: the two can differ by one rounding. float16 is computed in float32 and
stored back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._algorithm import StepCoefficients, reference_step

NAME = "numpy"

_REAL = (np.dtype(np.float32), np.dtype(np.float64))
_FUSABLE = (*_REAL, np.dtype(np.complex64), np.dtype(np.complex128))
_FUSE_ABOVE_ELEMENTS = 1 << 15
_FUSE_ABOVE_ARRAYS = 32
_SUPPORTED = (np.dtype(np.float16), *_REAL, np.dtype(np.complex64), np.dtype(np.complex128))
# Elements per chunk of the fallback loop: 4 arrays x 64K x 8 B stays inside a core's L2.
_CHUNK = 1 << 16


# NaN/Inf in a gradient propagate as the formula says, as in MATLAB: not worth a warning.
def _nan_is_an_answer() -> np.errstate:
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


def check_param_dtype(dtype: np.dtype) -> str | None:
    if dtype in _SUPPORTED:
        return None
    return f"dtype {dtype} is not floating point (float16/32/64 or complex64/128)"


def real_dtype(dtype: np.dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def state_dtypes(
    param_dtype: np.dtype, state_dtype: Any = None, like: Any = None
) -> tuple[np.dtype, np.dtype]:
    avg = param_dtype if state_dtype is None else np.dtype(state_dtype)
    if param_dtype.kind == "c" and avg.kind != "c":
        avg = np.result_type(avg, np.complex64)
    return avg, real_dtype(avg)


def is_writeable(x: Any) -> bool:
    return type(x) is np.ndarray and x.flags.writeable


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


finish_state = finish  # states mirror the gradient's form


def step(
    params: list[Any],
    grads: list[Any],
    avg_grads: list[Any] | None,
    avg_sq_grads: list[Any] | None,
    c: StepCoefficients,
    *,
    inplace: bool,
    state_dtypes: tuple[np.dtype, np.dtype],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """One step over a group of arrays of one dtype; see :mod:`adamupdate._kernels`."""
    m_dtype, v_dtype = state_dtypes
    n = len(params)
    new_params, new_avg, new_sq = [None] * n, [None] * n, [None] * n
    elements = 0
    fused = []  # leaves for the fused kernels, as (p, g, m, v, p_out, m_out, v_out)
    for i in range(n):
        p, g = as_array(params[i]), as_array(grads[i])
        m = None if avg_grads is None else _full(as_array(avg_grads[i]), p.shape)
        v = None if avg_sq_grads is None else _full(as_array(avg_sq_grads[i]), p.shape)
        p_out = p if inplace and type(params[i]) is np.ndarray else np.empty(p.shape, p.dtype)
        m_out = _output(m, None if m is None else avg_grads[i], p.shape, m_dtype, inplace)
        v_out = _output(v, None if v is None else avg_sq_grads[i], p.shape, v_dtype, inplace)
        new_params[i], new_avg[i], new_sq[i] = p_out, m_out, v_out
        if m_dtype == p.dtype and p.dtype in _FUSABLE:
            fused.append((p, g, m, v, p_out, m_out, v_out))
            elements += p.size
        else:
            with _nan_is_an_answer():
                _step_by_reference(p, g, m, v, p_out, m_out, v_out, c)
    if fused:
        fast = _fast_kernel() if _worth_compiling(elements, len(fused)) else None
        with _nan_is_an_answer():
            if fast is not None:
                fast.step_arrays(fused, c)
            else:
                _step_chunked(fused, c)
    return new_params, new_avg, new_sq


class Prepared:
    """An in-place group's kernel batch, checked once and kept between steps (see
    :mod:`adamupdate._plans`). It refers to the arrays by ``id`` only — it keeps none alive —
    and is used only with the live objects of the current call: the very ones it was built for
    (the plan checks that), or, for new gradients, rebuilt around them."""

    def __init__(self, kernel: Any, batch: Any) -> None:
        self.kernel, self.batch = kernel, batch
        # Whether the batch was built around the gradients the plan watches now.
        self.current = False

    def ready(self, params, grads, avg_grads, avg_sq_grads, *, same_grads: bool = False) -> bool:
        """Whether :meth:`step` can run on this call's arrays; checks all, writes nothing.

        ``same_grads``: the plan saw last call's gradient objects again."""
        if same_grads and self.current:
            return self.kernel.still_valid(self.batch)  # e.g. a flag turned read-only
        try:
            batch = self.kernel.batch(
                params, grads, avg_grads, avg_sq_grads, params, avg_grads, avg_sq_grads
            )
        except (TypeError, ValueError):  # e.g. a non-contiguous gradient
            return False
        self.batch, self.current = dataclasses.replace(batch, keep=()), True
        return True

    def step(self, c: StepCoefficients) -> None:
        self.kernel.fused_step_batch(self.batch, c)


def prepare(
    params: list[Any],
    grads: list[Any],
    avg_grads: list[Any],
    avg_sq_grads: list[Any],
    state_dtypes: tuple[np.dtype, np.dtype],
) -> Prepared | None:
    """A :class:`Prepared` step for an in-place group the fused kernel can take, else ``None``."""
    arrays = (*params, *avg_grads, *avg_sq_grads)
    fast = _fast_kernel() if _worth_compiling(sum(p.size for p in params), len(params)) else None
    if fast is None or not all(type(a) is np.ndarray for a in arrays):
        return None
    if state_dtypes[0] != params[0].dtype or not fast.supports(params[0].dtype):
        return None
    try:
        batch = fast.batch(params, grads, avg_grads, avg_sq_grads, params, avg_grads, avg_sq_grads)
    except (TypeError, ValueError):
        return None
    if not batch.objects:  # raw addresses: only safe while the batch keeps the arrays alive
        return None
    return Prepared(fast, dataclasses.replace(batch, keep=()))


def _output(state, original, shape, dtype, inplace: bool) -> np.ndarray:
    """Write into the caller's state buffer in place mode, when it is a full-size array."""
    if inplace and state is original and type(state) is np.ndarray and state.shape == shape:
        return state
    return np.empty(shape, dtype)


def _full(state: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """MATLAB's scalar-0 state (a frozen parameter's) broadcast to the parameter's shape."""
    if state.shape == shape or state.ndim:
        return state
    return np.full(shape, state, state.dtype)


def _step_chunked(leaves: list[tuple], c: StepCoefficients) -> None:
    """The fallback without numba: real dtypes by ufuncs in cache-sized chunks."""
    for leaf in leaves:
        if leaf[0].dtype not in _REAL:
            _step_by_reference(*leaf, c)
            continue
        flat = [None if a is None else _flat_view(a) for a in leaf]
        if any(f is None and a is not None for f, a in zip(flat, leaf)):
            _ufunc_step(*leaf, c)  # a non-contiguous view: whole-array ufuncs
            continue
        for start in range(0, flat[0].size, _CHUNK):
            chunk = slice(start, start + _CHUNK)
            _ufunc_step(*(None if a is None else a[chunk] for a in flat), c)


def _worth_compiling(elements: int, arrays: int) -> bool:
    """numba costs ~0.4 s to import (and a one-off compile): not worth it for a few tiny arrays,
    which NumPy's ufuncs step in microseconds anyway."""
    return elements >= _FUSE_ABOVE_ELEMENTS or arrays >= _FUSE_ABOVE_ARRAYS


def _fast_kernel() -> Any:
    """The numba kernel module when numba is installed, else ``None`` (NumPy fallback)."""
    try:
        from . import numba_kernel
    except ImportError:
        return None
    return numba_kernel if numba_kernel.available() else None


def _flat_view(a: np.ndarray) -> np.ndarray | None:
    return a.reshape(-1) if a.flags.c_contiguous else None


def _ufunc_step(p, g, m, v, p_out, m_out, v_out, c: StepCoefficients) -> None:
    """MATLAB's step with NumPy ufuncs writing into preallocated outputs.

    The same operations in the same order as :func:`reference_step`, so the results are
    identical; only the two temporaries are new, and the caller keeps them small by chunking.
    """
    scalar = p.dtype.type
    work = np.multiply(g, g)
    work *= scalar(c.one_minus_sq_grad_decay)
    if v is None:
        np.copyto(v_out, work)
    else:
        np.multiply(v, scalar(c.sq_grad_decay), out=v_out)
        v_out += work
    if m is None:
        np.multiply(g, scalar(c.one_minus_grad_decay), out=m_out)
    else:
        np.multiply(m, scalar(c.grad_decay), out=m_out)
        np.multiply(g, scalar(c.one_minus_grad_decay), out=work)
        m_out += work
    denom = np.sqrt(v_out)
    denom += scalar(c.epsilon)
    np.multiply(m_out, scalar(c.step_size), out=work)
    work /= denom
    np.subtract(p, work, out=p_out)


def _step_by_reference(p, g, m, v, p_out, m_out, v_out, c: StepCoefficients) -> None:
    """float16 (computed in float32, as MATLAB has no half) and complex."""
    compute = np.float32 if p.dtype == np.float16 else p.dtype
    if m_out.dtype.kind == "c" or m_out.dtype.itemsize > np.dtype(compute).itemsize:
        compute = np.result_type(compute, m_out.dtype)
    real_compute = real_dtype(np.dtype(compute))
    new_p, new_m, new_v = reference_step(
        np,
        p.astype(compute, copy=False),
        g.astype(compute, copy=False),
        None if m is None else m.astype(compute, copy=False),
        None if v is None else v.astype(real_compute, copy=False),
        c,
    )
    p_out[...] = new_p
    m_out[...] = new_m
    v_out[...] = new_v
