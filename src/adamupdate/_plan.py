"""A planned step: every leaf checked once, grouped, and handed to its backend's group step.

Data flows one way: containers are flattened (:mod:`adamupdate._tree`), :func:`make` checks
every leaf and groups them (by backend, device, dtype, state presence and learn-rate factor, so
that each group is one multi-tensor kernel call, as PyTorch's optimizers group by device and
dtype), :meth:`Plan.step` binds and runs the groups, and the containers are rebuilt.

Two rules make a failed call change nothing:

- every check happens in :func:`make`, before any group is bound, and is reported by path
  (``grad['fc1'][0]: ...``);
- :meth:`Plan.step` binds *every* group (allocations, staging copies, compilation — whatever
  can fail) before it runs *any* (computing and writing, which cannot fail).

**Who owns a plan.** The averages that :func:`adamupdate.adamupdate` returns carry the plan that
made them (see :func:`attach`). A training loop passes them back, and the next call finds the
plan there: when the parameters and averages are the very objects the plan last produced or
updated, nothing is checked again but the gradients' form and the buffers' addresses (by each
group's ``bind``); anything else makes a new plan from scratch. Nothing module-global is kept:
a plan lives exactly as long as the averages that carry it.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from . import _memory, _tree
from ._dispatch import backend_of
from .rules import Rule


@dataclass(eq=False)
class Group:
    """Leaves (by index) that one backend group step updates together; ``step`` is ``None``
    for a frozen group (learn-rate factor 0), which changes nothing."""

    backend: ModuleType
    indices: list[int]
    factor: float
    state_dtypes: tuple[Any, ...]
    step: Any = None


@dataclass(eq=False)
class Plan:
    """A checked, grouped step of one rule, and the leaves its next call must pass to reuse it."""

    rule: Rule
    groups: list[Group]
    inplace: bool
    state_dtype: Any
    params: list[Any] = field(default_factory=list)
    states: tuple[list[Any], ...] = ()
    factors: list[float] | None = None
    nodes: tuple[Any, ...] = ()  # what rebuilds the containers: (params', the states')
    names: list[str] = field(default_factory=list)  # a network's learnables
    network: list[tuple] | None = None  # what decides them (see adamupdate.network._snapshot)

    @property
    def writes_in_place(self) -> bool:
        """In place, and every backend writes into the given buffers (JAX donates them and
        returns new arrays instead)."""
        return self.inplace and all(group.backend.MUTABLE for group in self.groups)

    def expects(self, params: Sequence[Any], states: Sequence[Sequence[Any]]) -> bool:
        """Whether these are the very leaves this plan last produced (or updated in place)."""
        same = operator.is_
        return (
            len(params) == len(self.params)
            and len(states) == len(self.states)
            and all(map(same, params, self.params))
            and all(all(map(same, a, b)) for a, b in zip(states, self.states))
        )

    def step(
        self,
        params: Sequence[Any],
        grads: Sequence[Any],
        states: Sequence[Sequence[Any]],
        hyper: Any,
        *,
        checked: bool,
    ) -> tuple[list[Any], tuple[list[Any], ...]] | None:
        """Bind every group, then run every group; return the new leaves in order.

        ``checked``: :func:`make` has just checked these leaves. Otherwise the plan is being
        reused, and ``None`` comes back — with nothing written — when a group finds that this
        call's leaves no longer fit it; the caller then makes a new plan.
        """
        for group in self.groups:
            if group.step is not None:
                take = group.indices
                leaves = [_take(column, take) for column in states]
                if not group.step.bind(
                    _take(params, take), _take(grads, take), leaves, checked=checked
                ):
                    return None
        coefficients_for = _coefficients_by_factor(self.rule, hyper)
        if self.writes_in_place and not checked:
            # A remembered in-place step writes every buffer where it is: the leaves stay.
            for group in self.groups:
                if group.step is not None:
                    group.step.run(coefficients_for(group.factor))
            return self.params, self.states
        n = len(params)
        new_params: list[Any] = [None] * n
        new_states = tuple([None] * n for _ in states)
        for group in self.groups:
            if group.step is None:
                _freeze(group, params, states, new_params, new_states)
                continue
            group.step.run(coefficients_for(group.factor))
            _scatter(group, group.step.outputs(), params, grads, new_params, new_states)
        self.params, self.states = new_params, new_states
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
    groups: dict[tuple, Group] = {}
    forms: list[tuple[Any, bool]] = []
    names = rule.states
    for i, p in enumerate(params):
        backend = _backend(p, path, "params", i)
        device, dtype, shape = backend.describe(p)
        _check_leaf(backend, p, path, "params", i)
        if inplace:
            _check_writeable(backend, p, path, "params", i)
        _check_like(grads[i], backend, device, dtype, shape, path, "grad", i, "params")
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
        _check_overlap(params, grads, states, names, path)
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
    return Plan(
        rule,
        list(groups.values()),
        inplace,
        state_dtype,
        factors=None if factors is None else list(factors),
    )


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
    backend: ModuleType,
    device: Any,
    dtype: Any,
    shape: tuple[int, ...],
    path: Callable[[str, int], str],
    argument: str,
    index: int,
    reference: str,
    *,
    scalar_ok: bool = False,
) -> None:
    """Check one gradient or average leaf against its parameter."""
    leaf_backend = _backend(leaf, path, argument, index)
    if leaf_backend is not backend:
        raise TypeError(
            f"{path(argument, index)}: is a {leaf_backend.NAME} array but params is "
            f"{backend.NAME}; each gradient and state must live in its parameter's library"
        )
    _check_leaf(backend, leaf, path, argument, index)
    leaf_device, leaf_dtype, leaf_shape = leaf_backend.describe(leaf)
    if leaf_device == device and leaf_dtype == dtype and leaf_shape == shape:
        return
    where = path(argument, index)
    if leaf_device != device:
        raise TypeError(f"{where}: is on device {leaf_device}, params is on {device}")
    if leaf_shape != shape and not (scalar_ok and leaf_shape == ()):
        raise ValueError(f"{where}: shape {leaf_shape} does not match params {shape}")
    if leaf_dtype != dtype:
        raise TypeError(f"{where}: dtype {leaf_dtype} does not match the {reference} {dtype}")


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


# --- the averages that carry their plan ----------------------------------------------------------

_PLAN_ATTRIBUTE = "_adamupdate_plan"


def attach(container: Any, plan: Plan) -> Any:
    """``container`` (a rebuilt average) carrying ``plan``: a plain dict, list or tuple becomes
    its owned twin, a table gets the plan as an attribute; anything else (a bare array, a
    namedtuple, a dict subclass) is returned as it is and simply carries no plan."""
    if "jax" in sys.modules:
        _tree.register_with_jax()
    owned = _tree.OWNED.get(type(container))
    if owned is not None:
        container = owned(container)
    elif type(container) in _tree.PLAIN:
        pass
    elif _tree.is_table(container):
        object.__setattr__(container, _PLAN_ATTRIBUTE, plan)
        return container
    else:
        return container
    setattr(container, _PLAN_ATTRIBUTE, plan)
    return container


def attached(states: Sequence[Any]) -> Plan | None:
    """The plan every state carries, if they carry the same one."""
    plan = getattr(states[0], _PLAN_ATTRIBUTE, None)
    if plan is None or any(getattr(s, _PLAN_ATTRIBUTE, None) is not plan for s in states[1:]):
        return None
    return plan


def is_module(obj: Any) -> bool:
    """A ``torch.nn.Module``, without importing torch for anything else."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)
