"""Scalar arguments: the forms accepted (numbers, one-element arrays and tensors), the ones refused
(booleans, complex, several elements, out of range), and huge values that must not overflow.

Checked through the public :func:`adamupdate.adamupdate` and directly through
:mod:`adamupdate._validate`. Hyper-parameter values here are exact in float32 (0.125, 0.75,
0.9375, 2**-20), so a float32 tensor holds the same number as the Python float.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from adamupdate import _validate, adamupdate

HP = {"learn_rate": 0.125, "grad_decay": 0.75, "sq_grad_decay": 0.9375, "epsilon": 2.0**-20}
ARGUMENTS = ("iteration", *HP)
ITERATION = 3
LARGEST_ITERATION = int(sys.float_info.max)


def _check(name: str, value):
    """The validator of one argument, as adamupdate() calls it."""
    if name == "iteration":
        return _validate.iteration(value)
    if name in ("grad_decay", "sq_grad_decay"):
        return _validate.decay(value, name)
    return getattr(_validate, name)(value)


def _step(iteration=ITERATION, **hp):
    rng = np.random.default_rng(0)
    params, grad = rng.standard_normal(5), rng.standard_normal(5)
    avg_grad, avg_sq_grad = rng.standard_normal(5), rng.random(5)
    return adamupdate(params, grad, avg_grad, avg_sq_grad, iteration, **{**HP, **hp})


def _plain(name: str):
    return ITERATION if name == "iteration" else HP[name]


def _assert_same_step(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y, strict=True)


# -------------------------------------------------------------------------- accepted forms
# (library, form): the library is imported only by the tests that use it.
FORMS = {
    "numpy scalar": ("numpy", lambda np_, x: np_.float64(x)),
    "numpy 0-d": ("numpy", lambda np_, x: np_.array(x)),
    "numpy one-element 2-d": ("numpy", lambda np_, x: np_.array([[x]])),
    "torch 0-d": ("torch", lambda torch, x: torch.tensor(x)),
    "torch 0-d float32": ("torch", lambda torch, x: torch.tensor(x, dtype=torch.float32)),
    "torch one-element": ("torch", lambda torch, x: torch.tensor([x])),
    "torch requiring grad": (
        "torch",
        lambda torch, x: torch.tensor(float(x), dtype=torch.float64, requires_grad=True),
    ),
    "jax 0-d": ("jax.numpy", lambda jnp, x: jnp.array(x)),
}


def _form(form: str, value):
    library, make = FORMS[form]
    return make(pytest.importorskip(library), value)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ARGUMENTS)
def test_one_element_array_or_tensor_is_its_value(name, form):
    given = _form(form, _plain(name))
    checked = _check(name, given)
    assert checked == _plain(name)
    assert type(checked) is (int if name == "iteration" else float)
    _assert_same_step(_step(**{name: given}), _step(**{name: _plain(name)}))


def test_tensor_iteration_is_used_not_ignored():
    torch = pytest.importorskip("torch")
    params, grad = np.zeros(3), np.ones(3)
    from_tensor = adamupdate(params, grad, None, None, iteration=torch.tensor(1))
    _assert_same_step(from_tensor, adamupdate(params, grad, None, None, iteration=1))
    # A different count changes the bias correction: the tensor's value really was read.
    later = _step(iteration=torch.tensor(ITERATION + 1))[0]
    assert not np.array_equal(later, _step()[0])


def test_tensor_requiring_grad_gives_its_value_only():
    torch = pytest.importorskip("torch")
    rate = torch.tensor(HP["learn_rate"], requires_grad=True)
    params = torch.zeros(4, dtype=torch.float64)
    grad = torch.ones(4, dtype=torch.float64)
    stepped, avg_grad, avg_sq_grad = adamupdate(params, grad, None, None, 1, rate)
    assert not (stepped.requires_grad or avg_grad.requires_grad or avg_sq_grad.requires_grad)
    assert rate.grad is None and rate.grad_fn is None
    plain = adamupdate(params, grad, None, None, 1, HP["learn_rate"])[0]
    assert torch.equal(stepped, plain)


def test_traced_hyper_parameter_is_refused_by_name():
    jax = pytest.importorskip("jax")
    step = jax.jit(lambda rate: adamupdate(np.zeros(2), np.ones(2), None, None, 1, rate)[0])
    with pytest.raises(TypeError, match=r"learn_rate .*jax\.jit"):
        step(0.1)


# -------------------------------------------------------------------------- refused forms
REFUSED = {
    "boolean": [
        ("builtins", lambda _, name: True),
        ("numpy", lambda np_, name: np_.False_),
        ("numpy", lambda np_, name: np_.array(True)),
        ("torch", lambda torch, name: torch.tensor(True)),
        ("torch", lambda torch, name: torch.tensor([False])),
        ("jax.numpy", lambda jnp, name: jnp.array(True)),
    ],
    "complex": [
        ("builtins", lambda _, name: complex(_plain(name), 0)),
        ("numpy", lambda np_, name: np_.complex128(_plain(name))),
        ("numpy", lambda np_, name: np_.array(_plain(name), dtype=complex)),
        ("torch", lambda torch, name: torch.tensor(complex(_plain(name), 0))),
    ],
    "single number": [
        ("numpy", lambda np_, name: np_.full(2, _plain(name))),
        ("numpy", lambda np_, name: np_.zeros(0)),
        ("torch", lambda torch, name: torch.full((2, 1), _plain(name))),
        ("torch", lambda torch, name: torch.ones(3, requires_grad=True)),
        ("jax.numpy", lambda jnp, name: jnp.ones(3)),
    ],
    "got str": [("builtins", lambda _, name: str(_plain(name)))],
    "got NoneType": [("builtins", lambda _, name: None)],
    "got list": [("builtins", lambda _, name: [_plain(name)])],
}
REFUSED_CASES = [
    pytest.param(why, library, make, id=f"{why}-{i}")
    for why, forms in REFUSED.items()
    for i, (library, make) in enumerate(forms)
]


@pytest.mark.parametrize(("why", "library", "make"), REFUSED_CASES)
@pytest.mark.parametrize("name", ARGUMENTS)
def test_refused_form_raises_type_error_naming_argument_and_value(name, why, library, make):
    value = make(pytest.importorskip(library), name)
    shown = " ".join(repr(value).split())[:40]
    for call in (lambda: _check(name, value), lambda: _step(**{name: value})):
        with pytest.raises(TypeError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{name} must be"), message
        assert why in message and shown in message, message


# ----------------------------------------------------------------------- huge and infinite
# (value, how the message shows it): huge ints by magnitude, as their digits would be unreadable.
HUGE = [
    (10**400, "about 1e400"),
    (-(10**400), "about -1e400"),
    (10**5000, "about 1e5000"),  # its repr would exceed Python's int-to-str limit
    (2**1024, "about 1e308"),
    (1e400, "inf"),
    (-math.inf, "-inf"),
    (math.nan, "nan"),
    (np.float64("inf"), "inf"),
]


@pytest.mark.parametrize(("value", "shown"), HUGE, ids=[shown for _, shown in HUGE])
@pytest.mark.parametrize("name", ARGUMENTS)
def test_huge_or_infinite_is_a_value_error_naming_argument(name, value, shown):
    for call in (lambda: _check(name, value), lambda: _step(**{name: value})):
        with pytest.raises(ValueError) as info:  # never OverflowError
            call()
        message = str(info.value)
        assert message.startswith(f"{name} must be"), message
        assert message.endswith(shown) or message.endswith(f"np.float64({shown})"), message


def test_iteration_just_above_the_float64_range_is_refused():
    with pytest.raises(ValueError, match=r"iteration must be at most 1\.79.*e\+308"):
        _step(iteration=LARGEST_ITERATION + 1)


def test_huge_tensor_is_a_value_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"iteration must be .*inf"):
        _step(iteration=torch.tensor(math.inf, dtype=torch.float64))


def _fully_corrected_step(params: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """MATLAB's formula from empty states once 1 - beta^t is 1.0 (written out here, not taken
    from the library): p - lr * m / (sqrt(v) + eps), m = (1-b1) g, v = (1-b2) g^2."""
    lr, b1, b2, eps = HP.values()
    m = (1 - b1) * grad
    v = (1 - b2) * grad * grad
    return params - lr * m / (np.sqrt(v) + eps)


@pytest.mark.parametrize(
    "iteration", [10**5, 2**64, 10**300, LARGEST_ITERATION, 1e300, np.float64(1e308)]
)
def test_iteration_whose_bias_correction_is_one_is_valid(iteration):
    rng = np.random.default_rng(1)
    params, grad = rng.standard_normal(6), rng.standard_normal(6)
    stepped = adamupdate(params, grad, None, None, iteration, **HP)[0]
    np.testing.assert_allclose(stepped, _fully_corrected_step(params, grad), rtol=1e-15, atol=0)
    # 0.9375**1e5 underflows: every count from 1e5 on takes exactly the same step.
    _assert_same_step(stepped, adamupdate(params, grad, None, None, 10**5, **HP)[0])
    assert _validate.iteration(iteration) == int(iteration)


@pytest.mark.parametrize("library", ["jax.numpy", "torch"])
def test_iteration_1e38_is_valid_in_other_backends(library):
    xp = pytest.importorskip(library)
    params, grad = xp.zeros(3), xp.ones(3)
    big = adamupdate(params, grad, None, None, 10**38, **HP)[0]
    usual = adamupdate(params, grad, None, None, 10**5, **HP)[0]
    np.testing.assert_array_equal(np.asarray(big), np.asarray(usual))


@pytest.mark.parametrize("route", ["numba", "fused", "foreach"])
def test_iteration_above_float32_range_in_torch(route):
    """Every torch route takes an iteration beyond float32's range (PyTorch's fused kernel
    reads the step count from a float32 tensor)."""
    torch = pytest.importorskip("torch")
    from adamupdate.backends import torch_backend
    from adamupdate.rules import adam
    from adamupdate.rules.adam import coefficients

    if route == "numba":
        pytest.importorskip("numba")
    results = []
    for iteration in (10**300, 10**5):
        params, grad = torch.zeros(3), torch.ones(3)
        group = torch_backend.group(
            adam.RULE,
            torch.float32,
            (torch.float32,) * 2,
            fresh=True,
            inplace=False,
            params=[params],
            route=route,
        )
        group.bind([params], [grad], [[None], [None]])
        group.run(
            coefficients(
                HP["learn_rate"], HP["grad_decay"], HP["sq_grad_decay"], HP["epsilon"], iteration
            )
        )
        group.commit()
        results.append(group.outputs()[0][0])
    assert torch.equal(results[0], results[1])
    assert torch.equal(
        adamupdate(torch.zeros(3), torch.ones(3), None, None, 10**300, **HP)[0], results[1]
    )


# ------------------------------------------------------------------------------ the ranges
@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("iteration", 0, "positive integer"),
        ("iteration", np.array(2.5), "positive integer"),
        ("learn_rate", -0.5, ">= 0"),
        ("grad_decay", 1, "in [0, 1)"),
        ("sq_grad_decay", np.array([-0.25]), "in [0, 1)"),
        ("epsilon", 0.0, "> 0"),
    ],
)
def test_out_of_range_names_argument_rule_and_value(name, value, rule):
    with pytest.raises(ValueError) as info:
        _step(**{name: value})
    message = str(info.value)
    assert message.startswith(f"{name} must") and rule in message, message
    assert message.endswith(f"got {value!r}"), message
