"""``torch.nn.Module`` as MATLAB's ``dlnetwork``: network steps, Learnables tables, gradient
forms, learn-rate factors, validation, and agreement with ``torch.optim.Adam``.

``torch.optim.Adam`` computes MATLAB's step when its ``eps`` is set to ``eps/sqrt(1-b2^t)`` at
every step (docs/numerics.rst), and a learn-rate factor is a parameter group with ``lr*factor``; it
is an independent implementation to compare a whole training run against.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from adamupdate import adamupdate  # noqa: E402
from adamupdate import network as ann  # noqa: E402
from reference import container_type  # noqa: E402

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8


class Net(torch.nn.Module):
    """A small CNN with a nested layer name (``block.0``) and a frozen parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU())
        self.fc = torch.nn.Linear(6 * 4 * 4, 3)
        self.temperature = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(torch.relu(self.conv1(x)))
        return self.fc(torch.flatten(x, 1)) / self.temperature


LEARNABLES = [
    ("conv1", "weight"),
    ("conv1", "bias"),
    ("block.0", "weight"),
    ("block.0", "bias"),
    ("fc", "weight"),
    ("fc", "bias"),
]
NAMES = [f"{layer}.{parameter}" for layer, parameter in LEARNABLES]


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)


def loss_of(net: torch.nn.Module, seed: int) -> torch.Tensor:
    x, y = batch(seed)
    return torch.nn.functional.cross_entropy(net(x), y)


def snapshot(obj):
    """Deep clones of every tensor in a network, dict, list, table or tensor."""
    if isinstance(obj, torch.nn.Module):
        return {k: p.detach().clone() for k, p in obj.named_parameters()}
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [snapshot(v) for v in obj]
    if hasattr(obj, "columns"):  # a Learnables table
        return [snapshot(v) for v in obj["Value"]]
    raise AssertionError(type(obj))


def assert_identical(a, b, where="root") -> None:
    """Bit-identical tensors (same dtype, shape, values) in the same structure."""
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape)
        assert torch.equal(a, b), f"{where}: values differ"


def values(states, form: str) -> list[torch.Tensor]:
    if form == "table":
        return list(states["Value"])
    if form == "dict":
        return list(states.values())
    return list(states)


# --------------------------------------------------------------------------------------------
# The network step is the functional step
# --------------------------------------------------------------------------------------------


def test_learnables_table_lists_trainable_parameters_in_order():
    pytest.importorskip("pandas")
    net = make_net()
    table = ann.learnables(net)
    assert list(table.columns) == ["Layer", "Parameter", "Value"]
    assert list(zip(table["Layer"], table["Parameter"])) == LEARNABLES  # no "temperature"
    params = dict(net.named_parameters())
    for name, value in zip(NAMES, table["Value"]):
        assert value is params[name]  # the network's own tensors, not copies
    assert list(ann.learn_rate_factors(net)) == NAMES


def test_network_step_equals_functional_call_bitwise():
    net = make_net()
    params = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    m_net = v_net = m_fun = v_fun = None
    for t in range(1, 6):
        grads = ann.gradients(loss_of(net, t), net, form="dict")
        out, m_net, v_net = adamupdate(net, grads, m_net, v_net, t, LR, B1, B2, EPS)
        assert out is net
        grad_list = [g.clone() for g in grads.values()]
        params, m_fun, v_fun = adamupdate(params, grad_list, m_fun, v_fun, t, LR, B1, B2, EPS)
        learnable = [p.detach() for p in net.parameters() if p.requires_grad]
        assert_identical(learnable, params)
        assert_identical(list(m_net.values()), m_fun)
        assert_identical(list(v_net.values()), v_fun)
    # and it moved: five steps of 0.01 change every parameter
    assert all(not torch.equal(a, b) for a, b in zip(params, snapshot(make_net()).values()))


