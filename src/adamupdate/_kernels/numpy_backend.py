"""NumPy arrays and Python/NumPy scalars.

Real float32/float64 take a fused, multithreaded numba kernel when numba is installed (the
``fast`` extra) and otherwise a chunked in-place NumPy loop whose temporaries stay in cache.
Both apply MATLAB's operations in MATLAB's order in the array's precision, so they agree with
each other bit for bit. float16 is computed in float32 and stored back; complex goes through the
reference step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._algorithm import StepCoefficients, reference_step

NAME = "numpy"

_REAL = (np.dtype(np.float32), np.dtype(np.float64))
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
    fused = []  # leaves the fused real kernels handle, as (index, p, g, m, v, outputs)
    for i in range(n):
        p, g = as_array(params[i]), as_array(grads[i])
        m = None if avg_grads is None else _full(as_array(avg_grads[i]), p.shape)
        v = None if avg_sq_grads is None else _full(as_array(avg_sq_grads[i]), p.shape)
        p_out = p if inplace and type(params[i]) is np.ndarray else np.empty(p.shape, p.dtype)
        m_out = _output(m, avg_grads and avg_grads[i], p.shape, m_dtype, inplace)
        v_out = _output(v, avg_sq_grads and avg_sq_grads[i], p.shape, v_dtype, inplace)
        new_params[i], new_avg[i], new_sq[i] = p_out, m_out, v_out
        if p.dtype in _REAL and m_dtype == p.dtype:
            fused.append((p, g, m, v, p_out, m_out, v_out))
        else:
            with _nan_is_an_answer():
                _step_by_reference(p, g, m, v, p_out, m_out, v_out, c)
    if fused:
        with _nan_is_an_answer():
            _step_real(fused, c)
    return new_params, new_avg, new_sq


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


def _step_real(leaves: list[tuple], c: StepCoefficients) -> None:
    fast = _fast_kernel()
    if fast is not None:
        fast.step_arrays(leaves, c)
        return
    for leaf in leaves:
        flat = [None if a is None else _flat_view(a) for a in leaf]
        if any(f is None and a is not None for f, a in zip(flat, leaf)):
            _ufunc_step(*leaf, c)  # a non-contiguous view: whole-array ufuncs
            continue
        for start in range(0, flat[0].size, _CHUNK):
            chunk = slice(start, start + _CHUNK)
            _ufunc_step(*(None if a is None else a[chunk] for a in flat), c)


def _fast_kernel() -> Any:
    """The numba kernel module when numba is installed, else ``None`` (NumPy fallback)."""
    try:
        from . import numba_kernel
    except ImportError:
        return None
    ready = hasattr(numba_kernel, "step_arrays") and numba_kernel.available()
    return numba_kernel if ready else None


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
