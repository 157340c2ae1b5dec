"""A network's learnables, in the order and under the names every network function uses, and
the tables, dicts and lists keyed by them.

A learnable is a ``named_parameters()`` entry with ``requires_grad=True``; its learn-rate factor
is stored on the module that owns it (:data:`FACTORS_ATTRIBUTE`). :func:`leaves` takes a
Learnables table, a dict keyed by parameter name or a list apart into one value per learnable
(naming the entry that does not fit); :func:`rebuild` puts values back into the caller's form.
Used by :mod:`adamupdate.network`, its step (:mod:`adamupdate._network_step`) and
:func:`adamupdate.dlupdate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _tree

if TYPE_CHECKING:
    import torch

__all__ = [
    "FACTORS_ATTRIBUTE",
    "learnables_and_factors",
    "leaves",
    "names_and_params",
    "rebuild",
    "split_name",
    "table",
]

FACTORS_ATTRIBUTE = "_adamupdate_learn_rate_factors"


def split_name(name: str) -> tuple[str, str]:
    """``"conv1.weight"`` → ``("conv1", "weight")``: a learnable's layer and parameter names."""
    layer, _, parameter = name.rpartition(".")
    return layer, parameter


def names_and_params(net: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """Names and parameters of the learnables (:func:`learnables_and_factors` without factors)."""
    names, params, _ = learnables_and_factors(net)
    return names, params


def learnables_and_factors(
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
        own = module.__dict__.get(FACTORS_ATTRIBUTE)
        for name, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                names.append(f"{prefix}.{name}" if prefix else name)
                params.append(p)
                factors.append(own.get(name, 1.0) if own else 1.0)
    return names, params, factors


def table(names: list[str], values: list[Any]) -> Any:
    """A Learnables table (MATLAB's ``Layer``, ``Parameter``, ``Value``) of ``values``."""
    from ._tables import LearnablesTable  # prints values, not tensor reprs

    layers, parameters = zip(*(split_name(name) for name in names)) if names else ((), ())
    frame = LearnablesTable({"Layer": list(layers), "Parameter": list(parameters)})
    frame["Value"] = _tree.object_column(values, frame.index)
    return frame


def leaves(names: list[str], value: Any, argument: str, *, state: bool) -> list[Any]:
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
                layer, parameter = split_name(name)
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


def _table_leaves(names: list[str], frame: Any, argument: str) -> list[Any]:
    for column in _tree.TABLE_COLUMNS:
        if column not in frame.columns:
            raise ValueError(f"{argument}: table has no {column!r} column")
    rows = list(zip(frame["Layer"], frame["Parameter"]))
    for row, name in enumerate(names):
        want = split_name(name)
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


def rebuild(names: list[str], values: list[Any], like: Any) -> Any:
    """``values`` (one per learnable) in the form of ``like``: a table, a dict or a list/tuple."""
    if _tree.is_table(like):
        return table(names, values)
    if isinstance(like, Mapping):
        return dict(zip(names, values))
    return type(like)(values) if isinstance(like, tuple) else values
