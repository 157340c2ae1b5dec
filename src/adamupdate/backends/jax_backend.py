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

import collections
from collections.abc import Sequence
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..rules import Rule
from ._opaque import finish as finish  # the Backend protocol's memory parts
from ._opaque import finish_state as finish_state
from ._opaque import internal_overlap as internal_overlap
from ._opaque import is_writeable as is_writeable
from ._opaque import memory as memory
from ._opaque import shares_memory as shares_memory

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


def castable(dtype: Any, to: Any) -> bool:
    """Whether a gradient of ``dtype`` may be computed as ``to`` (floating point both, no
    imaginary part dropped)."""

    def floating(d: Any) -> bool:
        return bool(jnp.issubdtype(d, jnp.floating) or jnp.issubdtype(d, jnp.complexfloating))

    complex_ = jnp.issubdtype(dtype, jnp.complexfloating)
    return (
        floating(dtype)
        and floating(to)
        and (not complex_ or jnp.issubdtype(to, jnp.complexfloating))
    )


def cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype`` (see :func:`castable`)."""
    return x.astype(dtype)


def zero_state(dtype: Any, like: Any) -> Any:
    return jnp.zeros((), dtype)


class Group:
    """A group of JAX arrays (see :class:`adamupdate.backends.GroupStep`)."""

    def __init__(
        self,
        rule: Rule,
        dtype: Any,
        state_dtypes: tuple[Any, ...],
        *,
        fresh: bool,
        inplace: bool,
        params: list,
    ) -> None:
        self.rule = rule
        self.state_dtypes = tuple(state_dtypes)
        self.fresh, self.inplace = fresh, inplace
        self._executable: Any = None
        self._args: tuple = ()
        self._outputs: tuple[list, tuple[list, ...]] = ([], ())

    def bind(self, params: list, grads: list, states: list[list]) -> None:
        self._args = (list(params), list(grads), None if self.fresh else [list(c) for c in states])
        traced = any(isinstance(x, jax.core.Tracer) for x in (*params, *grads))
        donate = self.inplace and not traced  # donating is meaningless inside a trace
        step = _compiled_step(self.rule, self.fresh, donate, self.state_dtypes)
        if traced:
            self._executable = step
            return
        ps, gs, columns = self._args
        leaves = [*ps, *gs, *(x for column in columns or () for x in column)]
        key = (step, tuple(_signature(x) for x in leaves))
        executable = _EXECUTABLES.get(key)
        if executable is None:
            executable = step.lower(*self._args, _scalars(self.rule)).compile()
            _EXECUTABLES[key] = executable
            while len(_EXECUTABLES) > _KEEP_EXECUTABLES:
                _EXECUTABLES.popitem(last=False)
        else:
            _EXECUTABLES.move_to_end(key)
        self._executable = executable

    def run(self, c: Any) -> None:
        scalars = c._asdict()
        if not any(isinstance(value, jax.core.Tracer) for value in scalars.values()):
            scalars = {name: float(value) for name, value in scalars.items()}
        ps, states = self._executable(*self._args, scalars)
        self._outputs = (list(ps), tuple(list(column) for column in states))
        self._args = ()

    writes_in_run = True  # donated buffers are consumed by the run itself

    def commit(self) -> None:
        """Nothing to write: the results are new arrays."""

    def outputs(self) -> tuple[list, tuple[list, ...]]:
        return self._outputs


group = Group  # the backend's GroupStep factory (see adamupdate.backends.Backend.group)

#: Compiled steps by (jitted function, arguments' signature): compiling in :meth:`Group.bind`
#: (so that a failure comes before any buffer is donated) would otherwise cost every call a
#: compilation. Programs only, no arrays; the least recently used go first.
_EXECUTABLES: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_KEEP_EXECUTABLES = 64


def _signature(x: Any) -> tuple:
    """What a compiled program was made for: an argument's form and placement."""
    return (tuple(x.shape), np.dtype(x.dtype), getattr(x, "weak_type", False), x.sharding)


def _scalars(rule: Rule) -> dict[str, float]:
    """Stand-ins for a step's scalars: what tracing needs to know of them ahead of time."""
    return {name: 0.0 for name in rule.coefficients_type._fields}


@cache
def _compiled_step(
    rule: Rule, fresh: bool, donate: bool, dtypes: tuple[Any, ...]
) -> jax.stages.Wrapped:
    def run(
        params: list,
        grads: list,
        states: Any,  # a list per state; None when fresh
        scalars: dict[str, Any],
    ) -> tuple[list, tuple[list, ...]]:
        c = rule.coefficients_type(**scalars)
        outputs: tuple[list, ...] = tuple([] for _ in range(1 + len(dtypes)))
        for i, (p, g) in enumerate(zip(params, grads)):
            compute = jnp.float32 if p.dtype in _HALF else p.dtype
            real = jnp.finfo(compute).dtype
            pairs = jnp.issubdtype(compute, jnp.complexfloating)
            gc = g.astype(compute)
            g2 = gc.real * gc.real + gc.imag * gc.imag if pairs else gc * gc
            xs = [
                None
                if fresh
                else jnp.broadcast_to(states[r][i], p.shape).astype(real if squared else compute)
                for r, squared in enumerate(rule.squared)
            ]
            pc = p.astype(compute)
            if not pairs:
                new: Sequence[Any] = rule.step(jnp, c, pc, gc, g2, *xs)
            else:
                # Real and imaginary parts through the body one after the other, each divided
                # by a divisor of its own shape: XLA rewrites a division by a broadcast divisor
                # into a multiplication by its reciprocal, which rounds differently.
                def part(x: Any, squared: bool, take: Any) -> Any:
                    return x if x is None or squared else take(x)

                re, im = (
                    rule.step(
                        jnp,
                        c,
                        take(pc),
                        take(gc),
                        g2,
                        *(part(x, sq, take) for x, sq in zip(xs, rule.squared)),
                    )
                    for take in (jnp.real, jnp.imag)
                )
                new = [
                    a if squared else jax.lax.complex(a, b)
                    for a, b, squared in zip(re, im, (False, *rule.squared))
                ]
            for out, value, dtype in zip(outputs, new, (p.dtype, *dtypes)):
                out.append(jnp.broadcast_to(value, p.shape).astype(dtype))
        return outputs[0], outputs[1:]

    return jax.jit(run, donate_argnums=(0, 2) if donate and not fresh else (0,) if donate else ())
