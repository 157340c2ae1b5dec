"""Any other Array-API array (CuPy, ``array_api_strict``, ...), through standard functions only.

The step is the rule's own (:attr:`adamupdate.rules.Rule.step`) with the array's namespace, found by
``array_api_compat.array_namespace``; half precision is computed in float32. ``inplace=True``
writes the results back with ``x[...] = y`` once every leaf of the group has been computed. The
standard has no way to build a complex number from its parts, so a complex gradient holding an
infinity can give NaN in a part where MATLAB's componentwise product does not.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from ..rules import Rule
from ._opaque import finish as finish  # the Backend protocol's memory parts
from ._opaque import finish_state as finish_state
from ._opaque import internal_overlap as internal_overlap
from ._opaque import is_writeable as is_writeable
from ._opaque import memory as memory
from ._opaque import shares_memory as shares_memory

NAME = "array-api"
MUTABLE = True  # arrays are updated with x[...] = y


def _namespace(x: Any) -> Any:
    return array_api_compat.array_namespace(x)


def describe(x: Any) -> tuple[Any, Any, tuple[int, ...]]:
    return array_api_compat.device(x), x.dtype, tuple(x.shape)


def check_leaf(x: Any) -> str | None:
    xp = _namespace(x)
    if xp.isdtype(x.dtype, ("real floating", "complex floating")):
        return None
    return f"dtype {x.dtype} is not floating point or complex"


def _real(xp: Any, dtype: Any) -> Any:
    return (
        xp.real(xp.zeros((), dtype=dtype)).dtype if xp.isdtype(dtype, "complex floating") else dtype
    )


def _half(xp: Any, dtype: Any) -> bool:
    return hasattr(xp, "float16") and dtype == xp.float16


def state_dtypes(param_dtype: Any, state_dtype: Any = None, like: Any = None) -> tuple[Any, Any]:
    xp = _namespace(like)
    if state_dtype is None:
        avg = xp.float32 if _half(xp, param_dtype) else param_dtype
    else:
        avg = getattr(xp, state_dtype, None) if isinstance(state_dtype, str) else state_dtype
        try:
            ok = xp.isdtype(avg, ("real floating", "complex floating"))
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise TypeError(f"{state_dtype!r} cannot hold an average (a floating dtype)")
        if xp.isdtype(avg, "complex floating") and not xp.isdtype(param_dtype, "complex floating"):
            raise TypeError(f"complex {avg} averages for real {param_dtype} parameters")
    return avg, _real(xp, avg)


def castable(dtype: Any, to: Any) -> bool:
    """Gradients of another dtype are refused here: the Array API has no portable way to
    tell a dtype's kind for every library."""
    return False


def cast(x: Any, dtype: Any) -> Any:
    raise TypeError("Array-API gradients are not converted")


def zero_state(dtype: Any, like: Any) -> Any:
    xp = _namespace(like)
    return xp.zeros((), dtype=dtype, device=array_api_compat.device(like))


class Group:
    """A group of Array-API arrays (see :class:`adamupdate.backends.GroupStep`)."""

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
        self.rule, self.state_dtypes = rule, tuple(state_dtypes)
        self.fresh, self.inplace = fresh, inplace
        self._leaves: tuple = ()
        self._targets: tuple = ()
        self._outputs: tuple[list, tuple[list, ...]] = ([], ())

    def bind(self, params: list, grads: list, states: list[list]) -> None:
        self._leaves = (params, grads, states)

    def run(self, c: Any) -> None:
        params, grads, states = self._leaves
        xp = _namespace(params[0])
        compute = xp.float32 if _half(xp, params[0].dtype) else params[0].dtype
        real_compute = _real(xp, compute)
        new_params: list = []
        new_states: tuple[list, ...] = tuple([] for _ in self.state_dtypes)
        for i, (p, g) in enumerate(zip(params, grads)):
            xs = tuple(
                None if self.fresh else xp.astype(column[i], real_compute if sq else compute)
                for column, sq in zip(states, self.rule.squared)
            )
            gc = xp.astype(g, compute)
            new_p, *new = self.rule.step(
                xp, c, xp.astype(p, compute), gc, _squared_magnitude(xp, gc), *xs
            )
            new_params.append(xp.astype(xp.broadcast_to(new_p, p.shape), p.dtype))
            for out, value, dtype in zip(new_states, new, self.state_dtypes):
                out.append(xp.astype(xp.broadcast_to(value, p.shape), dtype))
        self._outputs = (new_params, new_states)
        self._targets = (params, *(() if self.fresh else states)) if self.inplace else ()
        self._leaves = ()

    writes_in_run = False  # computes new arrays; :meth:`commit` writes them in place

    def commit(self) -> None:
        """In place, every leaf computed by every group: now write them back."""
        new_params, new_states = self._outputs
        for column, new_column in zip(self._targets, (new_params, *new_states)):
            for j, target in enumerate(column):
                if tuple(target.shape) == tuple(new_column[j].shape):
                    target[...] = new_column[j]
                    new_column[j] = target
        self._targets = ()

    def outputs(self) -> tuple[list, tuple[list, ...]]:
        return self._outputs


group = Group  # the backend's GroupStep factory (see adamupdate.backends.Backend.group)


def _squared_magnitude(xp: Any, grad: Any) -> Any:
    """:math:`|g|^2`, real-valued for real and complex ``g``."""
    if xp.isdtype(grad.dtype, "complex floating"):
        return xp.real(grad) ** 2 + xp.imag(grad) ** 2
    return grad * grad
