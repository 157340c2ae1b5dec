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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._extras import require
from ._learnables import (
    FACTORS_ATTRIBUTE,
    learnables_and_factors,
    names_and_params,
    split_name,
    table,
)

# The network form of the solvers (adamupdate._solve and the deprecated adamupdate.nn import it
# from here).
from ._network_step import update_network as update_network

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


def learnables(net: torch.nn.Module) -> Any:
    """MATLAB's ``net.Learnables``: a pandas DataFrame with ``Layer``, ``Parameter``, ``Value``.

    ``Value`` holds the network's own parameter tensors (not copies), so the table always shows
    the current values.
    """
    names, params = names_and_params(net)
    return table(names, params)


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
    names, params = names_and_params(net)
    found = torch.autograd.grad(loss, params, allow_unused=True)  # None for an unused one
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
    if form == "table":
        return table(names, grads)
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
    factors = module.__dict__.setdefault(FACTORS_ATTRIBUTE, {})
    factors[parameter] = factor
    # Mirrored on the parameter itself, for optimizers that see parameters without their
    # modules (adamupdate.torch.Adam); the module's record is the one networks use.
    module._parameters[parameter].__dict__[FACTORS_ATTRIBUTE] = factor
    return net


def get_learn_rate_factor(
    net: torch.nn.Module, layer: str | torch.nn.Module, parameter: str
) -> float:
    """MATLAB's ``getLearnRateFactor`` (1.0 unless set)."""
    name, module = _owner(net, layer)
    _check_parameter(module, name, parameter)
    return module.__dict__.get(FACTORS_ATTRIBUTE, {}).get(parameter, 1.0)


def learn_rate_factor_of(param: torch.Tensor) -> float:
    """The learn-rate factor set on ``param`` with :func:`set_learn_rate_factor` (1.0 unless
    set) — for code that sees parameters without their network, such as an optimizer."""
    return param.__dict__.get(FACTORS_ATTRIBUTE, 1.0)


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
    names, _, factors = learnables_and_factors(net)
    return dict(zip(names, factors))


def set_learn_rate_factors(net: torch.nn.Module, factors: Mapping[str, float]) -> torch.nn.Module:
    """Restore factors saved with :func:`learn_rate_factors`."""
    for name, factor in factors.items():
        set_learn_rate_factor(net, *split_name(name), factor)
    return net
