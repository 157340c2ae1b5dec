"""Errors that teach (issue 20, case 2 and 5): each slip a MATLAB porter makes is answered with
what was passed and what to write instead, and a failing call changes nothing."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import adamupdate
from adamupdate import adamupdate as adam_step
from adamupdate import rmspropupdate, sgdmupdate

torch = pytest.importorskip("torch")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), torch.nn.Linear(1, 1))


def _weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _unchanged(net: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


# --- keywords: the solver's own name for what was typed -----------------------------------------


@pytest.mark.parametrize(
    ("typed", "ours"),
    [
        ("lr", "learn_rate"),
        ("learnRate", "learn_rate"),
        ("LearnRate", "learn_rate"),
        ("learning_rate", "learn_rate"),
        ("InitialLearnRate", "learn_rate"),
        ("beta1", "grad_decay"),
        ("GradientDecayFactor", "grad_decay"),
        ("gradDecay", "grad_decay"),
        ("beta2", "sq_grad_decay"),
        ("SquaredGradientDecayFactor", "sq_grad_decay"),
        ("sqGradDecay", "sq_grad_decay"),
        ("eps", "epsilon"),
        ("Epsilon", "epsilon"),
        ("learn_rte", "learn_rate"),  # a typo: the closest name
    ],
)
def test_adamupdate_keyword_hint(typed: str, ours: str) -> None:
    params = np.ones(2)
    with pytest.raises(TypeError) as caught:
        adam_step(params, np.ones(2), None, None, 1, **{typed: 0.01})
    message = str(caught.value)
    assert f"unexpected keyword argument {typed!r}" in message
    assert f"{ours}=" in message
    assert np.array_equal(params, np.ones(2))


@pytest.mark.parametrize(
    ("solver", "args", "typed", "ours"),
    [
        (sgdmupdate, (None,), "lr", "learn_rate"),
        (sgdmupdate, (None,), "Momentum", "momentum"),
        (sgdmupdate, (None,), "velocity", "vel"),
        (rmspropupdate, (None,), "learnRate", "learn_rate"),
        (rmspropupdate, (None,), "SquaredGradientDecayFactor", "sq_grad_decay"),
        (rmspropupdate, (None,), "eps", "epsilon"),
    ],
)
def test_sibling_solver_keyword_hints(solver, args, typed: str, ours: str) -> None:
    with pytest.raises(TypeError, match=rf"'{typed}'.*write {ours}="):
        solver(np.ones(2), np.ones(2), *args, **{typed: 0.01})


def test_keyword_the_solver_lacks_is_not_misdirected() -> None:
    # sgdmupdate has no grad_decay: beta1 must not be answered with a name it does not take.
    with pytest.raises(TypeError) as caught:
        sgdmupdate(np.ones(2), np.ones(2), None, beta1=0.9)
    assert "grad_decay=" not in str(caught.value)
    assert "its arguments: params, grad, vel, learn_rate, momentum" in str(caught.value)


def test_keywords_without_counterpart_say_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"grad_decay=beta1, sq_grad_decay=beta2"):
        adam_step(np.ones(2), np.ones(2), None, None, 1, betas=(0.9, 0.99))
    with pytest.raises(TypeError, match=r"grad \+ l2 \* params"):
        adam_step(np.ones(2), np.ones(2), None, None, 1, weight_decay=1e-4)


def test_signatures_do_not_show_the_catch_all() -> None:
    for solver in (adam_step, sgdmupdate, rmspropupdate):
        kinds = [p.kind for p in inspect.signature(solver).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert list(inspect.signature(adam_step).parameters)[-2:] == ["inplace", "state_dtype"]


def test_right_keywords_still_work() -> None:
    params, _, _ = adam_step(np.zeros(1), np.ones(1), None, None, 1, learn_rate=0.5, epsilon=1e-30)
    assert params[0] == pytest.approx(-0.5)


# --- a generator where an array or a network belongs ---------------------------------------------


def test_parameters_generator_as_params() -> None:
    net = _net()
    before = _weights(net)
    grads = [torch.ones_like(p) for p in net.parameters()]
    with pytest.raises(TypeError) as caught:
        adam_step(net.parameters(), grads, None, None, 1)
    message = str(caught.value)
    assert message.startswith("params: got a generator")
    assert "adamupdate(net, grad, ...)" in message
    assert _unchanged(net, before)


def test_generator_as_grad() -> None:
    net = _net()
    with pytest.raises(TypeError, match=r"^grad: got a generator"):
        adam_step(net, (torch.ones_like(p) for p in net.parameters()), None, None, 1)


def test_dict_values_as_grad_of_a_list() -> None:
    with pytest.raises(TypeError, match=r"^grad: got a dict view \(dict_values\).*list\(grad\)"):
        sgdmupdate([np.ones(2)], {"w": np.ones(2)}.values(), None)


# --- a gradient that is None: refused, naming the parameter ------------------------------------


def test_none_gradient_of_an_unused_layer_is_named() -> None:
    net = _net()
    net[:2](torch.randn(4, 3)).sum().backward()  # the last layer takes no part
    before = _weights(net)
    grads = [p.grad for p in net.parameters()]
    assert grads[4] is None
    with pytest.raises(TypeError) as caught:
        adam_step(net, grads, None, None, 1)
    message = str(caught.value)
    assert message.startswith("grad['2.weight'] (layer '2', parameter 'weight') is None")
    assert "(and 1 more)" in message
    assert "torch.zeros_like(p)" in message and "dlgradient" in message
    assert _unchanged(net, before)


def test_none_gradient_also_after_a_remembered_step() -> None:
    net = _net()
    grads = [torch.ones_like(p) for p in net.parameters()]
    net, m, v = adam_step(net, grads, None, None, 1)
    before = _weights(net)
    grads[-1] = None
    with pytest.raises(TypeError, match=r"grad\['2.bias'\].*is None"):
        adam_step(net, grads, m, v, 2)
    assert _unchanged(net, before)


def test_every_gradient_none_points_to_backward() -> None:
    net = _net()
    with pytest.raises(TypeError, match=r"every entry is None.*loss.backward\(\)"):
        adam_step(net, [p.grad for p in net.parameters()], None, None, 1)


def test_gradients_gives_zeros_for_an_unused_layer_as_matlab_does() -> None:
    net = _net()
    grads = adamupdate.gradients(net[:2](torch.randn(4, 3)).sum(), net, form="dict")
    assert torch.equal(grads["2.weight"], torch.zeros(1, 1))


def test_none_gradient_in_a_container() -> None:
    with pytest.raises(TypeError, match=r"grad\['w'\].*got None.*received no gradient"):
        adam_step({"w": np.ones(2)}, {"w": None}, None, None, 1)


# --- a misspelt key names the key that was given ------------------------------------------------


def test_misspelt_network_key_names_the_given_key() -> None:
    net = _net()
    grads = {name: torch.ones_like(p) for name, p in net.named_parameters()}
    grads["0.weights"] = grads.pop("0.weight")
    with pytest.raises(ValueError) as caught:
        adam_step(net, grads, None, None, 1)
    message = str(caught.value)
    assert "no entry for learnable '0.weight'" in message
    assert "given instead: '0.weights' (a misspelling of '0.weight'?)" in message


def test_misspelt_container_key_names_the_given_key() -> None:
    with pytest.raises(ValueError, match=r"grad\['fc1'\]: missing.*given instead: 'fc_1'"):
        adam_step({"fc1": np.ones(2)}, {"fc_1": np.ones(2)}, None, None, 1)


# --- the package is not the function -----------------------------------------------------------


def test_calling_the_package_says_what_to_import() -> None:
    with pytest.raises(TypeError, match=r"from adamupdate import adamupdate"):
        adamupdate(np.ones(2), np.ones(2), None, None, 1)  # type: ignore[operator]


def test_misspelt_package_attribute_suggests_the_name() -> None:
    with pytest.raises(AttributeError, match=r"did you mean 'learnables'"):
        adamupdate.learnable  # noqa: B018


# --- a clean public namespace (case 5) ----------------------------------------------------------


def test_dir_lists_only_public_names() -> None:
    names = dir(adamupdate)
    for private in ("Any", "annotations", "importlib", "sys", "types", "difflib", "_LAZY"):
        assert private not in names
    assert set(adamupdate.__all__) <= set(names)
    assert "__version__" in names
    assert all(not name.startswith("_") for name in names if name != "__version__")


def test_everything_in_all_resolves() -> None:
    for name in adamupdate.__all__:
        assert getattr(adamupdate, name) is not None
