"""Remembered in-place plans (adamupdate._plans): a cached step must never use stale buffers.

Every scenario runs an in-place loop long enough to hit the cache, changes something the cache
relies on, and compares with the float64 reference (tests/reference.py).
"""

import numpy as np
import pytest

from adamupdate import adamupdate
from reference import run

N_TENSORS = 40  # enough for the fused kernel's group path (and the prepared batches)
STEPS = 6


def problem(seed=0, n=N_TENSORS, size=7):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(size) for _ in range(n)]
    grads = [[rng.standard_normal(size) for _ in range(n)] for _ in range(STEPS)]
    return params, grads


def expected(params, grads):
    return [run(p, [g[i] for g in grads]) for i, p in enumerate(params)]


def check(params, m, v, want):
    for p_i, m_i, v_i, w in zip(params, m, v, want):
        np.testing.assert_allclose(np.asarray(p_i), w.p, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.asarray(m_i), w.m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.asarray(v_i), w.v, rtol=1e-13, atol=1e-18)


@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_numpy_loop_with_reused_or_new_gradients(same_grad_objects):
    params0, grads = problem()
    params = [p.copy() for p in params0]
    buffers = [np.empty_like(p) for p in params]
    m = v = None
    for t, g in enumerate(grads, 1):
        if same_grad_objects:  # written into the same buffers, as p.grad is in PyTorch
            for buffer, value in zip(buffers, g):
                buffer[...] = value
            g = buffers
        out, m, v = adamupdate(params, g, m, v, t, inplace=True)
        assert out is params
    check(params, m, v, expected(params0, grads))


def test_replacing_a_leaf_in_the_container_is_noticed():
    params0, grads = problem(1)
    params = [p.copy() for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # the caller swaps in a copy: the old plan's buffer must not be written
            params[3] = params[3].copy()
            old = params0[3]
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    check(params, m, v, expected(params0, grads))
    assert old is params0[3]


def test_a_non_contiguous_gradient_in_a_cached_loop():
    params0, grads = problem(2)
    params = [p.copy() for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 5:
            g = list(g)
            wide = np.zeros(2 * g[0].size)
            wide[::2] = g[0]
            g[0] = wide[::2]
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    check(params, m, v, expected(params0, grads))


def test_read_only_state_in_place_is_refused_and_nothing_changes():
    params0, grads = problem(3, n=2)
    params = [p.copy() for p in params0]
    _, m, v = adamupdate(params, grads[0], None, None, 1, inplace=True)
    m[1].flags.writeable = False
    before = [a.copy() for a in (*params, *m, *v)]
    with pytest.raises(ValueError, match=r"avg_grad\[1\].*read-only"):
        adamupdate(params, grads[1], m, v, 2, inplace=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, (*params, *m, *v)))


def test_a_discarded_model_is_freed_and_its_plan_forgotten():
    import gc
    import weakref

    from adamupdate import _plans

    params0, grads = problem(7)
    params = [p.copy() for p in params0]
    m = v = None
    for t, g in enumerate(grads[:3], 1):
        out, m, v = adamupdate(params, g, m, v, t, inplace=True)
    key = id(params)
    assert key in _plans._plans  # remembered...
    watch = [weakref.ref(x) for x in (params[0], m[0], v[0], g[0])]
    del params, out, m, v, g, grads
    gc.collect()
    assert all(w() is None for w in watch)  # ...but keeping nothing alive
    assert key not in _plans._plans


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_torch_loop_with_reused_or_new_gradients(same_grad_objects):
    params0, grads = problem(4)
    params = [torch.tensor(p) for p in params0]
    buffers = [torch.empty_like(p) for p in params]
    m = v = None
    for t, g in enumerate(grads, 1):
        g = [torch.tensor(x) for x in g]
        if same_grad_objects:
            for buffer, value in zip(buffers, g):
                buffer.copy_(value)
            g = buffers
        out, m, v = adamupdate(params, g, m, v, t, inplace=True)
        assert out is params
    check(
        [p.numpy() for p in params],
        [x.numpy() for x in m],
        [x.numpy() for x in v],
        expected(params0, grads),
    )


def test_torch_storage_swapped_under_the_same_object():
    params0, grads = problem(5)
    params = [torch.tensor(p) for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # same Python objects, new storage: cached addresses would be dangling
            for p in params:
                p.data = p.data.clone()
            m[0].data = m[0].data.clone()
        _, m, v = adamupdate(params, [torch.tensor(x) for x in g], m, v, t, inplace=True)
    check(
        [p.numpy() for p in params],
        [x.numpy() for x in m],
        [x.numpy() for x in v],
        expected(params0, grads),
    )


def test_torch_gradient_in_another_layout_in_a_cached_loop():
    rng = np.random.default_rng(6)
    shape = (2, 3, 4, 5)
    params0 = [rng.standard_normal(shape) for _ in range(N_TENSORS)]
    grads = [[rng.standard_normal(shape) for _ in params0] for _ in range(STEPS)]
    params = [torch.tensor(p) for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        g = [torch.tensor(x) for x in g]
        if t == 5:
            g[0] = g[0].contiguous(memory_format=torch.channels_last)
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    check(
        [p.numpy() for p in params],
        [x.numpy() for x in m],
        [x.numpy() for x in v],
        expected(params0, grads),
    )


def _loop(params, grads, steps, before_step=None):
    m = v = None
    for t in range(1, steps + 1):
        if before_step is not None:
            before_step(t, params, grads, m, v)
        _, m, v = adamupdate(params, grads, m, v, t, inplace=True)
    return m, v


@pytest.mark.parametrize("victim", ["avg_grad", "grad"])
def test_torch_storage_of_another_size_under_the_same_object_is_never_walked(victim):
    """Swapping a state's or a gradient's storage for a smaller one (same Python object) must
    raise or compute correctly — never let the kernel read or write past the new buffer."""
    n = 1 << 14
    params = [torch.zeros(n) for _ in range(N_TENSORS)]
    grads = [torch.ones(n) for _ in range(N_TENSORS)]

    def swap(t, params, grads, m, v):
        if t == 4:
            target = m[0] if victim == "avg_grad" else grads[0]
            target.data = torch.zeros(n // 4)

    with pytest.raises((ValueError, RuntimeError)):
        _loop(params, grads, 5, swap)


def test_torch_lazy_conjugate_and_negative_views_are_honoured():
    rng = np.random.default_rng(8)
    shape = (64, 65)
    p0 = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    g0 = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    want = run(p0, [g0, g0])
    # a conjugate view of conj(g) reads as g; so does a negative view of -g
    for lazy in (
        lambda g: torch.tensor(np.conj(g)).conj(),
        lambda g: torch._neg_view(torch.tensor(-g)),
    ):
        params = [torch.tensor(p0) for _ in range(N_TENSORS)]
        grads = [lazy(g0) for _ in range(N_TENSORS)]
        assert grads[0].is_conj() or grads[0].is_neg()
        m, v = _loop(params, grads, 2)
        check(
            [p.numpy() for p in params],
            [x.numpy() for x in m],
            [x.numpy() for x in v],
            [want] * N_TENSORS,
        )


def test_torch_in_place_update_bumps_autograd_version_counters():
    params = [torch.zeros(1 << 12, requires_grad=True) for _ in range(N_TENSORS)]
    saved = (params[0] * params[0]).sum()  # the graph saves params[0] for backward
    adamupdate(params, [torch.ones(1 << 12) for _ in params], None, None, 1, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()
