"""ZeRO stage 1 for DDP: each rank keeps the averages of 1/world of the learnables (their
layout in flat buffers, one slice per rank: :mod:`._buckets`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._api import adamupdate
from ..network import learn_rate_factors
from ._buckets import Bucket, make_buckets, runs
from ._common import by_name, dist, full, is_table, torch, unwrap


class ZeroAdamupdate:
    """ZeRO stage 1 for DDP: the averages partitioned across ranks, MATLAB's step unchanged.

    Every rank keeps the averages of 1/world of the learnables only: the learnables of each
    (device, dtype) are flattened and concatenated, in ``named_parameters()`` order, into one
    buffer that the parameters become views of, and rank ``k`` owns the ``k``-th of ``world``
    equal slices of it. :meth:`step` copies this rank's slice of the (DDP-averaged) gradients,
    updates that slice with :func:`adamupdate.adamupdate` (``inplace=True``, one call per
    learn-rate factor, each checked in bulk) and
    all-gathers the parameters, so every replica holds the whole updated network again.

    Each element goes through the same operations as in ``adamupdate(net, ...)`` on the full
    network, so the parameters and averages are bitwise those of unpartitioned DDP (checked by
    ``tests/test_distributed_zero.py``); only the averages' memory is divided by ``world``.

    Parameters
    ----------
    net
        The network (plain or DDP-wrapped; DDP is not needed: the gradients may be averaged any
        way). Its learnables' ``.data`` become views of the flat buffers, as with
        ``torch.distributed.optim.ZeroRedundancyOptimizer(parameters_as_bucket_view=True)``;
        their values and shapes are unchanged (a channels-last parameter becomes contiguous).
        Construct this object after any ``.to(device)`` and do not replace parameters later.
    process_group
        The ranks that share the averages (default: the default group; without an initialized
        process group the world is this one process).
    state_dtype
        As in :func:`adamupdate.adamupdate` (default: the gradient's dtype, float32 for
        float16/bfloat16 parameters).

    Examples
    --------
    Every rank runs (under ``torchrun``)::

        model = DistributedDataParallel(net)
        zero = ZeroAdamupdate(net)
        for t in range(1, steps + 1):
            loss_fn(model(x), y).backward()
            zero.step(None, t, learn_rate)   # None: the gradients in each p.grad
            net.zero_grad(set_to_none=True)

    In one process (world size 1) it is plain ``adamupdate``:

    >>> import torch
    >>> from adamupdate.distributed import ZeroAdamupdate
    >>> net = torch.nn.Linear(3, 2)
    >>> zero = ZeroAdamupdate(net)
    >>> grads = {name: torch.ones_like(p) for name, p in net.named_parameters()}
    >>> _ = zero.step(grads, 1, 0.1)
    >>> zero.state_bytes, zero.unpartitioned_state_bytes  # 8 float32 values, two averages each
    (64, 64)
    """

    def __init__(
        self, net: torch.nn.Module, *, process_group: Any = None, state_dtype: Any = None
    ) -> None:
        self.net = unwrap(net)
        self.process_group = process_group
        self.state_dtype = state_dtype
        if dist.is_available() and dist.is_initialized():
            self.rank = dist.get_rank(process_group)
            self.world = dist.get_world_size(process_group)
        else:
            self.rank, self.world = 0, 1
        self._factors = learn_rate_factors(self.net)
        self.names = list(self._factors)
        params = dict(self.net.named_parameters())
        self.params = [params[name] for name in self.names]
        self._buckets = make_buckets(
            self.names, self.params, self.rank, self.world, self.state_dtype
        )
        self._addresses = [p.data_ptr() for p in self.params]

    # -- the step ------------------------------------------------------------------------------

    def step(
        self,
        grads: Any,
        iteration: int,
        learn_rate: float = 0.001,
        grad_decay: float = 0.9,
        sq_grad_decay: float = 0.999,
        epsilon: float = 1e-8,
    ) -> torch.nn.Module:
        """One Adam step of the whole network, as ``adamupdate(net, grads, ..., iteration, ...)``.

        ``grads``: a dict keyed by parameter name, a list in learnable order, a Learnables
        table, or ``None`` for each learnable's ``.grad`` (a missing gradient counts as zeros,
        as in MATLAB). Every rank must call it with the same arguments. Returns the network.
        """
        factors = learn_rate_factors(self.net)
        if list(factors) != self.names:
            raise ValueError(
                "the network's learnables changed (parameters added, removed or "
                "requires_grad switched) since this ZeroAdamupdate was made; make a new one"
            )
        self._check_parameters()
        grad_list = self._grad_list(grads)
        if factors != self._factors:
            self._factors = factors
            for bucket in self._buckets:
                bucket.runs, bucket.carried = [], {}
        for bucket in self._buckets:
            self._step_bucket(
                bucket, grad_list, iteration, learn_rate, grad_decay, sq_grad_decay, epsilon
            )
        if self.world > 1:
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            for bucket in self._buckets:
                start = self.rank * bucket.chunk
                gather(
                    bucket.flat, bucket.flat[start : start + bucket.chunk], group=self.process_group
                )
        return self.net

    def _check_parameters(self) -> None:
        """The learnables are still the objects made views of the flat buffers, and still
        those views (``.to(device)`` or a ``.data =`` swap would detach one)."""
        current = dict(self.net.named_parameters())
        for name, p, address in zip(self.names, self.params, self._addresses):
            if current.get(name) is not p or p is None or p.data_ptr() != address:
                raise ValueError(
                    f"{name}: the parameter was replaced or moved since this ZeroAdamupdate "
                    "was made (it is no longer a view of its buffer); make a new one"
                )

    def _grad_list(self, grads: Any) -> list[Any]:
        """The gradients in learnable order, every one checked on every rank (so that a bad
        one raises everywhere, not only on the rank whose slice it falls in)."""
        if grads is None:
            grad_list = [p.grad for p in self.params]
        elif is_table(grads) or isinstance(grads, Mapping):
            named = by_name(self.net, grads, "grad")
            missing = [name for name in self.names if name not in named]
            if missing:
                raise ValueError(f"grad: no entry for learnable {missing[0]!r}")
            grad_list = [named[name] for name in self.names]
        elif isinstance(grads, Sequence) and len(grads) == len(self.names):
            grad_list = list(grads)
        else:
            raise TypeError(
                "grad: expected a dict keyed by parameter name, a list in learnable order, a "
                "Learnables table or None (each parameter's .grad)"
            )
        for name, p, g in zip(self.names, self.params, grad_list):
            if g is None:
                continue
            if not isinstance(g, torch.Tensor):
                raise TypeError(f"grad[{name!r}]: is a {type(g).__name__}, not a tensor")
            if g.shape != p.shape:
                raise ValueError(
                    f"grad[{name!r}]: shape {tuple(g.shape)} does not match params {tuple(p.shape)}"
                )
            if g.dtype != p.dtype or g.device != p.device:
                raise TypeError(
                    f"grad[{name!r}]: {g.dtype} on {g.device} does not match params "
                    f"{p.dtype} on {p.device}"
                )
        return grad_list

    def _step_bucket(self, bucket: Bucket, grads: Any, iteration: int, *hyper: float) -> None:
        learn_rate, grad_decay, sq_grad_decay, epsilon = hyper
        self._fill_grad(bucket, grads)
        if not bucket.runs:
            bucket.runs = runs(bucket, self.names, self._factors)
        by_factor: dict[float, list[tuple[int, int]]] = {}
        for factor, a, b in bucket.runs:
            by_factor.setdefault(factor, []).append((a - bucket.lo, b - bucket.lo))
        fresh = bucket.fresh
        for factor, spans in by_factor.items():
            if factor == 0.0:
                continue  # frozen: MATLAB leaves the parameters and both averages as they are
            carried = bucket.carried.get(factor)
            if carried is None:
                p = [bucket.flat[bucket.lo + a : bucket.lo + b] for a, b in spans]
                m = None if fresh else [bucket.avg_grad[a:b] for a, b in spans]
                v = None if fresh else [bucket.avg_sq_grad[a:b] for a, b in spans]
            else:
                p, m, v = carried
            g = [bucket.grad[a:b] for a, b in spans]
            p, m, v = adamupdate(
                p,
                g,
                m,
                v,
                iteration,
                learn_rate * factor,
                grad_decay,
                sq_grad_decay,
                epsilon,
                inplace=True,
                state_dtype=self.state_dtype,
            )
            if fresh:  # the first step's averages are new tensors: keep them in the buffers
                for (a, b), mi, vi in zip(spans, m, v):
                    bucket.avg_grad[a:b].copy_(mi)
                    bucket.avg_sq_grad[a:b].copy_(vi)
            else:
                bucket.carried[factor] = (p, m, v)
        bucket.fresh = False

    def _fill_grad(self, bucket: Bucket, grads: list[Any]) -> None:
        with torch.no_grad():
            for j, i in enumerate(bucket.indices):
                start, end = bucket.offsets[j], bucket.offsets[j + 1]
                a, b = max(start, bucket.lo), min(end, bucket.hi)
                if a >= b:
                    continue
                target = bucket.grad[a - bucket.lo : b - bucket.lo]
                g = grads[i]
                if g is None:
                    target.zero_()
                    continue
                target.copy_(g.detach().reshape(-1)[a - start : b - start])

    # -- memory and state ----------------------------------------------------------------------

    @property
    def state_bytes(self) -> int:
        """Bytes of averages this rank holds."""
        return sum(b.avg_grad.nbytes + b.avg_sq_grad.nbytes for b in self._buckets)

    @property
    def unpartitioned_state_bytes(self) -> int:
        """Bytes of averages each rank would hold without partitioning."""
        return sum(
            b.size * (b.avg_grad.element_size() + b.avg_sq_grad.element_size())
            for b in self._buckets
        )

    def averages(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Both averages of every learnable, gathered from all ranks (every rank must call it):
        dicts keyed by parameter name, as ``adamupdate(net, ...)`` returns them."""
        avg_grad: dict[str, torch.Tensor] = {}
        avg_sq_grad: dict[str, torch.Tensor] = {}
        for bucket in self._buckets:
            for out, local in ((avg_grad, bucket.avg_grad), (avg_sq_grad, bucket.avg_sq_grad)):
                full = self._gather(bucket, local)
                for j, i in enumerate(bucket.indices):
                    start, end = bucket.offsets[j], bucket.offsets[j + 1]
                    out[self.names[i]] = full[start:end].view(self.params[i].shape).clone()
        return avg_grad, avg_sq_grad

    def _gather(self, bucket: Bucket, local: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return local
        padded = torch.zeros(bucket.chunk, dtype=local.dtype, device=local.device)
        padded[: local.numel()] = local
        full = torch.empty(bucket.chunk * self.world, dtype=local.dtype, device=local.device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(full, padded, group=self.process_group)
        return full

    def load_averages(self, avg_grad: Any, avg_sq_grad: Any) -> None:
        """Take this rank's slice of full averages keyed by parameter name, such as
        :func:`load_checkpoint` or ``adamupdate(net, ...)`` return (a frozen parameter's may be
        MATLAB's scalar 0): a run can switch between ZeRO and unpartitioned training."""
        named = (
            by_name(self.net, avg_grad, "avg_grad"),
            by_name(self.net, avg_sq_grad, "avg_sq_grad"),
        )
        with torch.no_grad():
            for bucket in self._buckets:
                for j, i in enumerate(bucket.indices):
                    start, end = bucket.offsets[j], bucket.offsets[j + 1]
                    a, b = max(start, bucket.lo), min(end, bucket.hi)
                    if a >= b:
                        continue
                    shape = self.params[i].shape
                    for source, target in zip(named, (bucket.avg_grad, bucket.avg_sq_grad)):
                        value = full(source[self.names[i]]).detach()
                        value = value.expand(shape) if value.dim() == 0 else value
                        flat = value.reshape(-1)[a - start : b - start]
                        target[a - bucket.lo : b - bucket.lo].copy_(flat)
                bucket.fresh = False
                bucket.carried = {}

    def state_dict(self) -> dict[str, Any]:
        """The partitioned averages, for ``torch.distributed.checkpoint``: ``{"avg_grad":
        {bucket: t}, "avg_sq_grad": {bucket: t}, "fresh": bool}``, each ``t`` this rank's slice
        as a DTensor sharded along the bucket's length (a plain tensor in one process), so
        that DCP can load it at another world size (see :meth:`load_state_dict`). The
        tensors are this object's own buffers: loading into them restores the state."""
        state: dict[str, Any] = {"avg_grad": {}, "avg_sq_grad": {}}
        for bucket in self._buckets:
            key = self._bucket_key(bucket)
            state["avg_grad"][key] = self._sharded(bucket, bucket.avg_grad)
            state["avg_sq_grad"][key] = self._sharded(bucket, bucket.avg_sq_grad)
        state["fresh"] = torch.tensor(all(b.fresh for b in self._buckets))
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore averages from :meth:`state_dict`'s form (e.g. filled by ``dcp.load``,
        possibly saved at another world size)."""
        for bucket in self._buckets:
            key = self._bucket_key(bucket)
            for target, source in (
                (bucket.avg_grad, state["avg_grad"][key]),
                (bucket.avg_sq_grad, state["avg_sq_grad"][key]),
            ):
                local = source.to_local() if hasattr(source, "to_local") else source
                if local.data_ptr() != target.data_ptr():
                    target.copy_(local)
            bucket.fresh = bool(state["fresh"])
            bucket.carried = {}

    def _bucket_key(self, bucket: Bucket) -> str:
        return f"{bucket.flat.device.type}-{str(bucket.flat.dtype).removeprefix('torch.')}"

    def _sharded(self, bucket: Bucket, local: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return local
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.tensor import DTensor, Shard

        group = self.process_group or dist.group.WORLD
        assert group is not None, "a process group exists when the world has several ranks"
        mesh = DeviceMesh.from_group(group, local.device.type)
        return DTensor.from_local(
            local, mesh, [Shard(0)], run_check=False, shape=torch.Size([bucket.size]), stride=(1,)
        )
