"""The keyword arguments of ``torch.optim.Adam``, checked for :class:`adamupdate.torch.Adam`.

A parameter group of :class:`adamupdate.torch.Adam` carries every key a ``torch.optim.Adam``
group carries on the installed torch (``torch/optim/adam.py``, ``Adam.__init__``: torch 2.13
has the eight of :data:`FLAG_DEFAULTS`, torch 2.5 all but ``decoupled_weight_decay``), so that
either optimizer continues from the other's ``state_dict()``. This module says which values we
accept and raises, for an input ``torch.optim.Adam`` refuses, the error type and message it
raises:

- ``lr``, ``betas``, ``eps``: numbers or one-element tensors, as torch takes them; ranges are
  MATLAB's (``lr >= 0``, betas in [0, 1), ``eps > 0``), all finite.
- ``weight_decay`` >= 0: MATLAB's ``L2Regularization``, the gradient ``g + λ·p`` (which is also
  what ``torch.optim.Adam`` does with it).
- ``maximize``: ascend, ``-g`` in place of ``g`` (torch's meaning, before the weight decay).
- ``foreach``, ``fused``, ``capturable``: how torch runs its step, not what it computes. They
  are kept in the group (so that ``torch.optim.Adam`` picks the same route from our
  ``state_dict()``) and change nothing here: the engine chooses its own kernel.
- ``differentiable=True``, ``amsgrad=True``, ``decoupled_weight_decay=True``: refused, each with
  the reason (another algorithm, or a step autograd cannot see).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any

import torch

from . import _validate

# torch.optim.Adam's keyword arguments beyond lr, betas and eps that we understand (torch 2.13's),
# with its defaults.
FLAG_DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}

# The ones the installed torch.optim.Adam keeps in its groups (older torch lacks some).
GROUP_FLAGS: dict[str, Any] = {
    key: default
    for key, default in FLAG_DEFAULTS.items()
    if key in inspect.signature(torch.optim.Adam.__init__).parameters
}

_REFUSED = {
    "amsgrad": (
        "amsgrad=True is not supported: MATLAB's adamupdate has no AMSGrad variant (it never "
        "keeps the running maximum of the squared average); use torch.optim.Adam for AMSGrad"
    ),
    "decoupled_weight_decay": (
        "decoupled_weight_decay=True (AdamW) is not supported: MATLAB's L2Regularization adds "
        "λ·p to the gradient, which is weight_decay with decoupled_weight_decay=False"
    ),
    "differentiable": (
        "differentiable=True is not supported: the step runs in adamupdate's kernels outside "
        "autograd, so it cannot be differentiated through"
    ),
}


def check_group(group: dict[str, Any]) -> None:
    """Check one parameter group (defaults already merged in); raise as torch would.

    Missing flags (a state saved by an older torch, or by an older release of ours) count as
    their defaults.
    """
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    _range("learning rate", lr, lambda x: x >= 0.0, ">= 0")
    betas = group["betas"]
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    tensors = [isinstance(b, torch.Tensor) for b in betas]
    if any(tensors) and not all(tensors) and _torch_refuses_mixed_betas():
        raise ValueError("betas must be either both floats or both Tensors")
    for i, beta in enumerate(betas):
        if isinstance(beta, torch.Tensor) and beta.numel() != 1:
            raise ValueError(f"Tensor betas[{i}] must be 1-element")
        _range(f"beta parameter at index {i}", beta, lambda x: 0.0 <= x < 1.0, "in [0, 1)")
    _range("epsilon value", group["eps"], lambda x: x > 0.0, "> 0")
    weight_decay = group.get("weight_decay", 0.0)
    _range("weight_decay value", weight_decay, lambda x: x >= 0.0, ">= 0")
    flags = {key: group.get(key, default) for key, default in FLAG_DEFAULTS.items()}
    for key in ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay"):
        if not isinstance(flags[key], bool):
            raise TypeError(f"{key} must be True or False, got {flags[key]!r}")
    for key in ("foreach", "fused"):
        if flags[key] is not None and not isinstance(flags[key], bool):
            raise TypeError(f"{key} must be None, True or False, got {flags[key]!r}")
    # torch.optim.Adam's own refusals first, with its types and messages.
    if flags["fused"] and flags["differentiable"]:
        raise RuntimeError("`fused` does not support `differentiable`")
    if flags["fused"] and flags["foreach"]:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    for key, reason in _REFUSED.items():
        if flags[key]:
            raise ValueError(reason)


@functools.cache
def _torch_refuses_mixed_betas() -> bool:
    """Whether the installed ``torch.optim.Adam`` refuses one float and one tensor beta (newer
    torch does; torch 2.5 takes them, and so do we there)."""
    probe = torch.zeros(1, requires_grad=True)
    try:
        torch.optim.Adam([probe], betas=(0.9, torch.tensor(0.999)))
    except ValueError:
        return True
    return False


def scalar(value: Any) -> float:
    """A checked hyper-parameter as a Python float (a one-element tensor gives its element)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _range(name: str, value: Any, ok: Any, kind: str) -> None:
    """``value`` a finite real number (or one-element tensor) with ``ok(value)``: torch's
    "Invalid <name>: <value>" ``ValueError`` otherwise, or a ``TypeError`` for a non-number."""
    if isinstance(value, bool) or not (
        isinstance(value, (numbers.Real, torch.Tensor)) or hasattr(value, "item")
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = _validate._real(name, value, "a real number")
    as_float = float(number)
    if not (math.isfinite(as_float) and ok(as_float)):
        raise ValueError(f"Invalid {name}: {_shown(value)} (MATLAB's range: finite, {kind})")


def _shown(value: Any) -> str:
    # torch's messages show a number as Python prints it: "Invalid weight_decay value: -1".
    if isinstance(value, torch.Tensor):
        return repr(value.item())
    return str(value)
