r"""MATLAB's Adam step as optax gradient transformations: :func:`adam` and
:func:`scale_by_matlab_adam`.

The same structure as ``optax.adam`` — a ``scale_by_*`` transformation holding
``ScaleByAdamState(count, mu, nu)``, chained with scaling by :math:`-\alpha` — so it composes
with ``optax.chain``, ``optax.inject_hyperparams``, schedules and ``jax.jit`` as ``optax.adam``
does, but the step is MATLAB's: :math:`\epsilon` is added to :math:`\sqrt{v}`, the *uncorrected*
second moment, and both bias corrections are folded into the step size (see the
documentation's :doc:`numerics` page).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import _validate
from ._extras import require
from ._optax_parts import (
    _as_array,
    _check_moment_dtype,
    _check_not_matlab_options,
    _increment,
    _is_number,
    _like,
    _mu_dtype,
    _param_dtype,
    _real,
    _real_part,
    _state_dtype,
    _tree_map,
)
from .rules import adam as adam_rule

if TYPE_CHECKING:
    import optax
else:
    optax = require("optax", "optax", "adamupdate.optax")

import jax
import jax.numpy as jnp

__all__ = ["adam", "scale_by_matlab_adam"]


def adam(
    learning_rate: Any = 0.001,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""Adam with MATLAB's numbers, as an optax ``GradientTransformation``.

    At step :math:`t` (1 on the first update), with :math:`g` the incoming update (a gradient)
    and :math:`\alpha` = ``learning_rate``:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, |g|^2 \\
        u_t &= -\alpha \, \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
               \cdot \frac{m_t}{\sqrt{v_t} + \epsilon}

    and ``optax.apply_updates`` adds :math:`u_t` to the parameters: MATLAB's ``adamupdate``
    step, :math:`p - \alpha_t m / (\sqrt v + \epsilon)`.

    **How it differs from** ``optax.adam``: optax computes
    :math:`-\alpha\, \hat m / (\sqrt{\hat v} + \epsilon)` with :math:`\hat m = m/(1-\beta_1^t)`
    and :math:`\hat v = v/(1-\beta_2^t)`, i.e. it adds :math:`\epsilon` to the square root of
    the *bias-corrected* :math:`\hat v`. The two agree only when optax's :math:`\epsilon` is
    :math:`\epsilon/\sqrt{1-\beta_2^t}`; early in training and for small gradients they differ
    visibly (with the defaults at :math:`t = 1`, optax's effective :math:`\epsilon` is
    :math:`\sqrt{0.001}` times MATLAB's). Also:

    - the scalars :math:`1-\beta`, :math:`\sqrt{1-\beta_2^t}/(1-\beta_1^t)` are computed before
      being applied in each array's precision (:math:`1-\beta_2^t` as
      :math:`-\mathrm{expm1}(t \log \beta_2)`, which keeps full relative precision in float32);
    - complex parameters: :math:`v` is kept real (``optax.adam`` keeps a complex :math:`v` with
      a zero imaginary part), and complex values are scaled componentwise, as MATLAB scales a
      complex array by a real number;
    - float16/bfloat16 gradients keep float32 averages, as :func:`adamupdate.adamupdate` does
      (``mu_dtype`` chooses the first moment's dtype, as in ``optax.adam``);
    - ``eps_root`` and ``nesterov`` are accepted only at their neutral values (0 and ``False``):
      MATLAB's ``adamupdate`` has neither a term inside the square root nor a Nesterov variant,
      so any other value would not be MATLAB's step (``optax.nadam`` is Adam with Nesterov
      momentum).

    The arguments are ``optax.adam``'s, in its order, so the two are interchangeable in a call.
    The state has ``optax.adam``'s structure, with the parameters' shardings (``init`` makes
    each average with ``jnp.zeros_like``, so a ``NamedSharding`` — explicit or not — carries
    over, and ``init``'s state has the same types as ``update``'s: ``lax.cond`` can choose
    between them). Leaves may be Python numbers, as in optax. A state made by ``optax.adam``
    continues here: its moments are MATLAB's uncorrected :math:`m` and :math:`v` too, and for
    complex parameters, where optax stores :math:`v` as a complex array with a zero imaginary
    part, the first ``update`` takes its real part.

    The updates are within a few float32 ulps of :func:`adamupdate.adamupdate` on the same
    arrays: that call multiplies :math:`\alpha` into the step size before the division, this
    chain scales the quotient by :math:`-\alpha` afterwards.

    Parameters
    ----------
    learning_rate
        :math:`\alpha \ge 0`, a number or an optax schedule (a function of the step count,
        which starts at 0).
    b1, b2
        :math:`\beta_1, \beta_2 \in [0, 1)`: MATLAB's ``GradientDecayFactor`` and
        ``SquaredGradientDecayFactor`` (defaults 0.9 and 0.999).
    eps
        :math:`\epsilon > 0`, added to :math:`\sqrt{v}` (default 1e-8).
    eps_root
        ``None`` or 0 (optax's default). optax adds it to :math:`\hat v` inside the square
        root; MATLAB has no such term, so another value raises ``ValueError``. Under
        ``optax.inject_hyperparams`` leave it out or name it in ``static_args``: a traced value
        cannot be checked and raises ``TypeError``.
    mu_dtype
        The first moment's dtype, as in ``optax.adam`` (``None``: the parameters' dtype, float32
        for float16/bfloat16 parameters). The moment is computed in the wider of this dtype
        and the gradient's and stored in this one. Complex parameters need a complex
        ``mu_dtype``: a real one would drop the imaginary part of :math:`m`.
    nesterov
        ``False`` only: MATLAB's ``adamupdate`` has no Nesterov variant (use ``optax.nadam``
        for that algorithm).

    Returns
    -------
    optax.GradientTransformation
        ``optax.chain(scale_by_matlab_adam(b1, b2, eps, eps_root, mu_dtype), <scale by
        -learning_rate>)``; its state
        is ``(ScaleByAdamState(count, mu, nu), EmptyState() or ScaleByScheduleState(count))``.

    Raises
    ------
    TypeError, ValueError
        For a hyper-parameter given as a Python or NumPy number that is not a finite number in
        its range (arrays, as ``inject_hyperparams`` passes them, are taken as they are); for a
        non-zero ``eps_root``, ``nesterov=True`` or a ``mu_dtype`` that is not a floating-point
        or complex dtype. ``init`` raises ``TypeError`` for a parameter that is not a
        floating-point or complex number (naming its path), and for complex parameters with a
        real ``mu_dtype``.

    Notes
    -----
    ``optax.inject_hyperparams(adam)(learning_rate=...)`` makes the learning rate a state you
    can change between steps. It also stores ``b1``, ``b2`` and ``eps`` as arrays of the
    parameters' dtype, so in float32 they lose MATLAB's double precision: 0.999 becomes
    0.99900001…, which moves :math:`1-\beta_2` by 1.3e-5 relative. To keep them exact pass
    ``static_args=("b1", "b2", "eps")``.

    Examples
    --------
    MATLAB's own example, one step with learn rate 0.05 and decays 0.75 and 0.95:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import adamupdate.optax
    >>> solver = adamupdate.optax.adam(learning_rate=0.05, b1=0.75, b2=0.95)
    >>> params = jnp.zeros((3, 3, 4))
    >>> state = solver.init(params)
    >>> updates, state = solver.update(jnp.ones((3, 3, 4)), state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> print(f"{float(-params[0, 0, 0]):.7f}")  # MATLAB: 0.05·√0.05/(√0.05 + 1e-8) in single
    0.0500000

    Minimising a function under ``jax.jit``, with gradient clipping in front:

    >>> solver = optax.chain(optax.clip_by_global_norm(1.0), adamupdate.optax.adam(0.1))
    >>> def f(x):
    ...     return jnp.sum((x - 3.0) ** 2)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = solver.update(jax.grad(f)(params), state, params)
    ...     return optax.apply_updates(params, updates), state
    >>> params = jnp.array([0.0, 1.0, 2.0])
    >>> state = solver.init(params)
    >>> for _ in range(200):
    ...     params, state = step(params, state)
    >>> print(bool(f(params) < 1e-3))
    True
    """
    if not callable(learning_rate) and _is_number(learning_rate):
        _validate.learn_rate(learning_rate, "learning_rate")
    return optax.chain(
        scale_by_matlab_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        _scale_by_learning_rate(learning_rate),
    )


