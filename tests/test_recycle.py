"""Functional calls reuse the large inputs a caller has dropped as the next call's outputs
(adamupdate._recycle): never an array or tensor that anything still refers to."""

from __future__ import annotations

import numpy as np
import pytest

from adamupdate import adamupdate

N = 1 << 19  # 2 MB of float32: large enough to be recycled


def _loop(make, copy, steps=6):
    """A functional loop that keeps, from each step, a reference or a view of something it
    returned; every kept value must stay as it was returned."""
    p, g = make(np.linspace(-1, 1, N)), make(np.full(N, 0.5))
    m = v = None
    kept = []
    for t in range(1, steps + 1):
        p, m, v = adamupdate(p, g, m, v, t)
        if t % 3 == 1:
            kept.append((p, copy(p)))  # the array itself
        elif t % 3 == 2:
            view = m[: N // 2]
            kept.append((view, copy(view)))  # a view keeps its base alive
    return p, m, v, kept


def test_numpy_kept_arrays_and_views_are_never_reused():
    p, m, v, kept = _loop(lambda x: np.asarray(x, np.float32), np.copy)
    for array, snapshot in kept:
        assert np.array_equal(array, snapshot)
    # and the result is the plain loop's
    q, n, w, _ = _loop(lambda x: np.asarray(x, np.float32), np.copy)
    assert np.array_equal(p, q) and np.array_equal(m, n) and np.array_equal(v, w)


def test_torch_kept_tensors_and_views_are_never_reused():
    torch = pytest.importorskip("torch")
    *_, kept = _loop(lambda x: torch.tensor(np.asarray(x, np.float32)), torch.clone)
    for tensor, snapshot in kept:
        assert torch.equal(tensor, snapshot)


def test_torch_recycled_memory_refuses_a_stale_backward():
    """A tensor a graph saved, then dropped by the caller, may be reused: its version counter
    moves on, so backward() refuses the stale values rather than use them."""
    torch = pytest.importorskip("torch")
    w = torch.ones(N, requires_grad=True)
    p, g = torch.ones(N), torch.full((N,), 0.5)
    p, m, v = adamupdate(p, g, None, None, 1)
    first = p.clone()
    loss = (w * p).sum()  # the graph saves p
    for t in range(2, 5):
        p, m, v = adamupdate(p, g, m, v, t)
    try:
        loss.backward()
    except RuntimeError as error:
        assert "modified by an inplace operation" in str(error)
    else:  # p was not recycled (the graph kept it referenced): the gradient is the old p
        assert torch.equal(w.grad, first)
