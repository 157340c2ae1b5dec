"""MATLAB ``dlnetwork`` Learnables ↔ a PyTorch network's ``Conv2d`` and ``Linear`` parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._extras import require
from ._mat import matlab_names, matlab_shape

__all__ = ["load_matlab_learnables", "matlab_learnables"]


def _torch() -> Any:
    return require("torch", "torch", "converting a network")


def _layers(
    net: Any, input_shapes: Mapping[str, Any] | None, torch: Any
) -> list[tuple[str, str, Any]]:
    """``(torch name, MATLAB name, module)`` of every module owning parameters.

    Each must be a ``Conv2d`` or ``Linear`` layer, and ``input_shapes`` may name only the latter.
    """
    owners = []
    for name, module in net.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        label = name or "(the network itself)"
        if isinstance(module, torch.nn.Conv2d):
            if module.groups != 1:
                raise ValueError(
                    f"layer {label!r}: a grouped Conv2d (groups={module.groups}) has MATLAB's "
                    f"groupedConvolution2dLayer layout, which is not supported"
                )
        elif not isinstance(module, torch.nn.Linear):
            raise ValueError(
                f"layer {label!r} ({type(module).__name__}) has learnables, but only Conv2d and "
                f"Linear layers can be converted to MATLAB's layout"
            )
        for parameter in own.values():
            if isinstance(parameter, torch.nn.parameter.UninitializedParameter):
                raise ValueError(f"layer {label!r}: its parameters are not initialized yet")
        owners.append((name, module))
    linear = {name for name, module in owners if isinstance(module, torch.nn.Linear)}
    for name in input_shapes or {}:
        if name not in linear:
            raise ValueError(f"input_shapes[{name!r}]: the network has no Linear layer {name!r}")
    matlab = matlab_names([name or "net" for name, _ in owners])
    return [(name, m, module) for (name, module), m in zip(owners, matlab)]


def _matlab_shapes(module: Any, torch: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """MATLAB's shapes of a layer's ``Weights`` and ``Bias`` (see :func:`matlab_learnables`)."""
    shape = tuple(module.weight.shape)
    if isinstance(module, torch.nn.Conv2d):
        cout, cin, h, w = shape
        return (h, w, cin, cout), (1, 1, cout)
    return shape, (shape[0], 1)


def _flat_input(layer: str, shapes: Mapping[str, Any] | None, features: int) -> tuple | None:
    if not shapes or layer not in shapes:
        return None
    shape = tuple(int(n) for n in shapes[layer])
    if len(shape) != 3 or int(np.prod(shape)) != features:
        raise ValueError(
            f"layer {layer!r}: input_shapes gives {shape}, which is not (C, H, W) with "
            f"C*H*W = {features} input features"
        )
    return shape


def _swap_spatial(weight: np.ndarray, c: int, first: int, second: int) -> np.ndarray:
    """A fully connected weight's columns, flattened from ``(c, first, second)``, reordered as
    if flattened from ``(c, second, first)``: torch's ``[C H W]`` ↔ MATLAB's ``[H W C]``."""
    out = weight.shape[0]
    return weight.reshape(out, c, first, second).transpose(0, 1, 3, 2).reshape(out, -1)


def matlab_learnables(
    net: Any, *, input_shapes: Mapping[str, tuple[int, int, int]] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """A PyTorch network's parameters in MATLAB's ``dlnetwork`` Learnables layout.

    Each ``Conv2d`` and ``Linear`` layer becomes ``{"Weights": ..., "Bias": ...}`` (``Bias``
    only if the layer has one) under a MATLAB field name made from its module name (``conv_1``
    stays ``conv_1``; ``features.0`` becomes ``features_0``). Layouts:

    ================  =========================  ==========================
    layer             MATLAB                     PyTorch
    ================  =========================  ==========================
    Conv2d weights    ``[h w cin cout]``         ``[cout cin h w]``
    Conv2d bias       ``[1 1 cout]``             ``[cout]``
    Linear weights    ``[out in]``               ``[out in]``
    Linear bias       ``[out 1]``                ``[out]``
    ================  =========================  ==========================

    Both convolve the same way (cross-correlation, no kernel flip), so a MATLAB network with the
    same layers computes the same function. A ``Linear`` layer that follows convolutions is the
    one subtlety: MATLAB's ``fullyConnectedLayer`` flattens its ``[H W C]`` input in column-major
    order and ``torch.flatten`` flattens ``[C H W]`` in row-major order; name such layers in
    ``input_shapes`` with the ``(C, H, W)`` of their input to reorder the weight's columns.

    Save the result with ``save("net.mat", learnables=matlab_learnables(net))``; in MATLAB,
    ``S = load("net.mat")`` then, for each row ``i`` of ``net.Learnables``,
    ``net.Learnables.Value{i} = dlarray(S.learnables.(L.Layer(i)).(L.Parameter(i)))``.

    Parameters
    ----------
    net : torch.nn.Module
        Every module that owns parameters must be a ``Conv2d`` (``groups=1``) or ``Linear``.
    input_shapes : mapping, optional
        ``{linear layer name: (C, H, W)}`` for fully connected layers fed by a flattened image.

    Returns
    -------
    dict
        ``{layer: {"Weights": ndarray, "Bias": ndarray}}`` in module order; NumPy copies on the
        CPU, float16/bfloat16 widened to float32 (MATLAB has neither).

    Raises
    ------
    ValueError
        A layer of another type owns parameters (named in the message), or bad ``input_shapes``.

    Examples
    --------
    >>> import torch
    >>> from adamupdate.io import matlab_learnables
    >>> net = torch.nn.Sequential()
    >>> net.add_module("conv_1", torch.nn.Conv2d(1, 20, 5))
    >>> net.add_module("fc", torch.nn.Linear(20, 10))
    >>> for layer, learnables in matlab_learnables(net).items():
    ...     print(layer, {name: value.shape for name, value in learnables.items()})
    conv_1 {'Weights': (5, 5, 1, 20), 'Bias': (1, 1, 20)}
    fc {'Weights': (10, 20), 'Bias': (10, 1)}
    """
    torch = _torch()
    layers = _layers(net, input_shapes, torch)
    result: dict[str, dict[str, np.ndarray]] = {}
    for name, matlab, module in layers:
        weight = _cpu_numpy(module.weight, torch)
        _, bias_shape = _matlab_shapes(module, torch)
        if isinstance(module, torch.nn.Conv2d):
            weights = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
        else:
            flat = _flat_input(name, input_shapes, weight.shape[1])
            if flat is not None:
                c, h, w = flat
                weight = _swap_spatial(weight, c, h, w)
            weights = np.ascontiguousarray(weight)
        entry = {"Weights": weights}
        if module.bias is not None:
            entry["Bias"] = _cpu_numpy(module.bias, torch).reshape(bias_shape)
        result[matlab] = entry
    return result


def _cpu_numpy(parameter: Any, torch: Any) -> np.ndarray:
    tensor = parameter.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy().copy()


def load_matlab_learnables(
    net: Any,
    learnables: Mapping[str, Mapping[str, Any]],
    *,
    input_shapes: Mapping[str, tuple[int, int, int]] | None = None,
) -> Any:
    """Copy MATLAB-layout Learnables (as from :func:`matlab_learnables`) into a PyTorch network.

    The inverse of :func:`matlab_learnables`: ``learnables`` is ``{layer: {"Weights": ...,
    "Bias": ...}}`` keyed by the MATLAB names that function gives, e.g. a structure read from a
    ``.mat`` file with :func:`load` (MATLAB: ``S.(L.Layer(i)).(L.Parameter(i)) =
    extractdata(L.Value{i})`` for each row of ``L = net.Learnables``, then ``save("net.mat",
    "S")``). Arrays may have MATLAB's shapes (trailing singleton dimensions dropped, a bias of
    ``[1 1 n]`` or ``[n 1]``). Everything is checked before any parameter is written; values are
    cast to each parameter's dtype and device.

    Parameters
    ----------
    net : torch.nn.Module
        Its ``Conv2d``/``Linear`` parameters are overwritten in place.
    learnables : mapping
        ``{layer: {"Weights": array, "Bias": array}}``; arrays are NumPy arrays or anything
        ``numpy.asarray`` accepts.
    input_shapes : mapping, optional
        As for :func:`matlab_learnables`.

    Returns
    -------
    torch.nn.Module
        ``net``.

    Raises
    ------
    ValueError
        A missing or extra layer or parameter, or a shape that does not fit, named by layer.

    Examples
    --------
    >>> import torch
    >>> from adamupdate.io import load_matlab_learnables, matlab_learnables
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> values = matlab_learnables(net)
    >>> values["x0"]["Bias"][:] = 1.0
    >>> load_matlab_learnables(net, values)[0].bias
    Parameter containing:
    tensor([1., 1.], requires_grad=True)
    """
    torch = _torch()
    layers = _layers(net, input_shapes, torch)
    if not isinstance(learnables, Mapping):
        raise TypeError(
            f"learnables must be a mapping of layer name to parameters, got "
            f"{type(learnables).__name__}"
        )
    known = {matlab for _, matlab, _ in layers}
    for layer in learnables:
        if layer not in known:
            raise ValueError(
                f"layer {layer!r}: the network has no Conv2d/Linear layer of that name"
            )
    writes = []
    for name, matlab, module in layers:
        if matlab not in learnables or not isinstance(learnables[matlab], Mapping):
            raise ValueError(f"layer {matlab!r}: missing from the learnables")
        given = learnables[matlab]
        wanted = {"Weights": module.weight}
        if module.bias is not None:
            wanted["Bias"] = module.bias
        for key in given:
            if key not in wanted:
                raise ValueError(f"layer {matlab!r}: unexpected parameter {key!r}")
        for key, parameter in wanted.items():
            if key not in given:
                raise ValueError(f"layer {matlab!r}: missing {key!r}")
            value = np.asarray(given[key])
            if value.dtype.kind not in "biuf":
                raise ValueError(f"layer {matlab!r}: {key} has dtype {value.dtype}")
            value = _to_torch_layout(value, module, key, name, matlab, input_shapes, torch)
            writes.append((parameter, value))
    with torch.no_grad():
        for parameter, value in writes:
            parameter.copy_(torch.from_numpy(value).to(parameter.device, parameter.dtype))
    return net


def _to_torch_layout(
    value: np.ndarray,
    module: Any,
    key: str,
    name: str,
    matlab: str,
    input_shapes: Mapping[str, Any] | None,
    torch: Any,
) -> np.ndarray:
    """A parameter's value (``key``: ``Weights`` or ``Bias``) from MATLAB's layout to torch's."""
    shape = tuple(module.weight.shape)
    weights_shape, bias_shape = _matlab_shapes(module, torch)
    if key == "Bias":
        expected = bias_shape
        fits = value.size == shape[0] and sum(n != 1 for n in value.shape) <= 1
    else:
        expected = weights_shape
        fits = matlab_shape(value.shape) == matlab_shape(expected)
    if not fits:
        raise ValueError(
            f"layer {matlab!r}: {key} has shape {value.shape}, MATLAB's layout of this layer "
            f"is {list(expected)}"
        )
    value = value.reshape(expected)
    if key == "Bias":
        return np.ascontiguousarray(value.reshape(-1))
    if isinstance(module, torch.nn.Conv2d):
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    flat = _flat_input(name, input_shapes, shape[1])
    if flat is not None:
        c, h, w = flat
        value = _swap_spatial(value, c, w, h)
    return np.ascontiguousarray(value)
