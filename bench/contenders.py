"""The contenders: each is a factory ``(case, params, grads) -> step`` where ``step()`` runs one
full optimizer step over the case's tensors, in place, and returns when the result is ready.

Every factory makes its own copies of the data, so contenders never share buffers, and imports
its library itself: a missing library raises :class:`Skip` with the reason the table shows. Add
a contender by adding a factory to :data:`CONTENDERS`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.cases import Case

Step = Callable[[], None]
Factory = Callable[[Case, list[np.ndarray], list[np.ndarray]], Step]

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


class Skip(Exception):
    """This contender cannot run this case here; the message says why."""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise Skip(f"{module} not installed") from error


def _ours_functional(library: str, inplace: bool) -> Factory:
    """``adamupdate(params, grads, m, v, t, inplace=...)`` on NumPy arrays or torch CPU
    tensors, the returned averages (and, without ``inplace``, parameters) carried along."""

    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        from adamupdate import adamupdate

        if library == "torch":
            torch = _require("torch")
            p = [torch.from_numpy(a.copy()) for a in params]
            g = [torch.from_numpy(a.copy()) for a in grads]
        else:
            p = [a.copy() for a in params]
            g = [a.copy() for a in grads]
        state: dict[str, Any] = {
            "p": p[0] if case.single else p,
            "g": g[0] if case.single else g,
            "t": 0,
            "m": None,
            "v": None,
        }

        def step() -> None:
            state["t"] += 1
            state["p"], state["m"], state["v"] = adamupdate(
                state["p"],
                state["g"],
                state["m"],
                state["v"],
                state["t"],
                LR,
                B1,
                B2,
                EPS,
                inplace=inplace,
            )

        return step

    mode = "inplace=True" if inplace else "the default (new arrays)"
    factory.__doc__ = f"``adamupdate`` on {library} leaves with {mode}."
    return factory


def _ours_caller_owned(library: str) -> Factory:
    """``adamupdate(ps, gs, ms, vs, t, inplace=True)`` with ``ms``, ``vs`` the caller's own
    ``zeros_like`` lists and the return ignored — the habit of torch's functional optimizers
    (issue 17, case 5): the averages never carry anything from an earlier call."""

    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        from adamupdate import adamupdate

        if library == "torch":
            torch = _require("torch")
            ps = [torch.from_numpy(a.copy()) for a in params]
            gs = [torch.from_numpy(a.copy()) for a in grads]
            ms = [torch.zeros_like(p) for p in ps]
            vs = [torch.zeros_like(p.real) for p in ps]
        else:
            ps = [a.copy() for a in params]
            gs = [a.copy() for a in grads]
            ms = [np.zeros_like(p) for p in ps]
            vs = [np.zeros_like(p.real) for p in ps]
        t = [0]

        def step() -> None:
            t[0] += 1
            adamupdate(ps, gs, ms, vs, t[0], LR, B1, B2, EPS, inplace=True)

        return step

    factory.__doc__ = f"``adamupdate`` in place on {library} leaves and the caller's own states."
    return factory


def _ours_network(inplace: bool) -> Factory:
    """MATLAB's form: ``net, m, v = adamupdate(net, grads, m, v, t)`` on a ``torch.nn.Module``
    holding the case's tensors (one ``ParameterList``), gradients as a dict keyed by name."""

    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        torch = _require("torch")
        from adamupdate import adamupdate

        net = torch.nn.Module()
        net.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params
        )
        g = {
            name: torch.from_numpy(a.copy())
            for (name, _), a in zip(net.named_parameters(), grads, strict=True)
        }
        state: dict[str, Any] = {"t": 0, "m": None, "v": None}

        def step() -> None:
            state["t"] += 1
            kwargs = {"inplace": True} if inplace else {}
            _, state["m"], state["v"] = adamupdate(
                net, g, state["m"], state["v"], state["t"], LR, B1, B2, EPS, **kwargs
            )

        return step

    factory.__doc__ = f"``adamupdate(net, grads, ...)``{' with inplace=True' if inplace else ''}."
    return factory


def ours_kernel(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
    """The numba kernel called directly on an address table: our floor without a front end."""
    _require("numba")
    from adamupdate.kernels import numba_step
    from adamupdate.rules.adam import coefficients

    if not numba_step.available() or not numba_step.supports(case.dtype):
        raise Skip(f"numba kernel unavailable for {case.dtype}")
    p = [a.copy() for a in params]
    g = [a.copy() for a in grads]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros(a.shape, a.real.dtype) for a in p]
    rows = (p, g, m, v, p, m, v)
    addresses = np.array([[a.ctypes.data for a in row] for row in rows], np.intp)
    sizes = np.array([a.size for a in p], np.intp)
    dtype = np.dtype(case.dtype)
    t = [0]

    def step() -> None:
        t[0] += 1
        numba_step.run(addresses, sizes, dtype, False, coefficients(LR, B1, B2, EPS, t[0]))

    step.arrays = rows  # type: ignore[attr-defined]  # the memory behind the addresses
    return step


def _torch_optim(**flags: bool) -> Factory:
    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        torch = _require("torch")
        p = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
        for tensor, grad in zip(p, grads, strict=True):
            tensor.grad = torch.from_numpy(grad.copy())
        return torch.optim.Adam(p, lr=LR, betas=(B1, B2), eps=EPS, **flags).step

    factory.__doc__ = f"``torch.optim.Adam({', '.join(f'{k}=True' for k in flags)})``."
    return factory