def test_fifty_steps_match_torch_optim_adam_with_per_group_learn_rates():
    """torch.optim.Adam with eps_t = eps/sqrt(1-b2^t) and lr*factor per group, 50 steps on a
    small CNN. Measured max |difference| of the parameters: 5.1e-7 (float32 rounding of two
    different operation orders, fed back through the gradients); tolerance 1e-6."""
    net, ref = make_net(), make_net()
    factors = {"conv1.weight": 0.5, "block.0.bias": 0.0, "fc.bias": 2.0}
    for name, factor in factors.items():
        ann.set_learn_rate_factor(net, *name.rsplit(".", 1), factor)
    learn = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(
        [{"params": [p], "lr": LR * factors.get(n, 1.0)} for n, p in learn],
        lr=LR,
        betas=(B1, B2),
        eps=EPS,
    )
    frozen_before = ref.block[0].bias.detach().clone()
    m = v = None
    worst = 0.0
    for t in range(1, 51):
        grads = ann.gradients(loss_of(net, t), net, form="dict")
        net, m, v = adamupdate(net, grads, m, v, t, LR, B1, B2, EPS)
        for group in opt.param_groups:
            group["eps"] = EPS / math.sqrt(1.0 - B2**t)
        opt.zero_grad()
        loss_of(ref, t).backward()
        opt.step()
        for p, q in zip(net.parameters(), ref.parameters()):
            worst = max(worst, (p - q).abs().max().item())
    assert worst <= 1e-6, worst
    # the frozen parameter did not move in either, its averages stayed MATLAB's scalar 0
    assert torch.equal(net.block[0].bias, frozen_before)
    assert torch.equal(ref.block[0].bias, frozen_before)
    assert m["block.0.bias"].shape == () and v["block.0.bias"].shape == ()
    # the averages agree with torch's exp_avg / exp_avg_sq where the parameter trains
    for name, q in learn:
        if factors.get(name, 1.0) == 0.0:
            continue
        state = opt.state[q]
        # (two operation orders fed back through the gradients: measured 2.4e-9 at worst)
        torch.testing.assert_close(m[name], state["exp_avg"], rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(v[name], state["exp_avg_sq"], rtol=1e-4, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Learn-rate factors
# --------------------------------------------------------------------------------------------


def test_factor_zero_freezes_parameter_and_both_averages():
    net = make_net()
    ann.set_learn_rate_factor(net, "fc", "bias", 0)
    assert ann.get_learn_rate_factor(net, "fc", "bias") == 0.0
    bias_before = net.fc.bias.detach().clone()
    m = v = None
    for t in range(1, 11):
        grads = ann.gradients(loss_of(net, t), net, form="dict")
        net, m, v = adamupdate(net, grads, m, v, t, LR, B1, B2, EPS)
        if t == 1:  # MATLAB's scalar 0: a 0-d zero of the parameter's dtype
            for state in (m["fc.bias"], v["fc.bias"]):
                assert state.shape == () and state.dtype == torch.float32
                assert state.item() == 0.0
            first = (m["fc.bias"].clone(), v["fc.bias"].clone())
    assert torch.equal(net.fc.bias, bias_before)
    assert_identical([m["fc.bias"], v["fc.bias"]], list(first))
    assert not torch.equal(net.fc.weight, make_net().fc.weight)  # the rest trained

    # frozen in mid-training: parameter and full-size averages stay bit-identical
    ann.set_learn_rate_factor(net, "conv1", "weight", 0.0)
    before = (
        net.conv1.weight.detach().clone(),
        m["conv1.weight"].clone(),
        v["conv1.weight"].clone(),
    )
    for t in range(11, 21):
        grads = ann.gradients(loss_of(net, t), net, form="dict")
        net, m, v = adamupdate(net, grads, m, v, t, LR, B1, B2, EPS)
    after = (net.conv1.weight.detach(), m["conv1.weight"], v["conv1.weight"])
    assert_identical(list(after), list(before))

    # unfrozen again: the scalar-0 averages grow to full size and the parameter moves
    ann.set_learn_rate_factor(net, "fc", "bias", 1.0)
    grads = ann.gradients(loss_of(net, 21), net, form="dict")
    net, m, v = adamupdate(net, grads, m, v, 21, LR, B1, B2, EPS)
    assert m["fc.bias"].shape == (3,) and v["fc.bias"].shape == (3,)
    assert not torch.equal(net.fc.bias, bias_before)


def test_factor_two_matches_functional_call_with_doubled_learn_rate():
    net = make_net()
    ann.set_layer_learn_rate_factors(net, "conv1", weight=2.0)
    assert ann.get_learn_rate_factor(net, "conv1", "weight") == 2.0
    assert ann.get_learn_rate_factor(net, "conv1", "bias") == 1.0
    w = net.conv1.weight.detach().clone()
    rest = [p.detach().clone() for n, p in net.named_parameters() if n in NAMES[1:]]
    mw = vw = mr = vr = m = v = None
    for t in range(1, 4):
        grads = ann.gradients(loss_of(net, t), net, form="list")
        w, mw, vw = adamupdate(w, grads[0].clone(), mw, vw, t, 2 * LR, B1, B2, EPS)
        rest, mr, vr = adamupdate(rest, [g.clone() for g in grads[1:]], mr, vr, t, LR, B1, B2, EPS)
        net, m, v = adamupdate(net, grads, m, v, t, LR, B1, B2, EPS)
        assert_identical([net.conv1.weight.detach(), m[0], v[0]], [w, mw, vw])
        learnables = [p.detach() for n, p in net.named_parameters() if n in NAMES[1:]]
        assert_identical(learnables, rest)
        assert_identical(m[1:], mr)


def test_set_learn_rate_factor_rejects_bad_layers_parameters_and_factors():
    net = make_net()
    with pytest.raises(ValueError, match="nope"):
        ann.set_learn_rate_factor(net, "nope", "weight", 1.0)
    with pytest.raises(ValueError, match="gamma"):
        ann.set_learn_rate_factor(net, "fc", "gamma", 1.0)
    with pytest.raises(ValueError, match="weight"):  # block has no parameter of its own
        ann.set_learn_rate_factor(net, "block", "weight", 1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises((ValueError, TypeError), match="factor"):
            ann.set_learn_rate_factor(net, "fc", "weight", bad)
    with pytest.raises(ValueError, match="nope"):
        ann.get_learn_rate_factor(net, "nope", "weight")
    with pytest.raises(ValueError):
        ann.set_learn_rate_factors(net, {"fc.gamma": 1.0})
    with pytest.raises(ValueError):
        ann.set_learn_rate_factor(net, torch.nn.Linear(2, 2), "weight", 1.0)
    # nothing was recorded by the failed calls
    assert ann.learn_rate_factors(net) == dict.fromkeys(NAMES, 1.0)
    # a layer may also be given as the module itself
    ann.set_learn_rate_factor(net, net.block[0], "bias", 3.0)
    assert ann.get_learn_rate_factor(net, "block.0", "bias") == 3.0


def test_factors_survive_deepcopy_and_whole_module_save_load():
    net = make_net()
    ann.set_learn_rate_factor(net, "fc", "weight", 0.0)
    ann.set_learn_rate_factor(net, "block.0", "bias", 0.25)
    expected = ann.learn_rate_factors(net)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(net)
    for other in (copied, loaded):
        assert ann.learn_rate_factors(other) == expected
    # the factors act: the three networks take identical steps, fc.weight stays frozen
    fc_before = net.fc.weight.detach().clone()
    results = []
    for model in (net, copied, loaded):
        m = v = None
        for t in range(1, 4):
            grads = ann.gradients(loss_of(model, t), model, form="dict")
            model, m, v = adamupdate(model, grads, m, v, t, LR, B1, B2, EPS)
        results.append(snapshot(model))
        assert torch.equal(model.fc.weight, fc_before)
    assert_identical(results[1], results[0])
    assert_identical(results[2], results[0])


def test_factors_round_trip_with_a_state_dict():
    net = make_net()
    ann.set_layer_learn_rate_factors(net, "fc", weight=0.5, bias=0.0)
    factors = ann.learn_rate_factors(net)
    assert factors == {**dict.fromkeys(NAMES, 1.0), "fc.weight": 0.5, "fc.bias": 0.0}
    state = net.state_dict()
    assert not any("learn_rate" in key for key in state)  # factors are not in the state_dict
    restored = make_net(seed=1)
    restored.load_state_dict(state)
    assert ann.learn_rate_factors(restored) == dict.fromkeys(NAMES, 1.0)
    ann.set_learn_rate_factors(restored, factors)
    assert ann.learn_rate_factors(restored) == factors
    results = []
    for model in (net, restored):
        grads = ann.gradients(loss_of(model, 1), model, form="dict")
        adamupdate(model, grads, None, None, 1, LR, B1, B2, EPS)
        results.append(snapshot(model))
    assert_identical(results[1], results[0])


# --------------------------------------------------------------------------------------------
# Gradient forms and tables
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["table", "dict", "list"])
def test_states_come_back_in_the_form_of_grad(form):
    pd = pytest.importorskip("pandas") if form == "table" else None
    net = make_net()
    reference = make_net()
    m_ref = v_ref = None
    m = v = None
    for t in range(1, 4):
        grads = ann.gradients(loss_of(net, t), net, form=form)
        net, m, v = adamupdate(net, grads, m, v, t, LR, B1, B2, EPS)
        for states in (m, v):
            if form == "table":
                assert isinstance(states, pd.DataFrame)
                assert list(states.columns) == ["Layer", "Parameter", "Value"]
                assert list(zip(states["Layer"], states["Parameter"])) == LEARNABLES
            elif form == "dict":
                assert container_type(states) is dict and list(states) == NAMES
            else:
                assert container_type(states) is list and len(states) == len(NAMES)
            learnable = [p for p in net.parameters() if p.requires_grad]
            for value, p in zip(values(states, form), learnable):
                assert isinstance(value, torch.Tensor) and value.shape == p.shape
        # every form takes the same step
        grads_ref = ann.gradients(loss_of(reference, t), reference, form="dict")
        reference, m_ref, v_ref = adamupdate(reference, grads_ref, m_ref, v_ref, t, LR, B1, B2, EPS)
        assert_identical(snapshot(net), snapshot(reference))
        assert_identical(values(m, form), list(m_ref.values()))
        assert_identical(values(v, form), list(v_ref.values()))


def test_gradients_match_autograd_and_leave_grad_attributes_alone():
    net = make_net()
    loss = loss_of(net, 0)
    grads = ann.gradients(loss, net, form="dict")
    assert net.fc.weight.grad is None
    loss_of(net, 0).backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=0)
    # a learnable the loss does not depend on gets a zero gradient (as in MATLAB)
    net2 = make_net()
    unused = net2.fc(torch.zeros(1, 96)).sum()
    grads2 = ann.gradients(unused, net2, form="list")
    assert torch.equal(grads2[0], torch.zeros_like(net2.conv1.weight))
    with pytest.raises(ValueError, match="form"):
        ann.gradients(loss_of(net2, 0), net2, form="tuple")


def test_learnables_table_round_trip_through_functional_update():
    pytest.importorskip("pandas")
    net = make_net()
    table = ann.learnables(net)
    detached = table.copy()
    detached["Value"] = [p.detach().clone() for p in table["Value"]]
    detached["Note"] = [f"row {i}" for i in range(len(detached))]  # an extra column
    grads = ann.gradients(loss_of(net, 1), net)  # a table, MATLAB's form
    new_table, m, v = adamupdate(detached, grads, None, None, 1, LR, B1, B2, EPS)
    net, _, _ = adamupdate(net, grads, None, None, 1, LR, B1, B2, EPS)
    assert list(new_table["Note"]) == list(detached["Note"])  # carried through untouched
    for states in (m, v):  # the averages mirror grad: a table with grad's Layer/Parameter
        assert list(zip(states["Layer"], states["Parameter"])) == LEARNABLES
        assert [x.shape for x in states["Value"]] == [x.shape for x in grads["Value"]]
    assert list(zip(new_table["Layer"], new_table["Parameter"])) == LEARNABLES
    params = dict(net.named_parameters())
    for (layer, parameter), value in zip(LEARNABLES, new_table["Value"]):
        assert torch.equal(value, params[f"{layer}.{parameter}"].detach())
    # the table taken before the step shows the updated values: it holds the network's tensors
    for value, name in zip(table["Value"], NAMES):
        assert value is params[name]
    # the input table was not modified
    for old, new in zip(detached["Value"], new_table["Value"]):
        assert not torch.equal(old, new)


def test_frozen_requires_grad_false_parameters_are_not_learnables():
    pytest.importorskip("pandas")
    net = make_net()
    net.fc.bias.requires_grad_(False)
    names = [n for n in NAMES if n != "fc.bias"]
    assert list(ann.learn_rate_factors(net)) == names
    table = ann.learnables(net)
    assert ("fc", "bias") not in set(zip(table["Layer"], table["Parameter"]))
    grads = ann.gradients(loss_of(net, 0), net, form="dict")
    assert list(grads) == names
    bias, temperature = net.fc.bias.detach().clone(), net.temperature.detach().clone()
    net, m, v = adamupdate(net, grads, None, None, 1, LR, B1, B2, EPS)
    assert list(m) == names and list(v) == names
    assert torch.equal(net.fc.bias, bias) and torch.equal(net.temperature, temperature)
    assert not torch.equal(net.fc.weight, make_net().fc.weight)


# --------------------------------------------------------------------------------------------
# Bad grads and states: an error naming layer and parameter, and nothing changed
# --------------------------------------------------------------------------------------------


def _bad_table(kind: str, net: Net):
    table = ann.gradients(loss_of(net, 5), net, form="table")
    if kind == "missing row":
        return table.iloc[:-1].reset_index(drop=True), ["fc", "bias"]
    if kind == "extra row":
        extra = table.iloc[[5]].copy()
        extra["Parameter"] = "gain"
        return pd_concat([table, extra]), ["fc", "gain"]
    if kind == "wrong order":
        order = [0, 1, 3, 2, 4, 5]  # block.0 bias before weight
        return table.iloc[order].reset_index(drop=True), ["block.0", "weight", "bias"]
    if kind == "shape mismatch":
        table.at[4, "Value"] = table.at[4, "Value"].T.contiguous()
        return table, ["fc", "weight"]
    raise AssertionError(kind)


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _bad_dict(kind: str, net: Net):
    grads = ann.gradients(loss_of(net, 5), net, form="dict")
    if kind == "missing key":
        del grads["block.0.bias"]
        return grads, ["block.0", "bias"]
    if kind == "non-learnable named":
        grads["temperature"] = torch.zeros(())
        return grads, ["temperature"]
    if kind == "shape mismatch":
        grads["fc.bias"] = torch.zeros(4)
        return grads, ["fc", "bias"]
    if kind == "wrong dtype":
        grads["fc.bias"] = grads["fc.bias"].to(torch.int32)  # another float one is converted
        return grads, ["fc", "bias"]
    if kind == "numpy leaf":
        grads["fc.bias"] = grads["fc.bias"].numpy()
        return grads, ["fc", "bias"]
    raise AssertionError(kind)


BAD = [("table", k) for k in ("missing row", "extra row", "wrong order", "shape mismatch")] + [
    ("dict", k)
    for k in ("missing key", "non-learnable named", "shape mismatch", "wrong dtype", "numpy leaf")
]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize(("form", "kind"), BAD)
def test_bad_grad_names_layer_and_parameter_and_changes_nothing(form, kind, inplace):
    if form == "table":
        pytest.importorskip("pandas")
    net = make_net()
    grads = ann.gradients(loss_of(net, 1), net, form="list")
    net, m, v = adamupdate(net, grads, None, None, 1, LR, B1, B2, EPS)  # states to protect
    bad, words = (_bad_table if form == "table" else _bad_dict)(kind, net)
    before = (snapshot(net), snapshot(m), snapshot(v))
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(net, bad, m, v, 2, LR, B1, B2, EPS, inplace=inplace)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert_identical(snapshot(net), before[0])
    assert_identical(snapshot(m), before[1])
    assert_identical(snapshot(v), before[2])


@pytest.mark.parametrize("argument", ["avg_grad", "avg_sq_grad"])
def test_bad_state_names_argument_layer_and_parameter_and_changes_nothing(argument):
    net = make_net()
    grads = ann.gradients(loss_of(net, 1), net, form="dict")
    net, m, v = adamupdate(net, grads, None, None, 1, LR, B1, B2, EPS)
    states = {"avg_grad": dict(m), "avg_sq_grad": dict(v)}
    states[argument]["fc.bias"] = torch.zeros(5)  # the last learnable: all others come first
    before = (snapshot(net), snapshot(m), snapshot(v))
    with pytest.raises(ValueError) as info:
        adamupdate(net, grads, states["avg_grad"], states["avg_sq_grad"], 2, inplace=True)
    message = str(info.value)
    assert argument in message and "fc" in message and "bias" in message, message
    assert_identical(snapshot(net), before[0])
    assert_identical(snapshot(m), before[1])
    assert_identical(snapshot(v), before[2])
    with pytest.raises(ValueError, match="entries"):  # a list of the wrong length
        adamupdate(net, list(grads.values())[:-1], None, None, 2)
    assert_identical(snapshot(net), before[0])


def test_network_inplace_states_are_reused_and_parameters_keep_their_storage():
    net = make_net()
    pointers = [p.data_ptr() for p in net.parameters()]
    params = list(net.parameters())
    grads = ann.gradients(loss_of(net, 1), net, form="dict")
    net, m, v = adamupdate(net, grads, None, None, 1, LR, inplace=True)
    for t in range(2, 5):
        grads = ann.gradients(loss_of(net, t), net, form="dict")
        m_pointers = [x.data_ptr() for x in m.values()]
        _, m2, v2 = adamupdate(net, grads, m, v, t, LR, inplace=True)
        assert [x.data_ptr() for x in m2.values()] == m_pointers
        assert all(a is b for a, b in zip(m2.values(), m.values()))
        assert all(a is b for a, b in zip(v2.values(), v.values()))
        m, v = m2, v2
    assert [p.data_ptr() for p in net.parameters()] == pointers
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert all(isinstance(p, torch.nn.Parameter) and p.grad_fn is None for p in params)
    # default arguments: the averages the last call returned are this library's own buffers
    # and are updated in place again (as torch.optim keeps its state)...
    grads = ann.gradients(loss_of(net, 9), net, form="dict")
    m_pointers = [x.data_ptr() for x in m.values()]
    _, m2, v2 = adamupdate(net, grads, m, v, 5, LR)
    assert m2 is m and v2 is v and [x.data_ptr() for x in m.values()] == m_pointers
    # ...while averages from anywhere else are never written: copies come back
    mine_m, mine_v = ({k: x.clone() for k, x in s.items()} for s in (m, v))
    m_before = snapshot(mine_m)
    _, m3, _ = adamupdate(net, grads, mine_m, mine_v, 6, LR)
    assert_identical(snapshot(mine_m), m_before)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(m3.values(), mine_m.values()))
    assert np.isfinite(sum(float(x.sum()) for x in m3.values()))