def scale_by_matlab_adam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""Rescale updates by MATLAB's Adam step without the learning rate:
    :math:`\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \cdot \frac{m_t}{\sqrt{v_t} + \epsilon}`.

    See :func:`adam`, which chains it with scaling by :math:`-\alpha`. The state is
    ``optax.ScaleByAdamState(count, mu, nu)``: the step count (int32, 0 before the first
    update) and the *uncorrected* moments :math:`m` and :math:`v` (real for complex inputs),
    each made with ``jnp.zeros_like`` of its parameter, so with the parameter's sharding.
    The arguments are :func:`adam`'s, and ``optax.scale_by_adam``'s in its order.

    Returns
    -------
    optax.GradientTransformation
    """

    for name, decay in (("b1", b1), ("b2", b2)):
        if _is_number(decay):
            _validate.decay(decay, name)
    if _is_number(eps) and not _validate.learn_rate(eps, "eps") > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    _check_not_matlab_options(eps_root, nesterov)
    if mu_dtype is not None:
        _check_moment_dtype(mu_dtype)

    def init_fn(params: Any) -> optax.ScaleByAdamState:
        def first(path: Any, p: Any) -> Any:
            return jnp.zeros_like(p, dtype=_mu_dtype(path, _param_dtype(path, p), mu_dtype))

        def second(path: Any, p: Any) -> Any:
            return jnp.zeros_like(p, dtype=_real(_state_dtype(_param_dtype(path, p))))

        mu = jax.tree_util.tree_map_with_path(first, params)
        nu = jax.tree_util.tree_map_with_path(second, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update_fn(updates: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple:
        del params
        _check_not_matlab_options(eps_root, nesterov)  # inject_hyperparams calls us again here
        updates = _tree_map(_as_array, updates)
        count = _increment(state.count)
        step_size = jnp.sqrt(_one_minus_power(b2, count)) / _one_minus_power(b1, count)
        # optax.adam keeps v of complex parameters complex, with a zero imaginary part: its
        # real part is MATLAB's v, and the state continues as ours (real).
        leaves, tree_def = jax.tree.flatten(updates, is_leaf=lambda x: x is None)
        tree: Any = tree_def  # (the stubs of some JAX versions lack PyTreeDef's methods)
        mus, nus = tree.flatten_up_to(state.mu), tree.flatten_up_to(state.nu)
        results = [
            (None, None, None)
            if g is None
            else _leaf_step(g, m, _real_part(v), b1, b2, eps, step_size, count)
            for g, m, v in zip(leaves, mus, nus)
        ]
        steps, mu, nu = (tree.unflatten([r[i] for r in results]) for i in range(3))
        return steps, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# --- the step: the rule's own body (adamupdate.rules.adam.step), in each leaf's dtypes ----


def _leaf_step(
    g: Any, m: Any, v: Any, b1: Any, b2: Any, eps: Any, step_size: Any, count: Any
) -> tuple[Any, Any, Any]:
    r"""One leaf through :func:`adamupdate.rules.adam.step`: the quotient
    :math:`s\, m_t / (\sqrt{v_t} + \epsilon)` in ``g``'s dtype, and the new moments in the
    states' dtypes.

    :math:`m` is updated in the wider of its dtype and ``g``'s, :math:`v` in the wider of its
    dtype and :math:`|g|^2`'s (float32 for half precision), and the quotient uses them before
    they are stored (as ``optax.adam`` does with ``mu_dtype``). The scalars are applied in those
    precisions, as MATLAB applies a double to a single array. Complex numbers are stepped
    componentwise, real and imaginary parts through the same body with the same
    :math:`|g|^2` (a complex product would turn inf+0j into inf+nan·j). The body steps a
    parameter of -0.0, so that it returns exactly minus the quotient (``-0.0 - x`` is ``-x``
    for every ``x``, zeros included).
    """
    work = jnp.promote_types(m.dtype, g.dtype)
    if jnp.issubdtype(work, jnp.complexfloating) and not jnp.iscomplexobj(m):
        raise TypeError(
            f"the optimizer state holds a real {m.dtype} first moment for complex "
            f"{g.dtype} gradients: storing it would drop the imaginary part (give a complex "
            "mu_dtype)"
        )
    gc = g.astype(_state_dtype(g.dtype))
    g2 = gc.real * gc.real + gc.imag * gc.imag if jnp.iscomplexobj(gc) else gc * gc
    square = jnp.promote_types(v.dtype, g2.dtype)
    quotient = jnp.promote_types(_real(work), square)
    c = adam_rule.StepCoefficients(
        step_size=_like(step_size, quotient),
        grad_decay=_like(b1, work),
        one_minus_grad_decay=_like(1 - b1, work),
        sq_grad_decay=_like(b2, square),
        one_minus_sq_grad_decay=_like(1 - b2, square),
        epsilon=_like(eps, quotient),
        learn_rate=1.0,  # applied by the chain's scaling
        iteration=count,
    )
    g_work, m_work = g.astype(work), m.astype(work)
    g2, v = g2.astype(square), v.astype(square)
    zero = _like(-0.0, quotient)
    parts = (jnp.real, jnp.imag) if jnp.iscomplexobj(g_work) else (lambda x: x,)
    stepped = [adam_rule.step(jnp, c, zero, part(g_work), g2, part(m_work), v) for part in parts]
    minus, m_new, v_new = (list(column) for column in zip(*stepped))
    if len(parts) == 2:
        minus = [jax.lax.complex(minus[0], minus[1])]
        m_new = [jax.lax.complex(m_new[0], m_new[1])]
    step = -minus[0]
    if not jnp.issubdtype(g.dtype, jnp.complexfloating):
        step = step.real  # a complex mu_dtype of real parameters keeps a zero imaginary part
    return step.astype(g.dtype), m_new[0].astype(m.dtype), v_new[0].astype(v.dtype)


def _one_minus_power(beta: Any, count: Any) -> Any:
    r""":math:`1-\beta^t` as :math:`-\mathrm{expm1}(t \log\beta)`: no cancellation for
    :math:`\beta` near 1. A Python number's logarithm is taken in float64."""
    if isinstance(beta, (int, float)):
        return 1.0 if beta == 0 else -jnp.expm1(count * math.log(beta))
    return -jnp.expm1(count * jnp.log(beta))  # log(0) = -inf gives 1, as it should


def _scale_by_learning_rate(learning_rate: Any) -> optax.GradientTransformation:
    r"""Multiply updates by :math:`-\alpha` (a number or a schedule of the step count), in each
    array's precision; complex arrays componentwise."""

    def scale(updates: Any, rate: Any) -> Any:
        return _tree_map(lambda u: _scaled(u, -rate), updates)

    if callable(learning_rate):

        def init_fn(params: Any) -> optax.ScaleByScheduleState:
            del params
            return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

        def update_fn(
            updates: Any, state: Any, params: Any = None
        ) -> tuple[Any, optax.ScaleByScheduleState]:
            del params
            rate = learning_rate(state.count)
            return scale(updates, rate), optax.ScaleByScheduleState(count=_increment(state.count))

        return optax.GradientTransformation(init_fn, update_fn)

    def update_constant(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return scale(updates, learning_rate), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_constant)


def _scaled(u: Any, factor: Any) -> Any:
    f = _like(factor, u.dtype)
    if jnp.iscomplexobj(u):
        return jax.lax.complex(f * u.real, f * u.imag)
    return f * u
