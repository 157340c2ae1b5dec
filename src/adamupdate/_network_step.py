"""The network form of a solver (``adamupdate(net, grad, ...)``): :func:`update_network`, and
the receipt its returned averages carry so that the next call can skip the walk over the modules.

Used by :func:`adamupdate._solve.solve` for a ``torch.nn.Module``; the learnables and the forms
of ``grad`` and the averages are :mod:`adamupdate._learnables`'.
"""

from __future__ import annotations

import contextlib
import operator
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _learnables, _plan, _tree
from ._extras import require
from .rules import Rule

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch", "the network functions")

__all__ = ["update_network"]


def _snapshot(net: torch.nn.Module) -> list[tuple]:
    """What decides a network's learnables and their factors, module by module: its
    parameters, children and factors, and every parameter's ``requires_grad``."""
    return [
        (
            module,
            list(module._parameters),
            list(module._parameters.values()),
            list(module._modules),
            list(module._modules.values()),
            dict(module.__dict__.get(_learnables.FACTORS_ATTRIBUTE) or {}),
            [p is not None and p.requires_grad for p in module._parameters.values()],
        )
        for module in net.modules()
    ]


def _unchanged(net: torch.nn.Module, snapshot: list[tuple] | None) -> bool:
    """Whether ``net`` still has the learnables and factors of ``snapshot``: the same modules
    holding the same parameter objects, at a fraction of a walk's cost (no names are built)."""
    if not snapshot or snapshot[0][0] is not net:
        return False
    same = operator.is_
    for module, keys, values, child_keys, children, factors, requires in snapshot:
        own, subs = module._parameters, module._modules
        if (
            list(own) != keys
            or not all(map(same, own.values(), values))
            or list(subs) != child_keys
            or not all(map(same, subs.values(), children))
            or (module.__dict__.get(_learnables.FACTORS_ATTRIBUTE) or {}) != factors
            or [p is not None and p.requires_grad for p in values] != requires
        ):
            return False
    return True


def _no_missing_gradient(names: list[str], grads: list[Any]) -> None:
    """A ``None`` gradient (``p.grad`` of a parameter the loss does not use) is refused with
    what to pass: silently treating it as zero would also hide a forgotten ``backward()``."""
    missing = [name for name, g in zip(names, grads) if g is None]
    if not missing:
        return
    if len(missing) == len(names):
        raise TypeError(
            "grad: every entry is None, so no gradient was computed: call loss.backward() "
            "before reading p.grad, or use gradients(loss, net) (MATLAB's dlgradient)"
        )
    layer, parameter = _learnables.split_name(missing[0])
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise TypeError(
        f"grad[{missing[0]!r}] (layer {layer!r}, parameter {parameter!r}) is None{more}: "
        "this parameter received no gradient (the loss does not depend on it). MATLAB's "
        "dlgradient returns zeros there, and so does gradients(loss, net); pass "
        "torch.zeros_like(p) for it, or take it out of the learnables with "
        "p.requires_grad_(False)"
    )


@dataclass(frozen=True, eq=False)
class _Receipt:
    """What a network call returned its averages with: the network, the walk that found its
    learnables (re-checked against the network on every call, see :func:`_unchanged`) and the
    average buffers themselves, which are this library's own. ``lock`` serialises in-place
    steps of these buffers from several threads."""

    net: Any
    snapshot: list[tuple]
    names: list[str]
    params: list[Any]
    factors: list[float]
    states: tuple[list[Any], ...]
    lock: threading.Lock


_RECEIPT_ATTRIBUTE = "_adamupdate_receipt"


def _receipt_of(states: tuple[Any, ...]) -> _Receipt | None:
    """The receipt every state carries, if they carry the same one."""
    if not states:  # a rule without states has nothing to carry one
        return None
    receipt = getattr(states[0], _RECEIPT_ATTRIBUTE, None)
    if receipt is None or any(getattr(s, _RECEIPT_ATTRIBUTE, None) is not receipt for s in states):
        return None
    return receipt


