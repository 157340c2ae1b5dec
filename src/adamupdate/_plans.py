"""Remembered plans for in-place training loops, so checking 1,000 leaves costs ~0.3 µs each.

An in-place loop, ``p, m, v = adamupdate(p, g, m, v, t, inplace=True)``, passes the very same
parameter and state objects every step: they were checked last step and have not been replaced
(the containers still hold the same objects, compared in bulk with ``is``). Only the gradients
may be new arrays; each is checked against its parameter's remembered type, device, dtype and
shape. Anything unexpected sends the call down the full path, which checks everything again and
reports errors by path.

The cache holds strong references to the parameter and state containers of the last in-place
calls (objects the caller keeps anyway). It assumes an array's shape and dtype are not changed
in place between calls (``a.shape = ...`` or ``a.dtype = ...`` on a NumPy array, ``resize_`` or
``.data =`` on a tensor); the data itself may change freely.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

from . import _engine, _tree
from ._backends import backend_of

_MAX_PLANS = 8  # a few models trained side by side


@dataclass
class Plan:
    params: Any
    avg_grad: Any
    avg_sq_grad: Any
    node: _tree.Node
    state_node: _tree.Node
    param_leaves: list[Any]
    avg_leaves: list[Any]
    sq_leaves: list[Any]
    grad_leaves: list[Any]
    grad_types: list[type]
    grad_describers: list[Any]
    grad_signatures: list[tuple]
    groups: list[_engine.Group]
    prepared: list[Any]  # per group: the backend's prepared kernel call, or None
    state_dtype: Any


_plans: dict[int, Plan] = {}


def lookup(params: Any, grad: Any, avg_grad: Any, avg_sq_grad: Any, state_dtype: Any):
    """The remembered plan and the gradient leaves when this call can reuse it, else ``None``."""
    plan = _plans.get(id(params))
    if (
        plan is None
        or plan.params is not params
        or plan.avg_grad is not avg_grad
        or plan.avg_sq_grad is not avg_sq_grad
        or plan.state_dtype is not state_dtype
    ):
        return None
    if not (
        _same_objects(plan.node, params, plan.param_leaves)
        and _same_objects(plan.state_node, avg_grad, plan.avg_leaves)
        and _same_objects(plan.state_node, avg_sq_grad, plan.sq_leaves)
    ):
        return None
    grad_leaves = _tree.same_structure_leaves(plan.node, grad)
    if grad_leaves is None or not _gradients_fit(plan, grad_leaves):
        return None
    plan.grad_leaves = grad_leaves
    return plan


def _same_objects(node: _tree.Node, container: Any, leaves: list[Any]) -> bool:
    current = _tree.same_structure_leaves(node, container)
    return current is not None and all(map(operator.is_, current, leaves))


def _gradients_fit(plan: Plan, grad_leaves: list[Any]) -> bool:
    if all(map(operator.is_, grad_leaves, plan.grad_leaves)):
        return True
    return all(
        type(g) is kind and describe(g) == signature
        for g, kind, describe, signature in zip(
            grad_leaves, plan.grad_types, plan.grad_describers, plan.grad_signatures
        )
    )


def remember(
    params: Any,
    grad_leaves: list[Any],
    outputs: tuple[Any, Any, Any],
    node: _tree.Node,
    state_node: _tree.Node,
    leaves: tuple[list[Any], list[Any], list[Any]],
    groups: list[_engine.Group],
    state_dtype: Any,
) -> None:
    """Keep the plan of an in-place call whose every leaf was updated in its own buffer."""
    if node.kind == "table" or _tree.contains_table(node):
        return
    param_leaves, avg_leaves, sq_leaves = leaves
    _, avg_grad, avg_sq_grad = outputs
    if len(_plans) >= _MAX_PLANS and id(params) not in _plans:
        _plans.pop(next(iter(_plans)))
    backends = [backend_of(p) for p in param_leaves]
    # From now on the states are the full buffers this call returned.
    groups = [replace(group, fresh_avg=False, fresh_sq=False) for group in groups]
    _plans[id(params)] = Plan(
        params=params,
        avg_grad=avg_grad,
        avg_sq_grad=avg_sq_grad,
        node=node,
        state_node=state_node,
        param_leaves=param_leaves,
        avg_leaves=avg_leaves,
        sq_leaves=sq_leaves,
        grad_leaves=grad_leaves,
        grad_types=[type(g) for g in grad_leaves],
        grad_describers=[backend.describe for backend in backends],
        grad_signatures=[backend.describe(p) for backend, p in zip(backends, param_leaves)],
        groups=groups,
        prepared=[
            _prepare(group, param_leaves, grad_leaves, avg_leaves, sq_leaves) for group in groups
        ],
        state_dtype=state_dtype,
    )


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


def forget() -> None:
    """Drop every remembered plan (tests use it; nothing else needs to)."""
    _plans.clear()
