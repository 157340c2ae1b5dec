"""Update rules: a solver is its rule, everything else is shared.

Each module here holds one of MATLAB's custom-training-loop solvers — its equations (in the
docstring), the float64 scalars of a step (:class:`Rule.coefficients`), and the step itself in
MATLAB's order of operations on real arrays (:class:`Rule.step`), which the generic backends
run and every fast kernel is tested against. The numba kernel carries the same body for each
rule (:mod:`adamupdate.kernels.numba_step`, selected by :attr:`Rule.kernel`).

Flattening, validation, grouping, planning, the kernels' memory walk and the backends do not
know which rule they run: a rule is described to them by the names of its states and which of
those accumulate ``|g|^2`` (kept real for complex parameters).

Complex parameters are stepped as pairs of reals, as MATLAB multiplies a complex array by a
real scalar and divides it by a real array componentwise: ``p``, ``g`` and the states that
follow ``g`` arrive as ``(..., 2)`` real arrays, the squared states as ``(..., 1)``, and
``g2 = |g|^2`` with the squared states' shape.
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
    kernel
        The rule's number in the numba kernel.
    coefficients
        ``(hyper, factor) -> coefficients``: the step's float64 scalars for a learn-rate factor;
        the result's ``kernel()`` gives them in the kernel's order.
    coefficients_type
        The dataclass ``coefficients`` returns (a compiled step is traced with its fields).
    step
        ``(xp, p, g, g2, states, c) -> (p, *states)``: one step on real arrays in MATLAB's
        order; a state is ``None`` on the first iteration (MATLAB's ``[]``).
    """

    name: str
    states: tuple[str, ...]
    squared: tuple[bool, ...]
    kernel: int
    coefficients: Callable[[Any, float], Any]
    coefficients_type: type
    step: Callable[..., tuple[Any, ...]]
