"""Reliability contract (issue #11), 5 to 7: concurrent calls from several threads under numba's
workqueue layer work; torch in-place updates bump autograd version counters, also for small
groups; a network call with default arguments equals the functional call and the float64
reference (``tests/reference.py``) and does not write into averages the user created.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import adamupdate as adamupdate_package
from adamupdate import adamupdate
from reference import assert_matches, run

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

from reliability_helpers import assert_unchanged, needs_torch, snapshot, to_numpy

# --- 5. concurrency --------------------------------------------------------------------------

THREADS_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading

    import numpy as np

    from adamupdate import adamupdate
    from reference import assert_matches, run

    N, LEAVES, STEPS, THREADS, ROUNDS = 40_000, 2, 5, 6, 3

    def problem(seed):
        rng = np.random.default_rng(seed)
        params = [rng.standard_normal(N).astype(np.float32) for _ in range(LEAVES)]
        grads = [
            [rng.standard_normal(N).astype(np.float32) for _ in range(LEAVES)]
            for _ in range(STEPS)
        ]
        return params, grads

    def train(seed, inplace, barrier=None):
        params, grads = problem(seed)
        m = v = None
        if barrier is not None:
            barrier.wait()
        for t, g in enumerate(grads, 1):
            params, m, v = adamupdate(params, g, m, v, t, inplace=inplace)
        return [np.array(x, copy=True) for x in (*params, *m, *v)]

    for round_ in range(ROUNDS):
        results = [None] * THREADS
        errors = []
        barrier = threading.Barrier(THREADS)

        def worker(i):
            try:
                results[i] = train(i, i % 2 == 0, barrier)
            except BaseException as error:
                errors.append(f"thread {i}: {error!r}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            print("\\n".join(errors))
            sys.exit(2)
        for i in range(THREADS):
            sequential = train(i, i % 2 == 0)
            for k, (a, b) in enumerate(zip(results[i], sequential)):
                if a.dtype != b.dtype or a.tobytes() != b.tobytes():
                    print(f"round {round_} thread {i} output {k} differs from sequential")
                    sys.exit(3)
    for i in range(THREADS):  # spot check against the float64 reference
        params, grads = problem(i)
        for leaf in range(LEAVES):
            want = run(params[leaf][:32], [g[leaf][:32] for g in grads])
            assert_matches(results[i][leaf][:32], want.p, want.p_bound, np.float32, "params")
    print("ok")
    """
)


def test_concurrent_calls_under_numba_workqueue():
    """5: 6 threads x 5 steps (2 x 40,000 float32, in place and not, alternately) with
    NUMBA_THREADING_LAYER=workqueue: exit 0, each result equals its sequential run."""
    pytest.importorskip("numba")
    src = Path(adamupdate_package.__file__).resolve().parents[1]
    tests = Path(__file__).resolve().parents[1]  # reference.py
    env = dict(os.environ)
    env["NUMBA_THREADING_LAYER"] = "workqueue"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(src), str(tests), *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert "Concurrent access has been detected" not in output, output[-3000:]
    assert done.returncode == 0, f"exit {done.returncode}: {output[-3000:]}"
    assert done.stdout.strip().endswith("ok"), output[-3000:]


# --- 6. autograd version counters ------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("n_tensors", [1, 40])
def test_in_place_update_bumps_version_counter(n_tensors):
    """6: a graph that saved the parameters refuses backward() after an in-place step."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(3, generator=gen, requires_grad=True) for _ in range(n_tensors)]
    inputs = [torch.randn(3, generator=gen, requires_grad=True) for _ in range(n_tensors)]
    loss = sum((w * x).sum() for w, x in zip(weights, inputs))  # mul saves w for x's gradient
    grads = [torch.randn(3, generator=gen) for _ in range(n_tensors)]
    old = [w.detach().clone() for w in weights]
    adamupdate(weights, grads, None, None, 1, inplace=True)
    assert all(not torch.equal(w.detach(), o) for w, o in zip(weights, old)), "not updated"
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@needs_torch
def test_network_update_bumps_version_counter():
    """6: the same for a small network (always updated in place)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    loss = net(x).square().sum()
    grads = {name: torch.ones_like(p) for name, p in net.named_parameters()}
    adamupdate(net, grads, None, None, 1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --- 7. networks -----------------------------------------------------------------------------


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    ).double()


