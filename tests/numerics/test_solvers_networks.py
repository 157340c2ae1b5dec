"""``sgdmupdate``, ``rmspropupdate`` and ``dlupdate`` on ``torch.nn.Module`` networks and
containers: a network call equals the functional call bitwise, states are kept in place,
learn-rate factors apply, and ``dlupdate`` runs a user's function over every learnable (MATLAB's
SGDM written as a function, checked against the float64 reference).
"""

from __future__ import annotations

import numpy as np
import pytest

import solver_reference as ref
from adamupdate import dlupdate, sgdmupdate
from solver_helpers import (
    LEAF_SHAPES,
    NET_NAMES,
    RMSPROP,
    SGDM,
    SOLVERS,
    as_form,
    assert_same_bits,
    bits,
    check_container,
    flat,
    leaves_of,
    make_net,
    nest,
    net_grads,
    reference,
    snapshot,
    update,
)

# --------------------------------------------------------------------------------------------
# 4. Networks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dict", "list", "table"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_network_equals_functional_call_bitwise(solver, form):
    net = make_net()
    plist = [p.detach().clone() for p in net.parameters()]
    state = fstate = None
    for t in range(3):
        grads = net_grads(net, seed=t)
        previous = state
        out, state = update(solver, net, as_form(grads, form), state)
        assert out is net
        plist, fstate = update(solver, plist, [grads[n] for n in NET_NAMES], fstate)
        now = dict(net.named_parameters())
        for i, name in enumerate(NET_NAMES):
            assert_same_bits(now[name].detach(), plist[i], f"step {t + 1}: {name}")
        for i, leaf in enumerate(leaves_of(state, form)):
            assert_same_bits(leaf, fstate[i], f"step {t + 1}: state {NET_NAMES[i]}")
        if previous is not None:  # the returned states are reused in place
            assert state is previous
    # ... and the values are right
    p0 = [p.detach().clone() for p in make_net().parameters()]
    g = [[net_grads(net, seed=t)[n] for n in NET_NAMES] for t in range(3)]
    for i, name in enumerate(NET_NAMES):
        run = reference(solver, p0[i], [step[i] for step in g], "float32")
        ref.assert_close(
            dict(net.named_parameters())[name].detach(), run.p, run.p_bound, "float32", name
        )


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_states_reused_in_place(solver):
    net = make_net()
    _, state = update(solver, net, net_grads(net, 0), None)
    leaves = [state[n] for n in NET_NAMES]
    addresses = [x.data_ptr() for x in leaves]
    before = [x.clone() for x in leaves]
    for t in (1, 2):
        _, new = update(solver, net, net_grads(net, t), state)
        assert new is state
        assert all(new[n] is x for n, x in zip(NET_NAMES, leaves))
        assert [new[n].data_ptr() for n in NET_NAMES] == addresses
    # ... and actually updated
    assert any(not torch_equal(a, b) for a, b in zip(leaves, before))


