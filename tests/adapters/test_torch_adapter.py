"""``adamupdate.torch.Adam`` as a member of torch.optim: compiled steps, checkpoints that either
``torch.optim.Adam`` or ours continues, torch's options and its errors.

Truth comes from outside our code: the float64 reference (``tests/reference.py``) for the
numbers, and the installed ``torch.optim.Adam`` itself for its group keys, its error types and
messages, and for stepping from our checkpoints.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference import assert_matches, run

torch = pytest.importorskip("torch")
Adam = pytest.importorskip("adamupdate.torch").Adam

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8
DTYPES = ["float32", "float64", "float16", "bfloat16", "complex64"]
HALF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}  # unit roundoff where NumPy has no dtype


def _tdtype(name):
    return getattr(torch, name)


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (5,)]
    out = []
    for shape in shapes:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if dtype == "complex64":
            x = torch.complex(x, torch.randn(shape, generator=g, dtype=torch.float64))
        out.append(torch.nn.Parameter(x.to(_tdtype(dtype))))
    return out


def _grads(params, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        step = []
        for p in params:
            x = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.is_complex():
                x = torch.complex(x, torch.randn(p.shape, generator=g, dtype=torch.float64))
            step.append(x.to(p.dtype))
        out.append(step)
    return out


def _train(optimizer, params, grads):
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.clone()
        optimizer.step()


def _clone(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _numpy(t):
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def _assert_reference(actual, traj, dtype, what):
    if dtype in HALF:  # the parameter is rounded to half precision; the states are float32
        tol = 2.0 * HALF[dtype] * traj.p_bound + 2.0 * HALF[dtype] * np.abs(traj.p) + 1e-30
        diff = np.abs(_numpy(actual).astype(np.float64) - traj.p)
        assert np.all(diff <= tol), (what, diff.max())
    else:
        assert_matches(_numpy(actual), traj.p, traj.p_bound, dtype, what)


# --- torch.compile --------------------------------------------------------------------------


_CHILD = "ADAMUPDATE_TEST_IN_CHILD"


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_step_gives_the_eager_result(backend, child_env, request):
    if backend == "inductor" and not os.environ.get(_CHILD):
        # inductor loads C++ it compiled; torch 2.5 compiles it with -ffast-math, whose
        # loader sets flush-to-zero for the whole process (every later subnormal would be 0,
        # in every test): the inductor case runs in a process of its own.
        node = f"{Path(__file__).resolve()}::{request.node.name}"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
            env={**child_env, _CHILD: "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "1 passed" in proc.stdout
        return
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    nets = [_mlp(), _mlp()]
    optimizers = [Adam(net.parameters(), lr=LR, weight_decay=1e-3) for net in nets]

    def train_step(net, optimizer):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    compiled = torch.compile(train_step, backend=backend)
    torch.compiler.reset()
    for _ in range(4):
        eager_loss = train_step(nets[0], optimizers[0])
        compiled_loss = compiled(nets[1], optimizers[1])
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-6)
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        if backend == "aot_eager":  # the same kernels: the same bits
            assert torch.equal(p, q)
        else:  # inductor fuses the forward and backward: rounding may differ there
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert int(optimizers[1].state[nets[1][0].weight]["step"]) == 4
    # MATLAB's step, not torch's: the same compiled loop with torch.optim.Adam differs.
    reference = _mlp()
    torch_adam = torch.optim.Adam(reference.parameters(), lr=LR, weight_decay=1e-3)
    for _ in range(4):
        train_step(reference, torch_adam)
    assert not torch.equal(reference[0].weight, nets[0][0].weight)


def test_the_step_is_a_graph_break_so_fullgraph_refuses_it():
    net = _mlp()
    optimizer = Adam(net.parameters(), lr=LR)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in net.parameters()]

    def step_only():
        optimizer.step()

    torch.compiler.reset()
    with pytest.raises(Exception, match=r"(?i)disable|skip"):
        torch.compile(step_only, backend="eager", fullgraph=True)()
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    torch.compile(step_only, backend="eager")()  # without fullgraph: it runs, eagerly
    assert not any(torch.equal(p, b) for p, b in zip(net.parameters(), before))


# --- checkpoints in either direction ---------------------------------------------------------


def test_group_keys_are_torch_optim_adams():
    p = torch.nn.Parameter(torch.zeros(2))
    torch_group = torch.optim.Adam([p]).state_dict()["param_groups"][0]
    ours = Adam([p]).state_dict()["param_groups"][0]
    assert set(ours) == set(torch_group)
    for key, value in torch_group.items():
        if key != "params":
            assert ours[key] == value, key


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_optim_adam_continues_from_ours(dtype):
    params = _params(dtype)
    grads = _grads(params, 4)
    ours = Adam(params, lr=LR, weight_decay=0.01)
    _train(ours, params, grads[:3])
    saved = copy.deepcopy(ours.state_dict())
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)

    theirs_params = _clone(params)
    theirs = torch.optim.Adam(theirs_params, lr=0.5)
    theirs.load_state_dict(torch.load(buffer, weights_only=True))
    assert theirs.param_groups[0]["lr"] == LR and theirs.param_groups[0]["weight_decay"] == 0.01
    for p, q in zip(params, theirs_params):
        mine, loaded = ours.state[p], theirs.state[q]
        torch.testing.assert_close(loaded["exp_avg"], mine["exp_avg"].to(p.dtype))
        v = loaded["exp_avg_sq"]
        if p.is_complex():  # torch's per-part layout; its parts sum to our v exactly
            assert v.dtype == p.dtype and torch.equal(v.real + v.imag, mine["exp_avg_sq"])
        else:
            torch.testing.assert_close(v, mine["exp_avg_sq"].to(p.dtype))
        assert int(loaded["step"]) == 3
    before = [q.detach().clone() for q in theirs_params]
    _train(theirs, theirs_params, grads[3:])  # no KeyError, no dtype error
    for q, b in zip(theirs_params, before):
        assert torch.isfinite(torch.view_as_real(q) if q.is_complex() else q.float()).all()
        assert not torch.equal(q.detach(), b)
        assert int(theirs.state[q]["step"]) == 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_ours_continues_from_torch_optim_adam(dtype):
    params = _params(dtype)
    grads = _grads(params, 4)
    theirs = torch.optim.Adam(params, lr=LR)
    _train(theirs, params, grads[:3])
    saved = copy.deepcopy(theirs.state_dict())

    ours_params = _clone(params)
    ours = Adam(ours_params, lr=0.5)
    ours.load_state_dict(saved)
    starts = []
    for p, q in zip(params, ours_params):
        torch_state, state = theirs.state[p], ours.state[q]
        real = torch.float32 if dtype in HALF else q.real.dtype
        assert state["exp_avg"].dtype == (q.dtype if q.is_complex() else real)
        assert state["exp_avg_sq"].dtype == real  # complex v converted, half averages float32
        v = torch_state["exp_avg_sq"]
        want_v = v.real + v.imag if v.is_complex() else v
        assert torch.equal(state["exp_avg_sq"], want_v.to(real))
        assert torch.equal(state["exp_avg"], torch_state["exp_avg"].to(state["exp_avg"].dtype))
        starts.append((_numpy(q), _numpy(state["exp_avg"]), _numpy(state["exp_avg_sq"])))
    _train(ours, ours_params, grads[3:])
    for q, (p0, m0, v0), g in zip(ours_params, starts, grads[3]):
        traj = run(p0, [_numpy(g)], LR, B1, B2, EPS, m0=m0, v0=v0, first_iteration=4)
        _assert_reference(q, traj, dtype, f"{dtype} resumed")
        assert int(ours.state[q]["step"]) == 4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_checkpoints_of_torchs_fused_route_both_ways(dtype):
    # torch's fused route keeps float32 step tensors beside the parameters; the flag travels.
    params = _params(dtype)
    grads = _grads(params, 6)
    theirs = torch.optim.Adam(params, lr=LR, fused=True)
    _train(theirs, params, grads[:2])
    ours_params = _clone(params)
    ours = Adam(ours_params, lr=LR)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["fused"] is True
    _train(ours, ours_params, grads[2:4])
    assert all(int(ours.state[q]["step"]) == 4 for q in ours_params)
    back_params = _clone(ours_params)
    back = torch.optim.Adam(back_params, lr=LR, fused=True)
    back.load_state_dict(ours.state_dict())
    _train(back, back_params, grads[4:])
    for q in back_params:
        assert int(back.state[q]["step"]) == 6
        assert back.state[q]["exp_avg"].dtype == q.dtype  # torch's own layout again
        assert torch.isfinite(q.float()).all()


@pytest.mark.parametrize("dtype", ["complex64", "float16"])
def test_our_checkpoint_resumes_bitwise(dtype):
    params = _params(dtype)
    grads = _grads(params, 8)
    straight = _clone(params)
    _train(Adam(straight, lr=LR), straight, grads)

    first = _clone(params)
    optimizer = Adam(first, lr=LR)
    _train(optimizer, first, grads[:4])
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    resumed = Adam(first, lr=LR)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _train(resumed, first, grads[4:])
    for p, q in zip(straight, first):
        assert torch.equal(p, q)


def test_an_older_state_without_torchs_keys_loads():
    params = _params("float32")
    grads = _grads(params, 3)
    optimizer = Adam(params, lr=LR)
    _train(optimizer, params, grads[:2])
    old = copy.deepcopy(optimizer.state_dict())
    for group in old["param_groups"]:  # as our earlier releases saved them
        for key in list(group):
            if key not in ("params", "lr", "betas", "eps"):
                del group[key]
    optimizer.load_state_dict(old)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    assert optimizer.param_groups[0]["maximize"] is False
    _train(optimizer, params, grads[2:])
    assert int(optimizer.state[params[0]]["step"]) == 3


def test_an_amsgrad_state_is_refused_and_nothing_changes():
    params = _params("float32")
    grads = _grads(params, 2)
    theirs = torch.optim.Adam(_clone(params), amsgrad=True)
    _train(theirs, theirs.param_groups[0]["params"], grads)
    ours = Adam(params, lr=LR)
    _train(ours, params, grads[:1])
    before = [ours.state[p]["exp_avg"].clone() for p in params]
    with pytest.raises(ValueError, match="AMSGrad"):
        ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["lr"] == LR and ours.param_groups[0]["amsgrad"] is False
    for p, m in zip(params, before):
        assert torch.equal(ours.state[p]["exp_avg"], m)


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_weight_decay_and_maximize_match_the_float64_formula(weight_decay, maximize):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) * 10 ** rng.uniform(-4, -1, (3, 4)) for _ in range(6)]
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    optimizer = Adam([p], lr=LR, weight_decay=weight_decay, maximize=maximize)
    want, m, v, bound = p0, None, None, np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p.grad = torch.from_numpy(g.copy())
        optimizer.step()
        assert torch.equal(p.grad, torch.from_numpy(g))  # .grad itself is left alone
        # torch.optim.Adam's and MATLAB's gradient: -g when maximizing, then + λ·p.
        g_used = (-g if maximize else g) + weight_decay * want
        traj = run(want, [g_used], LR, B1, B2, EPS, m0=m, v0=v, first_iteration=t)
        want, m, v, bound = traj.p, traj.m, traj.v, bound + traj.p_bound + np.abs(traj.p)
        assert_matches(p.detach().numpy(), want, bound, "float64", f"step {t}")


def test_weight_decay_of_one_group_only():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = Adam([{"params": [a], "weight_decay": 1.0}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.zeros(3), torch.zeros(3)
    optimizer.step()
    assert torch.equal(b.detach(), torch.ones(3))  # zero gradient, no decay: no move
    assert bool((a.detach() < 1.0).all())  # g = 0 + 1·p: MATLAB's L2 pull toward zero


@pytest.mark.parametrize(
    "flags",
    [
        {"foreach": True},
        {"foreach": False},
        {"fused": True},
        {"fused": False},
        {"capturable": True},
        {"differentiable": False, "amsgrad": False, "decoupled_weight_decay": False},
    ],
)
def test_route_flags_change_nothing(flags):
    params = _params("float32")
    grads = _grads(params, 3)
    plain = _clone(params)
    _train(Adam(plain, lr=LR), plain, grads)
    flagged = _clone(params)
    optimizer = Adam(flagged, lr=LR, **flags)
    _train(optimizer, flagged, grads)
    for p, q in zip(plain, flagged):
        assert torch.equal(p, q)
    group = optimizer.state_dict()["param_groups"][0]
    for key, value in flags.items():  # kept as torch.optim.Adam keeps them on this torch
        assert group.get(key, value) == value
    assert set(group) == set(torch.optim.Adam(_clone(params)).state_dict()["param_groups"][0])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"amsgrad": True}, "MATLAB's adamupdate has no AMSGrad"),
        ({"differentiable": True}, "outside autograd"),
        ({"decoupled_weight_decay": True}, "AdamW"),
        ({"maximize": 1}, "maximize must be True or False"),
        ({"foreach": "yes"}, "foreach must be None, True or False"),
    ],
)
def test_options_that_are_not_matlabs_are_refused_with_the_reason(options, match):
    w = torch.nn.Parameter(torch.zeros(2))
    error = TypeError if match.endswith(("False", "or False")) else ValueError
    with pytest.raises(error, match=match):
        Adam([w], **options)
    optimizer = Adam([w])
    with pytest.raises(error, match=match):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], **options})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"lr": torch.tensor([0.001, 0.001])},
        {"lr": -0.1},
        {"betas": (1.0, 0.999)},
        {"betas": (0.9, 1.5)},
        {"betas": (0.9, torch.tensor(0.99))},
        {"betas": (torch.tensor(0.9), 0.99)},
        {"eps": -1e-8},
        {"weight_decay": -1},
        {"fused": True, "foreach": True},
        {"fused": True, "differentiable": True},
    ],
    ids=str,
)
def test_torchs_bad_inputs_raise_torchs_errors(options):
    w = torch.nn.Parameter(torch.zeros(2))
    try:
        torch.optim.Adam([w], **options)
    except Exception as error:
        theirs = error
    else:  # older torch takes mixed float/Tensor betas, and so do we there
        assert "betas" in options
        Adam([w], **options)
        return
    with pytest.raises(type(theirs)) as ours:
        Adam([w], **options)
    assert str(ours.value).startswith(str(theirs)), (str(ours.value), str(theirs))


def test_tensor_hyper_parameters_are_read_at_each_step():
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    f64 = torch.float64
    optimizer = Adam(
        [p],
        lr=torch.tensor(LR, dtype=f64),
        betas=(torch.tensor([B1], dtype=f64), torch.tensor(B2, dtype=f64)),
    )
    for g in grads:
        p.grad = torch.from_numpy(g)
        optimizer.step()
    traj = run(p0, grads, LR, B1, B2, EPS)
    assert_matches(p.detach().numpy(), traj.p, traj.p_bound, "float64")
