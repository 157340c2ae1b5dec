r"""Per-parameter Adam state between ``torch.optim.Adam``'s layout and ours.

Both optimizers keep ``step``, ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`) per
parameter, with the same meaning for real parameters. They differ in two places:

- **Half precision.** :func:`adamupdate.adamupdate` keeps float32 averages for float16 and
  bfloat16 parameters; ``torch.optim.Adam`` keeps them in the parameter's dtype (and casts any
  floating state to it on load). Loading converts to float32; torch casts ours back down.
- **Complex parameters.** Ours keeps :math:`v` real, the average of :math:`|g|^2 = g\bar g`;
  ``torch.optim.Adam`` steps ``torch.view_as_real`` of the parameter, so its :math:`v` is a
  complex tensor whose real part averages :math:`(\operatorname{Re} g)^2` and whose imaginary
  part averages :math:`(\operatorname{Im} g)^2`. Their sum is exactly our :math:`v` (both are
  the same linear recurrence), which is how a torch state is loaded. The other way has no exact
  answer — our :math:`v` does not say how it splits between the parts — so ``state_dict()``
  gives torch the even split, :math:`v/2` in each part, written as ``im = v/2`` and
  ``re = v - im`` so that ``re + im`` gives back our :math:`v` bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

_HALF = (torch.float16, torch.bfloat16)
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def real_state_dtype(param: torch.Tensor) -> torch.dtype:
    """The real dtype of our averages for ``param``: float32 for half precision."""
    if param.dtype in _HALF:
        return torch.float32
    return param.real.dtype if param.is_complex() else param.dtype


def to_ours(param: torch.Tensor, key: str, value: torch.Tensor) -> torch.Tensor:
    """A loaded ``exp_avg`` / ``exp_avg_sq`` (ours or torch's) as our step expects it for
    ``param``; the very tensor when it already is."""
    real = real_state_dtype(param)
    if key == "exp_avg_sq":
        if value.is_complex():  # torch's per-part averages: their sum is |g|^2's average
            value = value.real + value.imag
        dtype = real
    else:
        dtype = _COMPLEX.get(real, param.dtype) if param.is_complex() else real
    if value.dtype == dtype and value.device == param.device:
        return value
    return value.to(device=param.device, dtype=dtype)


def to_torch(param: torch.Tensor, entry: dict[str, Any]) -> dict[str, Any]:
    """One parameter's saved state in the layout ``torch.optim.Adam`` steps from: a complex
    parameter's real :math:`v` split evenly into a complex tensor; the entry itself otherwise."""
    v = entry.get("exp_avg_sq")
    if not (param.is_complex() and isinstance(v, torch.Tensor) and not v.is_complex()):
        return entry
    im = v * 0.5
    re = v - im  # exact (Sterbenz): re + im == v
    return {**entry, "exp_avg_sq": torch.complex(re, im)}
