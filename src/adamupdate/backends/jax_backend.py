"""JAX arrays: functional steps compiled once per plan with ``jax.jit``.

The step is MATLAB's formula traced and compiled by XLA into one fused loop per array (complex
arrays componentwise, as MATLAB multiplies a complex array by a real scalar; half precision in
float32). ``inplace=True`` donates the parameter and state buffers, so XLA writes the results
into them and the caller's old arrays become invalid — JAX's form of an in-place update. The
executable is compiled when the call is planned (:meth:`Group.bind`), before any buffer of any
group is donated, so a failure changes nothing. The call also works inside the caller's own
``jax.jit`` with a traced ``iteration`` (then there is nothing to compile or donate ahead).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._algorithm import StepCoefficients

NAME = "jax"
MUTABLE = False  # in place means donated buffers: the results are new arrays

_HALF = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16))


def describe(x: Any) -> tuple[str, Any, tuple[int, ...]]:
    # JAX places results itself; arrays on different devices fail loudly inside JAX.
    return "jax", np.dtype(x.dtype), tuple(x.shape)


def check_leaf(x: Any) -> str | None:
    if jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.complexfloating):
        return None
    return f"dtype {x.dtype} is not floating point or complex"


def state_dtypes(param_dtype: Any, state_dtype: Any = None, like: Any = None) -> tuple[Any, Any]:
    if state_dtype is None:
        avg = np.dtype(jnp.float32) if param_dtype in _HALF else np.dtype(param_dtype)
    else:
        try:
            avg = np.dtype(jnp.dtype(state_dtype))
        except TypeError:
            raise TypeError(f"{state_dtype!r} is not a JAX dtype") from None
        if not (jnp.issubdtype(avg, jnp.floating) or jnp.issubdtype(avg, jnp.complexfloating)):
            raise TypeError(f"{avg} cannot hold an average (a floating or complex dtype)")
        if avg.kind == "c" and not jnp.issubdtype(param_dtype, jnp.complexfloating):
            raise TypeError(f"complex {avg} averages for real {param_dtype} parameters")
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and avg.kind != "c":
        avg = np.result_type(avg, np.complex64)
    return avg, np.dtype(jnp.finfo(avg).dtype)


def is_writeable(x: Any) -> bool:
    return True


def memory(x: Any) -> None:
    return None  # JAX arrays are immutable; donated buffers are never aliased


def internal_overlap(x: Any) -> bool:
    return False


def shares_memory(a: Any, b: Any) -> bool:
    return False


def zero_state(dtype: Any, like: Any) -> Any:
    return jnp.zeros((), dtype)


def finish(original: Any, updated: Any) -> Any:
    return updated


finish_state = finish


def group(dtype, state_dtypes, *, fresh: bool, inplace: bool, params: list) -> Group:
    return Group(state_dtypes, fresh=fresh, inplace=inplace)


class Group:
    """A group of JAX arrays (see :class:`adamupdate.backends.GroupStep`)."""

    def __init__(self, state_dtypes: tuple[Any, Any], *, fresh: bool, inplace: bool) -> None:
        self.state_dtypes = tuple(state_dtypes)
        self.fresh, self.inplace = fresh, inplace
        self._executable: Any = None
        self._forms: list = []
        self._args: tuple = ()
        self._outputs: tuple[list, list, list] = ([], [], [])

    def bind(self, params, grads, avg_grads, avg_sq_grads, *, checked: bool) -> bool:
        forms = [(type(x), x.dtype, x.shape) for x in (*params, *grads)]
        if not checked and forms != self._forms:
            return False
        fresh = self.fresh
        self._args = (
            list(params),
            list(grads),
            None if fresh else list(avg_grads),
            None if fresh else list(avg_sq_grads),
        )
        traced = any(isinstance(x, jax.core.Tracer) for x in (*params, *grads))
        donate = self.inplace and not traced  # donating is meaningless inside a trace
        step = _compiled_step(fresh, donate, self.state_dtypes)
        if traced:
            self._executable = step
        elif self._executable is None or forms != self._forms:
            scalars = (0.0,) * 6
            self._executable = step.lower(*self._args, scalars).compile()
        self._forms = forms
        return True

    def run(self, c: StepCoefficients) -> None:
        scalars = (
            c.step_size,
            c.grad_decay,
            c.one_minus_grad_decay,
            c.sq_grad_decay,
            c.one_minus_sq_grad_decay,
            c.epsilon,
        )
        if not isinstance(c.step_size, jax.core.Tracer):
            scalars = tuple(float(s) for s in scalars)
        ps, ms, vs = self._executable(*self._args, scalars)
        self._outputs = (list(ps), list(ms), list(vs))
        self._args = ()
        if self.fresh:
            self.fresh = False  # a remembered plan passes these averages back
            self._executable = None

    def outputs(self) -> tuple[list, list, list]:
        return self._outputs


def _moment(decay, moment, one_minus, value):
    """β·moment + (1−β)·value; complex componentwise, as MATLAB scales a complex array by a
    real number (a complex product would turn inf+0j into inf+nan·j)."""
    if jnp.iscomplexobj(value):
        re = _moment(decay, None if moment is None else moment.real, one_minus, value.real)
        im = _moment(decay, None if moment is None else moment.imag, one_minus, value.imag)
        return jax.lax.complex(re, im)
    scaled = one_minus * value
    return scaled if moment is None else decay * moment + scaled


@cache
def _compiled_step(fresh: bool, donate: bool, dtypes: tuple[Any, Any]):
    def run(params, grads, avg_grads, avg_sq_grads, scalars):
        step, b1, omb1, b2, omb2, eps = scalars
        outputs: tuple[list, list, list] = ([], [], [])
        for i, (p, g) in enumerate(zip(params, grads)):
            compute = jnp.float32 if p.dtype in _HALF else p.dtype
            real = jnp.finfo(compute).dtype
            gc = g.astype(compute)
            m = None if fresh else avg_grads[i].astype(compute)
            v = None if fresh else avg_sq_grads[i].astype(real)
            square = gc.real * gc.real + gc.imag * gc.imag if jnp.iscomplexobj(gc) else gc * gc
            v = _moment(b2, v, omb2, square)
            m = _moment(b1, m, omb1, gc)
            denom = jnp.sqrt(v) + eps
            pc = p.astype(compute)
            if jnp.iscomplexobj(pc):
                new_p = jax.lax.complex(
                    pc.real - (step * m.real) / denom, pc.imag - (step * m.imag) / denom
                )
            else:
                new_p = pc - (step * m) / denom
            for out, value, dtype in zip(outputs, (new_p, m, v), (p.dtype, *dtypes)):
                out.append(jnp.broadcast_to(value, p.shape).astype(dtype))
        return outputs

    donated = (0,) if fresh else (0, 2, 3)
    return jax.jit(run, donate_argnums=donated if donate else ())
