"""MATLAB's ``dlupdate``: any update rule, written as a function of arrays, applied leaf by leaf.

``[netUpdated, X1, ..., Xm] = dlupdate(fun, net, A1, ..., An)`` calls ``fun`` on each learnable
of ``net`` (an array, a container, a Learnables table or a network) with the matching leaves
of ``A1, ..., An``; each output comes back in a container that mirrors ``net``'s learnables,
and the first output updates the network's parameters in place. Learn-rate factors do not apply
(as in MATLAB). Nothing is written until ``fun`` has run on every leaf, so an error inside it
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _plan, _tree


def dlupdate(fun: Callable[..., Any], params: Any, *args: Any) -> Any:
    """Apply ``fun`` to every learnable of ``params`` and the matching leaves of ``args``.

    Parameters
    ----------
    fun
        ``fun(p, *a) -> new_p`` or a tuple ``(new_p, x1, ..., xm)``, on one array at a time
        (the arrays of ``params``' library; for a network, tensors — computed under
        ``torch.no_grad()``).
    params
        Arrays, a container, a Learnables table, or a ``torch.nn.Module`` (its learnables).
    *args
        Containers that mirror ``params`` (for a network: dicts keyed by parameter name,
        lists in ``named_parameters()`` order, or Learnables tables). ``None`` passes ``None``
        for every leaf.

    Returns
    -------
    The updated ``params`` (a network is updated in place and returned) — or, when ``fun``
    returns a tuple, a tuple of it and one container per extra output, mirroring ``params``.

    Examples
    --------
    Plain gradient descent, with a state of MATLAB's ``[]`` that ``fun`` fills in:

    >>> import numpy as np
    >>> from adamupdate import dlupdate
    >>> params = {"w": np.ones(2), "b": np.zeros(1)}
    >>> grads = {"w": np.full(2, 0.5), "b": np.ones(1)}
    >>> dlupdate(lambda p, g: p - 0.1 * g, params, grads)
    {'w': array([0.95, 0.95]), 'b': array([-0.1])}
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if _plan.is_module(params):
        return _update_network(fun, params, args)
    leaves, node = _tree.flatten(params)
    columns = [_leaves_of(node, arg, f"args[{k}]") for k, arg in enumerate(args)]
    results = [_as_tuple(fun(p, *(c[i] for c in columns))) for i, p in enumerate(leaves)]
    outputs = _transpose(results, len(leaves))
    containers = tuple(_tree.unflatten(node, column) for column in outputs)
    return containers[0] if len(containers) == 1 and not _returns_tuple(results) else containers


def _update_network(fun: Callable[..., Any], net: Any, args: tuple[Any, ...]) -> Any:
    import torch

    from ._learnables import learnables_and_factors, leaves, rebuild

    names, params, _ = learnables_and_factors(net)
    columns = [
        [None] * len(names) if arg is None else leaves(names, arg, f"args[{k}]", state=False)
        for k, arg in enumerate(args)
    ]
    with torch.no_grad():
        results = [
            _as_tuple(fun(p.detach(), *(c[i] for c in columns))) for i, p in enumerate(params)
        ]
        outputs = _transpose(results, len(names))
        for name, p, new in zip(names, params, outputs[0]):
            if not isinstance(new, torch.Tensor) or new.shape != p.shape:
                raise ValueError(
                    f"fun's first output for {name!r} must be a tensor of shape "
                    f"{tuple(p.shape)}, got {type(new).__name__} "
                    f"{tuple(getattr(new, 'shape', ()))}"
                )
        for p, new in zip(params, outputs[0]):  # every output checked: now write
            p.copy_(new)
    like: Any = next((arg for arg in args if arg is not None), {})
    extras = tuple(rebuild(names, column, like) for column in outputs[1:])
    return (net, *extras) if _returns_tuple(results) else net


def _leaves_of(node: _tree.Node, arg: Any, name: str) -> list[Any]:
    if arg is None:
        return [None] * node.size
    return _tree.leaves_like(node, arg, name, allow_empty=True)


def _as_tuple(result: Any) -> tuple[Any, ...]:
    return result if isinstance(result, tuple) else (result,)


def _returns_tuple(results: list[tuple[Any, ...]]) -> bool:
    return bool(results) and len(results[0]) > 1


def _transpose(results: list[tuple[Any, ...]], n: int) -> list[list[Any]]:
    """Per-leaf output tuples as one list per output; every leaf must give as many."""
    width = len(results[0]) if results else 1
    for i, result in enumerate(results):
        if len(result) != width:
            raise ValueError(
                f"fun returned {len(result)} outputs for leaf {i} but {width} for leaf 0"
            )
    return [[result[k] for result in results] for k in range(width)] if n else [[]]
