"""MATLAB's ``adamupdate`` for Python: one MATLAB-exact Adam step for NumPy, PyTorch, JAX and
Array-API arrays, nested containers, Learnables tables and ``torch.nn.Module`` networks.

MATLAB's names for a custom training loop are one import away; the ones that need an optional
library (PyTorch for networks, rich and matplotlib for the monitor) load it on first use, so
``import adamupdate`` imports none of them.

>>> from adamupdate import adamupdate
>>> params, avg_grad, avg_sq_grad = adamupdate(1.0, 0.5, None, None, 1)
>>> round(params, 6)
0.999
"""

from __future__ import annotations

import importlib
from typing import Any

from ._api import adamupdate, rmspropupdate, sgdmupdate
from ._dlupdate import dlupdate

__version__ = "0.2.0"

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "learnables": "network",
    "gradients": "network",
    "set_learn_rate_factor": "network",
    "get_learn_rate_factor": "network",
    "set_layer_learn_rate_factors": "network",
    "learn_rate_factors": "network",
    "set_learn_rate_factors": "network",
    "TrainingProgressMonitor": "monitor",
    "save": "io",
    "load": "io",
}

__all__ = ["adamupdate", "dlupdate", "rmspropupdate", "sgdmupdate", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adamupdate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
