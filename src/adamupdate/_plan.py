"""A planned step: every leaf checked, grouped, and handed to its backend's group step.

Data flows one way: containers are flattened (:mod:`adamupdate._tree`), :func:`make` checks
every leaf and groups them (by backend, device, dtype, state presence and learn-rate factor, so
that each group is one multi-tensor kernel call, as PyTorch's optimizers group by device and
dtype), :meth:`Plan.step` binds and runs the groups, and the containers are rebuilt.

Two rules make a failed call change nothing:

- every check happens in :func:`make`, before any group is bound, and is reported by path
  (``grad['fc1'][0]: ...``);
- :meth:`Plan.step` binds *every* group (allocations, staging copies, compilation — whatever
  can fail) before it runs *any*, and commits the results to the caller's buffers only after
  every run has succeeded. Runs that can still fail — JAX executes a compiled program, which
  may donate the caller's buffers; PyTorch's ``foreach`` ops and NumPy's ufuncs allocate as
  they go — write nothing of the caller's and come before the kernels that write as they run
  (see :func:`_run_order`).

**Every call is planned from scratch**, with every check: nothing is remembered between calls,
so nothing a caller changes between calls (a dtype view, a transposed tensor, a swapped
``.data``, a resized storage) can slip past a check, and two threads never share a plan. What
makes that affordable is :func:`make`'s bulk path: the usual call — one library, one dtype,
plain contiguous arrays — is checked column by column (NumPy: from the arrays' headers in
compiled code; torch: one C-level pass per attribute), a few tenths of a µs per array, and only
a call that fails a bulk check is walked leaf by leaf, which finds the same result and names
what is wrong. A plan belongs to one call: its groups hold that call's scratch.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _memory
from ._dispatch import backend_of
from .rules import Rule

if TYPE_CHECKING:
    from .backends import Backend


@dataclass(eq=False)
class Group:
    """Leaves (by index) that one backend group step updates together; ``step`` is ``None``
    for a frozen group (learn-rate factor 0), which changes nothing. ``bound``: the bulk path
    bound the step while checking it."""

    backend: Backend
    indices: list[int]
    factor: float
    state_dtypes: tuple[Any, ...]
    step: Any = None
    bound: bool = False


@dataclass(eq=False)
class Plan:
    """One call's checked, grouped step of one rule."""

    rule: Rule
    groups: list[Group]
    inplace: bool
    state_dtype: Any
    grads: list[Any] | None = None  # the gradients to step with, when some were converted

    def step(
        self,
        params: Sequence[Any],
        grads: Sequence[Any],
        states: Sequence[Sequence[Any]],
        hyper: Any,
    ) -> tuple[list[Any], tuple[list[Any], ...]]:
        """Bind every group, run every group, then commit every group (see the module
        docstring); return the new leaves in order."""
        if self.grads is not None:
            grads = self.grads
        for group in self.groups:
            if group.step is not None and not group.bound:
                take = group.indices
                leaves = [_take(column, take) for column in states]
                group.step.bind(_take(params, take), _take(grads, take), leaves)
                group.bound = True
        coefficients_for = _coefficients_by_factor(self.rule, hyper)
        n = len(params)
        new_params: list[Any] = [None] * n
        new_states = tuple([None] * n for _ in states)
        running = [g for g in sorted(self.groups, key=_run_order) if g.step is not None]
        for group in running:
            group.step.run(coefficients_for(group.factor))
        for group in running:  # every run has succeeded: now the caller's buffers
            group.step.commit()
        for group in self.groups:
            if group.step is None:
                _freeze(group, params, states, new_params, new_states)
            else:
                _scatter(group, group.step.outputs(), params, grads, new_params, new_states)
        return new_params, new_states


