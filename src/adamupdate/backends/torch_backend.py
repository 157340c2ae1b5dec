"""PyTorch tensors (CPU and CUDA), ``nn.Parameter`` and tensor subclasses such as DTensor.

Three routes, chosen per group when it is planned (:func:`_route`):

- ``numba``: plain CPU tensors take the numba kernel of :mod:`adamupdate.kernels.numba_step`
  (the ``fast`` extra), walking each tensor's memory from its ``data_ptr()``: MATLAB's
  operations in MATLAB's order, bitwise equal to the NumPy route, complex included, one
  parallel call for the whole group. The usual group is checked in bulk
  (:func:`planned_in_bulk`), one attribute column at a time, on every call.
- ``fused``: real CUDA groups and tensor subclasses (an FSDP2 DTensor reports its global shape,
  not what its ``data_ptr()`` holds, and dispatches to its local shard) take PyTorch's fused
  Adam kernel (``torch._fused_adam_``), which computes MATLAB's step when given
  ε_torch = ε/√(1−β2^t): its denominator √v̂ + ε_torch = (√v + ε)/√(1−β2^t). Its rounding
  differs from MATLAB's order by a few ulp, and it scales ``g`` before squaring it, so a
  float32 gradient near 1e20 gives a finite v where MATLAB's order overflows to inf.
- ``foreach``: the rest (complex off the CPU, half-precision parameters with float32 averages,
  CPU tensors without numba, rules other than Adam off the CPU): the rule's own step body run
  with ``torch._foreach_*`` ops, half precision computed in float32, complex as pairs of reals
  (``view_as_real``).

The ``fused`` and ``foreach`` routes' steps live in :mod:`._torch_routes`, DTensor shards in
:mod:`._torch_dtensor`. Nothing records autograd history (all work runs under
``torch.no_grad()``); in-place writes bump the tensors' version counters as in-place
operations do, so a graph that saved a parameter refuses a stale ``backward()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _reuse
from .._memory import reads_overlap, written_overlap, written_spans
from ..kernels import numba_kernel, table_rows
from ..rules import Rule
from ._torch_dtensor import _locals_of, _shardable, _sharded
from ._torch_memory import (
    _NUMPY_DTYPES,
    _PLAIN,
    _dense,
    _extent,
    _full,
    _is_lazy,
    _like,
    _new_like,
    _plain_contiguous,
)
from ._torch_memory import internal_overlap as internal_overlap  # the Backend protocol's
from ._torch_memory import memory as memory
from ._torch_memory import shares_memory as shares_memory
from ._torch_routes import _HALF, _fused_step, _rule_step

NAME = "torch"
MUTABLE = True  # tensors are updated in their own buffers

_SUPPORTED = (*_HALF, torch.float32, torch.float64, torch.complex64, torch.complex128)


def describe(x: torch.Tensor) -> tuple[torch.device, torch.dtype, tuple[int, ...]]:
    return x.device, x.dtype, tuple(x.shape)


def check_leaf(x: torch.Tensor) -> str | None:
    if x.layout != torch.strided:
        return (
            f"is a {str(x.layout).removeprefix('torch.')} tensor; adamupdate updates dense "
            "tensors (a sparse gradient: .to_dense(), or nn.Embedding(sparse=False))"
        )
    if x.is_nested:
        return "is a nested tensor; pass its components as separate leaves"
    if x.is_quantized:
        return "is a quantized tensor; adamupdate updates floating-point tensors"
    if x.device.type == "meta":
        return "is a meta tensor (it has no data); materialise it first"
    if x._is_zerotensor():
        return "is a ZeroTensor (it has no memory); pass torch.zeros_like(...) instead"
    if x.dtype not in _SUPPORTED:
        return (
            f"dtype {x.dtype} is not supported "
            "(float16, bfloat16, float32, float64, complex64 or complex128)"
        )
    if type(x) in _PLAIN and x.device.type == "cpu" and x.numel():
        needed = x.storage_offset() + _extent(x)
        if x.untyped_storage().nbytes() < needed * x.element_size():
            return "its storage holds fewer elements than its shape needs (freed or resized)"
    return None


def resolve_dtype(dtype: Any) -> torch.dtype:
    """Accept ``torch.float32``, ``"float32"`` or ``numpy.float32`` alike."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = getattr(dtype, "__name__", None) or str(dtype)
    resolved = getattr(torch, name.rsplit(".", 1)[-1], None)
    if not isinstance(resolved, torch.dtype):
        raise TypeError(f"{dtype!r} is not a torch dtype")
    return resolved


