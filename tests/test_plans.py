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
        np.testing.assert_allclose(np.asarray(p_i, np.float64), w.p, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.asarray(m_i, np.float64), w.m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.asarray(v_i, np.float64), w.v, rtol=1e-13, atol=1e-18)


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