def make(
    rule: Rule,
    params: Sequence[Any],
    grads: Sequence[Any],
    states: Sequence[Sequence[Any]],
    *,
    path: Callable[[str, int], str],
    factors: Sequence[float] | None = None,
    inplace: bool = False,
    state_dtype: Any = None,
) -> Plan:
    """Check every leaf against its parameter and group the leaves; raise on the first problem.

    ``states`` holds one list of leaves per state of ``rule`` (``None`` for an empty one).
    ``path(argument, i)`` names leaf ``i`` of an argument in messages, e.g. ``grad['fc1'][0]``;
    it is only called to format a message (formatting every path would cost more than the step).
    """
    bulk = _in_bulk(rule, params, grads, states, factors, inplace, state_dtype)
    if bulk is not None:
        return bulk
    groups: dict[tuple, Group] = {}
    forms: list[tuple[Any, bool]] = []
    given, grads = grads, list(grads)  # a gradient of another precision: by its cast copy
    names = rule.states
    for i, p in enumerate(params):
        backend = _backend(p, path, "params", i)
        device, dtype, shape = backend.describe(p)
        _check_leaf(backend, p, path, "params", i)
        if inplace:
            _check_writeable(backend, p, path, "params", i)
        g = given[i]
        if _check_like(g, backend, device, dtype, shape, path, "grad", i, "params", cast=True):
            grads[i] = backend.cast(g, dtype)  # checked as it is; stepped in params' precision
        try:
            avg, real = backend.state_dtypes(dtype, state_dtype, p)
        except TypeError as error:
            raise TypeError(f"state_dtype: {error}") from None
        leaf_states = [column[i] for column in states]
        empty = [state is None for state in leaf_states]
        if any(empty) and not all(empty):
            given, missing = names[empty.index(False)], names[empty.index(True)]
            raise ValueError(
                f"{path(missing, i)}: is empty while {path(given, i)} is not; the states of a "
                "parameter are empty on its first iteration, and given on every later one"
            )
        wanted = tuple(real if squared else avg for squared in rule.squared)
        for name, state, want in zip(names, leaf_states, wanted):
            if state is not None:
                _check_like(
                    state, backend, device, want, shape, path, name, i, "expected", scalar_ok=True
                )
                if inplace:
                    _check_writeable(backend, state, path, name, i)
        factor = 1.0 if factors is None else factors[i]
        fresh = all(empty)
        key = (backend, device, dtype, avg, fresh, factor)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(backend, [], factor, wanted)
        group.indices.append(i)
        forms.append((dtype, fresh))
    if inplace:
        _check_overlap(params, given, states, names, path)
        _check_donations(params, states, names, path)
    for group in groups.values():
        if group.factor != 0.0:
            dtype, fresh = forms[group.indices[0]]
            group.step = group.backend.group(
                rule,
                dtype,
                group.state_dtypes,
                fresh=fresh,
                inplace=inplace,
                params=[params[i] for i in group.indices],
            )
    return Plan(rule, list(groups.values()), inplace, state_dtype, grads=grads)


def _run_order(group: Group) -> tuple[bool, bool]:
    """Runs that can still fail come first — JAX's (it executes a program, which donates the
    caller's buffers in place), then those that compute into new arrays as they go (PyTorch's
    ``foreach`` ops, NumPy's ufuncs, the Array API), which write nothing of the caller's
    before :meth:`~adamupdate.backends.GroupStep.commit` — and the kernels that write as they
    run, and cannot fail, last."""
    return group.backend.MUTABLE, getattr(group.step, "writes_in_run", True)


def _in_bulk(
    rule: Rule,
    params: Sequence[Any],
    grads: Sequence[Any],
    states: Sequence[Sequence[Any]],
    factors: Sequence[float] | None,
    inplace: bool,
    state_dtype: Any,
) -> Plan | None:
    """The plan of the usual call — one group: one library, one dtype, one learn-rate factor
    (not 0), states all given or all empty, the default state dtype — checked and bound in
    bulk by its backend (``planned_in_bulk``), or ``None`` for the per-leaf plan."""
    if not params or state_dtype is not None:
        return None
    factor = 1.0
    if factors is not None:
        factor = factors[0]
        if factor == 0.0 or factors.count(factor) != len(factors):
            return None
    given = [sum(1 for x in column if x is None) for column in states]  # not ==: arrays
    fresh = not given or given[0] == len(params)  # a rule without states: vacuously fresh
    if any(count != (len(params) if fresh else 0) for count in given):
        return None
    backend = _bulk_backend(params[0])
    if backend is None:
        return None
    plan_columns = [list(params), list(grads), [list(column) for column in states]]
    step = backend.planned_in_bulk(rule, *plan_columns, fresh=fresh, inplace=inplace)
    if step is None:
        return None
    dtypes = step.state_dtypes
    group = Group(backend, list(range(len(params))), factor, dtypes, step, bound=True)
    return Plan(rule, [group], inplace, state_dtype)