def optax_adam(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
    """``optax.adam`` under ``jax.jit`` with the parameters and state buffers donated."""
    jax = _require("jax")
    optax = _require("optax")
    jax.config.update("jax_enable_x64", True)  # float64 stays float64
    opt = optax.adam(LR, B1, B2, EPS)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(p: Any, s: Any, g: Any) -> Any:
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    p = [jax.device_put(a) for a in params]
    g = [jax.device_put(a) for a in grads]
    carried = [p, opt.init(p)]

    def step() -> None:
        carried[0], carried[1] = update(carried[0], carried[1], g)
        jax.block_until_ready(carried[0])

    return step


def numpy_naive(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
    """The textbook expression, one array at a time, with NumPy's temporaries."""
    p = [a.copy() for a in params]
    g = [a.copy() for a in grads]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros(a.shape, a.real.dtype) for a in p]
    t = [0]

    def step() -> None:
        t[0] += 1
        alpha = LR * math.sqrt(1 - B2 ** t[0]) / (1 - B1 ** t[0])
        for i, grad in enumerate(g):
            m[i] = B1 * m[i] + (1 - B1) * grad
            v[i] = B2 * v[i] + (1 - B2) * (grad.real**2 + grad.imag**2)
            p[i] = p[i] - alpha * m[i] / (np.sqrt(v[i]) + EPS)

    return step


def stream_reference(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
    """Reads 4 and writes 3 buffers of the case's total size: the bandwidth floor (see stream)."""
    _require("numba")
    from bench.stream import stream_pairs, stream_real

    dtype = np.dtype(case.dtype)
    pairs = dtype.kind == "c"
    real = np.empty(0, dtype).real.dtype
    p, g, m = (np.ones(case.numel * (2 if pairs else 1), real) for _ in range(3))
    v = np.ones(case.numel, real)
    return functools.partial(stream_pairs if pairs else stream_real, p, g, m, v)


def _ours_solver(solver: str, library: str) -> Factory:
    """``sgdmupdate``/``rmspropupdate`` in place on NumPy arrays or torch CPU tensors."""

    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        import adamupdate

        update = getattr(adamupdate, solver)
        if library == "torch":
            torch = _require("torch")
            p = [torch.from_numpy(a.copy()) for a in params]
            g = [torch.from_numpy(a.copy()) for a in grads]
        else:
            p, g = [a.copy() for a in params], [a.copy() for a in grads]
        leaves = (p[0], g[0]) if case.single else (p, g)
        state: dict[str, Any] = {"s": None}

        def step() -> None:
            _, state["s"] = update(*leaves, state["s"], LR, *SOLVER_ARGS[solver], inplace=True)

        return step

    factory.__doc__ = f"``{solver}(..., inplace=True)`` on {library} leaves."
    return factory


def _torch_solver(optimizer: str, **flags: bool) -> Factory:
    def factory(case: Case, params: list[np.ndarray], grads: list[np.ndarray]) -> Step:
        torch = _require("torch")
        p = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
        for tensor, grad in zip(p, grads, strict=True):
            tensor.grad = torch.from_numpy(grad.copy())
        if optimizer == "SGD":
            return torch.optim.SGD(p, lr=LR, momentum=SOLVER_ARGS["sgdmupdate"][0], **flags).step
        decay, eps = SOLVER_ARGS["rmspropupdate"]
        return torch.optim.RMSprop(p, lr=LR, alpha=decay, eps=eps, **flags).step

    factory.__doc__ = f"``torch.optim.{optimizer}({', '.join(f'{k}=True' for k in flags)})``."
    return factory


#: The sibling solvers' own arguments after the learn rate.
SOLVER_ARGS = {"sgdmupdate": (0.9,), "rmspropupdate": (0.9, 1e-8)}

#: Solver -> its contenders (the first torch one is the reference of the ratios).
SOLVER_CONTENDERS: dict[str, dict[str, Factory]] = {
    "sgdmupdate": {
        "torch SGD fused": _torch_solver("SGD", fused=True),
        "torch SGD foreach": _torch_solver("SGD", foreach=True),
        "ours: numpy inplace": _ours_solver("sgdmupdate", "numpy"),
        "ours: torch inplace": _ours_solver("sgdmupdate", "torch"),
    },
    "rmspropupdate": {
        "torch RMSprop foreach": _torch_solver("RMSprop", foreach=True),
        "ours: numpy inplace": _ours_solver("rmspropupdate", "numpy"),
        "ours: torch inplace": _ours_solver("rmspropupdate", "torch"),
    },
}


#: Name -> factory, in table order. "stream" must stay: every ratio is relative to it.
CONTENDERS: dict[str, Factory] = {
    "stream (floor)": stream_reference,
    "ours: numba kernel": ours_kernel,
    "ours: net default": _ours_network(inplace=False),
    "ours: net inplace": _ours_network(inplace=True),
    "ours: torch inplace": _ours_functional("torch", inplace=True),
    "ours: torch own states": _ours_caller_owned("torch"),
    "ours: torch functional": _ours_functional("torch", inplace=False),
    "ours: numpy inplace": _ours_functional("numpy", inplace=True),
    "ours: numpy own states": _ours_caller_owned("numpy"),
    "ours: numpy functional": _ours_functional("numpy", inplace=False),
    "torch Adam fused": _torch_optim(fused=True),
    "torch Adam foreach": _torch_optim(foreach=True),
    "optax adam jit": optax_adam,
    "numpy naive": numpy_naive,
}
STREAM = "stream (floor)"
TORCH_FUSED = "torch Adam fused"
#: Contenders timed on the front-end cost cases (many one-value tensors).
OVERHEAD = (
    "ours: net default",
    "ours: net inplace",
    "ours: torch inplace",
    "ours: torch own states",
    "ours: torch functional",
    "ours: numpy inplace",
    "ours: numpy own states",
    "ours: numpy functional",
    "torch Adam fused",
)
