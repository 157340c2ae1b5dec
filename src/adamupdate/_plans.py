"""Remembered plans for in-place training loops: what was checked last step is not redone.

An in-place loop, ``p, m, v = adamupdate(p, g, m, v, t, inplace=True)``, passes the very same
parameter and state objects every step: they were checked last step and have not been replaced
(the containers still hold the same objects, compared in bulk by ``id``). Only the gradients
may be new arrays; each is checked against its parameter's remembered type, device, dtype and
shape. Anything unexpected sends the call down the full path, which checks everything again and
reports errors by path.

A plan holds no strong reference to anything of the caller's — discarding a model frees it. It
keeps the ``id`` of each leaf and a weak reference whose callback drops the plan when the leaf
dies, so two equal ids always mean the same live object. The same object can still hold other
data (``a.shape = ...`` or ``a.resize`` on a NumPy array, ``.data = ...`` or ``resize_`` on a
tensor), so before anything is written every leaf is checked again — in compiled code from the
array headers for NumPy groups with a prepared kernel batch, by ``describe()`` for the others
(see :func:`adamupdate._engine.step_in_place`) — and a plan that no longer fits is discarded.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any

from . import _engine, _tree
from ._backends import backend_of

_MAX_PLANS = 8  # a few models trained side by side


@dataclass(eq=False)
class Plan:
    node: _tree.Node
    state_node: _tree.Node
    ids: tuple[list[int], list[int], list[int]]  # of the param, avg_grad and avg_sq_grad leaves
    grad_types: list[type]
    grad_describers: list[Any]
    grad_signatures: list[tuple]
    groups: list[_engine.Group]
    prepared: list[Any]  # per group: the backend's prepared kernel call, or None
    state_dtype: Any
    key: int
    grad_ids: list[int] = field(default_factory=list)
    watchers: list[weakref.ref] = field(default_factory=list)
    grad_watchers: list[weakref.ref] = field(default_factory=list)
    same_grads: bool = False  # this call passes last call's gradient objects


_plans: dict[int, Plan] = {}


def lookup(
    params: Any, grad: Any, avg_grad: Any, avg_sq_grad: Any, state_dtype: Any
) -> tuple[Plan, tuple[list[Any], list[Any], list[Any], list[Any]]] | None:
    """The remembered plan and this call's leaves (params, grads, averages) when the call can
    reuse it, else ``None``."""
    plan = _plans.get(id(params))
    if plan is None or plan.state_dtype is not state_dtype:
        return None
    leaves = []
    for node, container, ids in zip(
        (plan.node, plan.state_node, plan.state_node), (params, avg_grad, avg_sq_grad), plan.ids
    ):
        current = _tree.same_structure_leaves(node, container)
        if current is None or list(map(id, current)) != ids:
            return None
        leaves.append(current)
    grads = _tree.same_structure_leaves(plan.node, grad)
    if grads is None:
        return None
    same_grads = list(map(id, grads)) == plan.grad_ids
    if not same_grads and not _gradients_fit(plan, grads):
        return None
    plan.same_grads = same_grads
    return plan, (leaves[0], grads, leaves[1], leaves[2])


def _gradients_fit(plan: Plan, grads: list[Any]) -> bool:
    """New gradients must have their parameters' type, device, dtype and shape; they are then
    watched, so that equal ids next step mean the same live objects."""
    grad_ids = list(map(id, grads))
    fits = all(
        type(g) is kind and describe(g) == signature
        for g, kind, describe, signature in zip(
            grads, plan.grad_types, plan.grad_describers, plan.grad_signatures
        )
    )
    plan.grad_ids = []
    if fits:
        try:
            forget_grads = _grads_forgetter(plan)
            plan.grad_watchers = [weakref.ref(g, forget_grads) for g in grads]
            plan.grad_ids = grad_ids
        except TypeError:  # no weak references to these: check their form every step
            plan.grad_watchers = []
    return fits


def _grads_forgetter(plan: Plan) -> Any:
    plan_ref = weakref.ref(plan)

    def forget(_: Any) -> None:
        alive = plan_ref()
        if alive is not None:
            alive.grad_ids = []

    return forget


def remember(
    params: Any,
    grad_leaves: list[Any],
    node: _tree.Node,
    state_node: _tree.Node,
    leaves: tuple[list[Any], list[Any], list[Any]],
    groups: list[_engine.Group],
    state_dtype: Any,
) -> None:
    """Keep the plan of an in-place call whose every leaf was updated in its own buffer."""
    if _tree.contains_table(node):
        return
    param_leaves, avg_leaves, sq_leaves = leaves
    try:
        watched = [weakref.ref(x) for x in (*param_leaves, *avg_leaves, *sq_leaves)]
    except TypeError:  # a leaf type without weak references: nothing to remember safely
        return
    if len(_plans) >= _MAX_PLANS and id(params) not in _plans:
        _plans.pop(next(iter(_plans)))
    backends = [backend_of(p) for p in param_leaves]
    # From now on the states are the full buffers this call returned.
    groups = [replace(group, fresh_avg=False, fresh_sq=False) for group in groups]
    plan = Plan(
        node=node,
        state_node=state_node,
        ids=tuple(list(map(id, column)) for column in leaves),
        grad_types=[type(g) for g in grad_leaves],
        grad_describers=[backend.describe for backend in backends],
        grad_signatures=[backend.describe(p) for backend, p in zip(backends, param_leaves)],
        groups=groups,
        prepared=[
            _prepare(group, param_leaves, grad_leaves, avg_leaves, sq_leaves) for group in groups
        ],
        state_dtype=state_dtype,
        key=id(params),
    )
    forget_plan = _forgetter(plan)
    plan.watchers = [weakref.ref(ref(), forget_plan) for ref in watched]
    _plans[plan.key] = plan


def _forgetter(plan: Plan) -> Any:
    """A weakref callback that drops ``plan`` once any of its leaves is gone (holding the plan
    itself only weakly, so the callback keeps nothing alive either)."""
    plan_ref = weakref.ref(plan)

    def forget(_: Any) -> None:
        alive = plan_ref()
        if alive is not None and _plans.get(alive.key) is alive:
            del _plans[alive.key]

    return forget


def _prepare(group, params, grads, avg_grads, avg_sq_grads) -> Any:
    prepare = getattr(group.backend, "prepare", None)
    if prepare is None or group.factor == 0.0:
        return None
    idx = group.indices
    return prepare(
        [params[i] for i in idx],
        [grads[i] for i in idx],
        [avg_grads[i] for i in idx],
        [avg_sq_grads[i] for i in idx],
        group.state_dtypes,
    )


def discard(plan: Plan) -> None:
    """Drop ``plan``, which no longer fits its buffers."""
    if _plans.get(plan.key) is plan:
        del _plans[plan.key]


def forget() -> None:
    """Drop every remembered plan (tests use it; nothing else needs to)."""
    _plans.clear()
