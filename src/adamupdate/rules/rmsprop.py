r"""RMSProp exactly as MATLAB's ``rmspropupdate`` computes it.

Elementwise, with :math:`\beta_2` = ``sq_grad_decay``, :math:`\alpha` = ``learn_rate`` (times a
network's learn-rate factor) and :math:`\epsilon` = ``epsilon``:

.. math::

    v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \theta_t &= \theta_{t-1} - \frac{\alpha\, g_t}{\sqrt{v_t} + \epsilon}

with :math:`v_0 = 0` when the state is empty (MATLAB's ``[]``). As in ``adamupdate``,
:math:`\epsilon` is added to :math:`\sqrt{v_t}` — so does ``torch.optim.RMSprop`` (which has no
bias correction either): the two agree up to rounding for real parameters. Complex: ``v`` is
real, :math:`|g|^2 = g \bar g`.

Source: MATLAB's ``rmspropupdate`` reference page (Algorithms); Tieleman & Hinton, "Lecture 6.5
— RMSProp", COURSERA: Neural Networks for Machine Learning (2012).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from . import Rule


@dataclass(frozen=True)
class Hyperparameters:
    """Validated arguments of ``rmspropupdate``."""

    learn_rate: float
    sq_grad_decay: float
    epsilon: float


class Coefficients(NamedTuple):
    """The float64 scalars of one step: β2, 1−β2, α and ε."""

    sq_grad_decay: float
    one_minus_sq_grad_decay: float
    learn_rate: float
    epsilon: float


def coefficients(hyper: Hyperparameters, factor: float = 1.0) -> Coefficients:
    return Coefficients(
        hyper.sq_grad_decay, 1.0 - hyper.sq_grad_decay, hyper.learn_rate * factor, hyper.epsilon
    )


def step(xp: Any, c: Coefficients, p: Any, g: Any, g2: Any, v: Any) -> tuple[Any, Any]:
    """One step in MATLAB's order (see :mod:`adamupdate.rules`)."""
    scaled = c.one_minus_sq_grad_decay * g2
    v = scaled if v is None else c.sq_grad_decay * v + scaled
    p = p - (c.learn_rate * g) / (xp.sqrt(v) + c.epsilon)
    return p, v


RULE = Rule(
    name="rmspropupdate",
    states=("avg_sq_grad",),
    squared=(True,),
    coefficients=coefficients,
    coefficients_type=Coefficients,
    step=step,
)
