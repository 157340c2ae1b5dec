"""How :class:`adamupdate.torch.Adam` steps one parameter group: buckets of parameters that
share a learn-rate factor and a step count, each one :func:`adamupdate.adamupdate` call whose
returned averages (and the plan they carry) are kept for the next step."""

from __future__ import annotations

import operator
from typing import Any

import torch

from ._api import adamupdate

_EXP_AVG = operator.itemgetter("exp_avg")
_EXP_AVG_SQ = operator.itemgetter("exp_avg_sq")
_STEP = operator.itemgetter("step")

# Steps are counted in float64, where every count a run can reach is exact (float32, torch's
# default, stops counting at 2**24). torch.optim.Adam steps from such a count as well.
_STEP_DTYPE = torch.float64


class Bucket:
    """Parameters of one group with the same learn-rate factor and step count: one
    :func:`adamupdate.adamupdate` call (``inplace=True``) on the averages it keeps."""

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

    def step(
        self, state: dict, grads: list, lr: float, beta1: float, beta2: float, eps: float
    ) -> None:
        before_avg, before_sq = self.avg_grad, self.avg_sq_grad
        iteration = self.count + 1
        _, self.avg_grad, self.avg_sq_grad = adamupdate(
            self.params,
            grads,
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


class GroupRun:
    """How one parameter group was last stepped: which parameters had gradients, their
    learn-rate factors, and the buckets that updated them."""

    __slots__ = ("active", "buckets", "factors")

    def __init__(self, active: list, factors: list[float], buckets: list[Bucket]) -> None:
        self.active, self.factors, self.buckets = active, factors, buckets

    @classmethod
    def plan(cls, active: list, factors: list[float], state: dict) -> GroupRun:
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
            [Bucket(ps, factor, count, state) for (factor, count), ps in buckets.items()],
        )

    def fits(self, active: list, factors: list[float], state: dict) -> bool:
        return (
            len(active) == len(self.active)
            and all(map(operator.is_, active, self.active))
            and factors == self.factors
            and all(b.current(state) for b in self.buckets)
        )


def gradients(params: list, weight_decay: float, maximize: bool) -> list:
    """The gradients the step takes, as ``torch.optim.Adam`` forms them: ``-g`` when
    maximizing, then ``+ weight_decay * p`` (MATLAB's L2 regularization). New tensors: the
    parameters' ``.grad`` are left as they are."""
    grads = [p.grad for p in params]
    if maximize:
        grads = [torch.neg(g) for g in grads]
    if weight_decay != 0.0:
        grads = [torch.add(g, p, alpha=weight_decay) for g, p in zip(grads, params)]
    return grads


def _count(step: Any) -> int:
    value = step.item() if isinstance(step, torch.Tensor) else step
    return int(value)
