"""``torch.nn.Module`` as MATLAB's ``dlnetwork``: Learnables tables and learn-rate factors.

============================================  ================================================
MATLAB                                        adamupdate
============================================  ================================================
``net.Learnables``                            ``learnables(net)``
``dlgradient(loss, net.Learnables)``          ``gradients(loss, net)``
``setLearnRateFactor(net, layer, p, f)``      ``set_learn_rate_factor(net, layer, p, f)``
``getLearnRateFactor(net, layer, p)``         ``get_learn_rate_factor(net, layer, p)``
``Weight/BiasLearnRateFactor`` layer options  ``set_layer_learn_rate_factors(net, layer, ...)``
``adamupdate(net, grad, avgG, avgSqG, t)``    ``adamupdate(net, grad, avg_grad, avg_sq_grad, t)``
============================================  ================================================

A network's *learnables* are its ``named_parameters()`` with ``requires_grad=True``, in that
order. In a Learnables table, ``Layer`` is the qualified name of the module that owns the
parameter (``""`` for the network's own) and ``Parameter`` its attribute name, e.g. ``conv1`` /
``weight`` for ``conv1.weight``.

Learn-rate factors are stored on the module that owns the parameter (an attribute, so they
survive ``copy.deepcopy`` and ``torch.save(net)``), not in ``state_dict()``: when you save a
``state_dict``, save ``learn_rate_factors(net)`` beside it and restore it with
``set_learn_rate_factors(net, factors)``. Each factor is mirrored on its parameter
(:func:`learn_rate_factor_of`), for optimizers that see parameters without their modules.
"""

from __future__ import annotations

import contextlib
import operator
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _plan, _tree
from ._extras import require
from .rules import Rule

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch", "the network functions")

__all__ = [
    "get_learn_rate_factor",
    "gradients",
    "learn_rate_factor_of",
    "learn_rate_factors",
    "learnables",
    "set_layer_learn_rate_factors",
    "set_learn_rate_factor",
    "set_learn_rate_factors",
]

_FACTORS_ATTRIBUTE = "_adamupdate_learn_rate_factors"


def _split(name: str) -> tuple[str, str]:
    layer, _, parameter = name.rpartition(".")
    return layer, parameter


def _learnables(net: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    names, params, _ = _learnables_and_factors(net)
    return names, params


def _learnables_and_factors(
    net: torch.nn.Module,
) -> tuple[list[str], list[torch.nn.Parameter], list[float]]:
    """Names, parameters and learn-rate factors of the learnables, in ``named_parameters()``
    order (modules in ``named_modules()`` order, each one's own parameters, a shared parameter
    once), in one walk: a network step must cost the same per parameter at any size."""
    names: list[str] = []
    params: list[torch.nn.Parameter] = []
    factors: list[float] = []
    seen: set[int] = set()
    for prefix, module in net.named_modules():
        own = module.__dict__.get(_FACTORS_ATTRIBUTE)
        for name, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                names.append(f"{prefix}.{name}" if prefix else name)
                params.append(p)
                factors.append(own.get(name, 1.0) if own else 1.0)
    return names, params, factors


def _table(names: list[str], values: list[Any]) -> Any:
    from ._tables import LearnablesTable  # prints values, not tensor reprs

    layers, parameters = zip(*(_split(name) for name in names)) if names else ((), ())
    frame = LearnablesTable({"Layer": list(layers), "Parameter": list(parameters)})
    frame["Value"] = _tree.object_column(values, frame.index)
    return frame


def learnables(net: torch.nn.Module) -> Any:
    """MATLAB's ``net.Learnables``: a pandas DataFrame with ``Layer``, ``Parameter``, ``Value``.

    ``Value`` holds the network's own parameter tensors (not copies), so the table always shows
    the current values.
    """
    names, params = _learnables(net)
    return _table(names, params)


def gradients(loss: torch.Tensor, net: torch.nn.Module, *, form: str = "table") -> Any:
    """MATLAB's ``dlgradient(loss, net.Learnables)``: the gradient of ``loss`` for each learnable.

    Parameters
    ----------
    loss
        A scalar tensor computed from ``net``.
    net
        The network.
    form
        ``"table"`` (a Learnables-style DataFrame, MATLAB's form), ``"dict"`` (keyed by
        parameter name) or ``"list"`` (``named_parameters()`` order).

    Returns
    -------
    The gradients in the requested form.

    Notes
    -----
    Learnables that ``loss`` does not depend on get zero gradients, as in MATLAB. Uses
    ``torch.autograd.grad``, so ``.grad`` attributes are not touched.
    """
    names, params = _learnables(net)
    found = torch.autograd.grad(loss, params, allow_unused=True)  # None for an unused one
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
    if form == "table":
        return _table(names, grads)
    if form == "dict":
        return dict(zip(names, grads))
    if form == "list":
        return grads
    raise ValueError(f"form must be 'table', 'dict' or 'list', got {form!r}")


# --- learn-rate factors ------------------------------------------------------------------------


def _owner(net: torch.nn.Module, layer: str | torch.nn.Module) -> tuple[str, torch.nn.Module]:
    if isinstance(layer, torch.nn.Module):
        for name, module in net.named_modules():
            if module is layer:
                return name, module
        raise ValueError("layer: this module is not part of the network")
    try:
        return layer, net.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"layer {layer!r}: the network has no such layer") from None


