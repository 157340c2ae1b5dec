r"""The Adam step exactly as MATLAB's ``adamupdate`` computes it — the one place the math lives.

For iteration :math:`t \ge 1`, elementwise, with :math:`\beta_1` = ``grad_decay``,
:math:`\beta_2` = ``sq_grad_decay``, :math:`\alpha` = ``learn_rate`` (times a network's
learn-rate factor) and :math:`\epsilon` = ``epsilon``:

.. math::

    m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, |g_t|^2 \\
    \alpha_t &= \alpha \, \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} \\
    \theta_t &= \theta_{t-1} - \frac{\alpha_t\, m_t}{\sqrt{v_t} + \epsilon}

with :math:`m_0 = v_0 = 0` when the states are empty (MATLAB's ``[]``).

Where this differs from PyTorch and optax: they add :math:`\epsilon` to
:math:`\sqrt{\hat v_t} = \sqrt{v_t / (1-\beta_2^t)}`, the *bias-corrected* second moment; MATLAB
adds it to :math:`\sqrt{v_t}`, the uncorrected one, and folds both bias corrections into the step
size. The two agree exactly when :math:`\epsilon_{torch} = \epsilon / \sqrt{1 - \beta_2^t}`
(:func:`torch_equivalent_epsilon`), which lets PyTorch's fused kernel compute MATLAB's step.

Precision follows MATLAB: the scalar coefficients are computed in float64 (MATLAB's ``double``)
and applied in the array's precision (a double scalar times a ``single`` array is a ``single``
operation), in the order written above: ``p - (alpha_t * m) / (sqrt(v) + eps)``.

Complex gradients: :math:`|g|^2 = g \bar g` is real, so :math:`v` is kept in the real dtype of
the gradient while :math:`m` is complex. This is the convention of optax and of the complex
analysis of Adam; PyTorch instead treats real and imaginary parts as two independent real
parameters (``torch.view_as_real``), which gives a different step.

One route computes this step with math of its own: PyTorch's fused Adam kernel (CUDA tensors,
:attr:`Rule.torch_fused`), which divides by the bias corrections and adds ε_torch =
ε/√(1−β2^t) (:func:`torch_equivalent_epsilon`) — the same step up to rounding, and it scales
:math:`g` before squaring it (see the numerics page). Every other route runs :func:`step`.

Source of the formula: MATLAB's ``adamupdate`` reference page (Algorithms section) and
Kingma & Ba, "Adam: A method for stochastic optimization", arXiv:1412.6980, Algorithm 1 and the
"efficiency" remark after it (bias correction folded into the step size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import Rule


class StepCoefficients(NamedTuple):
    """The float64 scalars of one Adam step, shared by every kernel.

    Attributes
    ----------
    step_size
        :math:`\\alpha_t = \\alpha \\sqrt{1-\\beta_2^t} / (1-\\beta_1^t)`.
    grad_decay, one_minus_grad_decay
        :math:`\\beta_1` and :math:`1-\\beta_1` (computed once, in float64, as MATLAB does).
    sq_grad_decay, one_minus_sq_grad_decay
        :math:`\\beta_2` and :math:`1-\\beta_2`.
    epsilon
        :math:`\\epsilon`, added to :math:`\\sqrt{v_t}`.
    learn_rate, iteration
        The inputs the step size came from (PyTorch's fused kernel wants them separately).
    """

    step_size: Any  # float; a traced scalar inside jax.jit
    grad_decay: float
    one_minus_grad_decay: float
    sq_grad_decay: float
    one_minus_sq_grad_decay: float
    epsilon: float
    learn_rate: float
    iteration: Any  # int; a traced scalar inside jax.jit


@dataclass(frozen=True)
class Hyperparameters:
    """Validated arguments of ``adamupdate``; ``xp`` is set when ``iteration`` is traced inside
    ``jax.jit`` (see :func:`bias_corrected_step_size`)."""

    learn_rate: float
    grad_decay: float
    sq_grad_decay: float
    epsilon: float
    iteration: Any
    xp: Any = None


def bias_corrected_step_size(
    learn_rate: float, grad_decay: float, sq_grad_decay: float, iteration: Any, xp: Any = None
) -> Any:
    """:math:`\\alpha \\sqrt{1-\\beta_2^t} / (1-\\beta_1^t)`, in float64 for a known ``iteration``.

    Given a namespace ``xp``, ``iteration`` may be a traced array (inside ``jax.jit``); then
    :math:`1-\\beta^t` is computed as ``-expm1(t log β)``, which keeps full relative precision in
    float32 where the direct form loses digits to cancellation for β near 1.
    """
    if xp is None:
        return (
            learn_rate * math.sqrt(1.0 - sq_grad_decay**iteration) / (1.0 - grad_decay**iteration)
        )

    def one_minus_power(base: float) -> Any:
        return 1.0 if base == 0.0 else -xp.expm1(iteration * math.log(base))

    return learn_rate * xp.sqrt(one_minus_power(sq_grad_decay)) / one_minus_power(grad_decay)


def coefficients(
    learn_rate: float,
    grad_decay: float,
    sq_grad_decay: float,
    epsilon: float,
    iteration: Any,
    xp: Any = None,
) -> StepCoefficients:
    """Compute the step's scalars in float64 from validated hyper-parameters.

    ``xp`` is needed only for a traced ``iteration`` (see :func:`bias_corrected_step_size`).
    """
    return StepCoefficients(
        step_size=bias_corrected_step_size(learn_rate, grad_decay, sq_grad_decay, iteration, xp),
        grad_decay=float(grad_decay),
        one_minus_grad_decay=1.0 - grad_decay,
        sq_grad_decay=float(sq_grad_decay),
        one_minus_sq_grad_decay=1.0 - sq_grad_decay,
        epsilon=float(epsilon),
        learn_rate=float(learn_rate),
        iteration=iteration if xp is not None else int(iteration),
    )


def coefficients_for(hyper: Hyperparameters, factor: float = 1.0) -> StepCoefficients:
    """The step's scalars for a parameter whose learn-rate factor is ``factor``."""
    return coefficients(
        hyper.learn_rate * factor,
        hyper.grad_decay,
        hyper.sq_grad_decay,
        hyper.epsilon,
        hyper.iteration,
        hyper.xp,
    )


def torch_equivalent_epsilon(epsilon: float, sq_grad_decay: float, iteration: int) -> float:
    """The ε that makes PyTorch/optax's Adam take MATLAB's step: ε / √(1 − β2^t)."""
    return epsilon / math.sqrt(1.0 - sq_grad_decay**iteration)


def step(
    xp: Any, c: StepCoefficients, p: Any, g: Any, g2: Any, m: Any, v: Any
) -> tuple[Any, Any, Any]:
    """One Adam step in MATLAB's order (see :mod:`adamupdate.rules` for the conventions):
    ``g2`` is :math:`|g|^2`; ``m`` and ``v`` are ``None`` on the first iteration."""
    m = c.one_minus_grad_decay * g if m is None else c.grad_decay * m + c.one_minus_grad_decay * g
    scaled = c.one_minus_sq_grad_decay * g2
    v = scaled if v is None else c.sq_grad_decay * v + scaled
    p = p - (c.step_size * m) / (xp.sqrt(v) + c.epsilon)
    return p, m, v


RULE = Rule(
    name="adamupdate",
    states=("avg_grad", "avg_sq_grad"),
    squared=(False, True),
    coefficients=coefficients_for,
    coefficients_type=StepCoefficients,
    step=step,
    torch_fused=True,
)
