"""PyTorch tensors (CPU and CUDA) and ``nn.Parameter``.

Three kernels, chosen per group (:func:`_choose_kernel`):

- CPU groups take the numba kernel of the NumPy backend when numba is installed: MATLAB's
  operations in MATLAB's order (bitwise equal to the NumPy path), complex included, one
  parallel call for the whole group (the Python-side checks before it, ~10 µs per tensor,
  are what many small tensors pay).
- Other real groups (CUDA) take PyTorch's own fused Adam kernel (``torch._fused_adam_``, one
  launch per group), which computes MATLAB's step when given ε_torch = ε/√(1−β2^t): PyTorch's
  denominator √v̂ + ε_torch = (√v + ε)/√(1−β2^t), so its update lr/(1−β1^t)·m/(√v̂ + ε_torch) is
  MATLAB's α√(1−β2^t)/(1−β1^t)·m/(√v + ε). Rounding differs from MATLAB's order by a few ulp.
- The rest — complex off the CPU (PyTorch's fused kernel has none, and its Adam treats real and
  imaginary parts as separate reals), low-precision parameters with float32 averages — take a
  ``torch._foreach_*`` path in MATLAB's operation order, computing float16/bfloat16 in float32.

Nothing here records autograd history: all work happens under ``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._algorithm import StepCoefficients, torch_equivalent_epsilon

NAME = "torch"

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FUSED_DEVICES = ("cpu", "cuda")


def describe(x: torch.Tensor) -> tuple[torch.device, torch.dtype, tuple[int, ...]]:
    return x.device, x.dtype, tuple(x.shape)


def check_param_dtype(dtype: torch.dtype) -> str | None:
    if dtype.is_floating_point or dtype.is_complex:
        return None
    return f"dtype {dtype} is not floating point or complex"


def resolve_dtype(dtype: Any) -> torch.dtype:
    """Accept ``torch.float32``, ``"float32"`` or ``numpy.float32`` alike."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = getattr(dtype, "__name__", None) or str(dtype)
    resolved = getattr(torch, name.rsplit(".", 1)[-1], None)
    if not isinstance(resolved, torch.dtype):
        raise TypeError(f"state_dtype {dtype!r} is not a torch dtype")
    return resolved


def state_dtypes(
    param_dtype: torch.dtype, state_dtype: Any = None, like: Any = None
) -> tuple[Any, Any]:
    avg = param_dtype if state_dtype is None else resolve_dtype(state_dtype)
    if param_dtype.is_complex and not avg.is_complex:
        avg = avg.to_complex()
    return avg, avg.to_real()


def is_writeable(x: torch.Tensor) -> bool:
    return not x.is_inference() or torch.is_inference_mode_enabled()


def zero_state(dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=dtype, device=like.device)