def _net_grads(net, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            name: torch.from_numpy(rng.standard_normal(tuple(p.shape)))
            for name, p in net.named_parameters()
        }
        for _ in range(steps)
    ]


def _state_leaf(state, name, index):
    if isinstance(state, dict):
        return state[name]
    if hasattr(state, "columns"):  # a Learnables-style table
        return state["Value"].iloc[index]
    return state[index]


@needs_torch
def test_network_default_call_equals_functional_call_and_reference():
    """7: 20 network steps (grads a dict by name, default arguments) equal 20 functional steps on
    the parameter tensors bitwise and the float64 reference within its bound."""
    net = _mlp()
    names_ = [name for name, _ in net.named_parameters()]
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    grads = _net_grads(net, 20)
    avg = sq = None
    for t, g in enumerate(grads, 1):
        out, avg, sq = adamupdate(net, g, avg, sq, t)
        assert out is net
    params = [start[name].clone() for name in names_]
    f_avg = f_sq = None
    for t, g in enumerate(grads, 1):
        params, f_avg, f_sq = adamupdate(params, [g[name] for name in names_], f_avg, f_sq, t)
    for i, (name, p) in enumerate(net.named_parameters()):
        assert torch.equal(p.detach(), params[i]), f"{name}: network != functional"
        assert torch.equal(_state_leaf(avg, name, i), f_avg[i]), f"{name}: avg_grad differs"
        assert torch.equal(_state_leaf(sq, name, i), f_sq[i]), f"{name}: avg_sq_grad differs"
        want = run(start[name].numpy(), [g[name].numpy() for g in grads])
        assert_matches(to_numpy(p), want.p, want.p_bound, np.float64, name)
        assert_matches(to_numpy(_state_leaf(avg, name, i)), want.m, want.m_bound, np.float64)
        assert_matches(to_numpy(_state_leaf(sq, name, i)), want.v, want.v_bound, np.float64)


@needs_torch
@pytest.mark.parametrize("loaded", ["zeros_like", "checkpoint", "resume-after-3-steps"])
def test_network_does_not_write_into_user_created_averages(loaded):
    """7: averages the user made (zeros_like, loaded from a checkpoint, or loaded to resume a
    network that already took library-owned steps) are not modified by calls with default
    arguments, neither the first nor the next one; results follow the reference."""
    net = _mlp()
    rng = np.random.default_rng(9)
    t0 = 1
    if loaded.startswith("resume"):
        m = v = None
        for t, g in enumerate(_net_grads(net, 3, seed=2), 1):
            _, m, v = adamupdate(net, g, m, v, t)  # library-owned averages, maybe reused
        t0 = 4
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    if loaded == "zeros_like":
        avg = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
        sq = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    else:
        avg = {n: torch.from_numpy(0.1 * rng.standard_normal(p.shape)) for n, p in start.items()}
        sq = {n: torch.from_numpy(rng.random(tuple(p.shape))) for n, p in start.items()}
        t0 = max(t0, 5)
    avg_before, sq_before = snapshot((avg,)), snapshot((sq,))
    grads = _net_grads(net, 2, seed=1)
    _, new_avg, new_sq = adamupdate(net, grads[0], avg, sq, t0)
    assert_unchanged((avg,), avg_before, "user's avg_grad")
    assert_unchanged((sq,), sq_before, "user's avg_sq_grad")
    adamupdate(net, grads[1], new_avg, new_sq, t0 + 1)  # its own output may be reused
    assert_unchanged((avg,), avg_before, "user's avg_grad")
    assert_unchanged((sq,), sq_before, "user's avg_sq_grad")
    for name, p in net.named_parameters():
        m0 = None if loaded == "zeros_like" else avg[name].numpy()
        v0 = None if loaded == "zeros_like" else sq[name].numpy()
        want = run(
            start[name].numpy(),
            [g[name].numpy() for g in grads],
            m0=m0,
            v0=v0,
            first_iteration=t0,
        )
        assert_matches(to_numpy(p), want.p, want.p_bound, np.float64, name)