def torch_equal(a, b) -> bool:
    return bool(np.array_equal(bits(a.detach()), bits(b.detach())))


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_user_states_are_never_written(solver):
    torch = pytest.importorskip("torch")
    net = make_net()
    gen = torch.Generator().manual_seed(3)
    mine = {
        n: (torch.rand if solver == "rmsprop" else torch.randn)(p.shape, generator=gen)
        for n, p in net.named_parameters()
    }
    kept = {n: x.clone() for n, x in mine.items()}
    plist = [p.detach().clone() for p in net.parameters()]
    fl = [mine[n].clone() for n in NET_NAMES]
    _, state = update(solver, net, net_grads(net, 0), mine)
    plist, fl = update(solver, plist, [net_grads(net, 0)[n] for n in NET_NAMES], fl)
    assert all(state[n] is not mine[n] for n in NET_NAMES)
    for n in NET_NAMES:
        assert_same_bits(mine[n], kept[n], f"user state {n} after call 1")
    _, state = update(solver, net, net_grads(net, 1), state)
    plist, fl = update(solver, plist, [net_grads(net, 1)[n] for n in NET_NAMES], fl)
    for i, n in enumerate(NET_NAMES):
        assert_same_bits(mine[n], kept[n], f"user state {n} after call 2")
        assert_same_bits(state[n], fl[i], f"state {n}")
        assert_same_bits(dict(net.named_parameters())[n].detach(), plist[i], f"param {n}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_zero_freezes_parameter_and_state(solver):
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "0", "weight", 0)
    frozen = net[0].weight.detach().clone()
    plist = [p.detach().clone() for p in net.parameters()]
    state = fstate = None
    for t in range(3):
        grads = net_grads(net, t)
        _, state = update(solver, net, grads, state)
        assert_same_bits(net[0].weight.detach(), frozen, f"frozen weight, step {t + 1}")
        s = state["0.weight"]
        assert tuple(s.shape) == () and float(s) == 0.0, s  # MATLAB's scalar-0 state
        # The others move as the functional call on them alone.
        rest = [1, 2, 3]
        sub, fstate = update(
            solver, [plist[i] for i in rest], [grads[NET_NAMES[i]] for i in rest], fstate
        )
        for k, i in enumerate(rest):
            plist[i] = sub[k]
            assert_same_bits(
                dict(net.named_parameters())[NET_NAMES[i]].detach(), sub[k], NET_NAMES[i]
            )
            assert_same_bits(state[NET_NAMES[i]], fstate[k], f"state {NET_NAMES[i]}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_zero_keeps_a_given_state(solver):
    torch = pytest.importorskip("torch")
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "2", "bias", 0.0)
    frozen = net[2].bias.detach().clone()
    given = {n: torch.full_like(p, 0.25) for n, p in net.named_parameters()}
    _, state = update(solver, net, net_grads(net, 0), given)
    _, state = update(solver, net, net_grads(net, 1), state)
    assert_same_bits(net[2].bias.detach(), frozen, "frozen bias")
    assert_same_bits(state["2.bias"], torch.full((2,), 0.25), "frozen bias state")
    assert_same_bits(given["2.bias"], torch.full((2,), 0.25), "the user's state")


@pytest.mark.parametrize("solver", SOLVERS)
def test_network_factor_two_is_twice_the_learn_rate(solver):
    from adamupdate.network import set_layer_learn_rate_factors

    net = make_net()
    set_layer_learn_rate_factors(net, "2", weight=2.0, bias=2.0)
    plist = [p.detach().clone() for p in net.parameters()]
    lr = SGDM["learn_rate"] if solver == "sgdm" else RMSPROP["learn_rate"]
    state = s1 = s2 = None
    for t in range(3):
        grads = net_grads(net, t)
        _, state = update(solver, net, grads, state)
        a, s1 = update(solver, plist[:2], [grads[n] for n in NET_NAMES[:2]], s1)
        b, s2 = update(solver, plist[2:], [grads[n] for n in NET_NAMES[2:]], s2, learn_rate=2 * lr)
        plist = [*a, *b]
        now = dict(net.named_parameters())
        for i, n in enumerate(NET_NAMES):
            assert_same_bits(now[n].detach(), plist[i], f"step {t + 1}: {n}")
            assert_same_bits(state[n], [*s1, *s2][i], f"step {t + 1}: state {n}")
    # and against the reference at 2·lr
    p0 = [p.detach().clone() for p in make_net().parameters()]
    g = [[net_grads(net, t)[n] for n in NET_NAMES] for t in range(3)]
    run = reference(solver, p0[3], [step[3] for step in g], "float32", learn_rate=2 * lr)
    ref.assert_close(net[2].bias.detach(), run.p, run.p_bound, "float32", "2.bias")


