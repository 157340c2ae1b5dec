r"""Stochastic gradient descent with momentum exactly as MATLAB's ``sgdmupdate`` computes it.

MATLAB writes the step as :math:`\theta_{\ell+1} = \theta_\ell - \alpha \nabla E(\theta_\ell) +
\gamma (\theta_\ell - \theta_{\ell-1})`; with the velocity :math:`v_\ell = \theta_{\ell+1} -
\theta_\ell` as the state, elementwise, with :math:`\gamma` = ``momentum`` and :math:`\alpha` =
``learn_rate`` (times a network's learn-rate factor):

.. math::

    v_\ell &= \gamma\, v_{\ell-1} - \alpha\, g_\ell \\
    \theta_{\ell+1} &= \theta_\ell + v_\ell

with :math:`v_0 = 0` when the state is empty (MATLAB's ``[]``). ``torch.optim.SGD`` keeps
:math:`b = \gamma b + g` and steps :math:`\theta - \alpha b` instead: for a constant learn rate
:math:`v = -\alpha b`, so the two agree up to rounding (not when the rate changes: MATLAB's
velocity remembers the rates it was built with). Complex parameters are stepped componentwise.

Source: MATLAB's ``sgdmupdate`` reference page (Algorithms); Qian, "On the momentum term in
gradient descent learning algorithms", Neural Networks 12 (1999).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from . import Rule


@dataclass(frozen=True)
class Hyperparameters:
    """Validated arguments of ``sgdmupdate``."""

    learn_rate: float
    momentum: float


class Coefficients(NamedTuple):
    """The float64 scalars of one step: γ and α."""

    momentum: float
    learn_rate: float


def coefficients(hyper: Hyperparameters, factor: float = 1.0) -> Coefficients:
    return Coefficients(hyper.momentum, hyper.learn_rate * factor)


def step(xp: Any, c: Coefficients, p: Any, g: Any, g2: Any, vel: Any) -> tuple[Any, Any]:
    """One step in MATLAB's order (see :mod:`adamupdate.rules`); an empty velocity is 0:
    ``0 - α g``."""
    scaled = c.learn_rate * g
    vel = 0.0 - scaled if vel is None else c.momentum * vel - scaled
    return p + vel, vel


RULE = Rule(
    name="sgdmupdate",
    states=("vel",),
    squared=(False,),
    coefficients=coefficients,
    coefficients_type=Coefficients,
    step=step,
)
