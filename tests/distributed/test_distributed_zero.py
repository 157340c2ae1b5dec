"""ZeRO-1 (:class:`adamupdate.distributed.ZeroAdamupdate`): the averages partitioned across ranks.

Two gloo processes train the same network under DDP twice, once with ``adamupdate(net, ...)``
and once with ZeRO-1 (learn-rate factors 0 and 0.5 included, a parameter split between the
ranks): parameters and averages must be bitwise equal, and each rank must hold half of the
averages. The ZeRO state saved with ``torch.distributed.checkpoint`` at world 2 must load at
world 1 (DCP reshards the flat slices). Single-process tests cover the rest of the API.
"""

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import distributed_worker as worker  # noqa: E402
from adamupdate import adamupdate, set_learn_rate_factor  # noqa: E402
from adamupdate.distributed import ZeroAdamupdate  # noqa: E402
from test_distributed import assert_bitwise, bits  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    worker.launch("zero", root, world=2)
    worker.launch("zero-reload", root, world=1)
    return torch.load(root / "zero.pt"), torch.load(root / "zero-reload.pt")


def expanded(result: dict) -> dict:
    """MATLAB's scalar-0 averages of a frozen parameter at its parameter's shape (ZeRO keeps
    every element's average in its flat buffer)."""
    out = {"params": result["params"]}
    for part in ("m", "v"):
        out[part] = {
            name: x.expand_as(result["params"][name]).contiguous()
            for name, x in result[part].items()
        }
    return out


def test_zero_equals_unpartitioned_ddp_bitwise(runs):
    zero, _ = runs
    assert_bitwise(zero["zero"], expanded(zero["plain"]))


def test_each_rank_holds_its_share_of_the_averages(runs):
    zero, _ = runs
    values = sum(p.numel() for p in zero["plain"]["params"].values())
    assert values == 218
    assert zero["unpartitioned_state_bytes"] == 218 * 2 * 4
    assert zero["state_bytes"] == [109 * 2 * 4, 109 * 2 * 4]  # 218 = 2 x 109
    # the network form keeps a frozen parameter's averages as scalars: 3 values fewer, +1
    assert zero["plain_state_bytes"] == (218 - 3 + 1) * 2 * 4


def test_zero_checkpoint_reloads_at_another_world_size(runs):
    zero, reloaded = runs
    assert not reloaded["fresh"]
    assert_bitwise(reloaded["reloaded"], zero["zero"])


# --- one process -------------------------------------------------------------------------------


def make_net() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))


@pytest.mark.parametrize("form", ["dict", "list", "grad-attribute"])
def test_one_process_equals_the_network_form_with_factors(form):
    reference, net = make_net(), make_net()
    for n in (reference, net):
        set_learn_rate_factor(n, "0", "bias", 0.0)
        set_learn_rate_factor(n, "2", "weight", 3.0)
    zero = ZeroAdamupdate(net)
    m = v = None
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 5):
        grads = {name: torch.randn(p.shape, generator=gen) for name, p in net.named_parameters()}
        reference, m, v = adamupdate(reference, grads, m, v, t, 0.01)
        if form == "dict":
            zero.step(grads, t, 0.01)
        elif form == "list":
            zero.step(list(grads.values()), t, 0.01)
        else:
            for name, p in net.named_parameters():
                p.grad = grads[name]
            zero.step(None, t, 0.01)
    zero_m, zero_v = zero.averages()
    got = {"params": dict(net.named_parameters()), "m": zero_m, "v": zero_v}
    want = {"params": dict(reference.named_parameters()), "m": m, "v": v}
    assert_bitwise(
        {k: {n: x.detach() for n, x in d.items()} for k, d in got.items()},
        expanded({k: {n: x.detach() for n, x in d.items()} for k, d in want.items()}),
    )


def test_factors_changed_between_steps_are_followed():
    reference, net = make_net(), make_net()
    zero = ZeroAdamupdate(net)
    m = v = None
    for t in range(1, 4):
        if t == 2:
            for n in (reference, net):
                set_learn_rate_factor(n, "2", "bias", 0.0)
        grads = {name: torch.full_like(p, 0.1 * t) for name, p in net.named_parameters()}
        reference, m, v = adamupdate(reference, grads, m, v, t, 0.1)
        zero.step(grads, t, 0.1)
    for (name, p), q in zip(reference.named_parameters(), net.parameters()):
        assert torch.equal(bits(p.detach()), bits(q.detach())), name


def test_parameters_become_views_of_one_buffer_per_dtype():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2).double())
    values = [p.detach().clone() for p in net.parameters()]
    zero = ZeroAdamupdate(net)
    for p, value in zip(net.parameters(), values):
        assert torch.equal(p.detach(), value)
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert len(storages) == 2  # float32 and float64
    assert zero.state_bytes == zero.unpartitioned_state_bytes == 12 * 2 * 4 + 8 * 2 * 8


def test_half_parameters_keep_float32_averages_and_load_averages_round_trips():
    net = torch.nn.Linear(4, 4).to(torch.bfloat16)
    zero = ZeroAdamupdate(net)
    assert zero.state_bytes == 20 * 2 * 4  # float32 averages, as adamupdate keeps them
    grads = {name: torch.ones_like(p) for name, p in net.named_parameters()}
    zero.step(grads, 1, 0.01)
    m, v = zero.averages()
    assert m["weight"].dtype == torch.float32
    other = ZeroAdamupdate(torch.nn.Linear(4, 4).to(torch.bfloat16))
    other.load_averages(m, v)
    m2, v2 = other.averages()
    assert all(torch.equal(m[k], m2[k]) and torch.equal(v[k], v2[k]) for k in m)


def test_state_dict_round_trip_in_one_process():
    net = make_net()
    zero = ZeroAdamupdate(net)
    grads = {name: torch.ones_like(p) for name, p in net.named_parameters()}
    zero.step(grads, 1, 0.01)
    state = zero.state_dict()
    assert not bool(state["fresh"])
    other = ZeroAdamupdate(make_net())
    assert bool(other.state_dict()["fresh"])
    other.load_state_dict({k: v for k, v in state.items()})
    assert all(
        torch.equal(a, b) for a, b in zip(zero.averages()[1].values(), other.averages()[1].values())
    )


def test_errors_raise_before_anything_changes():
    net = make_net()
    zero = ZeroAdamupdate(net)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"grad\['0.weight'\]: shape \(4, 6\) does not"):
        zero.step({name: torch.ones(p.shape[::-1]) for name, p in net.named_parameters()}, 1)
    with pytest.raises(TypeError, match=r"grad\['2.bias'\]: torch.float64 on cpu"):
        zero.step([None, None, None, torch.ones(2).double()], 1)
    with pytest.raises(ValueError, match=r"no entry for learnable '0\.weight'"):
        zero.step({}, 1)
    with pytest.raises(ValueError, match="iteration"):
        zero.step(None, 0)
    assert all(torch.equal(p.detach(), q) for p, q in zip(net.parameters(), before))
    assert bool(zero.state_dict()["fresh"])
    net[0].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="learnables changed"):
        zero.step(None, 1)
    net[0].bias.requires_grad_(True)
    net[2].weight.data = net[2].weight.detach().clone()
    with pytest.raises(ValueError, match=r"2\.weight: the parameter was replaced or moved"):
        zero.step(None, 1)
    assert bool(zero.state_dict()["fresh"])
