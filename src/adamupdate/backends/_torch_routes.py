"""The ``fused`` and ``foreach`` routes of :mod:`adamupdate.backends.torch_backend`: PyTorch's
own multi-tensor ops, on buffers that hold the inputs' values and receive the results.

- ``_fused_step``: PyTorch's fused Adam kernel, which computes MATLAB's step when given
  ε_torch = ε/√(1−β2^t) (see :func:`adamupdate.rules.adam.torch_equivalent_epsilon`);
- ``_foreach_step``: Adam in MATLAB's order with ``torch._foreach_*`` ops; ``_rule_step``: any
  rule, one tensor at a time. Half precision is computed in float32, complex numbers as pairs
  of reals.
"""

from __future__ import annotations

from typing import Any

import torch

from ..rules import Rule
from ..rules.adam import StepCoefficients, torch_equivalent_epsilon

_HALF = (torch.float16, torch.bfloat16)


def _rule_step(
    rule: Rule,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: tuple[list[torch.Tensor], ...],
    c: Any,
) -> None:
    """Any rule, one tensor at a time, in MATLAB's order: half precision in float32, complex
    as pairs of reals. The buffers hold the inputs' values and receive the results (a fresh
    state holds zeros: ``β·0 + x`` is ``x``, so no first-iteration form is needed)."""
    compute = torch.float32 if params[0].dtype in _HALF else params[0].dtype
    real = compute.to_real()
    for i, (p, g) in enumerate(zip(params, grads)):
        pc, gc = p.to(compute), g.to(compute)
        xs = [column[i].to(real if sq else compute) for column, sq in zip(states, rule.squared)]
        if compute.is_complex:
            pc, gc = torch.view_as_real(pc), torch.view_as_real(gc)
            g2 = gc.square().sum(-1, keepdim=True)
            xs = [
                x.unsqueeze(-1) if sq else torch.view_as_real(x) for x, sq in zip(xs, rule.squared)
            ]
        else:
            g2 = gc * gc
        new_p, *new_states = rule.step(torch, pc, gc, g2, tuple(xs), c)
        if compute.is_complex:
            new_p = torch.view_as_complex(new_p.contiguous())
            new_states = [
                x.squeeze(-1) if sq else torch.view_as_complex(x.contiguous())
                for x, sq in zip(new_states, rule.squared)
            ]
        p.copy_(new_p)
        for column, x in zip(states, new_states):
            column[i].copy_(x)


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


def _foreach_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    avg_grads: list[torch.Tensor],
    avg_sq_grads: list[torch.Tensor],
    c: StepCoefficients,
) -> None:
    """MATLAB's operations in MATLAB's order; half precision in float32, complex as real
    pairs (a real scalar times a complex number scales both parts)."""
    compute = torch.float32 if params[0].dtype in _HALF else params[0].dtype
    p = [t.to(compute) for t in params]
    g = [t.to(compute) for t in grads]
    m = [t.to(compute) for t in avg_grads]
    v = [t.to(compute.to_real()) for t in avg_sq_grads]
    if compute.is_complex:
        p, g, m = ([torch.view_as_real(t) for t in column] for column in (p, g, m))
        squared: list[torch.Tensor] | tuple[torch.Tensor, ...] = [
            t.square().sum(-1, keepdim=True) for t in g
        ]
        v_view = [t.unsqueeze(-1) for t in v]
    else:
        squared = torch._foreach_mul(g, g)
        v_view = v
    torch._foreach_mul_(squared, c.one_minus_sq_grad_decay)
    torch._foreach_mul_(v_view, c.sq_grad_decay)
    torch._foreach_add_(v_view, squared)
    scaled_grad = torch._foreach_mul(g, c.one_minus_grad_decay)
    torch._foreach_mul_(m, c.grad_decay)
    torch._foreach_add_(m, scaled_grad)
    denom = torch._foreach_sqrt(v_view)
    torch._foreach_add_(denom, c.epsilon)
    update: list[torch.Tensor] | tuple[torch.Tensor, ...] = torch._foreach_mul(m, c.step_size)
    if compute.is_complex:
        update = [u / d for u, d in zip(update, denom)]
    else:
        torch._foreach_div_(update, denom)
    torch._foreach_sub_(p, update)
    if compute.is_complex:
        p, m = ([torch.view_as_complex(t) for t in column] for column in (p, m))
    for targets, results in ((params, p), (avg_grads, m), (avg_sq_grads, v)):
        for target, result in zip(targets, results):
            if result is not target and result.data_ptr() != target.data_ptr():
                target.copy_(result)
