r"""MATLAB's Adam step as a ``torch.optim.Optimizer``: :class:`Adam`.

A drop-in for ``torch.optim.Adam`` in an existing PyTorch training loop — schedulers,
``state_dict()`` checkpoints, ``zero_grad()``, hooks — whose step is the one
:func:`adamupdate.adamupdate` computes: MATLAB's, with :math:`\epsilon` added to the square root
of the *uncorrected* second moment and both bias corrections folded into the step size (see the
documentation's :doc:`numerics` page). Every step goes through :func:`adamupdate.adamupdate` with
``inplace=True``; the optimizer keeps, for each run of parameters it updates together, the
averages that call returned, so the plan they carry is reused and a step re-checks only what
may have changed.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._api import adamupdate
from ._extras import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch", "adamupdate.torch")

from . import _validate
from .network import learn_rate_factor_of

__all__ = ["Adam"]

_EXP_AVG = operator.itemgetter("exp_avg")
_EXP_AVG_SQ = operator.itemgetter("exp_avg_sq")
_STEP = operator.itemgetter("step")

# Steps are counted in float64, where every count a run can reach is exact (float32, torch's
# default, stops counting at 2**24). torch.optim.Adam steps from such a count as well.
_STEP_DTYPE = torch.float64


class Adam(torch.optim.Optimizer):
    r"""Adam with MATLAB's numbers, as a ``torch.optim.Optimizer``.

    For each parameter :math:`p` with a gradient :math:`g`, at its own step :math:`t`
    (1 on its first update), with :math:`(\beta_1, \beta_2)` = ``betas``, :math:`\epsilon` =
    ``eps`` and :math:`\alpha` = ``lr`` times the parameter's learn-rate factor:

    .. math::

        m &\leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\, |g|^2 \\
        p &\leftarrow p - \alpha \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
              \cdot \frac{m}{\sqrt{v} + \epsilon}

    exactly as :func:`adamupdate.adamupdate` (and MATLAB's ``adamupdate``) computes it, bitwise:
    the step *is* that call. ``torch.optim.Adam`` adds :math:`\epsilon` to
    :math:`\sqrt{\hat v} = \sqrt{v/(1-\beta_2^t)}` instead; the two differ visibly early in
    training and for small gradients, and agree when PyTorch's :math:`\epsilon` is
    :math:`\epsilon/\sqrt{1-\beta_2^t}`. Complex parameters keep :math:`v` real,
    :math:`|g|^2 = g\bar g` (PyTorch's Adam treats real and imaginary parts as separate reals).

    Parameters
    ----------
    params
        Parameters, or parameter groups (dicts with ``"params"`` and any of ``lr``, ``betas``,
        ``eps``), as for any ``torch.optim`` optimizer.
    lr
        Learning rate :math:`\alpha \ge 0` (default 0.001). Read from each group at every step,
        so learning-rate schedulers work.
    betas
        :math:`(\beta_1, \beta_2)`, each in [0, 1): MATLAB's ``GradientDecayFactor`` and
        ``SquaredGradientDecayFactor`` (default (0.9, 0.999)).
    eps
        :math:`\epsilon > 0`, added to :math:`\sqrt{v}` (default 1e-8).

    Raises
    ------
    TypeError, ValueError
        For a hyper-parameter that is not a finite number in its range (here and in
        :meth:`add_param_group`), naming it; at a step, as :func:`adamupdate.adamupdate`
        raises for a gradient that does not match its parameter.

    Notes
    -----
    - A parameter whose ``.grad`` is ``None`` is skipped: it, its averages and its step count
      stay as they are.
    - Learn-rate factors set with :func:`adamupdate.network.set_learn_rate_factor` are
      honoured: a parameter's rate is ``lr * factor``. Factor 0 freezes the parameter *and* its
      state (averages and step count), as MATLAB freezes a learnable.
    - Each parameter counts its own steps (``state[p]["step"]``, MATLAB's ``iteration``): one
      first updated later starts at 1; one skipped or frozen for a while resumes its own count.
    - ``state_dict()`` holds, per parameter, ``step`` (a float64 tensor), ``exp_avg`` (m) and
      ``exp_avg_sq`` (v) — ``torch.optim.Adam``'s names and meanings — and
      :meth:`load_state_dict` resumes a run bitwise. Averages of float16/bfloat16 parameters
      are float32 (as :func:`adamupdate.adamupdate` keeps them) and are loaded as float32.
    - Parameters updated together — same group, learn-rate factor and step count — are one
      :func:`adamupdate.adamupdate` call; each call completes or changes nothing, but an error
      in a later group leaves earlier groups stepped, as in ``torch.optim``.
    - No ``weight_decay``, ``amsgrad``, ``maximize``, ``foreach`` or ``fused`` options: MATLAB's
      ``adamupdate`` has none, and the engine picks its kernel itself.

    Examples
    --------
    MATLAB's own example, one step with learn rate 0.05 and decays 0.75 and 0.95:

    >>> import torch
    >>> from adamupdate.torch import Adam
    >>> w = torch.nn.Parameter(torch.zeros(3, 3, 4, dtype=torch.float64))
    >>> optimizer = Adam([w], lr=0.05, betas=(0.75, 0.95))
    >>> w.grad = torch.ones_like(w)
    >>> optimizer.step()
    >>> float(-w.detach()[0, 0, 0])  # 0.05·√0.05/(√0.05 + 1e-8), MATLAB's answer
    0.04999999776393212
    >>> sorted(optimizer.state[w])
    ['exp_avg', 'exp_avg_sq', 'step']

    In a training loop, with a scheduler:

    >>> model = torch.nn.Linear(4, 1)
    >>> optimizer = Adam(model.parameters(), lr=0.01)
    >>> scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    >>> x, y = torch.randn(16, 4), torch.randn(16, 1)
    >>> for _ in range(20):
    ...     optimizer.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     optimizer.step()
    ...     scheduler.step()
    >>> optimizer.param_groups[0]["lr"]
    0.0025
    >>> int(optimizer.state[model.weight]["step"])
    20
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        _check_hyperparameters(lr, betas, eps)
        self._runs: dict[int, _GroupRun] = {}
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; its ``lr``, ``betas`` and ``eps`` are checked first."""
        if isinstance(param_group, dict):
            given = {**self.defaults, **param_group}
            _check_hyperparameters(given["lr"], given["betas"], given["eps"])
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling, copy.deepcopy
        super().__setstate__(state)
        self._runs = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step for every parameter that has a gradient.

        Parameters
        ----------
        closure
            Optional: re-evaluates the model and returns the loss (run with gradients enabled).

        Returns
        -------
        The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (also one saved by ``torch.optim.Adam``) to resume a run.

        ``torch.optim.Optimizer`` casts floating-point state to its parameter's dtype; the
        float32 averages of a float16/bfloat16 parameter are kept float32 instead.
        """
        super().load_state_dict(state_dict)
        self._runs = {}
        saved = state_dict["state"]
        ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for param_id, param in zip(ids, params):
            for key in ("exp_avg", "exp_avg_sq"):
                value = saved.get(param_id, {}).get(key)
                state = self.state.get(param)
                if (
                    isinstance(value, torch.Tensor)
                    and state is not None
                    and state[key].dtype != value.dtype
                ):
                    state[key] = value.to(device=param.device)

    # --- the step -------------------------------------------------------------------------

    def _step_group(self, index: int, group: dict[str, Any]) -> None:
        active = [p for p in group["params"] if p.grad is not None]
        factors = [learn_rate_factor_of(p) for p in active]
        run = self._runs.get(index)
        if run is None or not run.fits(active, factors, self.state):
            run = self._runs[index] = _GroupRun.plan(active, factors, self.state)
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = lr.item()
        beta1, beta2 = group["betas"]
        for bucket in run.buckets:
            bucket.step(self.state, lr, beta1, beta2, group["eps"])


class _Bucket:
    """Parameters of one group with the same learn-rate factor and step count: one
    :func:`adamupdate.adamupdate` call, whose returned averages (and their plan) are kept."""

    __slots__ = ("_counts", "avg_grad", "avg_sq_grad", "count", "factor", "params", "steps")

    def __init__(self, params: list, factor: float, count: int, state: dict) -> None:
        self.params, self.factor, self.count = params, factor, count
        if count == 0:  # first update: MATLAB's empty averages
            self.avg_grad = self.avg_sq_grad = None
            self.steps: list = []
        else:
            self.avg_grad = [state[p]["exp_avg"] for p in params]
            self.avg_sq_grad = [state[p]["exp_avg_sq"] for p in params]
            self._count_from(count)
            for p, t in zip(params, self.steps):
                state[p]["step"] = t

    def _count_from(self, count: int) -> None:
        """Every parameter's ``step`` tensor as a view into one buffer: one ``add_`` counts
        the whole bucket's step."""
        self._counts = torch.full((len(self.params),), float(count), dtype=_STEP_DTYPE)
        self.steps = list(self._counts.unbind())

    def current(self, state: dict) -> bool:
        """Whether the optimizer's state still holds this bucket's very tensors."""
        if self.avg_grad is None or self.avg_sq_grad is None:
            return False  # not stepped yet
        try:
            entries = list(map(state.__getitem__, self.params))
            return (
                all(map(operator.is_, map(_EXP_AVG, entries), self.avg_grad))
                and all(map(operator.is_, map(_EXP_AVG_SQ, entries), self.avg_sq_grad))
                and all(map(operator.is_, map(_STEP, entries), self.steps))
            )
        except (KeyError, TypeError):
            return False

    def step(self, state: dict, lr: float, beta1: float, beta2: float, eps: float) -> None:
        before_avg, before_sq = self.avg_grad, self.avg_sq_grad
        iteration = self.count + 1
        _, self.avg_grad, self.avg_sq_grad = adamupdate(
            self.params,
            [p.grad for p in self.params],
            self.avg_grad,
            self.avg_sq_grad,
            iteration,
            lr * self.factor,
            beta1,
            beta2,
            eps,
            inplace=True,
        )
        self.count = iteration
        if self.steps:
            self._counts.add_(1.0)
        else:
            self._count_from(iteration)
        if self.avg_grad is not before_avg or self.avg_sq_grad is not before_sq:
            # New containers (a first step's new averages, or a new plan): the state must hold
            # their very tensors.
            for p, t, m, v in zip(self.params, self.steps, self.avg_grad, self.avg_sq_grad):
                s = state[p]
                s["step"], s["exp_avg"], s["exp_avg_sq"] = t, m, v


class _GroupRun:
    """How one parameter group was last stepped: which parameters had gradients, their
    learn-rate factors, and the buckets that updated them."""

    __slots__ = ("active", "buckets", "factors")

    def __init__(self, active: list, factors: list[float], buckets: list[_Bucket]) -> None:
        self.active, self.factors, self.buckets = active, factors, buckets

    @classmethod
    def plan(cls, active: list, factors: list[float], state: dict) -> _GroupRun:
        buckets: dict[tuple[float, int], list] = {}
        for p, factor in zip(active, factors):
            if factor == 0.0:
                continue  # frozen: the parameter and its state stay as they are
            s = state.get(p)
            count = _count(s["step"]) if s else 0
            buckets.setdefault((factor, count), []).append(p)
        return cls(
            active,
            factors,
            [_Bucket(ps, factor, count, state) for (factor, count), ps in buckets.items()],
        )

    def fits(self, active: list, factors: list[float], state: dict) -> bool:
        return (
            len(active) == len(self.active)
            and all(map(operator.is_, active, self.active))
            and factors == self.factors
            and all(b.current(state) for b in self.buckets)
        )


def _count(step: Any) -> int:
    value = step.item() if isinstance(step, torch.Tensor) else step
    return int(value)


def _check_hyperparameters(lr: Any, betas: Any, eps: Any) -> None:
    """``torch.optim.Adam``'s checks, with MATLAB's ranges: lr >= 0, betas in [0, 1), eps > 0,
    all finite."""
    _validate.learn_rate(lr, "lr")
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        _validate.decay(beta, f"betas[{i}]")
    value = _validate.learn_rate(eps, "eps")
    if not value > 0.0 or not math.isfinite(value):
        raise ValueError(f"eps must be > 0, got {eps!r}")
