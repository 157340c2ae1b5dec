"""Reliability contract (issue #11), 1: a refused call raises TypeError/ValueError naming the
argument and path, and then every buffer (params, grads, both states, every leaf of every group)
is bitwise unchanged. (The contract: reliability_helpers.py.)
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from adamupdate import adamupdate
from reference import assert_matches, run

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

from reliability_helpers import (
    BACKENDS,
    assert_unchanged,
    lift,
    names,
    needs_torch,
    snapshot,
    to_numpy,
)

# --- 1. refused calls change nothing ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "n_leaves,size", [(2, 5), (2, 40_000), (40, 5)], ids=["small", "large", "40-leaves"]
)
@pytest.mark.parametrize("missing", ["avg_grad", "avg_sq_grad"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_half_given_state_is_refused_and_nothing_changes(backend, n_leaves, size, missing, inplace):
    """1a: leaf 1 has one average but not the other: ValueError naming avg_grad[1] or
    avg_sq_grad[1]; every leaf of every argument unchanged (JAX buffers not donated)."""
    rng = np.random.default_rng(11)

    def leaves(scale=1.0, positive=False):
        draw = rng.random if positive else rng.standard_normal
        return [lift((scale * draw(size)).astype(np.float32), backend) for _ in range(n_leaves)]

    params, grads = leaves(), leaves()
    avg, sq = leaves(0.1), leaves(0.01, positive=True)
    (avg if missing == "avg_grad" else sq)[1] = None
    before = snapshot((params, grads, avg, sq))
    with pytest.raises(ValueError) as info:
        adamupdate(params, grads, avg, sq, 3, inplace=inplace)
    message = str(info.value)
    assert names(message, "avg_grad[1]") or names(message, "avg_sq_grad[1]"), message
    assert_unchanged((params, grads, avg, sq), before)


def _sparse_grad(size):
    return torch.sparse_coo_tensor(
        torch.tensor([[0, size - 1]]), torch.tensor([1.0, -2.0]), (size,), check_invariants=True
    )


@needs_torch
@pytest.mark.parametrize("n_leaves", [3, 40])
@pytest.mark.parametrize("with_states", [False, True], ids=["no-states", "states"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_sparse_gradient_in_a_list_is_refused(n_leaves, with_states, inplace):
    """1b: a sparse COO gradient among dense leaves: refused, message says "sparse" and names
    grad[1]; no parameter, gradient or state changed."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(6, generator=gen) for _ in range(n_leaves)]
    grads = [torch.randn(6, generator=gen) for _ in range(n_leaves)]
    grads[1] = _sparse_grad(6)
    avg = [0.1 * torch.randn(6, generator=gen) for _ in range(n_leaves)] if with_states else None
    sq = [torch.rand(6, generator=gen) for _ in range(n_leaves)] if with_states else None
    before = snapshot((params, grads, avg, sq))
    with pytest.raises((TypeError, ValueError)) as info:
        adamupdate(params, grads, avg, sq, 2 if with_states else 1, inplace=inplace)
    message = str(info.value)
    assert "sparse" in message.lower(), message
    assert names(message, "grad[1]"), message
    assert_unchanged((params, grads, avg, sq), before)


def _sparse_embedding_net():
    from adamupdate.network import set_learn_rate_factor

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Embedding(10, 4, sparse=True), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    set_learn_rate_factor(net, "2", "weight", 0.5)  # a second learn-rate group
    net(torch.tensor([[1, 2], [3, 1]])).square().sum().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert grads["0.weight"].is_sparse
    return net, grads


@needs_torch
@pytest.mark.parametrize("with_states", [False, True], ids=["no-states", "user-states"])
def test_network_with_sparse_embedding_gradient_is_refused(with_states):
    """1b: nn.Embedding(sparse=True) in a network with two learn-rate groups: refused naming
    "sparse" and the learnable 0.weight; no parameter, gradient or state changed."""
    net, grads = _sparse_embedding_net()
    avg = sq = None
    if with_states:
        avg = {name: torch.full_like(p, 0.01) for name, p in net.named_parameters()}
        sq = {name: torch.full_like(p, 0.02) for name, p in net.named_parameters()}
    before = snapshot((net, grads, avg, sq))
    with pytest.raises((TypeError, ValueError)) as info:
        adamupdate(net, grads, avg, sq, 2 if with_states else 1)
    message = str(info.value)
    assert "sparse" in message.lower(), message
    assert "0.weight" in message, message
    assert_unchanged((net, grads, avg, sq), before)


def _expanded_problem(size):
    rng = np.random.default_rng(3)
    base = torch.zeros(1)
    p = base.expand(size)  # every element is the same float in memory
    g = torch.from_numpy(rng.standard_normal(size).astype(np.float32))
    m = torch.from_numpy((0.1 * rng.standard_normal(size)).astype(np.float32))
    v = torch.from_numpy(rng.random(size).astype(np.float32))
    return base, p, g, m, v


