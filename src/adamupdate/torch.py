r"""MATLAB's Adam step as a ``torch.optim.Optimizer``: :class:`Adam`.

A drop-in for ``torch.optim.Adam`` in an existing PyTorch training loop — schedulers,
``state_dict()`` checkpoints, ``zero_grad()``, hooks — whose step is the one
:func:`adamupdate.adamupdate` computes: MATLAB's, with :math:`\epsilon` added to the square root
of the *uncorrected* second moment and both bias corrections folded into the step size (see the
documentation's :doc:`numerics` page). Every step goes through :func:`adamupdate.adamupdate` with
``inplace=True``; the optimizer keeps, for each run of parameters it updates together, the
averages that call returned, so the plan they carry is reused and a step re-checks only what
may have changed.

It takes ``torch.optim.Adam``'s arguments and keeps its group keys (checked in
:mod:`adamupdate._torch_options`), writes and reads checkpoints that either optimizer continues
(:mod:`adamupdate._torch_state`), and its step is a deliberate graph break under
``torch.compile``. It uses public torch API only: ``torch.optim.Optimizer`` and
``torch.compiler.disable`` (guarded: without it the step is left as it is).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._extras import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch", "adamupdate.torch")

from . import _torch_options as _options
from . import _torch_run as _run
from . import _torch_state as _state
from .network import learn_rate_factor_of

__all__ = ["Adam"]


def _install_graph_break() -> None:
    """Make :meth:`Adam.step` a deliberate graph break under ``torch.compile``; once, when the
    first optimizer is made.

    The step plans in Python and runs numba or torch kernels that TorchDynamo cannot trace;
    ``torch.compiler.disable`` (public since torch 2.1) makes TorchDynamo call it as it is and
    compile the code around it. It is installed here rather than as a decorator because it
    imports ``torch._dynamo`` (seconds): ``torch.optim.Adam`` pays that at its first step, and
    so do we at the first construction — before any compiled function can call the step, and
    before ``torch.optim.Optimizer`` wraps the class's step with its hooks. Without
    ``torch.compiler.disable`` the step is left as it is.
    """
    global _GRAPH_BREAK
    if _GRAPH_BREAK:
        return
    _GRAPH_BREAK = True
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    if disable is None:
        return
    try:  # torch >= 2.7 shows a reason when fullgraph=True refuses the break
        Adam.step = disable(Adam.step, reason=_BREAK_REASON)  # type: ignore[method-assign]
    except TypeError:
        Adam.step = disable(Adam.step)  # type: ignore[method-assign]


_BREAK_REASON = (
    "adamupdate.torch.Adam.step runs MATLAB's Adam step eagerly, in adamupdate's kernels: a "
    "deliberate graph break"
)


_GRAPH_BREAK = False


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

    With ``weight_decay`` :math:`\lambda` or ``maximize``, :math:`g` above is the gradient
    ``torch.optim.Adam`` forms too: :math:`\pm g_{\text{grad}} + \lambda p` (MATLAB's
    ``L2Regularization``).

    Parameters
    ----------
    params
        Parameters (or ``(name, parameter)`` pairs), or parameter groups (dicts with
        ``"params"`` and any of the options below), as for any ``torch.optim`` optimizer.
    lr
        Learning rate :math:`\alpha \ge 0` (default 0.001), a number or a one-element tensor.
        Read from each group at every step, so learning-rate schedulers work.
    betas
        :math:`(\beta_1, \beta_2)`, each in [0, 1): MATLAB's ``GradientDecayFactor`` and
        ``SquaredGradientDecayFactor`` (default (0.9, 0.999)). Both numbers or both one-element
        tensors, as ``torch.optim.Adam`` requires.
    eps
        :math:`\epsilon > 0`, added to :math:`\sqrt{v}` (default 1e-8).
    weight_decay
        :math:`\lambda \ge 0`, MATLAB's ``L2Regularization`` (default 0): the step takes
        :math:`g + \lambda p`, which is also ``torch.optim.Adam``'s ``weight_decay``.
    amsgrad
        Only ``False``: MATLAB's ``adamupdate`` has no AMSGrad.
    foreach, fused, capturable
        Accepted and kept in the groups (so ``torch.optim.Adam`` continues from our
        ``state_dict()`` on the route it was given); they choose torch's implementation, not
        its mathematics, and change nothing here: the engine picks its kernel itself.
        ``capturable=True`` does *not* make this step capturable in a CUDA graph (the step
        reads its count on the host). ``fused=True`` with ``foreach=True`` is torch's
        ``RuntimeError``.
    maximize
        Ascend the objective: the step takes :math:`-g` (default ``False``).
    differentiable
        Only ``False``: the step runs outside autograd and cannot be differentiated through.
    decoupled_weight_decay
        Only ``False``: AdamW's decoupled decay is not MATLAB's ``L2Regularization``.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        For an option ``torch.optim.Adam`` refuses, its error type and message ("Invalid
        learning rate: -0.1 ...", "Tensor lr must be 1-element", "betas must be either both
        floats or both Tensors", ...); also for a non-finite value or ``eps <= 0`` (MATLAB's
        ranges), and a ``ValueError`` saying why for ``amsgrad``, ``differentiable`` or
        ``decoupled_weight_decay`` set ``True`` — here, in :meth:`add_param_group` and in
        :meth:`load_state_dict` (for a saved group, before anything changes). At a step, as
        :func:`adamupdate.adamupdate` raises for a gradient that does not match its parameter.

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
      ``exp_avg_sq`` (v) — ``torch.optim.Adam``'s names and meanings — and each group carries
      every option ``torch.optim.Adam`` reads, so either optimizer continues from the other's
      checkpoint. :meth:`load_state_dict` resumes our own run bitwise. Averages of
      float16/bfloat16 parameters are float32 (as :func:`adamupdate.adamupdate` keeps them;
      torch's are converted on load). A complex parameter's real :math:`v` is saved in torch's
      complex layout and converted back on load (see :mod:`adamupdate._torch_state`).
    - ``torch.compile``: a compiled function that calls :meth:`step` compiles; the step
      itself is a deliberate graph break (``torch.compiler.disable``) and runs eagerly, with
      the same result as without compiling. ``fullgraph=True`` therefore refuses it.
    - Parameters updated together — same group, learn-rate factor and step count — are one
      :func:`adamupdate.adamupdate` call; each call completes or changes nothing, but an error
      in a later group leaves earlier groups stepped, as in ``torch.optim``.

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
        lr: float | torch.Tensor = 0.001,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        _options.check_group(defaults)
        for key in _options.FLAG_DEFAULTS.keys() - _options.GROUP_FLAGS.keys():
            del defaults[key]  # torch.optim.Adam on this torch does not know it (checked above)
        defaults["betas"] = tuple(betas)
        self._runs: dict[int, _run.GroupRun] = {}
        _install_graph_break()
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; its options are checked first, as in the constructor."""
        if isinstance(param_group, dict):
            _options.check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling, copy.deepcopy, loading
        _install_graph_break()
        super().__setstate__(state)
        self._runs = {}
        for group in self.param_groups:  # a state saved by an older torch or release of ours
            for key, default in _options.GROUP_FLAGS.items():
                group.setdefault(key, default)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step for every parameter that has a gradient.

        Under ``torch.compile`` this call is a deliberate graph break: it runs eagerly (see
        the class's notes), and the code around it is compiled.

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

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state, which ``torch.optim.Adam`` also continues from.

        As ``torch.optim.Optimizer.state_dict`` gives it, except that the squared average of a
        complex parameter is written in ``torch.optim.Adam``'s layout (a complex tensor; see
        :mod:`adamupdate._torch_state`), which :meth:`load_state_dict` converts back exactly.
        """
        saved = super().state_dict()
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        ids = itertools.chain.from_iterable(g["params"] for g in saved["param_groups"])
        state = saved["state"]
        for param, param_id in zip(params, ids):
            if param.is_complex() and param_id in state:
                state[param_id] = _state.to_torch(param, state[param_id])
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``, ours or one saved by ``torch.optim.Adam``, to resume a run.

        Every saved group's options are checked first (an AMSGrad state, say, is refused and
        nothing changes). Averages are converted to what the step keeps: float32 for
        float16/bfloat16 parameters (``torch.optim.Optimizer`` would cast them to the
        parameter's dtype), and a real squared average for complex parameters (the sum of the
        real and imaginary parts of torch's; see :mod:`adamupdate._torch_state`).
        """
        for group in state_dict["param_groups"]:
            _options.check_group({**self.defaults, **group})
        super().load_state_dict(state_dict)
        self._runs = {}
        saved = state_dict["state"]
        ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for param_id, param in zip(ids, params):
            entry, state = saved.get(param_id), self.state.get(param)
            if not entry or state is None:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                value = entry.get(key)
                if isinstance(value, torch.Tensor):
                    state[key] = _state.to_ours(param, key, value)

    # --- the step -------------------------------------------------------------------------

    def _step_group(self, index: int, group: dict[str, Any]) -> None:
        active = [p for p in group["params"] if p.grad is not None]
        factors = [learn_rate_factor_of(p) for p in active]
        run = self._runs.get(index)
        if run is None or not run.fits(active, factors, self.state):
            run = self._runs[index] = _run.GroupRun.plan(active, factors, self.state)
        lr = _options.scalar(group["lr"])
        beta1, beta2 = map(_options.scalar, group["betas"])
        eps = _options.scalar(group["eps"])
        weight_decay = _options.scalar(group.get("weight_decay", 0.0))
        maximize = bool(group.get("maximize", False))
        for bucket in run.buckets:
            grads = _run.gradients(bucket.params, weight_decay, maximize)
            bucket.step(self.state, grads, lr, beta1, beta2, eps)