def _with_receipt(container: Any, receipt: _Receipt) -> Any:
    """``container`` (a rebuilt average) carrying ``receipt``: a plain dict, list or tuple
    becomes its owned twin (:mod:`adamupdate._tree`), a table gets an attribute."""
    if "jax" in sys.modules:
        _tree.register_with_jax()
    owned = _tree.OWNED.get(type(container))
    if owned is not None:
        container = owned(container)
        setattr(container, _RECEIPT_ATTRIBUTE, receipt)
    elif _tree.is_table(container):
        object.__setattr__(container, _RECEIPT_ATTRIBUTE, receipt)
    return container


def _copy(state: Any) -> Any:
    """A copy of someone else's average, to be written instead of it (checks come after:
    anything that is not a tensor is left for the plan to name)."""
    if state is None or not isinstance(state, torch.Tensor):
        return state
    return state.detach().clone()


def update_network(
    rule: Rule,
    net: torch.nn.Module,
    grad: Any,
    states: tuple[Any, ...],
    hyper: Any,
    *,
    inplace: bool = False,
    state_dtype: Any = None,
) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    """The network form of a solver (:func:`adamupdate.adamupdate` and its siblings, which
    validate ``hyper``): ``(net, new_states)``.

    Parameters are updated in place, as MATLAB returns the updated ``dlnetwork``. So are the
    states that the previous call returned — they are this library's own buffers, as
    ``torch.optim`` keeps its state — while states from anywhere else (a checkpoint, your own
    zeros) are copied on the first call and never written, unless ``inplace`` is true. Each
    (device, dtype, learn-rate factor) group is one kernel call. Every call checks every
    leaf (:func:`adamupdate._plan.make`); the walk over the network's modules is remembered by
    the returned averages and re-checked, module by module, on the next call.
    """
    receipt = _receipt_of(states)
    if receipt is not None and _unchanged(net, receipt.snapshot):
        names, params, factors, snapshot = (
            receipt.names,
            receipt.params,
            receipt.factors,
            receipt.snapshot,
        )
    else:
        names, params, factors = _learnables.learnables_and_factors(net)
        snapshot = _snapshot(net)
    grads = _learnables.leaves(names, grad, "grad", state=False)
    _no_missing_gradient(names, grads)
    state_leaves = [
        _learnables.leaves(names, None if _tree.is_empty_state(state) else state, name, state=True)
        for state, name in zip(states, rule.states, strict=True)
    ]
    same = operator.is_
    ours = (
        receipt is not None
        and receipt.net is net
        and all(
            len(mine) == len(given) and all(map(same, mine, given))
            for mine, given in zip(receipt.states, state_leaves)
        )
    )

    def path(argument: str, index: int) -> str:
        layer, parameter = _learnables.split_name(names[index])
        return f"{argument}[{names[index]!r}] (layer {layer!r}, parameter {parameter!r})"

    with receipt.lock if ours and receipt is not None else contextlib.nullcontext():
        written = state_leaves
        if not (inplace or ours):  # someone else's states: copies are written from now on
            written = [[_copy(x) for x in column] for column in state_leaves]
        plan = _plan.make(
            rule,
            params,
            grads,
            written,
            path=path,
            factors=factors,
            inplace=True,
            state_dtype=state_dtype,
        )
        new_states = plan.step(params, grads, written, hyper)[1]
    if (
        ours
        and receipt is not None
        and receipt.snapshot is snapshot
        and all(all(map(same, new, old)) for new, old in zip(new_states, state_leaves))
    ):
        return net, states  # updated in their buffers: the same averages, the same receipt
    mine = _Receipt(net, snapshot, names, params, factors, new_states, threading.Lock())
    return net, tuple(
        _with_receipt(_learnables.rebuild(names, column, grad), mine) for column in new_states
    )
