"""A network's averages (adamupdate.network): its own, updated in place; everyone else's, copied.

Every call is checked from scratch (adamupdate._plan); what a network call keeps is its walk
over the modules, in the averages it returns (``_adamupdate_receipt``), re-checked against the
network on the next call. So the next network call updates those averages where they are (as
torch.optim keeps its state), while averages from anywhere else — a checkpoint, a copy, a
pickle — are stepped as copies and never written, unless ``inplace=True``. Learn-rate factors
changed between calls take effect at once, and nothing keeps a discarded network alive.
"""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest

from adamupdate import adamupdate

torch = pytest.importorskip("torch")

PLAIN = {"list": list, "tuple": tuple, "dict": dict}


def _values(container):
    return list(container.values()) if isinstance(container, dict) else list(container)


def _bits(x):
    x = x.detach().numpy()
    return x.dtype, x.shape, x.tobytes()


# --- networks --------------------------------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _grads(net, t, form="dict"):
    from adamupdate import network

    g = torch.Generator().manual_seed(t)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    loss = torch.nn.functional.mse_loss(net(x), y)
    grads = network.gradients(loss, net, form="dict")
    return grads if form == "dict" else PLAIN[form](grads.values())


def test_a_network_updates_its_own_averages_in_place():
    """From the second call on, the averages a network call returned are updated where they
    are: the same containers holding the same tensors in the same memory, with new values —
    the values of the functional twin's step."""
    net = _net()
    params = {k: p.detach().clone() for k, p in net.named_parameters()}  # the functional twin
    m = v = m2 = v2 = None
    for t in range(1, 11):
        g = _grads(net, t)
        if t > 1:
            previous = (m, v, dict(m), {k: x.data_ptr() for k, x in m.items()})
            values = m["0.weight"].clone()
        result, m, v = adamupdate(net, g, m, v, t, learn_rate=0.01)
        assert result is net and isinstance(m, dict) and isinstance(v, dict)
        if t > 1:
            assert m is previous[0] and v is previous[1]
            assert all(m[k] is previous[2][k] for k in m)
            assert {k: x.data_ptr() for k, x in m.items()} == previous[3]
            assert not torch.equal(m["0.weight"], values)
        params, m2, v2 = adamupdate(params, g, m2, v2, t, learn_rate=0.01)
        for k, p in net.named_parameters():
            assert torch.equal(p.detach(), params[k]), (t, k)
            assert torch.equal(m[k], m2[k]) and torch.equal(v[k], v2[k]), (t, k)


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_a_networks_averages_from_elsewhere_are_copied_unless_in_place(inplace):
    """Averages the network call did not return (a checkpoint's) are stepped as copies and never
    written — unless ``inplace=True``, which updates them where they are. Either way the step is
    the functional twin's, and the averages returned are updated in place from then on."""
    net = _net()
    m = v = None
    for t in (1, 2, 3):
        _, m, v = adamupdate(net, _grads(net, t), m, v, t)
    loaded = [{k: x.clone() for k, x in state.items()} for state in (m, v)]  # a checkpoint's
    kept = [{k: x.clone() for k, x in state.items()} for state in loaded]
    twin = {k: p.detach().clone() for k, p in net.named_parameters()}
    twin, *twin_states = adamupdate(twin, _grads(net, 4), *kept, 4)
    _, m4, v4 = adamupdate(net, _grads(net, 4), *loaded, 4, inplace=inplace)
    for state, given, want in zip((m4, v4), loaded, twin_states):
        for k in given:
            assert torch.equal(state[k], want[k])
            assert (state[k] is given[k]) is inplace
            assert (state[k].data_ptr() == given[k].data_ptr()) is inplace
    if not inplace:
        assert all(
            torch.equal(a, b) for x, y in zip(loaded, kept) for a, b in zip(x.values(), y.values())
        )
    for k, p in net.named_parameters():
        assert torch.equal(p.detach(), twin[k])
    pointers = {k: x.data_ptr() for k, x in m4.items()}
    _, m5, v5 = adamupdate(net, _grads(net, 5), m4, v4, 5)
    assert m5 is m4 and v5 is v4 and {k: x.data_ptr() for k, x in m5.items()} == pointers


