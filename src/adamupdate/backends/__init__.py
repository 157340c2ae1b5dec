"""Backends: one thin adapter module per array library, all implementing :class:`Backend`.

:mod:`adamupdate._dispatch` picks the backend of a leaf; :mod:`adamupdate._plan` checks every
leaf through these functions before anything is written, then hands each group of leaves that
share backend, device, dtype, state presence and learn-rate factor to the backend's
:class:`GroupStep`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..rules import Rule


class GroupStep(Protocol):
    """One group's step in one call: made by the plan, bound to the call's leaves, run once.

    The contract that makes a failed call change nothing: everything that can fail (checks,
    allocations, staging copies, compilation) happens in :meth:`bind`; :meth:`run` only
    computes and writes, and cannot raise.
    """

    def bind(self, params: list, grads: list, states: list[list]) -> None:
        """Take this call's leaves, which the plan has checked, and prepare :meth:`run`
        (outputs, staging copies, compilation); write nothing the caller can see.

        ``states`` holds one list per state of the rule (``None`` each when fresh).
        """
        ...

    @property
    def writes_in_run(self) -> bool:
        """Whether :meth:`run` writes the caller's buffers (a kernel that cannot fail) rather
        than computing into new arrays that :meth:`commit` writes."""
        ...

    def run(self, c: Any) -> None:
        """Compute the step. A run that writes the caller's buffers cannot fail; one that can
        fail (allocating as it goes) writes nothing of the caller's."""
        ...

    def commit(self) -> None:
        """Write what :meth:`run` computed into the caller's buffers (after every group of
        the call has run); never raises."""
        ...

    def outputs(self) -> tuple[list, tuple[list, ...]]:
        """The new parameters and states of the last :meth:`run`, in the group's order."""
        ...


class Backend(Protocol):
    """What a backend module provides (module-level names)."""

    NAME: str
    MUTABLE: bool  # in place, the results are written into the given buffers (not JAX)

    def describe(self, x: Any) -> tuple[Any, Any, tuple[int, ...]]:
        """``(device, dtype, shape)`` of a leaf: what grouping and structure checks compare."""
        ...

    def check_leaf(self, x: Any) -> str | None:
        """``None`` when the library can update ``x`` (dtype, layout, ...), else the reason."""
        ...

    def state_dtypes(
        self, param_dtype: Any, state_dtype: Any = None, like: Any = None
    ) -> tuple[Any, Any]:
        """dtypes of the two averages: float32 for half-precision parameters, the parameter's
        otherwise, ``state_dtype`` when given; the squared average of complex is real.
        ``like`` is the parameter itself (a library may need it to find its namespace).
        Raises ``TypeError`` for a ``state_dtype`` that cannot hold an average."""
        ...

    def castable(self, dtype: Any, to: Any) -> bool:
        """Whether a gradient of ``dtype`` may be computed in its parameter's ``to`` (MATLAB
        computes ``single`` parameters with ``double`` gradients in single precision)."""
        ...

    def cast(self, x: Any, dtype: Any) -> Any:
        """``x`` converted to ``dtype`` (a new array; see :meth:`castable`)."""
        ...

    def is_writeable(self, x: Any) -> bool:
        """Whether ``inplace=True`` can write into ``x``."""
        ...

    def memory(self, x: Any) -> tuple[int, int] | None:
        """Byte range ``[lo, hi)`` that ``x``'s elements span, or ``None`` when the library
        gives no address (JAX: buffers are donated, never aliased)."""
        ...

    def internal_overlap(self, x: Any) -> bool:
        """Whether two elements of ``x`` may share memory (an expanded tensor)."""
        ...

    def shares_memory(self, a: Any, b: Any) -> bool:
        """Whether ``a`` and ``b``, whose byte ranges overlap, really share an element."""
        ...

    def finish(self, original: Any, updated: Any) -> Any:
        """Give a new parameter the outer form of the one it replaces (a Python float stays a
        float, a tensor keeps ``requires_grad``)."""
        ...

    def finish_state(self, grad: Any, updated: Any) -> Any:
        """Give an average the outer form of its gradient."""
        ...

    def zero_state(self, dtype: Any, like: Any) -> Any:
        """MATLAB's scalar 0 state (0-d) for a frozen parameter."""
        ...

    def group(
        self,
        rule: Rule,
        dtype: Any,
        state_dtypes: tuple[Any, ...],
        *,
        fresh: bool,
        inplace: bool,
        params: list,
    ) -> GroupStep:
        """A :class:`GroupStep` of ``rule`` for parameters like ``params`` (checked, of one
        dtype); ``state_dtypes`` has one dtype per state of the rule."""
        ...


if TYPE_CHECKING:  # every backend module implements the protocol: mypy checks it here
    from . import array_api_backend, jax_backend, numpy_backend, torch_backend

    _NUMPY: Backend = numpy_backend
    _TORCH: Backend = torch_backend
    _JAX: Backend = jax_backend
    _ARRAY_API: Backend = array_api_backend