def test_network_grads_from_autograd_table():
    """grads as MATLAB's dlgradient table, computed by adamupdate.network.gradients."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pandas")
    from adamupdate.network import gradients

    net = make_net()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    loss = net(x).square().sum()
    table = gradients(loss, net)
    glist = [g.clone() for g in gradients(net(x).square().sum(), net, form="list")]
    plist = [p.detach().clone() for p in net.parameters()]
    _, vel = sgdmupdate(net, table, None, 0.01, 0.9)
    plist, fvel = sgdmupdate(plist, glist, None, 0.01, 0.9)
    for i, leaf in enumerate(leaves_of(vel, "table")):
        assert_same_bits(leaf, fvel[i], NET_NAMES[i])
        assert_same_bits(list(net.parameters())[i].detach(), plist[i], NET_NAMES[i])


# --------------------------------------------------------------------------------------------
# 5. dlupdate
# --------------------------------------------------------------------------------------------


def sgdm_fun(lr, gamma):
    """MATLAB's SGDM written as a dlupdate function, with a [] first state."""

    def fun(p, g, v):
        v = 0.0 - lr * g if v is None else gamma * v - lr * g
        return p + v, v

    return fun


def test_dlupdate_one_output_nested_containers():
    rng = np.random.default_rng(0)
    params = nest([rng.standard_normal(s) for s in LEAF_SHAPES])
    grads = nest([rng.standard_normal(s) for s in LEAF_SHAPES])
    out = dlupdate(lambda p, g: p - 0.1 * g, params, grads)
    check_container(out, lambda leaf, shape: None)
    for p, g, o in zip(flat(params), flat(grads), flat(out)):
        o = np.asarray(o)
        assert o.shape == np.shape(p)
        want = [pi - 0.1 * gi for pi, gi in zip(np.ravel(p).tolist(), np.ravel(g).tolist())]
        assert_same_bits(o, np.array(want).reshape(np.shape(p)), "p - 0.1 g")


def test_dlupdate_several_outputs_with_none_state_matches_reference():
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(s) for s in LEAF_SHAPES]
    grads = [[rng.standard_normal(s) for s in LEAF_SHAPES] for _ in range(5)]
    params, vel = nest(p0), None
    for step in grads:
        params, vel = dlupdate(sgdm_fun(0.05, 0.9), params, nest(step), vel)
        check_container(params, lambda leaf, shape: None)
        check_container(vel, lambda leaf, shape: None)
    for i in range(len(LEAF_SHAPES)):
        run = ref.sgdm(p0[i], [g[i] for g in grads], 0.05, 0.9)
        ref.assert_close(flat(params)[i], run.p, run.p_bound, "float64", f"p{i}")
        ref.assert_close(flat(vel)[i], run.state, run.state_bound, "float64", f"vel{i}")


def test_dlupdate_passes_none_for_none_args():
    seen = []

    def fun(p, a, b):
        seen.append((a is None, b is None))
        return p * 2

    out = dlupdate(fun, [np.ones(2), np.ones(3)], None, [np.zeros(2), np.zeros(3)])
    assert seen == [(True, False), (True, False)]
    assert [o.tolist() for o in out] == [[2.0, 2.0], [2.0, 2.0, 2.0]]


def test_dlupdate_on_a_table():
    pd = pytest.importorskip("pandas")
    values = [np.array([1.0, 2.0]), np.array([[3.0]]), np.array([-1.0, 0.5, 4.0])]
    grads = [np.array([0.5, -1.0]), np.array([[2.0]]), np.array([1.0, 1.0, -2.0])]

    def table(vals):
        frame = pd.DataFrame({"Layer": ["fc1", "fc1", "fc2"], "Parameter": ["W", "b", "W"]})
        frame["Value"] = pd.Series(vals, index=frame.index, dtype=object)
        return frame

    out = dlupdate(lambda p, g: p - 0.5 * g, table(values), table(grads))
    assert list(out["Layer"]) == ["fc1", "fc1", "fc2"]
    assert list(out["Parameter"]) == ["W", "b", "W"]
    for o, p, g in zip(out["Value"], values, grads):
        assert_same_bits(o, p - 0.5 * g, "table value")
    new, vel = dlupdate(sgdm_fun(0.1, 0.9), table(values), table(grads), None)
    for frame in (new, vel):
        assert list(frame["Layer"]) == ["fc1", "fc1", "fc2"]
        assert list(frame["Parameter"]) == ["W", "b", "W"]
    for v, g in zip(vel["Value"], grads):
        assert_same_bits(v, 0.0 - 0.1 * g, "vel value")
    # The input table was not changed.
    for o, p in zip(table(values)["Value"], values):
        assert_same_bits(o, p, "input table")