def finish(original: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
    """A new parameter keeps its ``requires_grad`` (and stays an ``nn.Parameter``)."""
    if updated is original:
        return updated
    if isinstance(original, torch.nn.Parameter):
        return torch.nn.Parameter(updated, requires_grad=original.requires_grad)
    if original.requires_grad:
        updated.requires_grad_(True)
    return updated


def finish_state(grad: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
    return updated


def step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    avg_grads: list[torch.Tensor] | None,
    avg_sq_grads: list[torch.Tensor] | None,
    c: StepCoefficients,
    *,
    inplace: bool,
    state_dtypes: tuple[torch.dtype, torch.dtype],
    kernel: str | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One step over a group of tensors sharing device and dtype; see :mod:`adamupdate._kernels`.

    ``kernel`` forces ``"numba"``, ``"fused"`` or ``"foreach"`` (tests compare them); by default
    the fastest that computes this step is chosen (see :func:`_choose_kernel`).
    """
    m_dtype, v_dtype = state_dtypes
    with torch.no_grad():
        grads = [g.detach() for g in grads]
        new_params = [p if inplace else p.detach().clone() for p in params]
        new_avg = _state_buffers(avg_grads, params, m_dtype, inplace)
        new_sq = _state_buffers(avg_sq_grads, params, v_dtype, inplace)
        work = _common_layout(new_params, grads, new_avg, new_sq)
        _choose_kernel(params[0], m_dtype, work, kernel)(*work.tensors, c)
        work.write_back()
    return new_params, new_avg, new_sq


def _choose_kernel(param: torch.Tensor, m_dtype: torch.dtype, work: _Layout, forced: str | None):
    """CPU groups of some size: the numba kernel when numba is installed (see
    :func:`_numba_kernel`); real tensors elsewhere: PyTorch's fused kernel; the rest (complex,
    low-precision parameters with float32 averages, other devices): the foreach path."""
    fusable = (
        not param.dtype.is_complex
        and m_dtype == param.dtype
        and param.device.type in _FUSED_DEVICES
    )
    if forced == "fused" and not fusable:
        raise ValueError(f"PyTorch's fused Adam cannot update {param.dtype} parameters here")
    if forced == "numba" and _numba_kernel(param, m_dtype, work, require=True) is None:
        raise ValueError(f"the numba kernel cannot update {param.dtype} {param.device} tensors")
    if forced is None:
        forced = "numba" if _numba_kernel(param, m_dtype, work) is not None else None
    if forced is None:
        forced = "fused" if fusable else "foreach"
    return {"numba": _numba_step, "fused": _fused_step, "foreach": _foreach_step}[forced]


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_NUMPY_DTYPES = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}


def _numba_kernel(
    param: torch.Tensor, m_dtype: torch.dtype, work: _Layout, *, require: bool = False
) -> Any:
    """The numba kernel for a CPU group it can take, else ``None``.

    On the CPU it computes MATLAB's operations in MATLAB's order (bitwise equal to the NumPy
    path), complex included, and covers a whole group in one parallel call, at or above
    PyTorch's fused kernel's speed on large tensors.
    """
    if param.device.type != "cpu" or m_dtype != param.dtype or param.dtype not in _NUMPY_DTYPES:
        return None
    if not _walkable(work.tensors):
        return None
    from .numpy_backend import _fast_kernel, _worth_compiling

    tensors = work.tensors[0]
    if not (require or _worth_compiling(sum(t.numel() for t in tensors), len(tensors))):
        return None
    return _fast_kernel()


def _walkable(columns: tuple[list[torch.Tensor], ...]) -> bool:
    """Whether raw memory may be walked from each tensor's data_ptr() for its parameter's
    numel() elements.

    Relies on what :func:`step`'s callers and :func:`_common_layout` guarantee on every call:
    every tensor has its parameter's shape and the group's dtypes (checked by the engine's plan,
    or, for a remembered plan, by ``_engine._unchanged`` — a tensor's storage can be swapped
    under the same object with ``.data = ...``), one dense layout, and no lazy conjugate or
    negative bit. What is left to check is that they are plain tensors: a subclass such as a
    sharded DTensor (FSDP2) reports its global size, which is not what its data_ptr() holds.
    """
    return all(type(t) in _PLAIN for column in columns for t in column)


def _numba_step(params, grads, avg_grads, avg_sq_grads, c: StepCoefficients) -> None:
    """All tensors share the parameter's dense layout (:func:`_common_layout`), so the kernel can
    walk each one's memory from its data pointer."""
    from . import numba_kernel

    n = len(params)
    columns = (params, grads, avg_grads, avg_sq_grads)
    addresses = [[t.data_ptr() for t in column] for column in columns]
    table = np.array([*addresses, addresses[0], addresses[2], addresses[3]], np.intp).reshape(7, n)
    sizes = np.fromiter((t.numel() for t in params), np.intp, n)
    numba_kernel.fused_step_batch(_batch(table, sizes, params[0].dtype, columns), c)
    # Written behind autograd's back: bump the version counters as an in-place op would, so a
    # graph that saved these tensors refuses a stale backward().
    torch.autograd.graph.increment_version([*params, *avg_grads, *avg_sq_grads])


def _batch(table: np.ndarray, sizes: np.ndarray, dtype: torch.dtype, keep: Any) -> Any:
    from . import numba_kernel

    return numba_kernel.Batch(table, sizes, _NUMPY_DTYPES[dtype], False, False, keep)


class _Layout:
    """Tensors laid out alike for the kernels, and the copies to make back afterwards."""

    def __init__(self, tensors: tuple[list[torch.Tensor], ...]) -> None:
        self.tensors = tensors
        self.copies: list[tuple[torch.Tensor, torch.Tensor]] = []

    def write_back(self) -> None:
        for target, result in self.copies:
            target.copy_(result)


def _is_dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _is_lazy(t: torch.Tensor) -> bool:
    """A conjugate or negative *view*: its memory holds the unconjugated/unnegated values."""
    return t.is_conj() or t.is_neg()


def _common_layout(params, grads, avg_grads, avg_sq_grads) -> _Layout:
    """The kernels walk each tensor's memory linearly, so a parameter, its gradient and its
    averages must share one dense layout with no lazy conjugate or negative bit: a channels_last
    parameter with a contiguous gradient would otherwise pair up the wrong elements. The common
    case (all alike) costs a stride comparison per tensor; the rest is copied into the
    parameter's layout and the results copied back."""
    layout = _Layout(tuple(list(column) for column in (params, grads, avg_grads, avg_sq_grads)))
    ps, gs, ms, vs = layout.tensors
    for i, p in enumerate(ps):
        if not _is_dense(p) or _is_lazy(p):
            ps[i] = p.resolve_conj().resolve_neg().contiguous()
            layout.copies.append((p, ps[i]))
        stride = ps[i].stride()
        for column, writes in ((gs, False), (ms, True), (vs, True)):
            t = column[i]
            if t.stride() != stride or _is_lazy(t):
                column[i] = torch.empty_like(ps[i], dtype=t.dtype).copy_(t)
                if writes:
                    layout.copies.append((t, column[i]))
    return layout


def _state_buffers(states, params, dtype, inplace: bool) -> list[torch.Tensor]:
    """Buffers the step writes: the caller's own in place mode, fresh zeros on the first call."""
    if states is None:
        return [torch.zeros_like(p, dtype=dtype) for p in params]
    buffers = []
    for state, p in zip(states, params):
        if state.shape != p.shape:  # MATLAB's scalar 0 of a frozen parameter
            buffers.append(state.detach().expand(p.shape).clone())
        else:  # in place: the caller's own tensor object comes back (no_grad is on)
            buffers.append(state if inplace else state.detach().clone())
    return buffers


def _fused_step(params, grads, avg_grads, avg_sq_grads, c: StepCoefficients) -> None:
    step = torch.full((), float(c.iteration), dtype=torch.float32, device=params[0].device)
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


def _foreach_step(params, grads, avg_grads, avg_sq_grads, c: StepCoefficients) -> None:
    """MATLAB's operations in MATLAB's order, one multi-tensor op at a time."""
    compute = torch.float32 if params[0].dtype in _LOW_PRECISION else params[0].dtype
    p = [t.to(compute) for t in params]
    g = [t.to(compute) for t in grads]
    m = [t.to(compute) for t in avg_grads]
    v = [t.to(compute.to_real()) for t in avg_sq_grads]
    if compute.is_complex:
        squared = [torch.view_as_real(t).square().sum(-1) for t in g]
    else:
        squared = torch._foreach_mul(g, g)
    torch._foreach_mul_(squared, c.one_minus_sq_grad_decay)
    torch._foreach_mul_(v, c.sq_grad_decay)
    torch._foreach_add_(v, squared)
    scaled_grad = torch._foreach_mul(g, c.one_minus_grad_decay)
    torch._foreach_mul_(m, c.grad_decay)
    torch._foreach_add_(m, scaled_grad)
    denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, c.epsilon)
    update = torch._foreach_mul(m, c.step_size)
    torch._foreach_div_(update, denom)
    torch._foreach_sub_(p, update)
    for targets, results in ((params, p), (avg_grads, m), (avg_sq_grads, v)):
        for target, result in zip(targets, results):
            if result is not target:
                target.copy_(result)
