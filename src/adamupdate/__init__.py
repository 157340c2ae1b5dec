"""MATLAB's ``adamupdate`` for Python: one MATLAB-exact Adam step for NumPy, PyTorch, JAX and
Array-API arrays, nested containers, Learnables tables and ``torch.nn.Module`` networks.

>>> from adamupdate import adamupdate
>>> params, avg_grad, avg_sq_grad = adamupdate(1.0, 0.5, None, None, 1)
>>> round(params, 6)
0.999
"""

from ._api import adamupdate

__all__ = ["adamupdate"]
__version__ = "0.1.0"