@pytest.mark.parametrize("form", list(PLAIN))
@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_of_a_networks_averages_are_plain_and_someone_elses(form, duplicate):
    """A copy or a pickle of a network's averages is a plain container of the gradients' form,
    with nothing attached. Passed back, it is someone else's: stepped as copies, its tensors
    never written (a shallow copy's are the original's), and the step is the one the original
    averages give — which are updated in place."""
    net = _net()
    m = v = None
    for t in (1, 2):
        _, m, v = adamupdate(net, _grads(net, t, form), m, v, t)
    assert isinstance(m, PLAIN[form]) and hasattr(m, "_adamupdate_receipt")
    m2, v2 = duplicate(m), duplicate(v)
    for state, original in ((m2, m), (v2, v)):
        assert type(state) is PLAIN[form]
        assert not hasattr(state, "_adamupdate_receipt")
        assert all(torch.equal(a, b) for a, b in zip(_values(state), _values(original)))
    start = {k: p.detach().clone() for k, p in net.named_parameters()}
    before = [_bits(x) for state in (m2, v2) for x in _values(state)]
    g = _grads(net, 3, form)
    _, m_b, v_b = adamupdate(net, g, m2, v2, 3)  # someone else's
    assert [_bits(x) for state in (m2, v2) for x in _values(state)] == before
    given = {id(x) for state in (m, v, m2, v2) for x in _values(state)}
    assert not given & {id(x) for state in (m_b, v_b) for x in _values(state)}
    copied = [_bits(x) for x in (*net.parameters(), *_values(m_b), *_values(v_b))]
    with torch.no_grad():  # back to the start, in the same parameter objects
        for k, p in net.named_parameters():
            p.copy_(start[k])
    _, m_a, v_a = adamupdate(net, g, m, v, 3)  # the network's own
    assert m_a is m and v_a is v
    assert [_bits(x) for x in (*net.parameters(), *_values(m_a), *_values(v_a))] == copied


def test_a_learn_rate_factor_changed_mid_training_takes_effect_at_once():
    """A factor set between steps applies from the next step; a factor 0 freezes the
    parameter and both its averages. Against per-parameter functional calls with
    learn_rate * factor."""
    from adamupdate import network

    lr = 0.01
    net = _net()
    twin = {k: p.detach().clone() for k, p in net.named_parameters()}
    twin_m, twin_v = dict.fromkeys(twin), dict.fromkeys(twin)
    factors = dict.fromkeys(twin, 1.0)
    m = v = None
    for t in range(1, 11):
        if t == 4:
            network.set_learn_rate_factor(net, "0", "weight", 0.5)
            factors["0.weight"] = 0.5
        if t == 7:
            network.set_learn_rate_factor(net, "2", "bias", 0)
            factors["2.bias"] = 0.0
            frozen = (net[2].bias.detach().clone(), m["2.bias"].clone(), v["2.bias"].clone())
        g = _grads(net, t)
        _, m, v = adamupdate(net, g, m, v, t, learn_rate=lr)
        for k in twin:
            if factors[k]:
                twin[k], twin_m[k], twin_v[k] = adamupdate(
                    twin[k], g[k], twin_m[k], twin_v[k], t, learn_rate=lr * factors[k]
                )
        for k, p in net.named_parameters():
            assert torch.equal(p.detach(), twin[k]), (t, k)
            assert torch.equal(m[k], twin_m[k]) and torch.equal(v[k], twin_v[k]), (t, k)
    assert torch.equal(net[2].bias.detach(), frozen[0])
    assert torch.equal(m["2.bias"], frozen[1]) and torch.equal(v["2.bias"], frozen[2])
    assert not torch.equal(net[2].weight.detach(), _net()[2].weight.detach())


def test_nothing_holds_a_discarded_network():
    """The averages refer to their network (to re-use its walk); nothing else does: once the
    caller drops the network and its averages, both are freed."""
    net = _net()
    m = v = None
    for t in (1, 2, 3):
        result, m, v = adamupdate(net, _grads(net, t), m, v, t)
    watch = [weakref.ref(x) for x in (net, net[0].weight, m["0.weight"], v["2.bias"])]
    del net, result, m, v
    gc.collect()
    assert [w() for w in watch] == [None] * len(watch)


def test_the_first_release_name_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("adamupdate.nn", None)
    with pytest.warns(DeprecationWarning, match=r"adamupdate\.network"):
        old = importlib.import_module("adamupdate.nn")
    from adamupdate import network

    assert old.set_learn_rate_factor is network.set_learn_rate_factor
