"""JAX arrays: functional steps compiled once with ``jax.jit``.

The step is :func:`adamupdate._algorithm.reference_step` itself, traced and compiled by XLA into
one fused loop per array. ``inplace=True`` donates the parameter and state buffers, so XLA writes
the results into them and the caller's old arrays become invalid — JAX's form of an in-place
update. The call also works inside the caller's own ``jax.jit`` with a traced ``iteration``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._algorithm import StepCoefficients, reference_step

NAME = "jax"

_LOW_PRECISION = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16))


def describe(x: Any) -> tuple[str, Any, tuple[int, ...]]:
    # JAX places results itself; arrays on different devices fail loudly inside JAX.
    return "jax", np.dtype(x.dtype), tuple(x.shape)


def check_param_dtype(dtype: Any) -> str | None:
    if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating):
        return None
    return f"dtype {dtype} is not floating point or complex"


def state_dtypes(param_dtype: Any, state_dtype: Any = None, like: Any = None) -> tuple[Any, Any]:
    avg = np.dtype(param_dtype if state_dtype is None else jnp.dtype(state_dtype))
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and avg.kind != "c":
        avg = np.result_type(avg, np.complex64)
    return avg, np.dtype(jnp.finfo(avg).dtype)


def is_writeable(x: Any) -> bool:
    return True


def zero_state(dtype: Any, like: Any) -> Any:
    return jnp.zeros((), dtype)


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
    """One jitted step over a group of arrays; see :mod:`adamupdate._kernels`."""
    traced = any(isinstance(x, jax.core.Tracer) for x in (*params, c.step_size))
    # Donating buffers is meaningless inside the caller's own trace.
    compiled = _compiled_step(avg_grads is None, avg_sq_grads is None, inplace and not traced)
    scalars = (
        c.step_size,
        c.grad_decay,
        c.one_minus_grad_decay,
        c.sq_grad_decay,
        c.one_minus_sq_grad_decay,
        c.epsilon,
    )
    new_params, new_avg, new_sq = compiled(
        list(params),
        list(grads),
        None if avg_grads is None else list(avg_grads),
        None if avg_sq_grads is None else list(avg_sq_grads),
        scalars,
        state_dtypes,
    )
    return list(new_params), list(new_avg), list(new_sq)


@cache
def _compiled_step(fresh_avg: bool, fresh_sq: bool, donate: bool):
    def run(params, grads, avg_grads, avg_sq_grads, scalars, dtypes):
        c = StepCoefficients(*scalars, learn_rate=0.0, iteration=0)
        outputs = ([], [], [])
        for i, (p, g) in enumerate(zip(params, grads)):
            m = None if fresh_avg else avg_grads[i]
            v = None if fresh_sq else avg_sq_grads[i]
            compute = jnp.float32 if p.dtype in _LOW_PRECISION else p.dtype
            new = reference_step(
                jnp,
                p.astype(compute),
                g.astype(compute),
                None if m is None else m.astype(compute),
                None if v is None else v.astype(jnp.finfo(compute).dtype),
                c,
            )
            for out, value, dtype in zip(outputs, new, (p.dtype, *dtypes)):
                out.append(jnp.broadcast_to(value, p.shape).astype(dtype))
        return outputs

    donated = [0] + ([] if fresh_avg else [2]) + ([] if fresh_sq else [3])
    return jax.jit(run, static_argnums=(5,), donate_argnums=tuple(donated) if donate else ())
