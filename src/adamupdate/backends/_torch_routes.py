"""The ``fused`` and ``foreach`` routes of :mod:`adamupdate.backends.torch_backend`: PyTorch's
own multi-tensor ops, on buffers that hold the inputs' values and receive the results.

- ``_fused_step``: PyTorch's fused Adam kernel, which computes MATLAB's step when given
  ε_torch = ε/√(1−β2^t) (see :func:`adamupdate.rules.adam.torch_equivalent_epsilon`);
- ``_rule_step``: the rule's own step body with ``torch._foreach_*`` ops (any rule). Half
  precision is computed in float32, complex numbers as pairs of reals.
"""

from __future__ import annotations

from typing import Any

import torch

from ..rules import Rule
from ..rules.adam import StepCoefficients, torch_equivalent_epsilon
from ._torch_columns import NAMESPACE, Column

_HALF = (torch.float16, torch.bfloat16)


def _rule_step(
    rule: Rule,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: tuple[list[torch.Tensor], ...],
    c: Any,
    fresh: bool,
) -> None:
    """The rule's step body on the whole group, one ``torch._foreach_*`` op per operation
    (:mod:`adamupdate.backends._torch_columns`): half precision in float32, complex as pairs
    of reals. The buffers hold the inputs' values (``fresh``: the states are not read) and
    receive the results."""
    compute = torch.float32 if params[0].dtype in _HALF else params[0].dtype
    real = compute.to_real()
    p = [t.to(compute) for t in params]
    g = [t.to(compute) for t in grads]
    xs = [
        [t.to(real if sq else compute) for t in column] if not fresh else []
        for column, sq in zip(states, rule.squared)
    ]
    if compute.is_complex:
        p, g = [torch.view_as_real(t) for t in p], [torch.view_as_real(t) for t in g]
        g2 = [t.square().sum(-1, keepdim=True) for t in g]
        xs = [
            [x.unsqueeze(-1) if sq else torch.view_as_real(x) for x in column]
            for column, sq in zip(xs, rule.squared)
        ]
    else:
        g2 = list(torch._foreach_mul(g, g))
    ins = [None if fresh else Column(column) for column in xs]
    new_p, *new_states = rule.step(NAMESPACE, c, Column(p), Column(g), Column(g2), *ins)
    outputs = zip((params, *states), (new_p, *new_states), (False, *rule.squared))
    for targets, results, sq in outputs:
        for target, result in zip(targets, results.tensors):
            if compute.is_complex:
                result = result.squeeze(-1) if sq else torch.view_as_complex(result.contiguous())
            target.copy_(result)


def _fused_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    avg_grads: list[torch.Tensor],
    avg_sq_grads: list[torch.Tensor],
    step: torch.Tensor,
    c: StepCoefficients,
) -> None:
    torch._fused_adam_(
        params,
        grads,
        avg_grads,
        avg_sq_grads,
        [],
        [step] * len(params),  # read, not incremented, by the kernel
        amsgrad=False,
        lr=c.learn_rate,
        beta1=c.grad_decay,
        beta2=c.sq_grad_decay,
        weight_decay=0.0,
        eps=torch_equivalent_epsilon(c.epsilon, c.sq_grad_decay, c.iteration),
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )
