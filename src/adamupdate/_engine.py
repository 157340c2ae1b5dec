"""Flat leaves in, flat leaves out: check every leaf, group them, run each group's kernel.

Every check happens in :func:`plan` before any kernel runs, so a bad call changes nothing, even
in in-place mode. Leaves are grouped by (backend, device, dtype, state presence, learn-rate
factor) so that each group is one multi-tensor kernel call, as PyTorch's optimizers group by
device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ._algorithm import StepCoefficients, coefficients
from ._backends import backend_of


@dataclass(frozen=True)
class Hyperparameters:
    """Validated scalar arguments; ``xp`` is set when ``iteration`` is traced inside jax.jit."""

    learn_rate: float
    grad_decay: float
    sq_grad_decay: float
    epsilon: float
    iteration: Any
    xp: Any = None

    def coefficients(self, factor: float = 1.0) -> StepCoefficients:
        return coefficients(
            self.learn_rate * factor,
            self.grad_decay,
            self.sq_grad_decay,
            self.epsilon,
            self.iteration,
            self.xp,
        )


@dataclass
class Group:
    """Leaves (by index) that one kernel call updates together."""

    backend: ModuleType
    state_dtypes: tuple[Any, Any]
    factor: float
    fresh_avg: bool
    fresh_sq: bool
    indices: list[int] = field(default_factory=list)


def plan(
    params: Sequence[Any],
    grads: Sequence[Any],
    avg_grads: Sequence[Any],
    avg_sq_grads: Sequence[Any],
    *,
    path: Callable[[str, int], str],
    factors: Sequence[float] | None = None,
    inplace: bool = False,
    state_dtype: Any = None,
) -> list[Group]:
    """Check every leaf against its parameter and group the leaves; raise on the first problem.

    ``path(argument, i)`` names leaf ``i`` of an argument in messages, e.g. ``grad['fc1'][0]``.
    """
    groups: dict[tuple, Group] = {}
    for i, p in enumerate(params):
        try:
            backend = backend_of(p)
        except TypeError as error:
            raise TypeError(f"{path('params', i)}: {error}") from None
        device, dtype, shape = backend.describe(p)
        problem = backend.check_param_dtype(dtype)
        if problem:
            raise TypeError(f"{path('params', i)}: {problem}")
        if inplace and not backend.is_writeable(p):
            raise ValueError(
                f"{path('params', i)}: is read-only (or not a plain {backend.NAME} array), "
                "so inplace=True cannot update it"
            )
        _check_like(grads[i], backend, device, dtype, shape, path, "grad", i, "params")
        try:
            m_dtype, v_dtype = backend.state_dtypes(dtype, state_dtype, p)
        except TypeError as error:
            raise TypeError(f"state_dtype: {error}") from None
        for name, state, want in (
            ("avg_grad", avg_grads[i], m_dtype),
            ("avg_sq_grad", avg_sq_grads[i], v_dtype),
        ):
            if state is not None:
                _check_like(
                    state, backend, device, want, shape, path, name, i, "expected", scalar_ok=True
                )
                if inplace and not backend.is_writeable(state):
                    raise ValueError(
                        f"{path(name, i)}: is read-only (or not a plain {backend.NAME} array), "
                        "so inplace=True cannot update it"
                    )
        factor = 1.0 if factors is None else factors[i]
        key = (
            backend,
            device,
            dtype,
            m_dtype,
            avg_grads[i] is None,
            avg_sq_grads[i] is None,
            factor,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(
                backend, (m_dtype, v_dtype), factor, avg_grads[i] is None, avg_sq_grads[i] is None
            )
        group.indices.append(i)
    return list(groups.values())


def _check_like(
    leaf: Any,
    backend: ModuleType,
    device: Any,
    dtype: Any,
    shape: tuple[int, ...],
    path: Callable[[str, int], str],
    argument: str,
    index: int,
    reference: str,
    *,
    scalar_ok: bool = False,
) -> None:
    """Check one gradient or state leaf against its parameter; the path is only formatted for
    a message (formatting it for every leaf would cost more than the step itself)."""
    try:
        leaf_backend = backend_of(leaf)
    except TypeError as error:
        raise TypeError(f"{path(argument, index)}: {error}") from None
    if leaf_backend is not backend:
        raise TypeError(
            f"{path(argument, index)}: is a {leaf_backend.NAME} array but params is "
            f"{backend.NAME}; "
            "each gradient and state must live in its parameter's library"
        )
    leaf_device, leaf_dtype, leaf_shape = leaf_backend.describe(leaf)
    if leaf_device == device and leaf_dtype == dtype and leaf_shape == shape:
        return
    where = path(argument, index)
    if leaf_device != device:
        raise TypeError(f"{where}: is on device {leaf_device}, params is on {device}")
    if leaf_shape != shape and not (scalar_ok and leaf_shape == ()):
        raise ValueError(f"{where}: shape {leaf_shape} does not match params {shape}")
    if leaf_dtype != dtype:
        raise TypeError(f"{where}: dtype {leaf_dtype} does not match the {reference} {dtype}")


def run(
    groups: list[Group],
    params: Sequence[Any],
    grads: Sequence[Any],
    avg_grads: Sequence[Any],
    avg_sq_grads: Sequence[Any],
    hyper: Hyperparameters,
    *,
    inplace: bool = False,
) -> tuple[list[Any], list[Any], list[Any]]:
    """Run each group's kernel and put the results back in leaf order."""
    n = len(params)
    new_params: list[Any] = [None] * n
    new_avg: list[Any] = [None] * n
    new_sq: list[Any] = [None] * n
    coefficients = _coefficients_by_factor(hyper)
    for group in groups:
        backend, idx = group.backend, group.indices
        if group.factor == 0.0:
            _freeze(group, params, avg_grads, avg_sq_grads, new_params, new_avg, new_sq)
            continue
        c = coefficients(group.factor)
        ps, ms, vs = backend.step(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            None if group.fresh_avg else [avg_grads[i] for i in idx],
            None if group.fresh_sq else [avg_sq_grads[i] for i in idx],
            c,
            inplace=inplace,
            state_dtypes=group.state_dtypes,
        )
        for j, i in enumerate(idx):
            new_params[i] = backend.finish(params[i], ps[j])
            new_avg[i] = backend.finish_state(grads[i], ms[j])
            new_sq[i] = backend.finish_state(grads[i], vs[j])
    return new_params, new_avg, new_sq


def step_in_place(
    groups: list[Group],
    prepared: list[Any],
    params: Sequence[Any],
    grads: Sequence[Any],
    avg_grads: Sequence[Any],
    avg_sq_grads: Sequence[Any],
    hyper: Hyperparameters,
    *,
    signatures: Sequence[tuple],
    same_grads: bool = False,
) -> bool:
    """Step a remembered in-place plan (see :mod:`adamupdate._plans`) with each group's
    prepared kernel call, or its backend's step where it has none.

    Returns ``False``, having written nothing, when a group's buffers no longer suit its plan
    (a flag turned read-only, a gradient in another layout, a tensor's storage swapped for one
    of another shape...): the caller then takes the full path, which checks everything and says
    what is wrong. ``signatures`` are the parameters' remembered ``describe()`` values.
    """
    columns = (params, grads, avg_grads, avg_sq_grads, signatures)
    per_group = [[_take(leaves, group.indices) for leaves in columns] for group in groups]
    for group, fast, (ps, gs, ms, vs, sigs) in zip(groups, prepared, per_group):
        if fast is not None:
            if not fast.ready(ps, gs, ms, vs, same_grads=same_grads):
                return False
        elif not _unchanged(group, ps, gs, ms, vs, sigs):
            return False
    coefficients = _coefficients_by_factor(hyper)
    for group, fast, (ps, gs, ms, vs, _) in zip(groups, prepared, per_group):
        if group.factor == 0.0:
            continue  # frozen: nothing changes
        c = coefficients(group.factor)
        if fast is not None:
            fast.step(c)
        else:
            group.backend.step(ps, gs, ms, vs, c, inplace=True, state_dtypes=group.state_dtypes)
    return True


def _unchanged(group: Group, ps, gs, ms, vs, signatures) -> bool:
    """Every leaf of a group without a prepared kernel still has its remembered form and can be
    written: the same objects can hold other storage (a tensor's ``.data = ...``)."""
    backend, (m_dtype, v_dtype) = group.backend, group.state_dtypes
    for p, g, m, v, (device, dtype, shape) in zip(ps, gs, ms, vs, signatures):
        if not (
            backend.describe(p) == backend.describe(g) == (device, dtype, shape)
            and backend.describe(m) == (device, m_dtype, shape)
            and backend.describe(v) == (device, v_dtype, shape)
            and backend.is_writeable(p)
            and backend.is_writeable(m)
            and backend.is_writeable(v)
        ):
            return False
    return True


def _take(leaves: Sequence[Any], indices: list[int]) -> list[Any]:
    """``[leaves[i] for i in indices]``, as one slice when the indices are consecutive (the
    usual single group of a network), which costs nothing per leaf."""
    first, last = indices[0], indices[-1]
    if last - first + 1 == len(indices):
        return list(leaves[first : last + 1])
    return [leaves[i] for i in indices]


def _coefficients_by_factor(hyper: Hyperparameters) -> Callable[[float], StepCoefficients]:
    """The step's scalars for each learn-rate factor, computed once per call."""
    known: dict[float, StepCoefficients] = {}

    def get(factor: float) -> StepCoefficients:
        c = known.get(factor)
        if c is None:
            c = known[factor] = hyper.coefficients(factor)
        return c

    return get


def _freeze(group, params, avg_grads, avg_sq_grads, new_params, new_avg, new_sq) -> None:
    """Learn-rate factor 0: MATLAB leaves the parameter and both averages as they are (a scalar 0
    on the first call, not a full-size buffer)."""
    m_dtype, v_dtype = group.state_dtypes
    for i in group.indices:
        p = params[i]
        new_params[i] = p
        new_avg[i] = (
            avg_grads[i] if avg_grads[i] is not None else group.backend.zero_state(m_dtype, p)
        )
        new_sq[i] = (
            avg_sq_grads[i] if avg_sq_grads[i] is not None else group.backend.zero_state(v_dtype, p)
        )
