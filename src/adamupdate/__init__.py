"""MATLAB's ``adamupdate`` for Python: one MATLAB-exact Adam step for NumPy, PyTorch, JAX and
Array-API arrays, nested containers, Learnables tables and ``torch.nn.Module`` networks.

MATLAB's names for a custom training loop are one import away; the ones that need an optional
library (PyTorch for networks, rich and matplotlib for the monitor) load it on first use, so
``import adamupdate`` imports none of them. The package is not itself the function (MATLAB
has one namespace, Python imports names): import the function by name.

>>> from adamupdate import adamupdate
>>> params, avg_grad, avg_sq_grad = adamupdate(1.0, 0.5, None, None, 1)
>>> round(params, 6)
0.999
"""

import difflib as _difflib
import importlib as _importlib
import sys as _sys
import types as _types

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

# The public submodules: dir() lists those already imported (importing one sets it as an
# attribute of the package), since importing any of them here may import an optional library.
_SUBMODULES = ("datasets", "distributed", "io", "monitor", "network", "optax", "torch")

__all__ = ["adamupdate", "dlupdate", "rmspropupdate", "sgdmupdate", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    close = _difflib.get_close_matches(name, [*__all__, *_SUBMODULES], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise AttributeError(f"module 'adamupdate' has no attribute {name!r}{hint}")


def __dir__() -> list[str]:
    """The public names only: the functions, ``__version__`` and the public submodules
    imported so far."""
    imported = [name for name in _SUBMODULES if name in globals()]
    return sorted({*__all__, "__version__", *imported})


class _Package(_types.ModuleType):
    """The package's own type: calling it says which name to import (``import adamupdate``
    then ``adamupdate(...)`` is a MATLAB habit)."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "'adamupdate' here is the package, not the function: write "
            "'from adamupdate import adamupdate' and then call adamupdate(...) "
            "(or call adamupdate.adamupdate(...))"
        )


_sys.modules[__name__].__class__ = _Package
