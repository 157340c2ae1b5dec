"""The adapter into torch.optim against the independent float64 reference (the optax adapter's
tests are in test_optax_adapter.py).

``adamupdate.torch.Adam`` must take MATLAB's step, not PyTorch's: gradients of 1e-6..1e-3 make
ε's placement visible (ε = 1e-8 is a third of √v at the first step), and ``torch.optim.Adam`` is
shown to fail the very checks the adapter passes. Every other test exercises what torch promises
its optimizers can do (groups, schedulers, checkpoints, closures).
"""

from __future__ import annotations

import importlib
import io
import sys

import numpy as np
import pytest

from adapter_helpers import small_gradients
from reference import assert_matches, run

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8
SHAPES = [(4, 5), (7,), ()]


def reference_bounds(p0, grads, learn_rates, b1=B1, b2=B2, eps=EPS):
    """The reference run with a learning rate per step (for schedules): values and bounds."""
    p, m, v = p0, None, None
    bounds = np.zeros(np.shape(p0))
    for t, (g, lr) in enumerate(zip(grads, learn_rates), start=1):
        traj = run(p, [g], lr, b1, b2, eps, m0=m, v0=v, first_iteration=t)
        p, m, v = traj.p, traj.m, traj.v
        bounds = bounds + traj.p_bound
    return p, bounds


# --- torch.optim ---------------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def Adam(torch):
    return pytest.importorskip("adamupdate.torch").Adam