def _bulk_backend(leaf: Any) -> Any:
    """The backend of ``leaf`` when it can plan in bulk (NumPy, torch), else ``None``."""
    try:
        backend = backend_of(leaf)
    except TypeError:
        return None
    return backend if hasattr(backend, "planned_in_bulk") else None


def _backend(leaf: Any, path: Callable[[str, int], str], argument: str, index: int) -> Any:
    try:
        return backend_of(leaf)
    except TypeError as error:
        raise TypeError(f"{path(argument, index)}: {error}") from None


def _check_leaf(
    backend: Any, leaf: Any, path: Callable[[str, int], str], argument: str, index: int
) -> None:
    problem = backend.check_leaf(leaf)
    if problem:
        raise TypeError(f"{path(argument, index)}: {problem}")


def _check_writeable(
    backend: Any, leaf: Any, path: Callable[[str, int], str], argument: str, index: int
) -> None:
    if not backend.is_writeable(leaf):
        raise ValueError(
            f"{path(argument, index)}: is read-only (or not a plain {backend.NAME} array), "
            "so inplace=True cannot update it"
        )
    if backend.internal_overlap(leaf):
        raise ValueError(
            f"{path(argument, index)}: several of its elements share memory (an expanded or "
            "broadcast view), so inplace=True cannot update it; pass a copy, or call without "
            "inplace"
        )


def _check_like(
    leaf: Any,
    backend: Backend,
    device: Any,
    dtype: Any,
    shape: tuple[int, ...],
    path: Callable[[str, int], str],
    argument: str,
    index: int,
    reference: str,
    *,
    scalar_ok: bool = False,
    cast: bool = False,
) -> bool:
    """Check one gradient or average leaf against its parameter. ``cast``: a floating-point
    leaf of another precision is fine, and ``True`` comes back — MATLAB computes ``single``
    parameters with ``double`` gradients in single precision (and the reverse in double);
    a complex gradient of a real parameter is not."""
    leaf_backend = _backend(leaf, path, argument, index)
    if leaf_backend is not backend:
        raise TypeError(
            f"{path(argument, index)}: is a {leaf_backend.NAME} array but params is "
            f"{backend.NAME}; each gradient and state must live in its parameter's library"
        )
    _check_leaf(backend, leaf, path, argument, index)
    leaf_device, leaf_dtype, leaf_shape = leaf_backend.describe(leaf)
    if leaf_device == device and leaf_dtype == dtype and leaf_shape == shape:
        return False
    where = path(argument, index)
    if leaf_device != device:
        raise TypeError(f"{where}: is on device {leaf_device}, params is on {device}")
    if leaf_shape != shape and not (scalar_ok and leaf_shape == ()):
        raise ValueError(f"{where}: shape {leaf_shape} does not match params {shape}")
    if leaf_dtype != dtype and not (cast and backend.castable(leaf_dtype, dtype)):
        raise TypeError(f"{where}: dtype {leaf_dtype} does not match the {reference} {dtype}")
    return leaf_dtype != dtype


