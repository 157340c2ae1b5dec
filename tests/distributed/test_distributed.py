"""Scale: adamupdate under PyTorch's own distributed engine, two CPU processes with gloo.

DDP keeps a full replica per rank and averages gradients; FSDP2 (``fully_shard``) shards each
parameter and its gradient as DTensors, and each rank updates its own shard. Either way the
result must equal one process training on both ranks' data with ``torch.optim.Adam`` driven to
MATLAB's step (ε_torch = ε/√(1−β2^t)), an independent implementation.

Checkpoints (:mod:`adamupdate.distributed`): a state saved with ``torch.distributed.checkpoint``
at one world size and continued at another (1 → 2 and 2 → 1 ranks, plain/DDP and FSDP2) must
continue bitwise as an uninterrupted run. The runs are described in distributed_worker.py.
ZeRO-1 is tested in test_distributed_zero.py, the examples in test_distributed_examples.py.
"""

import math

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import distributed_worker as worker  # noqa: E402

WORLD = 2
LR = 0.01


def single_process_reference():
    net = worker.make_net().double()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999))
    for t in range(1, worker.STEPS + 1):
        optimizer.zero_grad()
        # DDP and FSDP average gradients over ranks: the mean of the per-rank losses
        losses = []
        for rank in range(WORLD):
            x, y = worker.batch(rank, t)
            losses.append(torch.nn.functional.mse_loss(net(x.double()), y.double()))
        (sum(losses) / WORLD).backward()
        optimizer.param_groups[0]["eps"] = 1e-8 / math.sqrt(1 - 0.999**t)
        optimizer.step()
    states = optimizer.state
    params = dict(net.named_parameters())
    return (
        {n: p.detach() for n, p in params.items()},
        {n: states[p]["exp_avg"] for n, p in params.items()},
        {n: states[p]["exp_avg_sq"] for n, p in params.items()},
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp2", marks=pytest.mark.fsdp2)])
def test_matches_single_process_training(mode, tmp_path):
    out = tmp_path / f"{mode}.pt"
    worker.launch(mode, out)
    result = torch.load(out)
    if mode == "fsdp2":
        assert result["kinds"] == ["DTensor"]  # the shards really were DTensors
    params, m, v = single_process_reference()
    for name in params:
        # float32 training against a float64 reference: a few float32 roundings per step
        torch.testing.assert_close(result["params"][name].double(), params[name], rtol=0, atol=2e-6)
        torch.testing.assert_close(result["m"][name].double(), m[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(result["v"][name].double(), v[name], rtol=1e-4, atol=1e-9)


# --- checkpoints at another world size ---------------------------------------------------------


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns: equal only when every element is the same float, sign of
    zero and NaN payload included."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_bitwise(result: dict, reference: dict) -> None:
    for part in ("params", "m", "v"):
        assert result[part].keys() == reference[part].keys()
        for name, want in reference[part].items():
            got = result[part][name]
            assert got.dtype == want.dtype and got.shape == want.shape, (part, name)
            assert torch.equal(bits(got), bits(want)), (
                f"{part}[{name!r}]: {(got != want).sum().item()} of {want.numel()} differ, "
                f"by up to {(got - want).abs().max().item():.3g}"
            )


@pytest.fixture(scope="module")
def resharded(tmp_path_factory):
    """Three runs: world 1 (reference and checkpoint), world 2 (continue it, save another),
    world 1 (continue that); see tests/distributed/distributed_worker.py."""
    root = tmp_path_factory.mktemp("reshard")
    worker.launch("reshard-first", root, world=1)
    worker.launch("reshard-second", root, world=2)
    worker.launch("reshard-third", root, world=1)
    results = {}
    for mode in ("reshard-first", "reshard-second", "reshard-third"):
        results.update(torch.load(root / f"{mode}.pt"))
    return results


@pytest.mark.fsdp2  # the workers checkpoint a plain and an FSDP2 network in one run
@pytest.mark.parametrize("kind", ["plain", "fsdp2"])
@pytest.mark.parametrize("direction", ["1to2", "2to1"])
def test_checkpoint_continues_bitwise_at_another_world_size(resharded, kind, direction):
    result = resharded[f"{direction}-{kind}"]
    assert result["iteration"] == worker.RESHARD_STEPS // 2
    assert_bitwise(result, resharded[f"reference-{kind}"])


@pytest.mark.fsdp2
@pytest.mark.parametrize("direction", ["1to2", "2to1"])
def test_loaded_averages_are_placed_like_the_parameters(resharded, direction):
    fsdp2 = resharded[f"{direction}-fsdp2"]["loaded"]
    for name, (kind, placements) in fsdp2["params"].items():
        assert kind == "DTensor" and placements == ("S(0)",)
        assert fsdp2["avg_grad"][name] == fsdp2["avg_sq_grad"][name] == ("DTensor", placements)
    plain = resharded[f"{direction}-plain"]["loaded"]
    for name in plain["params"]:
        assert plain["avg_grad"][name] == plain["avg_sq_grad"][name] == ("Tensor", ())


# --- checkpoints in one process (no process group: DCP's no_dist mode) -------------------------


def test_checkpoint_keeps_frozen_scalar_averages_factors_and_table_form(tmp_path):
    from adamupdate import adamupdate, get_learn_rate_factor, gradients, set_learn_rate_factor
    from adamupdate.distributed import load_checkpoint, save_checkpoint

    net = worker.make_net()
    set_learn_rate_factor(net, "0", "bias", 0.0)  # frozen: MATLAB's scalar-0 averages
    set_learn_rate_factor(net, "2", "weight", 0.25)
    x, y = worker.batch(0, 1)
    grads = gradients(torch.nn.functional.mse_loss(net(x), y), net)  # a Learnables table
    net, avg_grad, avg_sq_grad = adamupdate(net, grads, None, None, 1, 0.01)
    assert avg_grad["Value"][1].shape == ()
    save_checkpoint(tmp_path / "ck", net, avg_grad, avg_sq_grad, 1)

    other = worker.make_net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    m, v, iteration = load_checkpoint(tmp_path / "ck", other)
    assert iteration == 1
    assert get_learn_rate_factor(other, "0", "bias") == 0.0
    assert get_learn_rate_factor(other, "2", "weight") == 0.25
    for (name, p), q in zip(net.named_parameters(), other.parameters()):
        assert torch.equal(bits(p.detach()), bits(q.detach())), name
    for row, name in enumerate(m):
        assert torch.equal(bits(m[name]), bits(avg_grad["Value"][row])), name
        assert torch.equal(bits(v[name]), bits(avg_sq_grad["Value"][row])), name
    assert m["0.bias"].shape == () and m["0.weight"].shape == (16, 8)
    assert list(m) == [name for name, _ in net.named_parameters()]


def test_load_checkpoint_names_a_parameter_the_network_lacks(tmp_path):
    from adamupdate import adamupdate
    from adamupdate.distributed import load_checkpoint, save_checkpoint

    net = torch.nn.Linear(2, 3)
    grads = [torch.ones(3, 2), torch.ones(3)]  # a list: the averages come back as lists
    net, m, v = adamupdate(net, grads, None, None, 1)
    save_checkpoint(tmp_path / "ck", net, m, v, 1)
    with pytest.raises(ValueError, match=r"avg_grad\['weight'\]: saved with shape \(3, 2\)"):
        load_checkpoint(tmp_path / "ck", torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="network has no such parameter"):
        load_checkpoint(tmp_path / "ck", torch.nn.Sequential(torch.nn.Linear(2, 3)))
