"""Errors that teach: what a MATLAB porter (or a PyTorch user) wrote, and what to write instead.

The solvers call in here only once something has already failed, so a correct call pays
nothing for these explanations:

- :func:`unknown_keywords` — a keyword the solver does not have (``lr=``, ``learnRate=``,
  ``beta1=``, ``eps=``, MATLAB's ``GradientDecayFactor=``…) is answered with the solver's own
  name for it;
- :func:`explain` — an argument that is a one-pass iterator (``net.parameters()``, a generator,
  ``dict.values()``) is named, with what to pass instead.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, KeysView, ValuesView
from typing import Any, NoReturn

# A spelling (lower case, without "_") -> the solvers' name for it. A spelling whose name the
# solver at hand lacks falls through to the special cases below and then to close matches.
_ALIASES = {
    # learn_rate: PyTorch's and optax's lr, MATLAB's learnRate / InitialLearnRate
    "lr": "learn_rate",
    "learnrate": "learn_rate",
    "learningrate": "learn_rate",
    "initiallearnrate": "learn_rate",
    "stepsize": "learn_rate",
    # grad_decay: the paper's and PyTorch's beta1, trainingOptions' GradientDecayFactor
    "beta1": "grad_decay",
    "b1": "grad_decay",
    "graddecay": "grad_decay",
    "gradientdecay": "grad_decay",
    "gradientdecayfactor": "grad_decay",
    "graddecayfactor": "grad_decay",
    # sq_grad_decay: beta2, SquaredGradientDecayFactor (and RMSprop's alpha / rho)
    "beta2": "sq_grad_decay",
    "b2": "sq_grad_decay",
    "sqgraddecay": "sq_grad_decay",
    "squaredgradientdecay": "sq_grad_decay",
    "squaredgradientdecayfactor": "sq_grad_decay",
    "sqgraddecayfactor": "sq_grad_decay",
    "rho": "sq_grad_decay",
    "decay": "sq_grad_decay",
    # epsilon
    "eps": "epsilon",
    # momentum
    "mu": "momentum",
    # the states and the counter, in MATLAB's spelling
    "averagegrad": "avg_grad",
    "avggrad": "avg_grad",
    "averagesqgrad": "avg_sq_grad",
    "avgsqgrad": "avg_sq_grad",
    "velocity": "vel",
    "t": "iteration",
    "step": "iteration",
    "iter": "iteration",
    "parameters": "params",
    "net": "params",
    "gradients": "grad",
    "gradient": "grad",
}

# What has no counterpart, and what to do instead.
_NO_COUNTERPART = {
    "betas": "it takes the two decays separately: grad_decay=beta1, sq_grad_decay=beta2",
    "weightdecay": (
        "MATLAB's solver has no weight decay; add L2 regularization to the gradient "
        "(grad + l2 * params, as MATLAB's dlupdate example does; see the porting guide)"
    ),
    "l2regularization": (
        "add L2 regularization to the gradient instead: grad + l2 * params (see the porting guide)"
    ),
    "amsgrad": "MATLAB's solvers have no AMSGrad variant",
    "nesterov": "MATLAB's sgdmupdate has no Nesterov variant",
    "maximize": "negate the gradient instead (MATLAB's solvers always minimise)",
    "foreach": "the route is chosen for you (see the performance page)",
    "fused": "the route is chosen for you (see the performance page)",
    "gradientthreshold": (
        "clip the gradient before the call instead (MATLAB's thresholdL2Norm; see the porting "
        "guide's gradient clipping)"
    ),
}


def _key(name: str) -> str:
    return name.replace("_", "").lower()


def keyword_hint(name: str, accepted: list[str]) -> str:
    """What to write instead of keyword ``name`` for a function whose keywords are
    ``accepted``; ``""`` when nothing fits.

    >>> keyword_hint("lr", ["learn_rate", "epsilon"])
    'write learn_rate= (lr is its name in PyTorch and optax)'
    >>> keyword_hint("GradientDecayFactor", ["grad_decay"])
    'write grad_decay= (GradientDecayFactor is its name in MATLAB)'
    """
    key = _key(name)
    target = _ALIASES.get(key)
    if target is None:
        target = next((a for a in accepted if _key(a) == key), None)  # learnRate, LearnRate
    if target is not None and target in accepted:
        return f"write {target}= ({name} is its name {_origin(name)})"
    if key in _NO_COUNTERPART:
        return _NO_COUNTERPART[key]
    close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}=?"
    return ""


def _origin(name: str) -> str:
    if _key(name) in ("lr", "eps", "beta1", "beta2", "betas", "b1", "b2", "rho", "mu"):
        return "in PyTorch and optax"
    if name[:1].isupper() or any(c.isupper() for c in name[1:]):
        return "in MATLAB"
    return "elsewhere"


def unknown_keywords(function: Callable[..., Any], keywords: dict[str, Any]) -> NoReturn:
    """Raise the ``TypeError`` Python would, with the function's own name for each keyword."""
    accepted = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    lines = []
    for name in keywords:
        hint = keyword_hint(name, accepted)
        lines.append(
            f"{function.__name__}() got an unexpected keyword argument {name!r}"
            + (f": {hint}" if hint else "")
        )
    lines.append(f"(its arguments: {', '.join(accepted)})")
    raise TypeError("\n".join(lines))


def hide_keywords_catchall(function: Callable[..., Any]) -> None:
    """Show ``function``'s signature without its ``**misspelt`` catch-all (which is there
    only to answer a wrong keyword with :func:`unknown_keywords`): in ``help()``, in the API
    reference and in an IDE."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    function.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]


def _one_pass(value: Any) -> str | None:
    """How to name ``value`` if it is a one-pass iterator or a dict view, else ``None``."""
    if isinstance(value, Iterator):
        kind = (
            "a generator" if inspect.isgenerator(value) else f"an iterator ({type(value).__name__})"
        )
        return kind
    if isinstance(value, (KeysView, ValuesView)):
        return f"a dict view ({type(value).__name__})"
    return None


def explain(arguments: dict[str, Any]) -> None:
    """After a solver call failed: raise a ``TypeError`` that names an argument passed as an
    iterator (``net.parameters()``) and says what to pass. Returns when none was (the
    original error stands)."""
    for name, value in arguments.items():
        kind = _one_pass(value)
        if kind is None:
            continue
        raise TypeError(
            f"{name}: got {kind}, which can be read only once and has no structure to mirror. "
            f"For a network pass the network itself (adamupdate(net, grad, ...), as MATLAB "
            f"passes the dlnetwork) with grad from gradients(loss, net); otherwise pass a list: "
            f"list({name})"
        )
