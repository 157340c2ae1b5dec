"""Any other Array-API array (CuPy, ``array_api_strict``, ...), through standard functions only.

The step is :func:`adamupdate._algorithm.reference_step` with the array's own namespace, found by
``array_api_compat.array_namespace``. ``inplace=True`` writes results back with ``x[...] = y``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .._algorithm import StepCoefficients, reference_step

NAME = "array-api"


def _namespace(x: Any) -> Any:
    return array_api_compat.array_namespace(x)


def describe(x: Any) -> tuple[Any, Any, tuple[int, ...]]:
    return array_api_compat.device(x), x.dtype, tuple(x.shape)


def check_param_dtype(dtype: Any) -> str | None:
    return None  # checked per array in state_dtypes, which has the namespace at hand


def _real(xp: Any, dtype: Any) -> Any:
    return (
        xp.real(xp.zeros((), dtype=dtype)).dtype if xp.isdtype(dtype, "complex floating") else dtype
    )


def state_dtypes(param_dtype: Any, state_dtype: Any = None, like: Any = None) -> tuple[Any, Any]:
    xp = _namespace(like)
    avg = param_dtype if state_dtype is None else state_dtype
    if isinstance(avg, str):
        avg = getattr(xp, avg)
    return avg, _real(xp, avg)


def is_writeable(x: Any) -> bool:
    return True


def zero_state(dtype: Any, like: Any) -> Any:
    xp = _namespace(like)
    return xp.zeros((), dtype=dtype, device=array_api_compat.device(like))


def finish(original: Any, updated: Any) -> Any:
    return updated


finish_state = finish


def step(
    params: list[Any],
    grads: list[Any],
    avg_grads: list[Any] | None,
    avg_sq_grads: list[Any] | None,
    c: StepCoefficients,
    *,
    inplace: bool,
    state_dtypes: tuple[Any, Any],
) -> tuple[list[Any], list[Any], list[Any]]:
    """One step per array with the array's own namespace; see :mod:`adamupdate._kernels`."""
    xp = _namespace(params[0])
    m_dtype = state_dtypes[0]
    low_precision = params[0].dtype == xp.float16 if hasattr(xp, "float16") else False
    compute = xp.float32 if low_precision else params[0].dtype
    real_compute = _real(xp, compute)
    outputs: tuple[list, list, list] = ([], [], [])
    for i, (p, g) in enumerate(zip(params, grads)):
        m = None if avg_grads is None else avg_grads[i]
        v = None if avg_sq_grads is None else avg_sq_grads[i]
        new = reference_step(
            xp,
            xp.astype(p, compute),
            xp.astype(g, compute),
            None if m is None else xp.astype(m, compute),
            None if v is None else xp.astype(v, real_compute),
            c,
        )
        targets = (p, m, v)
        for out, value, target, dtype in zip(
            outputs, new, targets, (p.dtype, m_dtype, _real(xp, m_dtype))
        ):
            value = xp.astype(xp.broadcast_to(value, p.shape), dtype)
            if inplace and target is not None and tuple(target.shape) == tuple(p.shape):
                target[...] = value
                value = target
            out.append(value)
    return outputs
