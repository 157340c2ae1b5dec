"""MATLAB's custom-training-loop solvers: ``adamupdate``, ``sgdmupdate``, ``rmspropupdate``.

Each validates its scalars and hands its rule (:mod:`adamupdate.rules`) to the shared engine
(:func:`adamupdate._solve.solve`: plan, step, containers). ``dlupdate`` is in
:mod:`adamupdate._dlupdate`.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

from . import _teach, _validate
from ._solve import solve
from .rules import adam, rmsprop, sgdm

T = TypeVar("T")


def adamupdate(
    params: T,
    grad: Any,
    avg_grad: Any,
    avg_sq_grad: Any,
    iteration: int,
    learn_rate: float = 0.001,
    grad_decay: float = 0.9,
    sq_grad_decay: float = 0.999,
    epsilon: float = 1e-8,
    *,
    inplace: bool = False,
    state_dtype: Any = None,
    **misspelt: NoReturn,
) -> tuple[T, Any, Any]:
    r"""Update learnable parameters with one Adam step, exactly as MATLAB's ``adamupdate``.

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\, |g|^2 \\
        p &\leftarrow p - \alpha \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
              \cdot \frac{m}{\sqrt{v} + \epsilon}

    with :math:`\beta_1` = ``grad_decay``, :math:`\beta_2` = ``sq_grad_decay``,
    :math:`\alpha` = ``learn_rate`` and :math:`t` = ``iteration``. Note that :math:`\epsilon` is
    added to :math:`\sqrt{v}`, not to the bias-corrected :math:`\sqrt{\hat v}` as in PyTorch and
    optax (see the documentation's :doc:`numerics` page).

    Parameters
    ----------
    params
        The learnable parameters: a NumPy array or scalar, a PyTorch tensor (CPU or CUDA), a JAX
        array, any Array-API array, a nested ``list``/``tuple``/``dict`` of those (MATLAB's cell
        arrays and structures), a pandas DataFrame with ``Layer``, ``Parameter`` and ``Value``
        columns (MATLAB's Learnables table), or a ``torch.nn.Module`` (MATLAB's ``dlnetwork``;
        see :mod:`adamupdate.network`). Real or complex.
    grad
        Gradients, with exactly the structure, shapes, dtypes and devices of ``params``. For a
        network: a Learnables-style table, a dict keyed by parameter name, or a list in
        ``named_parameters()`` order.
    avg_grad, avg_sq_grad
        The moving averages returned by the previous call, or ``None`` (also ``[]`` or an empty
        array, MATLAB's ``[]``) on the first call.
    iteration
        The iteration number, 1 on the first call, incremented by 1 on each call. A traced value
        is accepted inside ``jax.jit`` (it cannot be checked there).
    learn_rate
        Global learning rate :math:`\alpha \ge 0` (default 0.001). For a network, each
        parameter's rate is ``learn_rate`` times its learn-rate factor.
    grad_decay
        Gradient decay factor :math:`\beta_1 \in [0, 1)` (default 0.9).
    sq_grad_decay
        Squared gradient decay factor :math:`\beta_2 \in [0, 1)` (default 0.999).
    epsilon
        Small constant :math:`\epsilon > 0` (default 1e-8).
    inplace
        Write the results into the given parameter and state buffers (NumPy arrays, PyTorch
        tensors; JAX buffers are donated) and return those same objects, so a training loop
        allocates nothing per step. Default ``False``: inputs are never modified. A network's
        parameters are always updated in place.
    state_dtype
        dtype of the two averages (default: the gradient's dtype), e.g. ``"float32"`` to keep
        float32 averages for float16/bfloat16 parameters.

    Returns
    -------
    params, avg_grad, avg_sq_grad
        The updated parameters, in the container, dtype and device they came in, and the two
        averages, which mirror ``grad``. The squared average of a complex gradient is real.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it and, inside containers, the path of the first mismatch,
        e.g. ``grad['fc1'][0]: shape (3, 4) does not match params (4, 3)``. Nothing is changed
        when an error is raised, also with ``inplace=True``. A gradient that is ``None`` (a
        parameter the loss does not use, for which PyTorch's ``p.grad`` is ``None``) is
        refused, naming the parameter: pass zeros, as MATLAB's ``dlgradient`` and
        :func:`~adamupdate.network.gradients` give. An unknown keyword is answered with this
        function's name for it (``lr=`` → ``learn_rate=``, ``beta1=`` → ``grad_decay=``).

    Examples
    --------
    MATLAB's own example: one step with learn rate 0.05 and decays 0.75 and 0.95.

    >>> import numpy as np
    >>> from adamupdate import adamupdate
    >>> params = np.zeros((3, 3, 4))
    >>> grad = np.ones((3, 3, 4))
    >>> params, avg_grad, avg_sq_grad = adamupdate(params, grad, None, None, 1, 0.05, 0.75, 0.95)
    >>> float(-params[0, 0, 0])  # every parameter drops by 0.05·√0.05/(√0.05 + 1e-8)
    0.04999999776393212
    """
    if misspelt:
        _teach.unknown_keywords(adamupdate, misspelt)
    hyper = _adam_hyperparameters(iteration, learn_rate, grad_decay, sq_grad_decay, epsilon)
    try:
        params, (avg_grad, avg_sq_grad) = solve(
            adam.RULE, params, grad, (avg_grad, avg_sq_grad), hyper, inplace, state_dtype
        )
    except (TypeError, ValueError):
        _teach.explain({"params": params, "grad": grad})
        raise
    return params, avg_grad, avg_sq_grad


def _adam_hyperparameters(
    iteration: Any, learn_rate: Any, grad_decay: Any, sq_grad_decay: Any, epsilon: Any
) -> adam.Hyperparameters:
    xp: Any = None
    if _validate.is_traced(iteration):
        import jax.numpy as xp  # inside jax.jit: the value is unknown, its form is not checked
    else:
        iteration = _validate.iteration(iteration)
    return adam.Hyperparameters(
        learn_rate=_validate.learn_rate(learn_rate),
        grad_decay=_validate.decay(grad_decay, "grad_decay"),
        sq_grad_decay=_validate.decay(sq_grad_decay, "sq_grad_decay"),
        epsilon=_validate.epsilon(epsilon),
        iteration=iteration,
        xp=xp,
    )


def sgdmupdate(
    params: T,
    grad: Any,
    vel: Any,
    learn_rate: float = 0.01,
    momentum: float = 0.9,
    *,
    inplace: bool = False,
    state_dtype: Any = None,
    **misspelt: NoReturn,
) -> tuple[T, Any]:
    r"""Update learnable parameters with one step of gradient descent with momentum, exactly as
    MATLAB's ``sgdmupdate``.

    .. math::

        v \leftarrow \gamma v - \alpha g, \qquad p \leftarrow p + v

    with :math:`\gamma` = ``momentum`` and :math:`\alpha` = ``learn_rate`` (see the
    documentation's :doc:`solvers` page, also for how ``torch.optim.SGD`` differs).

    Parameters
    ----------
    params, grad
        As for :func:`adamupdate.adamupdate`: arrays, containers, tables or a network.
    vel
        The velocity returned by the previous call, or ``None`` (MATLAB's ``[]``) at first.
    learn_rate
        :math:`\alpha \ge 0` (default 0.01); a network's parameters scale it by their
        learn-rate factors.
    momentum
        :math:`\gamma \in [0, 1)` (default 0.9).
    inplace, state_dtype
        As for :func:`adamupdate.adamupdate`.

    Returns
    -------
    params, vel
        The updated parameters and the velocity, which mirrors ``grad``.

    Examples
    --------
    MATLAB's own example: learn rate 0.05, momentum 0.95, a gradient of ones.

    >>> import numpy as np
    >>> from adamupdate import sgdmupdate
    >>> params, vel = sgdmupdate(np.zeros((3, 3, 4)), np.ones((3, 3, 4)), None, 0.05, 0.95)
    >>> float(vel[0, 0, 0])
    -0.05
    """
    if misspelt:
        _teach.unknown_keywords(sgdmupdate, misspelt)
    hyper = sgdm.Hyperparameters(
        learn_rate=_validate.learn_rate(learn_rate),
        momentum=_validate.decay(momentum, "momentum"),
    )
    try:
        params, (vel,) = solve(sgdm.RULE, params, grad, (vel,), hyper, inplace, state_dtype)
    except (TypeError, ValueError):
        _teach.explain({"params": params, "grad": grad})
        raise
    return params, vel


def rmspropupdate(
    params: T,
    grad: Any,
    avg_sq_grad: Any,
    learn_rate: float = 0.001,
    sq_grad_decay: float = 0.9,
    epsilon: float = 1e-8,
    *,
    inplace: bool = False,
    state_dtype: Any = None,
    **misspelt: NoReturn,
) -> tuple[T, Any]:
    r"""Update learnable parameters with one RMSProp step, exactly as MATLAB's
    ``rmspropupdate``.

    .. math::

        v \leftarrow \beta_2 v + (1-\beta_2) |g|^2, \qquad
        p \leftarrow p - \frac{\alpha\, g}{\sqrt{v} + \epsilon}

    with :math:`\beta_2` = ``sq_grad_decay``, :math:`\alpha` = ``learn_rate`` (see the
    documentation's :doc:`solvers` page).

    Parameters
    ----------
    params, grad
        As for :func:`adamupdate.adamupdate`: arrays, containers, tables or a network.
    avg_sq_grad
        The moving average returned by the previous call, or ``None`` (MATLAB's ``[]``).
    learn_rate
        :math:`\alpha \ge 0` (default 0.001); scaled by a network's learn-rate factors.
    sq_grad_decay
        :math:`\beta_2 \in [0, 1)` (default 0.9).
    epsilon
        :math:`\epsilon > 0` (default 1e-8), added to :math:`\sqrt{v}`.
    inplace, state_dtype
        As for :func:`adamupdate.adamupdate`.

    Returns
    -------
    params, avg_sq_grad
        The updated parameters and the average, which mirrors ``grad`` (real for complex).

    Examples
    --------
    >>> import numpy as np
    >>> from adamupdate import rmspropupdate
    >>> params, avg_sq_grad = rmspropupdate(np.zeros(2), np.ones(2), None, 0.01, 0.9)
    >>> avg_sq_grad
    array([0.1, 0.1])
    """
    if misspelt:
        _teach.unknown_keywords(rmspropupdate, misspelt)
    hyper = rmsprop.Hyperparameters(
        learn_rate=_validate.learn_rate(learn_rate),
        sq_grad_decay=_validate.decay(sq_grad_decay, "sq_grad_decay"),
        epsilon=_validate.epsilon(epsilon),
    )
    try:
        params, (avg_sq_grad,) = solve(
            rmsprop.RULE, params, grad, (avg_sq_grad,), hyper, inplace, state_dtype
        )
    except (TypeError, ValueError):
        _teach.explain({"params": params, "grad": grad})
        raise
    return params, avg_sq_grad


# The **misspelt catch-all only turns a wrong keyword into a hint; signatures do not show it.
for _solver in (adamupdate, sgdmupdate, rmspropupdate):
    _teach.hide_keywords_catchall(_solver)
