"""One solver call, whatever its rule: arguments → leaves → plan (every check) → step →
containers. The public functions (:mod:`adamupdate._api`) validate their scalars and hand over
here.
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
        from ._network_step import update_network

        return update_network(
            rule, params, grad, states, hyper, inplace=inplace, state_dtype=state_dtype
        )
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
    new_params, new_states = plan.step(param_leaves, grad_leaves, state_leaves, hyper)
    # The states mirror grad: for a table that means grad's own Layer/Parameter columns.
    state_node = _tree.flatten(grad)[1] if _tree.contains_table(node) else node
    if (
        inplace
        and not _tree.contains_table(node)
        and all(map(operator.is_, new_params, param_leaves))
    ):
        out_params = params  # every leaf updated in its own buffer: the caller's container
    else:
        out_params = _tree.unflatten(node, new_params)
    return out_params, tuple(_tree.unflatten(state_node, leaves) for leaves in new_states)


def _state_leaves(node: _tree.Node, state: Any, name: str) -> list[Any]:
    if _tree.is_empty_state(state):
        return [None] * node.size
    return _tree.leaves_like(node, state, name, allow_empty=True)