def torch_run(torch, optimizer_class, params0, grads, **options):
    """``len(grads)`` optimizer steps on parameters made from ``params0``."""
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    optimizer = optimizer_class(params, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.from_numpy(g.copy())
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_torch_thirty_steps_match_the_reference(torch, Adam, dtype):
    rng = np.random.default_rng(0)
    params0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    per_param = [small_gradients(rng, s, 30, dtype) for s in SHAPES]
    params, optimizer = torch_run(torch, Adam, params0, list(zip(*per_param)), lr=LR)
    for i, (p, p0, grads) in enumerate(zip(params, params0, per_param)):
        traj = run(p0, grads, LR, B1, B2, EPS)
        state = optimizer.state[p]
        assert int(state["step"]) == 30
        assert_matches(p.detach().numpy(), traj.p, traj.p_bound, dtype, f"params[{i}]")
        assert_matches(state["exp_avg"].numpy(), traj.m, traj.m_bound, dtype, f"exp_avg[{i}]")
        assert_matches(state["exp_avg_sq"].numpy(), traj.v, traj.v_bound, dtype, f"exp_avg_sq[{i}]")
        assert not state["exp_avg_sq"].is_complex()


def test_torch_optim_adam_fails_the_same_check(torch):
    """The test above discriminates: PyTorch's ε placement is outside the reference's bounds."""
    rng = np.random.default_rng(0)
    params0 = [np.asarray(rng.standard_normal(s)).astype("float32") for s in SHAPES]
    per_param = [small_gradients(rng, s, 30, "float32") for s in SHAPES]
    params, _ = torch_run(torch, torch.optim.Adam, params0, list(zip(*per_param)), lr=LR, eps=EPS)
    traj = run(params0[0], per_param[0], LR, B1, B2, EPS)
    with pytest.raises(AssertionError):
        assert_matches(params[0].detach().numpy(), traj.p, traj.p_bound, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_equals_the_functional_call_bitwise(torch, Adam, dtype):
    from adamupdate import adamupdate

    rng = np.random.default_rng(1)
    params0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(10)]
    params, _ = torch_run(torch, Adam, params0, grads, lr=LR, betas=(0.8, 0.99), eps=1e-6)
    functional = [torch.from_numpy(p.copy()) for p in params0]
    m = v = None
    for t, step_grads in enumerate(grads, start=1):
        tensors = [torch.from_numpy(g) for g in step_grads]
        functional, m, v = adamupdate(functional, tensors, m, v, t, LR, 0.8, 0.99, 1e-6)
    for p, q in zip(params, functional):
        assert torch.equal(p.detach(), q)


def test_torch_param_groups_take_their_own_learning_rate(torch, Adam):
    rng = np.random.default_rng(2)
    a0, b0 = rng.standard_normal(6), rng.standard_normal(6)
    ga, gb = small_gradients(rng, 6, 10, "float64"), small_gradients(rng, 6, 10, "float64")
    a = torch.nn.Parameter(torch.from_numpy(a0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    optimizer = Adam([{"params": [a]}, {"params": [b], "lr": 0.1, "betas": (0.5, 0.9)}], lr=LR)
    for x, y in zip(ga, gb):
        a.grad, b.grad = torch.from_numpy(x), torch.from_numpy(y)
        optimizer.step()
    for p, p0, grads, hyper in ((a, a0, ga, (LR, B1, B2)), (b, b0, gb, (0.1, 0.5, 0.9))):
        traj = run(p0, grads, *hyper, EPS)
        assert_matches(p.detach().numpy(), traj.p, traj.p_bound, "float64")


def test_torch_parameter_without_grad_is_skipped_and_counts_its_own_steps(torch, Adam):
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal(5), rng.standard_normal(5)
    ga, gb = small_gradients(rng, 5, 8, "float64"), small_gradients(rng, 5, 5, "float64")
    a = torch.nn.Parameter(torch.from_numpy(a0.copy()))
    b = torch.nn.Parameter(torch.from_numpy(b0.copy()))
    optimizer = Adam([a, b], lr=LR)
    for t, x in enumerate(ga, start=1):
        a.grad = torch.from_numpy(x)
        b.grad = None if t <= 3 else torch.from_numpy(gb[t - 4])
        optimizer.step()
        if t <= 3:  # untouched: no state, same values
            assert b not in optimizer.state or not optimizer.state[b]
            assert np.array_equal(b.detach().numpy(), b0)
    assert int(optimizer.state[a]["step"]) == 8 and int(optimizer.state[b]["step"]) == 5
    for p, p0, grads in ((a, a0, ga), (b, b0, gb)):
        traj = run(p0, grads, LR, B1, B2, EPS)  # b's first update is its iteration 1
        assert_matches(p.detach().numpy(), traj.p, traj.p_bound, "float64")
    # a gradient that disappears again leaves the parameter and its state as they are
    a.grad = None
    b.grad = torch.from_numpy(gb[0])
    before = {k: v.clone() for k, v in optimizer.state[a].items()}
    a_before = a.detach().clone()
    optimizer.step()
    assert torch.equal(a.detach(), a_before)
    assert all(torch.equal(optimizer.state[a][k], v) for k, v in before.items())
    assert int(optimizer.state[b]["step"]) == 6


def test_torch_learn_rate_factors_freeze_and_scale(torch, Adam):
    from adamupdate.network import set_learn_rate_factor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    set_learn_rate_factor(net, "0", "weight", 0)
    set_learn_rate_factor(net, "1", "weight", 2)
    start = {name: p.detach().numpy().copy() for name, p in net.named_parameters()}
    optimizer = Adam(net.parameters(), lr=LR)
    rng = np.random.default_rng(4)
    grads = {n: small_gradients(rng, p.shape, 6, "float64") for n, p in net.named_parameters()}
    for t in range(6):
        for name, p in net.named_parameters():
            p.grad = torch.from_numpy(grads[name][t])
        optimizer.step()
    frozen = net[0].weight
    assert np.array_equal(frozen.detach().numpy(), start["0.weight"])
    assert not optimizer.state.get(frozen)  # factor 0 freezes the state too
    for name, factor in (("1.weight", 2.0), ("0.bias", 1.0), ("1.bias", 1.0)):
        p = net.get_parameter(name)
        traj = run(start[name], grads[name], LR * factor, B1, B2, EPS)
        assert_matches(p.detach().numpy(), traj.p, traj.p_bound, "float64", name)
        assert int(optimizer.state[p]["step"]) == 6


def test_torch_state_dict_resumes_bitwise(torch, Adam):
    def model():
        torch.manual_seed(0)
        return torch.nn.ModuleDict(
            {
                "body": torch.nn.Sequential(
                    torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
                ),
                "extra": torch.nn.Linear(2, 2).to(torch.bfloat16),  # float32 averages
            }
        )

    def batches(n):
        g = torch.Generator().manual_seed(5)
        return [
            (torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)) for _ in range(n)
        ]

    def train(net, optimizer, data):
        for x, z in data:
            optimizer.zero_grad()
            y = net["body"](x)
            loss = (y**2).mean() + net["extra"](z.to(torch.bfloat16)).float().pow(2).mean()
            loss.backward()
            optimizer.step()

    data = batches(20)
    straight = model()
    optimizer = Adam(straight.parameters(), lr=LR)
    train(straight, optimizer, data)

    first = model()
    optimizer = Adam(first.parameters(), lr=LR)
    train(first, optimizer, data[:10])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    saved = checkpoint["optimizer"]["state"][0]
    assert list(saved) == ["step", "exp_avg", "exp_avg_sq"] and int(saved["step"]) == 10

    resumed = model()
    resumed.load_state_dict(checkpoint["model"])
    optimizer = Adam(resumed.parameters(), lr=LR)
    optimizer.load_state_dict(checkpoint["optimizer"])
    assert optimizer.state[resumed["extra"].weight]["exp_avg"].dtype == torch.float32
    train(resumed, optimizer, data[10:])
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    for q in resumed.parameters():
        assert int(optimizer.state[q]["step"]) == 20


def test_torch_step_lr_halves_the_rate(torch, Adam):
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(8).astype(np.float32)
    grads = small_gradients(rng, 8, 6, "float32")
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    optimizer = Adam([p], lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for g in grads:
        p.grad = torch.from_numpy(g)
        optimizer.step()
        scheduler.step()
    want, bound = reference_bounds(p0, grads, [0.05 * 0.5**t for t in range(6)])
    assert_matches(p.detach().numpy(), want, bound, "float32")
    with pytest.raises(AssertionError):  # a constant rate is another trajectory
        traj = run(p0, grads, 0.05, B1, B2, EPS)
        assert_matches(p.detach().numpy(), traj.p, traj.p_bound, "float32")


def test_torch_closure_loss_is_returned(torch, Adam):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = Adam([w], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()  # gradients are enabled inside step's closure
        return loss

    losses = [float(optimizer.step(closure).detach()) for _ in range(3)]
    assert losses[0] == 5.0 and losses[2] < losses[1] < losses[0]
    assert optimizer.step() is None


@pytest.mark.parametrize(
    "options, error",
    [
        ({"lr": -0.1}, ValueError),
        ({"lr": float("nan")}, ValueError),
        ({"lr": "0.1"}, TypeError),
        ({"betas": (1.0, 0.999)}, ValueError),
        ({"betas": (0.9, -0.1)}, ValueError),
        ({"betas": 0.9}, TypeError),
        ({"eps": 0.0}, ValueError),
        ({"eps": -1e-8}, ValueError),
        ({"eps": float("inf")}, ValueError),
    ],
)
def test_torch_bad_hyperparameters_raise(torch, Adam, options, error):
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(error):
        Adam([w], **options)
    optimizer = Adam([w])
    with pytest.raises(error):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], **options})
    assert len(optimizer.param_groups) == 1


# --- optional dependencies -----------------------------------------------------------------


@pytest.mark.parametrize(
    "module, missing, extra",
    [
        ("torch", "torch", "torch"),
        ("optax", "optax", "optax"),
        ("network", "torch", "torch"),  # the network helpers: gradients, learn-rate factors
        ("distributed", "torch", "torch"),
    ],
)
def test_missing_library_names_the_extra(monkeypatch, module, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, f"adamupdate.{module}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'adamupdate\[{extra}\]'"):
        importlib.import_module(f"adamupdate.{module}")


def test_missing_torch_for_a_top_level_network_name(monkeypatch):
    """``from adamupdate import gradients`` loads the network helpers lazily: without torch,
    the import names the extra to install."""
    import adamupdate

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "adamupdate.network", raising=False)
    monkeypatch.delitem(vars(adamupdate), "gradients", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'adamupdate\[torch\]'"):
        from adamupdate import gradients  # noqa: F401