def state_dtypes(
    param_dtype: torch.dtype, state_dtype: Any = None, like: Any = None
) -> tuple[Any, Any]:
    if state_dtype is None:
        avg = torch.float32 if param_dtype in _HALF else param_dtype
    else:
        avg = resolve_dtype(state_dtype)
        if avg not in _SUPPORTED:
            raise TypeError(f"{avg} cannot hold an average (a floating or complex dtype)")
        if avg.is_complex and not param_dtype.is_complex:
            raise TypeError(f"complex {avg} averages for real {param_dtype} parameters")
    if param_dtype.is_complex and not avg.is_complex:
        avg = avg.to_complex()
    return avg, avg.to_real()


def castable(dtype: torch.dtype, to: torch.dtype) -> bool:
    """Whether a gradient of ``dtype`` may be computed as ``to`` (floating point both, no
    imaginary part dropped)."""
    return dtype in _SUPPORTED and to in _SUPPORTED and (not dtype.is_complex or to.is_complex)


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` (a copy; see :func:`castable`)."""
    return x.detach().to(dtype)


def is_writeable(x: torch.Tensor) -> bool:
    return not x.is_inference() or torch.is_inference_mode_enabled()


def zero_state(dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=dtype, device=like.device)


def finish(original: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
    """A new parameter keeps its ``requires_grad`` (and stays an ``nn.Parameter``)."""
    if updated is original:
        return updated
    kind = type(original)
    if kind is torch.Tensor and not original.requires_grad:  # the usual case, checked first:
        return updated  # isinstance(x, Parameter) runs Python code (Parameter's metaclass)
    if kind is torch.nn.Parameter or isinstance(original, torch.nn.Parameter):
        return torch.nn.Parameter(updated, requires_grad=original.requires_grad)
    if original.requires_grad:
        updated.requires_grad_(True)
    return updated


def finish_state(grad: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
    return updated


def _route(rule: Rule, param: torch.Tensor, state_dtypes: tuple[torch.dtype, ...]) -> str:
    """The fastest route that computes this group's step (see the module docstring)."""
    plain = type(param) in _PLAIN
    real = param.dtype.to_real()
    own = all(d == (real if sq else param.dtype) for d, sq in zip(state_dtypes, rule.squared))
    cpu = param.device.type == "cpu"
    kernel = _numba() if plain and cpu and own and param.dtype in _NUMPY_DTYPES else None
    if kernel is not None and kernel.steps(rule):
        return "numba"
    fusable = param.device.type == "cuda" or (not plain and cpu)
    if rule.torch_fused and fusable and own and not param.dtype.is_complex:
        return "fused"
    return "foreach"


def _numba() -> Any:
    return numba_kernel()


class Group:
    """A group of tensors sharing device and dtype (see :class:`adamupdate.backends.GroupStep`).

    ``route`` forces ``"numba"``, ``"fused"`` or ``"foreach"`` (tests compare them).
    """

    def __init__(
        self,
        rule: Rule,
        dtype: torch.dtype,
        state_dtypes: tuple[torch.dtype, ...],
        *,
        fresh: bool,
        inplace: bool,
        params: list[torch.Tensor],
        route: str | None = None,
    ) -> None:
        self.rule, self.dtype, self.state_dtypes = rule, dtype, tuple(state_dtypes)
        self.fresh, self.inplace = fresh, inplace
        # Sharded parameters (FSDP2's DTensors) are stepped shard by shard: the step is
        # elementwise, so each rank's local shards are all it needs — no DTensor dispatch.
        self.sharded = _shardable(params[0])
        local = _locals_of(params[:1])[0]
        self.route = route or _route(rule, local, self.state_dtypes)
        kernel = _numba()
        if self.route == "numba" and (
            kernel is None or dtype not in _NUMPY_DTYPES or not kernel.steps(rule)
        ):
            raise ValueError(f"the numba kernel cannot update {dtype} {params[0].device} tensors")
        if self.route == "fused" and (
            not rule.torch_fused or dtype.is_complex or self.state_dtypes[0] != dtype
        ):
            raise ValueError(f"PyTorch's fused Adam cannot update {dtype} parameters here")
        self._outputs: tuple[list, ...] = ()
        self._work: tuple = ()
        self._write_back: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._written: list[torch.Tensor] = []
        self._step: torch.Tensor | None = None
        self._keep: tuple = ()  # staged copies and gradients, alive until run()
        self._shards: tuple = ()  # sharded: this call's DTensors, whose shards are stepped
        pair = ((*self.state_dtypes, *self.state_dtypes) or (dtype, dtype))[:2]
        self._items = (dtype.itemsize, pair[0].itemsize, pair[1].itemsize)

    # -- binding ---------------------------------------------------------------------------

    def bind(self, params: list, grads: list, states: list[list]) -> None:
        if self.sharded:
            self._shards = (params, states)
            local = _locals_of(params)
            grads = _locals_of(grads, params)
            states = [column if self.fresh else _locals_of(column, params) for column in states]
            params = local
        self._bind(params, grads, states)

    def _bind(self, params: list, grads: list, states: list[list]) -> None:
        """Every leaf checked by the plan: lay them out for the route, make the outputs."""
        self._write_back = []
        with torch.no_grad():
            work_p = [_dense(p.detach()) for p in params]
            work_g = [_like(g.detach(), p) for g, p in zip(grads, work_p)]
            work_s = [
                None if self.fresh else [_like(_full(x.detach(), p), p) for x, p in zip(c, work_p)]
                for c in states
            ]
            outputs = self._make_outputs(params, states, work_p)
            if self.route == "numba":
                self._bind_numba(work_p, work_g, work_s, outputs)
            else:
                self._bind_in_place_kernel(work_p, work_g, work_s, outputs)
        self._outputs = outputs

    def _make_outputs(
        self, params: list, states: list[list], work_p: list[torch.Tensor]
    ) -> tuple[list, ...]:
        """The caller's own buffers in place (full-size ones), new ones otherwise."""
        ps = list(params)
        if not self.inplace:
            ps = [_new_like(p, p.dtype, original) for p, original in zip(work_p, params)]
        columns = [ps]
        for column, dtype in zip(states, self.state_dtypes):
            mine = self.inplace and not self.fresh
            columns.append(
                [
                    column[i]
                    if mine and column[i].shape == p.shape
                    else _new_like(p, dtype, None if self.fresh else column[i])
                    for i, p in enumerate(work_p)
                ]
            )
        return tuple(columns)

    def _staged(
        self, targets: list[torch.Tensor], like: list[torch.Tensor], always: bool = False
    ) -> list:
        """Targets the kernel can write directly, or temporaries copied back after the step
        (``always``: temporaries for every target)."""
        out = []
        for target, p in zip(targets, like):
            if not always and target.stride() == p.stride() and not _is_lazy(target):
                out.append(target)
            else:
                temp = torch.empty_like(p, dtype=target.dtype)
                self._write_back.append((target, temp))
                out.append(temp)
        return out

    def _bind_numba(
        self,
        work_p: list[torch.Tensor],
        work_g: list[torch.Tensor],
        work_s: list,  # a list of tensors per state, or None each when fresh
        outputs: tuple[list, ...],
    ) -> None:
        staged = [self._staged(column, work_p) for column in outputs]
        if self.inplace:  # an in-place parameter is its own input when not staged
            work_p = [t if t is p else w for t, p, w in zip(staged[0], outputs[0], work_p)]
        rows = table_rows(work_p, work_g, work_s, staged, self.fresh)
        addresses = np.array([[t.data_ptr() for t in row] for row in rows], np.intp)
        sizes = np.array([t.numel() for t in work_p], np.intp)
        self._table = (addresses.reshape(7, len(work_p)), sizes)
        self._written = [t for column in outputs for t in column] if self.inplace else []
        self._keep = rows

    def _bind_in_place_kernel(
        self,
        work_p: list[torch.Tensor],
        work_g: list[torch.Tensor],
        work_s: list,  # a list of tensors per state, or None each when fresh
        outputs: tuple[list, ...],
    ) -> None:
        """``fused`` and ``foreach`` update their buffers in place: give them the outputs,
        holding the inputs' values. ``foreach`` allocates as it runs, so it may fail half-way:
        in place it works on copies, written to the caller's buffers by :meth:`commit`."""
        scratch = self.route == "foreach" and self.inplace
        staged = [self._staged(column, work_p, always=scratch) for column in outputs]
        for targets, sources in zip(staged, (work_p, *work_s)):
            for target, source in zip(targets, sources or [None] * len(targets)):
                if source is None:
                    target.zero_()
                elif target is not source:
                    target.copy_(source)
        self._work = (staged[0], work_g, tuple(staged[1:]))
        if self.route == "fused":
            self._step = torch.zeros((), dtype=torch.float32, device=work_p[0].device)
        self._written = [t for column in outputs for t in column] if self.inplace else []

    # -- running ---------------------------------------------------------------------------

    def run(self, c: Any) -> None:
        with torch.no_grad():
            if self.route == "numba":
                from ..kernels import numba_step

                assert self._table is not None, "bound: the numba route has its table"
                addresses, sizes = self._table
                dtype = _NUMPY_DTYPES[self.dtype]
                numba_step.run(addresses, sizes, dtype, self.fresh, c, self.rule)
                self._keep = ()
            elif self.route == "fused":
                # β^t is 0 in float64 long before float32's largest value for any β < 1:
                # capping t there changes nothing and keeps the step tensor finite.
                assert self._step is not None, "bound: the fused route has its step tensor"
                self._step.fill_(min(float(c.iteration), 3.0e38))
                params, grads, (m, v) = self._work
                _fused_step(params, grads, m, v, self._step, c)
            else:
                params, grads, states = self._work
                _rule_step(self.rule, params, grads, states, c, self.fresh)
        self._work = ()

    @property
    def writes_in_run(self) -> bool:
        """``numba`` and ``fused`` write their outputs as they run (and cannot fail);
        ``foreach`` works on copies in place, written by :meth:`commit`."""
        return self.route != "foreach"

    def commit(self) -> None:
        with torch.no_grad():
            for target, temp in self._write_back:
                target.copy_(temp)
            if self.route == "numba" and self._written:
                # Written behind autograd's back: bump the version counters of the caller's
                # buffers as an in-place op would, so a graph that saved one refuses a stale
                # backward().
                torch.autograd.graph.increment_version(self._written)
        self._write_back, self._keep = [], ()

    def outputs(self) -> tuple[list, tuple[list, ...]]:
        if self.sharded:  # the shards back in their DTensors (the caller's own, in place)
            params, states = self._shards
            columns = [
                _sharded(column, params, originals)
                for column, originals in zip(self._outputs, (params, *states))
            ]
            return columns[0], tuple(columns[1:])
        return self._outputs[0], tuple(self._outputs[1:])


group = Group  # the backend's GroupStep factory (see adamupdate.backends.Backend.group)


def planned_in_bulk(
    rule: Rule,
    params: list,
    grads: list,
    states: list[list],
    *,
    fresh: bool,
    inplace: bool,
) -> Group | None:
    """The usual call planned and bound at once on the ``numba`` route: plain contiguous CPU
    tensors of one kernel dtype, gradients and averages of the dtypes and sizes the per-leaf
    plan (:func:`adamupdate._plan.make`) wants, no lazy conjugate or negative bit, storage
    behind every element, writeable and disjoint in place. Each property is read column by
    column (one C-level pass per attribute, ~0.1 µs a tensor) on every call: nothing is
    remembered. ``None`` when anything else is found; the per-leaf plan then decides, and
    names what is wrong. Accepts exactly what the per-leaf plan accepts, on the same route.
    """
    p0 = params[0]
    if type(p0) not in _PLAIN or p0.dtype not in _NUMPY_DTYPES or p0.device.type != "cpu":
        return None
    kernel = _numba()
    if kernel is None or not kernel.steps(rule):
        return None
    dtype = p0.dtype
    avg, real = state_dtypes(dtype)
    wanted = tuple(real if squared else avg for squared in rule.squared)
    columns = [(params, dtype, inplace), (grads, dtype, False)]
    if not fresh:
        columns += [(column, want, inplace) for column, want in zip(states, wanted)]
    n = len(params)
    inference = torch.is_inference_mode_enabled()
    addresses = []
    try:
        sizes = list(map(torch.Tensor.size, params))
        numels = np.fromiter(map(torch.Tensor.numel, params), np.intp, n)
        for column, want, written in columns:
            if column is not params and list(map(torch.Tensor.size, column)) != sizes:
                return None
            found = _plain_contiguous(column, want, numels, written and not inference)
            if found is None:
                return None
            addresses.append(found)
    except (RuntimeError, AttributeError, TypeError):  # sparse, nested, not a tensor
        return None
    step = Group(rule, dtype, wanted, fresh=fresh, inplace=inplace, params=params, route="numba")
    if step.sharded:
        return None
    if inplace and not fresh:
        outputs = (list(params), *(list(column) for column in states))
    elif int(numels.max(initial=0)) * dtype.itemsize < _reuse.MIN_BYTES and not dtype.is_complex:
        # small outputs, one dtype (a real parameter's averages are of its dtype): one C-level
        # pass per column, and no block of adamupdate._reuse to take
        empty = torch.empty_like
        ps = list(params) if inplace else list(map(empty, params))
        outputs = (ps, *(list(map(empty, params)) for _ in wanted))
    else:
        new = _new_like
        ps = list(params) if inplace else [new(p, dtype, p) for p in params]
        if fresh:
            outputs = (ps, *([new(p, d) for p in params] for d in wanted))
        else:
            outputs = (ps, *(list(map(new, params, [d] * n, c)) for d, c in zip(wanted, states)))
    rows = table_rows(params, grads, states, outputs, fresh)
    if inplace and not fresh:  # the outputs are the inputs: their addresses were just read
        p_at, g_at, *state_at = addresses
        table = np.stack(
            [p_at, g_at, *(*state_at, *state_at)[:2], p_at, *(*state_at, *state_at)[:2]]
        )
    else:
        table = np.array([list(map(torch.Tensor.data_ptr, row)) for row in rows], np.intp)
    if inplace:
        items = (dtype.itemsize, *(d.itemsize for d in wanted))  # each written buffer once
        spans = written_spans(table, numels, items)
        if written_overlap(spans) or reads_overlap(spans, table[1], numels, dtype.itemsize):
            return None
    step._outputs = outputs
    step._table = (table, numels)
    step._written = [t for column in outputs for t in column] if inplace else []
    step._keep = rows
    return step