@pytest.mark.parametrize("form", ["dict", "list", "table"])
def test_dlupdate_network_updates_in_place_and_mirrors_grads(form):
    net = make_net()
    objects = list(net.parameters())
    p0 = snapshot(net)
    grads = net_grads(net, 0)
    out, vel = dlupdate(sgdm_fun(0.05, 0.9), net, as_form(grads, form), None)
    assert out is net
    assert list(net.parameters()) == objects and all(
        a is b for a, b in zip(net.parameters(), objects)
    )
    vels = leaves_of(vel, form)
    for i, n in enumerate(NET_NAMES):
        run = ref.sgdm(p0[n], [grads[n]], 0.05, 0.9, dtype_name="float32")
        ref.assert_close(dict(net.named_parameters())[n].detach(), run.p, run.p_bound, "float32", n)
        ref.assert_close(vels[i], run.state, run.state_bound, "float32", f"vel {n}")
        assert not vels[i].requires_grad
    # A second call with the extra outputs as state.
    grads2 = net_grads(net, 1)
    _, vel2 = dlupdate(sgdm_fun(0.05, 0.9), net, as_form(grads2, form), vel)
    for i, n in enumerate(NET_NAMES):
        run = ref.sgdm(p0[n], [grads[n], grads2[n]], 0.05, 0.9, dtype_name="float32")
        ref.assert_close(dict(net.named_parameters())[n].detach(), run.p, run.p_bound, "float32", n)
        ref.assert_close(leaves_of(vel2, form)[i], run.state, run.state_bound, "float32", n)


def test_dlupdate_network_one_output_learn_rate_factors_do_not_apply():
    from adamupdate.network import set_learn_rate_factor

    net = make_net()
    set_learn_rate_factor(net, "0", "weight", 0)
    p0 = snapshot(net)
    grads = net_grads(net, 0)
    out = dlupdate(lambda p, g: p - 0.5 * g, net, grads)
    assert out is net
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n] - 0.5 * grads[n], n)


def test_dlupdate_exception_inside_fun_changes_nothing():
    net = make_net()
    p0 = snapshot(net)
    calls = []

    def fun(p, g):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in fun")
        return p - g

    with pytest.raises(RuntimeError, match="boom in fun"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)
    # containers: inputs untouched as well
    params = [np.ones(2), np.ones(3), np.ones(1)]
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        dlupdate(fun, params, [np.ones(2), np.ones(3), np.ones(1)])
    assert all(np.all(p == 1.0) for p in params)


def test_dlupdate_network_wrong_shape_output_changes_nothing():
    torch = pytest.importorskip("torch")
    net = make_net()
    p0 = snapshot(net)

    def fun(p, g):
        return torch.zeros(7) if p.shape == (2,) else p - g

    with pytest.raises(ValueError, match=r"'2\.bias'"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)


def test_dlupdate_mismatched_output_counts_raise():
    count = iter([2, 3, 2, 2])

    def fun(p, g):
        k = next(count)
        return (p - g,) + (g,) * (k - 1)

    with pytest.raises(ValueError, match="outputs"):
        dlupdate(fun, [np.ones(2), np.ones(2), np.ones(2)], [np.ones(2)] * 3)

    net = make_net()
    p0 = snapshot(net)
    count = iter([2, 2, 1, 2])
    with pytest.raises(ValueError, match="outputs"):
        dlupdate(fun, net, net_grads(net, 0))
    for n, p in net.named_parameters():
        assert_same_bits(p.detach(), p0[n], n)