def _check_parameter(module: torch.nn.Module, layer: str, parameter: str) -> None:
    if module._parameters.get(parameter) is None:
        own = [name for name, p in module._parameters.items() if p is not None]
        raise ValueError(f"layer {layer!r} has no parameter {parameter!r} (it has {own or 'none'})")


def set_learn_rate_factor(
    net: torch.nn.Module, layer: str | torch.nn.Module, parameter: str, factor: float
) -> torch.nn.Module:
    """MATLAB's ``setLearnRateFactor``: the parameter's rate becomes ``learn_rate * factor``.

    ``factor`` 0 freezes the parameter: :func:`adamupdate.adamupdate` leaves it and both of its
    averages unchanged. Returns ``net``.
    """
    from ._validate import learn_rate as nonnegative

    factor = nonnegative(factor, "factor")
    name, module = _owner(net, layer)
    _check_parameter(module, name, parameter)
    factors = module.__dict__.setdefault(_FACTORS_ATTRIBUTE, {})
    factors[parameter] = factor
    # Mirrored on the parameter itself, for optimizers that see parameters without their
    # modules (adamupdate.torch.Adam); the module's record is the one networks use.
    module._parameters[parameter].__dict__[_FACTORS_ATTRIBUTE] = factor
    return net


def get_learn_rate_factor(
    net: torch.nn.Module, layer: str | torch.nn.Module, parameter: str
) -> float:
    """MATLAB's ``getLearnRateFactor`` (1.0 unless set)."""
    name, module = _owner(net, layer)
    _check_parameter(module, name, parameter)
    return module.__dict__.get(_FACTORS_ATTRIBUTE, {}).get(parameter, 1.0)


def learn_rate_factor_of(param: torch.Tensor) -> float:
    """The learn-rate factor set on ``param`` with :func:`set_learn_rate_factor` (1.0 unless
    set) — for code that sees parameters without their network, such as an optimizer."""
    return param.__dict__.get(_FACTORS_ATTRIBUTE, 1.0)


def set_layer_learn_rate_factors(
    net: torch.nn.Module, layer: str | torch.nn.Module, **factors: float
) -> torch.nn.Module:
    """A layer's factors at once, like MATLAB's ``WeightLearnRateFactor`` and
    ``BiasLearnRateFactor`` layer options: ``set_layer_learn_rate_factors(net, "fc", weight=0,
    bias=2)``. Keyword names are the layer's parameter names."""
    for parameter, factor in factors.items():
        set_learn_rate_factor(net, layer, parameter, factor)
    return net


def learn_rate_factors(net: torch.nn.Module) -> dict[str, float]:
    """Every learnable's factor keyed by parameter name — save it beside a ``state_dict``."""
    names, _, factors = _learnables_and_factors(net)
    return dict(zip(names, factors))


def set_learn_rate_factors(net: torch.nn.Module, factors: Mapping[str, float]) -> torch.nn.Module:
    """Restore factors saved with :func:`learn_rate_factors`."""
    for name, factor in factors.items():
        set_learn_rate_factor(net, *_split(name), factor)
    return net


