"""Regression tests for what an adversarial review of the sound engine found (issue 17):
each failure here once wrote memory it should not have, crashed, or kept something alive."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

from adamupdate import _plan, adamupdate, rmspropupdate, sgdmupdate
from adamupdate.backends import numpy_backend

torch = pytest.importorskip("torch")


def _fail_after(real):
    """``real`` that computes, then raises: a failure half-way through a call."""

    def failing(*args, **kwargs):
        real(*args, **kwargs)
        raise MemoryError("simulated: out of memory after computing")

    return failing


def test_a_numpy_ufunc_group_that_fails_writes_nothing(monkeypatch):
    """float16 takes NumPy's ufuncs, leaf by leaf; a failure at the second leaf must not
    leave the first stepped."""
    ps = [np.ones(8, np.float16), np.ones(8, np.float16)]
    gs = [np.full(8, 0.5, np.float16)] * 2
    _, m, v = adamupdate([p.copy() for p in ps], gs, None, None, 1)
    before = [x.copy() for x in (*ps, *m, *v)]
    calls = []
    real = numpy_backend._ufunc_leaf

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("simulated")
        return real(*args)

    monkeypatch.setattr(numpy_backend, "_ufunc_leaf", second_fails)
    with pytest.raises(MemoryError):
        adamupdate(ps, gs, m, v, 2, inplace=True)
    assert all(np.array_equal(a, b) for a, b in zip((*ps, *m, *v), before))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_torch_foreach_group_that_fails_writes_nothing(monkeypatch, dtype):
    """Half precision takes torch's foreach ops, which allocate as they go: in place they
    work on copies, so a failure leaves the caller's tensors (and the float32 group's)
    untouched."""
    from adamupdate.backends import _torch_routes, torch_backend

    ps = [torch.ones(64), torch.ones(16, dtype=dtype)]
    gs = [torch.full((64,), 0.5), torch.full((16,), 0.5, dtype=dtype)]
    _, m, v = adamupdate(ps, gs, None, None, 1, inplace=True)
    before = [t.clone() for t in (*ps, *m, *v)]
    monkeypatch.setattr(torch_backend, "_rule_step", _fail_after(_torch_routes._rule_step))
    with pytest.raises(MemoryError):
        adamupdate(ps, gs, m, v, 2, inplace=True)
    assert all(torch.equal(a, b) for a, b in zip((*ps, *m, *v), before))


def test_one_buffer_seen_by_numpy_and_torch_is_refused_in_place():
    a = np.ones(1000, np.float32)
    g = [np.full(1000, 0.5, np.float32), torch.full((1000,), 0.5)]
    with pytest.raises(ValueError, match="share memory"):
        adamupdate([a, torch.from_numpy(a)], g, None, None, 1, inplace=True)
    assert np.all(a == 1)
    p = torch.ones(1000)
    with pytest.raises(ValueError, match="share memory"):  # a NumPy gradient of p's memory
        adamupdate([p, np.ones(1000, np.float32)], [g[1], p.numpy()], None, None, 1, inplace=True)
    assert torch.all(p == 1)


class _Tagged(torch.Tensor):
    """A tensor subclass that keeps its own memory (not a DTensor)."""


def test_a_tensor_subclass_is_checked_for_aliasing_like_a_tensor():
    p = torch.ones(100).as_subclass(_Tagged)
    m = p.detach().as_subclass(_Tagged)  # the same memory as p
    v = torch.zeros(100).as_subclass(_Tagged)
    g = torch.full((100,), 0.5).as_subclass(_Tagged)
    with pytest.raises(ValueError, match="share memory"):
        adamupdate(p, g, m, v, 2, inplace=True)
    assert torch.all(p == 1)
    expanded = torch.ones(1).expand(10).as_subclass(_Tagged)
    with pytest.raises(ValueError, match="share memory"):
        adamupdate(expanded, torch.ones(10), None, None, 1, inplace=True)


@pytest.mark.parametrize("n", [8, 40_000])
def test_a_zero_tensor_gradient_is_refused_not_walked(n):
    p = torch.ones(n)
    with pytest.raises(TypeError, match="ZeroTensor"):
        adamupdate(p, torch._efficientzerotensor(n), None, None, 1, inplace=True)
    assert torch.all(p == 1)


@pytest.mark.parametrize("solver", [sgdmupdate, rmspropupdate])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_one_state_rules_in_place_take_the_bulk_path(monkeypatch, solver, lib):
    taken = []
    real = _plan._in_bulk
    monkeypatch.setattr(_plan, "_in_bulk", lambda *a: taken.append(real(*a)) or taken[-1])
    make = torch.ones if lib == "torch" else (lambda n: np.ones(n, np.float32))
    ps, gs, s = [make(50) for _ in range(40)], [make(50) for _ in range(40)], None
    _, s = solver(ps, gs, s, 0.1)
    solver(ps, gs, s, 0.1, inplace=True)
    assert taken[-1] is not None


def test_in_place_averages_bump_their_version_counters():
    p = torch.ones(10)
    g = torch.full((10,), 0.5)
    _, m, v = adamupdate(p, g, None, None, 1, inplace=True)
    versions = (p._version, m._version, v._version)
    adamupdate(p, g, m, v, 2, inplace=True)
    assert all(after > was for after, was in zip((p._version, m._version, v._version), versions))


def test_a_saved_functional_output_holds_only_its_values():
    p = torch.ones(1 << 20)  # 4 MiB: a block of adamupdate._reuse
    p, m, _ = adamupdate(p, torch.full_like(p, 0.5), None, None, 1)
    buffer = io.BytesIO()
    torch.save({"p": p, "m": m}, buffer)
    assert buffer.tell() < 2 * 4 * (1 << 20) + 100_000  # two tensors' values, no blocks
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded["p"], p) and torch.equal(loaded["m"], m)
    assert not p.__dict__


def test_a_trial_step_on_a_copy_of_the_network_leaves_the_loop_s_averages_alone():
    net = torch.nn.Linear(4, 3)
    grads = {n: torch.full_like(p, 0.5) for n, p in net.named_parameters()}
    net, m, v = adamupdate(net, grads, None, None, 1)
    kept = {k: x.clone() for k, x in m.items()}
    trial = copy.deepcopy(net)
    adamupdate(trial, grads, m, v, 2)
    assert all(torch.equal(m[k], kept[k]) for k in kept)


def test_jax_compiles_a_step_once_per_form(monkeypatch):
    jax = pytest.importorskip("jax")
    from adamupdate.backends import jax_backend

    jax_backend._EXECUTABLES.clear()
    ps = [jax.numpy.ones(5), jax.numpy.ones(3)]
    gs = [jax.numpy.full(5, 0.5), jax.numpy.full(3, 0.5)]
    ps, m, v = adamupdate(ps, gs, None, None, 1)
    for t in range(2, 6):
        ps, m, v = adamupdate(ps, gs, m, v, t)
    assert len(jax_backend._EXECUTABLES) == 2  # the first step's program and the others'
