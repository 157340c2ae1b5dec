"""One solver call, whatever its rule: arguments → plan (made, or carried by the states) →
step → containers. The public functions (:mod:`adamupdate._api`) validate their scalars and
hand over here.
"""

from __future__ import annotations

import operator
from typing import Any

from . import _plan, _tree
from .rules import Rule


def solve(
    rule: Rule,
    params: Any,
    grad: Any,
    states: tuple[Any, ...],
    hyper: Any,
    inplace: bool,
    state_dtype: Any,
) -> tuple[Any, tuple[Any, ...]]:
    """``rule``'s step: the new parameters and states, in the caller's containers."""
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    if _plan.is_module(params):
        from .network import update_network

        return update_network(
            rule, params, grad, states, hyper, inplace=inplace, state_dtype=state_dtype
        )
    plan = _plan.attached(states)
    if plan is not None and plan.inplace == inplace and plan.state_dtype is state_dtype:
        outputs = _remembered_step(plan, params, grad, states, hyper)
        if outputs is not None:
            return outputs
    return _planned_step(rule, params, grad, states, hyper, inplace, state_dtype)


def _remembered_step(
    plan: _plan.Plan, params: Any, grad: Any, states: tuple[Any, ...], hyper: Any
) -> tuple[Any, tuple[Any, ...]] | None:
    """The step of a plan carried by the states, when this call passes the very leaves it
    last produced; ``None`` (nothing written) when anything differs."""
    node, state_node = plan.nodes
    param_leaves = _tree.same_structure_leaves(node, params)
    grad_leaves = _tree.same_structure_leaves(node, grad)
    state_leaves: list[Any] = [_tree.same_structure_leaves(state_node, state) for state in states]
    if param_leaves is None or grad_leaves is None or None in state_leaves:
        return None
    if not plan.expects(param_leaves, state_leaves):
        return None
    new = plan.step(param_leaves, grad_leaves, state_leaves, hyper, checked=False)
    if new is None:
        return None
    if plan.writes_in_place:  # the same containers, updated in their buffers
        return params, states
    return _outputs(plan, params, new)


def _planned_step(
    rule: Rule,
    params: Any,
    grad: Any,
    states: tuple[Any, ...],
    hyper: Any,
    inplace: bool,
    state_dtype: Any,
) -> tuple[Any, tuple[Any, ...]]:
    param_leaves, node = _tree.flatten(params)
    grad_leaves = _tree.leaves_like(node, grad, "grad")
    state_leaves = [
        _state_leaves(node, state, name) for state, name in zip(states, rule.states, strict=True)
    ]

    def path(argument: str, index: int) -> str:
        return _tree.format_path(argument, _tree.leaf_path(node, index))

    plan = _plan.make(
        rule,
        param_leaves,
        grad_leaves,
        state_leaves,
        path=path,
        inplace=inplace,
        state_dtype=state_dtype,
    )
    # The states mirror grad: for a table that means grad's own Layer/Parameter columns.
    state_node = _tree.flatten(grad)[1] if _tree.contains_table(node) else node
    plan.nodes = (node, state_node)
    new = plan.step(param_leaves, grad_leaves, state_leaves, hyper, checked=True)
    assert new is not None, "a plan binds the leaves it has just checked"
    return _outputs(plan, params, new, originals=(param_leaves, state_leaves))


def _outputs(
    plan: _plan.Plan,
    params: Any,
    new: tuple[list[Any], tuple[list[Any], ...]],
    originals: tuple[list[Any], list[list[Any]]] | None = None,
) -> tuple[Any, tuple[Any, ...]]:
    """The containers around the new leaves; the states carry the plan. In place, a params
    container whose every leaf was updated in its own buffer comes back as it is (the states
    come back in containers that carry the plan, around the same leaves)."""
    node, state_node = plan.nodes
    new_params, new_states = new
    if originals is not None and plan.inplace and not _tree.contains_table(node):
        same = all(map(operator.is_, new_params, originals[0]))
        out_params = params if same else _tree.unflatten(node, new_params)
    else:
        out_params = _tree.unflatten(node, new_params)
    out_states = tuple(
        _plan.attach(_tree.unflatten(state_node, leaves), plan) for leaves in new_states
    )
    return out_params, out_states


def is_empty_state(state: Any) -> bool:
    """MATLAB's ``[]``: ``None``, an empty list or tuple, or an array with no elements."""
    if state is None:
        return True
    if isinstance(state, (list, tuple)):
        return len(state) == 0 and not hasattr(type(state), "_fields")
    if _tree.is_table(state) or isinstance(state, dict):
        return False
    size = state.numel() if hasattr(state, "numel") else getattr(state, "size", None)
    return size == 0


def _state_leaves(node: _tree.Node, state: Any, name: str) -> list[Any]:
    if is_empty_state(state):
        return [None] * node.size
    return _tree.leaves_like(node, state, name, allow_empty=True)