@needs_torch
@pytest.mark.parametrize("size", [5, 40_000])
def test_self_overlapping_params_in_place_are_refused(size):
    """1c: params = zeros(1).expand(n) in place: ValueError about overlap/sharing naming params;
    neither the shared element nor the gradient or the states changed."""
    base, p, g, m, v = _expanded_problem(size)
    before = snapshot((base, p, g, m, v))
    with pytest.raises(ValueError) as info:
        adamupdate(p, g, m, v, 2, inplace=True)
    message = str(info.value)
    assert re.search(r"overlap|shar", message, re.IGNORECASE), message
    assert names(message, "params"), message
    assert_unchanged((base, p, g, m, v), before)


@needs_torch
@pytest.mark.parametrize("size", [5, 40_000])
def test_self_overlapping_params_out_of_place_match_reference(size):
    """1c: the same expanded params out of place: works, equals the reference, changes nothing."""
    base, p, g, m, v = _expanded_problem(size)
    before = snapshot((base, p, g, m, v))
    new_p, new_m, new_v = adamupdate(p, g, m, v, 2)
    want = run(
        np.zeros(size, np.float32), [g.numpy()], m0=m.numpy(), v0=v.numpy(), first_iteration=2
    )
    assert_unchanged((base, p, g, m, v), before)
    assert new_p.dtype == torch.float32 and new_p.shape == (size,)
    assert_matches(to_numpy(new_p), want.p, want.p_bound, np.float32, "params")
    assert_matches(to_numpy(new_m), want.m, want.m_bound, np.float32, "avg_grad")
    assert_matches(to_numpy(new_v), want.v, want.v_bound, np.float32, "avg_sq_grad")


def _unsupported_dtype_leaf(kind):
    """(params leaf, grad leaf, fragments one of which names the dtype, a good leaf pair)."""
    if kind == "numpy->f8":
        p = np.linspace(-1, 1, 5).astype(">f8")
        good = (np.ones(5), np.full(5, 0.5))
        frags = (">f8", "big-endian", "big endian", "byte order", "byteorder", "endian", "native")
        return p, (0.5 * p).astype(">f8"), frags, good
    good = (torch.ones(5), torch.full((5,), 0.5))
    if kind == "torch-float8_e4m3fn":
        p = torch.linspace(-1, 1, 5).to(torch.float8_e4m3fn)
        return p, p.clone(), ("float8_e4m3fn",), good
    if kind == "torch-complex32":
        p = torch.linspace(-1, 1, 5).to(torch.complex64).to(torch.complex32)
        return p, p.clone(), ("complex32", "chalf"), good
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "numpy->f8",
        pytest.param("torch-float8_e4m3fn", marks=needs_torch),
        pytest.param("torch-complex32", marks=needs_torch),
    ],
)
@pytest.mark.parametrize("container", ["bare", "list"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_unsupported_float_dtype_is_refused(kind, container, inplace):
    """1d: float8, complex32 and big-endian float64 params: TypeError naming params (params[1]
    in a list) and the dtype; the supported leaf next to it is not touched either."""
    p, g, fragments, (good_p, good_g) = _unsupported_dtype_leaf(kind)
    params, grads, path = p, g, "params"
    if container == "list":
        params, grads, path = [good_p, p], [good_g, g], "params[1]"
    before = snapshot((params, grads))
    with pytest.raises(TypeError) as info:
        adamupdate(params, grads, None, None, 1, inplace=inplace)
    message = str(info.value)
    assert names(message, path), message
    assert any(f in message for f in fragments), f"dtype not named: {message}"
    assert_unchanged((params, grads), before)


def _integer_leaf(kind):
    if kind.startswith("numpy"):
        dtype = {"numpy-int64": np.int64, "numpy-int32": np.int32, "numpy-bool": np.bool_}[kind]
        return np.arange(5).astype(dtype), np.ones(5, dtype)
    dtype = {"torch-int64": torch.int64, "torch-int32": torch.int32, "torch-bool": torch.bool}[kind]
    return torch.arange(5).to(dtype), torch.ones(5, dtype=dtype)


@pytest.mark.parametrize(
    "kind",
    ["numpy-int64", "numpy-int32", "numpy-bool"]
    + [pytest.param(k, marks=needs_torch) for k in ("torch-int64", "torch-int32", "torch-bool")],
)
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_integer_and_bool_params_are_refused(kind, inplace):
    """1d: integer/bool params (with gradients of their dtype): TypeError naming params."""
    p, g = _integer_leaf(kind)
    before = snapshot((p, g))
    with pytest.raises(TypeError) as info:
        adamupdate(p, g, None, None, 1, inplace=inplace)
    assert names(str(info.value), "params"), str(info.value)
    assert_unchanged((p, g), before)