def _check_overlap(
    params: Sequence[Any],
    grads: Sequence[Any],
    states: Sequence[Sequence[Any]],
    names: Sequence[str],
    path: Callable[[str, int], str],
) -> None:
    """In place, every written buffer must be its own (see :mod:`adamupdate._memory`)."""
    regions = []
    columns = [("params", params, True), ("grad", grads, False)]
    columns += [(name, column, True) for name, column in zip(names, states)]
    for argument, column, written in columns:
        for i, leaf in enumerate(column):
            if leaf is None:
                continue
            backend = backend_of(leaf)
            span: tuple[int, int] | None = backend.memory(leaf)
            if span is not None:
                regions.append(_memory.Region(*span, written, argument, i, leaf, backend))
    pair = _memory.first_overlap(regions)
    if pair is not None:
        raise ValueError(_memory.overlap_message(*pair, path))


def _check_donations(
    params: Sequence[Any],
    states: Sequence[Sequence[Any]],
    names: Sequence[str],
    path: Callable[[str, int], str],
) -> None:
    """In place, a library that donates buffers (JAX) must be handed each one once, alive:
    checked here so that the step cannot fail half-way."""
    seen: dict[int, tuple[str, int]] = {}
    columns = [("params", params), *zip(names, states)]
    for argument, column in columns:
        for i, leaf in enumerate(column):
            if leaf is None or backend_of(leaf).MUTABLE:
                continue
            deleted = getattr(leaf, "is_deleted", None)
            if deleted is not None and deleted():
                raise ValueError(
                    f"{path(argument, i)}: has been deleted (donated to an earlier in-place "
                    "call?); pass the arrays that call returned"
                )
            first = seen.setdefault(id(leaf), (argument, i))
            if first != (argument, i):
                raise ValueError(
                    f"{path(*first)} and {path(argument, i)} are the same array, which "
                    "inplace=True would donate twice; pass separate arrays (copies), or call "
                    "without inplace"
                )


def _take(leaves: Sequence[Any], indices: list[int]) -> list[Any]:
    """``[leaves[i] for i in indices]``, as one slice when the indices are consecutive (the
    usual single group of a network), which costs nothing per leaf."""
    first, last = indices[0], indices[-1]
    if last - first + 1 == len(indices):
        return list(leaves[first : last + 1])
    return [leaves[i] for i in indices]


def _scatter(
    group: Group,
    outputs: tuple[list, tuple[list, ...]],
    params: Sequence[Any],
    grads: Sequence[Any],
    new_params: list[Any],
    new_states: tuple[list[Any], ...],
) -> None:
    """Put a group's outputs back in leaf order, in the outer form of the inputs."""
    finish, finish_state = group.backend.finish, group.backend.finish_state
    ps, group_states = outputs
    n = len(params)
    if len(group.indices) == n and group.indices[-1] == n - 1:  # one group: whole columns
        same = all(map(operator.is_, ps, params))
        new_params[:] = params if same else map(finish, params, ps)
        for column, new in zip(group_states, new_states):
            new[:] = map(finish_state, grads, column)
        return
    for j, i in enumerate(group.indices):
        p = params[i]
        new_params[i] = p if ps[j] is p else finish(p, ps[j])
        for column, new in zip(group_states, new_states):
            new[i] = finish_state(grads[i], column[j])


def _coefficients_by_factor(rule: Rule, hyper: Any) -> Callable[[float], Any]:
    """The step's scalars for each learn-rate factor, computed once per call."""
    known: dict[float, Any] = {}

    def get(factor: float) -> Any:
        c = known.get(factor)
        if c is None:
            c = known[factor] = rule.coefficients(hyper, factor)
        return c

    return get


def _freeze(
    group: Group,
    params: Sequence[Any],
    states: Sequence[Sequence[Any]],
    new_params: list[Any],
    new_states: tuple[list[Any], ...],
) -> None:
    """Learn-rate factor 0: MATLAB leaves the parameter and its states as they are (a scalar 0
    on the first call, not a full-size buffer)."""
    zero = group.backend.zero_state
    for i in group.indices:
        p = params[i]
        new_params[i] = p
        for column, new, dtype in zip(states, new_states, group.state_dtypes):
            new[i] = column[i] if column[i] is not None else zero(dtype, p)


def is_module(obj: Any) -> bool:
    """A ``torch.nn.Module``, without importing torch for anything else."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