# --- the update ----------------------------------------------------------------------------------


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
            dict(module.__dict__.get(_FACTORS_ATTRIBUTE) or {}),
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
            or (module.__dict__.get(_FACTORS_ATTRIBUTE) or {}) != factors
            or [p is not None and p.requires_grad for p in values] != requires
        ):
            return False
    return True


def _leaves(names: list[str], value: Any, argument: str, *, state: bool) -> list[Any]:
    """The per-learnable leaves of a table, dict or list, checked against the learnables."""
    if state and value is None:
        return [None] * len(names)
    if _tree.is_table(value):
        return _table_leaves(names, value, argument)
    if isinstance(value, Mapping):
        if len(value) == len(names):
            try:  # the common case: every name there
                return list(map(value.__getitem__, names))
            except KeyError:
                pass  # named below
        for name in names:
            if name not in value:
                layer, parameter = _split(name)
                raise ValueError(
                    f"{argument}: no entry for learnable {name!r} "
                    f"(layer {layer!r}, parameter {parameter!r})" + _given_instead(value, names)
                )
        if len(value) != len(names):
            extra = next(key for key in value if key not in set(names))
            raise ValueError(
                f"{argument}[{extra!r}]: not a learnable of the network "
                "(unknown, or requires_grad=False)"
            )
        return [value[name] for name in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{argument}: has {len(value)} entries, the network has {len(names)} learnables"
            )
        return list(value)
    raise TypeError(
        f"{argument}: expected a Learnables table, a dict keyed by parameter name or a list, "
        f"got {type(value).__name__}"
    )


def _given_instead(value: Mapping[Any, Any], names: list[str]) -> str:
    """For a missing key: the keys given that are not learnables, the closest one first."""
    import difflib

    known = set(names)
    unknown = [key for key in value if key not in known]
    if not unknown:
        return ""
    shown = ", ".join(map(repr, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
    close = difflib.get_close_matches(str(unknown[0]), names, n=1)
    mean = f" (a misspelling of {close[0]!r}?)" if close else ""
    return f"; given instead: {shown}{mean}"


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
    layer, parameter = _split(missing[0])
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise TypeError(
        f"grad[{missing[0]!r}] (layer {layer!r}, parameter {parameter!r}) is None{more}: "
        "this parameter received no gradient (the loss does not depend on it). MATLAB's "
        "dlgradient returns zeros there, and so does gradients(loss, net); pass "
        "torch.zeros_like(p) for it, or take it out of the learnables with "
        "p.requires_grad_(False)"
    )


def _table_leaves(names: list[str], frame: Any, argument: str) -> list[Any]:
    for column in _tree.TABLE_COLUMNS:
        if column not in frame.columns:
            raise ValueError(f"{argument}: table has no {column!r} column")
    rows = list(zip(frame["Layer"], frame["Parameter"]))
    for row, name in enumerate(names):
        want = _split(name)
        if row >= len(rows):
            raise ValueError(
                f"{argument}: no row for layer {want[0]!r}, parameter {want[1]!r} "
                f"(table has {len(rows)} rows, the network has {len(names)} learnables)"
            )
        if tuple(rows[row]) != want:
            raise ValueError(
                f"{argument}: row {row} is layer {rows[row][0]!r}, parameter {rows[row][1]!r}; "
                f"expected layer {want[0]!r}, parameter {want[1]!r} (rows follow "
                "named_parameters() order)"
            )
    if len(rows) > len(names):
        layer, parameter = rows[len(names)]
        raise ValueError(
            f"{argument}: row {len(names)} (layer {layer!r}, parameter {parameter!r}) "
            "is not a learnable of the network"
        )
    return list(frame["Value"])


def _rebuild(names: list[str], leaves: list[Any], like: Any) -> Any:
    if _tree.is_table(like):
        return _table(names, leaves)
    if isinstance(like, Mapping):
        return dict(zip(names, leaves))
    return type(like)(leaves) if isinstance(like, tuple) else leaves


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
        names, params, factors = _learnables_and_factors(net)
        snapshot = _snapshot(net)
    grads = _leaves(names, grad, "grad", state=False)
    _no_missing_gradient(names, grads)
    state_leaves = [
        _leaves(names, None if _tree.is_empty_state(state) else state, name, state=True)
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
        layer, parameter = _split(names[index])
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
    return net, tuple(_with_receipt(_rebuild(names, column, grad), mine) for column in new_states)
