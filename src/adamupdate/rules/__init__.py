"""Update rules: a solver is its rule, everything else is shared.

Each module here holds one of MATLAB's custom-training-loop solvers — its equations (in the
docstring), the float64 scalars of a step (:class:`Rule.coefficients`, a ``NamedTuple``), and
the step itself in MATLAB's order of operations (:attr:`Rule.step`), written once. Every route
runs that one body: on whole arrays (NumPy ufuncs, the Array API, JAX, and ``torch._foreach_*``
ops through :mod:`adamupdate.backends._torch_columns`) and element by element (the numba kernel
compiles its loops around it, :mod:`adamupdate.kernels._loops`). A new rule is one file here
(a test defines one and runs it everywhere). The only route with math of its own is PyTorch's
fused Adam kernel, named in :mod:`adamupdate.rules.adam`.

A body is written so that all of these can run it: operators ``+ - * /``, ``xp.sqrt``, the
coefficients by name, and ``x if state is None else ...`` for MATLAB's empty state (a state is
``None`` on the first iteration; numba compiles the branch of an empty state alone, as the
state is a ``None`` constant there).

Flattening, validation, grouping, planning, the kernels' memory walk and the backends do not
know which rule they run: a rule is described to them by the names of its states and which of
those accumulate ``|g|^2`` (kept real for complex parameters).

Complex parameters are stepped as real numbers, as MATLAB multiplies a complex array by a
real scalar and divides it by a real array componentwise: either as ``(..., 2)`` pairs of reals
for ``p``, ``g`` and the states that follow ``g``, with the squared states and ``g2 = |g|^2``
as ``(..., 1)`` (NumPy's ufuncs, PyTorch's ``foreach`` ops), or real and imaginary parts
through the body one after the other with the same ``g2`` (the numba kernel, JAX, whose
compiler turns a division by a broadcast divisor into a multiplication by its reciprocal, and
the optax adapter). The Array-API route alone steps complex arrays as they are (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One update rule, as the engine sees it.

    Attributes
    ----------
    name
        The public function, e.g. ``"adamupdate"``.
    states
        The argument names of its states, e.g. ``("avg_grad", "avg_sq_grad")``; messages name
        leaves by them.
    squared
        For each state, whether it accumulates ``|g|^2`` (real for complex parameters).
    coefficients
        ``(hyper, factor) -> coefficients``: the step's float64 scalars for a learn-rate
        factor, as an instance of ``coefficients_type``.
    coefficients_type
        The ``NamedTuple`` class ``coefficients`` returns, defined at a module's top level (a
        compiled step is traced with its fields; numba's disk cache finds the class by name).
    step
        ``(xp, c, p, g, g2, *states) -> (p, *states)``: one step, in MATLAB's order, on real
        arrays or real numbers (complex ones as pairs of reals, see above); ``xp`` gives
        ``sqrt``; a state is ``None`` on the first iteration (MATLAB's ``[]``).
    torch_fused
        Whether PyTorch's fused Adam kernel computes this rule (Adam only; see there).
    """

    name: str
    states: tuple[str, ...]
    squared: tuple[bool, ...]
    coefficients: Callable[[Any, float], Any]
    coefficients_type: Any  # a NamedTuple class (mypy has no type for 'any NamedTuple class')
    step: Callable[..., tuple[Any, ...]]
    torch_fused: bool = False
