"""Reliability contract (issue #11): a call completes with MATLAB's result or changes nothing.

Written from the contract (DESIGN.md sections 1-2, the public docstring of ``adamupdate`` and
issue #11), not from the implementation. Expected values come from the independent float64
reference in ``tests/reference.py``.

1. A refused call raises TypeError/ValueError naming the argument and path, and then every
   buffer (params, grads, both states, every leaf of every group) is bitwise unchanged.
2. In place, overlapping buffers (within a leaf or between leaves) are refused naming both
   paths; out of place, aliased inputs give the result of their copies, bitwise.
3. float16/bfloat16 parameters keep float32 averages by default and follow the reference.
4. Same input, same result (bitwise), regardless of size, container or backend, including
   overflow, inf and NaN, with MATLAB's order of operations and complex-times-real semantics.
5. Concurrent calls from several threads under numba's workqueue layer work.
6. torch in-place updates bump autograd version counters, also for small groups.
7. A network call with default arguments equals the functional call and does not write into
   averages the user created.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adamupdate as adamupdate_package
from adamupdate import adamupdate
from reference import assert_matches, run, step, tolerance, unit_roundoff

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - jax is an optional dependency
    jax = jnp = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
needs_jax = pytest.mark.skipif(jax is None, reason="needs jax")

BACKENDS = [
    "numpy",
    pytest.param("torch", marks=needs_torch),
    pytest.param("jax", marks=needs_jax),
]
ARGS = ("params", "grad", "avg_grad", "avg_sq_grad")


# --- snapshots: every buffer, bitwise --------------------------------------------------------


def _record(x):
    """Identity, dtype, shape and raw bytes of one leaf (``None`` stays ``None``)."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return ("numpy", id(x), x.dtype.str, x.shape, x.tobytes())
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_sparse:
            return (
                "torch-sparse",
                id(x),
                str(t.dtype),
                tuple(t.shape),
                _record(t._indices().clone())[2:],  # without the id of a temporary clone
                _record(t._values().clone())[2:],
            )
        raw = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return ("torch", id(x), str(t.dtype), tuple(t.shape), raw)
    if jax is not None and isinstance(x, jax.Array):
        if x.is_deleted():
            return ("jax-deleted", id(x))
        return ("jax", id(x), str(x.dtype), tuple(x.shape), np.asarray(x).tobytes())
    if np.isscalar(x):
        return ("scalar", repr(x))
    raise AssertionError(f"cannot snapshot {type(x)}")


def _snapshot(tree):
    if torch is not None and isinstance(tree, torch.nn.Module):
        return {
            "module": id(tree),
            **{name: _record(p) for name, p in tree.named_parameters()},
        }
    if isinstance(tree, dict):
        return {"dict": id(tree), **{repr(k): _snapshot(v) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        return [type(tree).__name__, id(tree), *[_snapshot(v) for v in tree]]
    return _record(tree)


def snapshot(trees: tuple):
    """A bitwise record of every buffer (and the identity of every container and leaf) in each
    of ``trees``: nested lists/tuples/dicts of arrays, or networks."""
    assert isinstance(trees, tuple)
    return {f"argument {i}": _snapshot(tree) for i, tree in enumerate(trees)}


def _first_difference(before, after, path="inputs"):
    if type(before) is not type(after):
        return path
    if isinstance(before, dict):
        if before.keys() != after.keys():
            return path + " (keys)"
        for key in before:
            found = _first_difference(before[key], after[key], f"{path}[{key}]")
            if found:
                return found
        return None
    if isinstance(before, list):
        if len(before) != len(after):
            return path + " (length)"
        if before[:2] != after[:2]:
            return path + " (the container was replaced)"
        for i, (b, a) in enumerate(zip(before[2:], after[2:])):
            found = _first_difference(b, a, f"{path}[{i}]")
            if found:
                return found
        return None
    if before != after:
        if isinstance(after, tuple) and after[0] == "jax-deleted":
            return path + " (JAX buffer deleted/donated)"
        return path
    return None


def assert_unchanged(trees: tuple, before, what="inputs"):
    """Every buffer of ``trees`` is bitwise what :func:`snapshot` recorded (same objects too)."""
    where = _first_difference(before, snapshot(trees), what)
    assert where is None, f"{where} changed although the call was refused or not in place"


def names(message: str, path: str) -> bool:
    """``path`` (e.g. ``grad[1]``) appears in ``message`` as a whole (not inside avg_grad[1])."""
    return re.search(r"(?<!\w)" + re.escape(path), message) is not None


def to_numpy(x) -> np.ndarray:
    """A NumPy copy of a leaf (bfloat16 goes through float32, exactly)."""
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.clone().numpy()
    return np.array(x, copy=True)


def lift(arr: np.ndarray, backend: str):
    """A fresh, independent ``backend`` array holding ``arr``."""
    if backend == "numpy":
        return np.array(arr, copy=True)
    if backend == "torch":
        return torch.from_numpy(np.array(arr, copy=True))
    if backend == "jax":
        return jnp.asarray(np.array(arr, copy=True))
    raise AssertionError(backend)


def independent_copy(x):
    """A copy sharing no memory with anything (contiguous)."""
    if x is None:
        return None
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().clone(memory_format=torch.contiguous_format)
    return np.array(x, copy=True)


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


# --- 2. aliasing -----------------------------------------------------------------------------

ALIAS_T = 3  # iteration for the aliasing problems (states are given)


def _build_aliased(backend, layout, n, n_leaves, seed=0):
    """Leaves whose buffers follow ``layout``: role -> (offset into one shared base, same_object).

    A role is ``(argument, leaf)``. Roles not in the layout get their own buffer. Roles at the
    same offset with ``same_object`` true share one object; otherwise each is its own view.
    Every value is positive (so v >= 0 whatever aliases it).
    """
    rng = np.random.default_rng(seed)
    length = max([offset for offset, _ in layout.values()], default=0) + n + 3
    base_np = rng.uniform(0.1, 1.0, length)
    base = lift(base_np, backend)
    objects = {}
    trees = {arg: [] for arg in ARGS}
    regions = {}
    for leaf in range(n_leaves):
        for arg in ARGS:
            role = (arg, leaf)
            if role in layout:
                offset, same_object = layout[role]
                obj = objects.get(offset) if same_object else None
                if obj is None:
                    obj = base[offset : offset + n]
                objects.setdefault(offset, obj)
                regions[role] = (offset, offset + n)
            else:
                obj = lift(rng.uniform(0.1, 1.0, n), backend)
            trees[arg].append(obj)
    return base, trees, regions


def _overlapping_pairs(regions):
    pairs = []
    for (a, ra), (b, rb) in itertools.combinations(sorted(regions.items()), 2):
        if ra[0] < rb[1] and rb[0] < ra[1]:
            pairs.append((a, b))
    return pairs


def _path(role):
    return f"{role[0]}[{role[1]}]"


def _outputs_as_numpy(outputs):
    return [[to_numpy(x) for x in tree] for tree in outputs]


def _assert_same_bits(got, want, what):
    for arg, got_tree, want_tree in zip(ARGS[:1] + ARGS[2:], got, want):
        for i, (a, b) in enumerate(zip(got_tree, want_tree)):
            assert a.dtype == b.dtype, f"{what}: {arg}[{i}] dtype {a.dtype} != {b.dtype}"
            assert a.tobytes() == b.tobytes(), (
                f"{what}: {arg}[{i}] differs from the computation on copies: {a} vs {b}"
            )


def check_aliasing(backend, layout, n=6, n_leaves=2, *, inplace):
    """The contract of item 2 for one layout (see the module docstring)."""
    base, trees, regions = _build_aliased(backend, layout, n, n_leaves)
    args = [trees[arg] for arg in ARGS]
    overlaps = _overlapping_pairs(regions)
    forbidden = [(a, b) for a, b in overlaps if not (a[0] == b[0] == "grad")]
    copies = [[independent_copy(x) for x in tree] for tree in args]
    want = _outputs_as_numpy(adamupdate(*copies, ALIAS_T, inplace=inplace))
    # the non-aliased computation itself follows the reference
    plain = [[to_numpy(x) for x in tree] for tree in args]
    for i, (p, g, m, v) in enumerate(zip(*plain)):
        ref = run(p, [g], m0=m, v0=v, first_iteration=ALIAS_T)
        assert_matches(want[0][i], ref.p, ref.p_bound, np.float64, f"params[{i}] on copies")
        assert_matches(want[1][i], ref.m, ref.m_bound, np.float64, f"avg_grad[{i}] on copies")
        assert_matches(want[2][i], ref.v, ref.v_bound, np.float64, f"avg_sq_grad[{i}] on copies")
    before = snapshot((base, *args))
    base_before = to_numpy(base)

    if inplace and forbidden:
        with pytest.raises(ValueError) as info:
            adamupdate(*args, ALIAS_T, inplace=True)
        message = str(info.value)
        assert any(names(message, _path(a)) and names(message, _path(b)) for a, b in forbidden), (
            f"message does not name both paths of an overlapping pair {forbidden}: {message}"
        )
        assert_unchanged((base, *args), before)
        return
    try:
        outputs = adamupdate(*args, ALIAS_T, inplace=inplace)
    except ValueError as error:
        # Two gradients sharing memory are only read: refusing them is allowed, not required.
        if inplace and overlaps:
            message = str(error)
            assert any(names(message, _path(a)) and names(message, _path(b)) for a, b in overlaps)
            assert_unchanged((base, *args), before)
            return
        raise
    got = _outputs_as_numpy(outputs)
    _assert_same_bits(got, want, "aliased call")
    if not inplace:
        assert_unchanged((base, *args), before)
        return
    # In place: each buffer holds its result; the base holds exactly those results elsewhere
    # unchanged; the gradients are unchanged.
    expected_base = base_before.copy()
    for k, arg in enumerate(("params", "avg_grad", "avg_sq_grad")):
        for leaf in range(n_leaves):
            value = want[k][leaf]
            buffer = to_numpy(trees[arg][leaf])
            assert buffer.tobytes() == value.tobytes(), f"{arg}[{leaf}] was not updated in place"
            if (arg, leaf) in regions:
                lo, hi = regions[(arg, leaf)]
                expected_base[lo:hi] = value
    assert to_numpy(base).tobytes() == expected_base.tobytes(), "base buffer: wrong bytes"
    for leaf, (g_now, g_then) in enumerate(zip(trees["grad"], plain[1])):
        assert to_numpy(g_now).tobytes() == g_then.tobytes(), f"grad[{leaf}] changed"


ALIAS_CASES = {
    # name: (layout, refused in place)
    "m-is-v": ({("avg_grad", 0): (0, True), ("avg_sq_grad", 0): (0, True)}, True),
    "m-view-of-v": ({("avg_grad", 0): (0, False), ("avg_sq_grad", 0): (0, False)}, True),
    "p-is-g": ({("params", 0): (0, True), ("grad", 0): (0, True)}, True),
    "p-is-m": ({("params", 1): (0, True), ("avg_grad", 1): (0, True)}, True),
    "params-twice": ({("params", 0): (0, True), ("params", 1): (0, True)}, True),
    "state-of-other-leaf": ({("avg_grad", 0): (0, True), ("avg_sq_grad", 1): (0, True)}, True),
    "overlapping-param-slices": ({("params", 0): (0, False), ("params", 1): (5, False)}, True),
    "overlapping-state-slices": (
        {("avg_grad", 0): (0, False), ("avg_sq_grad", 1): (3, False)},
        True,
    ),
    "grad-overlaps-other-param": ({("grad", 0): (0, False), ("params", 1): (4, False)}, True),
    "disjoint-param-slices": ({("params", 0): (0, False), ("params", 1): (10, False)}, False),
    "states-in-one-flat-buffer": (
        {
            ("avg_grad", 0): (0, False),
            ("avg_grad", 1): (10, False),
            ("avg_sq_grad", 0): (20, False),
            ("avg_sq_grad", 1): (30, False),
        },
        False,
    ),
    "everything-in-one-flat-buffer": (
        {
            (arg, leaf): (10 * (4 * leaf + k), False)
            for leaf in (0, 1)
            for k, arg in enumerate(ARGS)
        },
        False,
    ),
}


def _shift_leaves(layout, shift):
    return {(arg, leaf + shift): spec for (arg, leaf), spec in layout.items()}


@pytest.mark.parametrize("backend", BACKENDS[:2])
@pytest.mark.parametrize("case", list(ALIAS_CASES))
@pytest.mark.parametrize("n_leaves", [2, 40])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_aliasing_cases(backend, case, n_leaves, inplace):
    """2: named aliasing patterns, on leaves 0/1 of 2 or leaves 37/38 of 40 (size 10)."""
    layout, refused = ALIAS_CASES[case]
    if n_leaves == 40:
        layout = _shift_leaves(layout, 37)
    regions = {role: (o, o + 10) for role, (o, _) in layout.items()}
    assert bool(_overlapping_pairs(regions)) == refused  # the case table is consistent
    check_aliasing(backend, layout, n=10, n_leaves=n_leaves, inplace=inplace)


ROLES = tuple((arg, leaf) for leaf in (0, 1) for arg in ARGS)
# Offsets are multiples of n/2 = 3, so two regions are identical, half-overlapping or disjoint.
LAYOUTS = st.lists(
    st.one_of(st.none(), st.tuples(st.integers(0, 8).map(lambda k: 3 * k), st.booleans())),
    min_size=len(ROLES),
    max_size=len(ROLES),
).map(lambda specs: {r: s for r, s in zip(ROLES, specs) if s is not None})
ALIAS_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@ALIAS_SETTINGS
@given(layout=LAYOUTS, inplace=st.booleans())
def test_random_aliasing_numpy(layout, inplace):
    """2 (hypothesis): any of p, g, m, v of two leaves carved from one NumPy buffer (same object,
    view, overlapping or disjoint slices)."""
    check_aliasing("numpy", layout, inplace=inplace)


@needs_torch
@ALIAS_SETTINGS
@given(layout=LAYOUTS, inplace=st.booleans())
def test_random_aliasing_torch(layout, inplace):
    """2 (hypothesis): the same for torch tensors."""
    check_aliasing("torch", layout, inplace=inplace)


@st.composite
def disjoint_layouts(draw):
    """Some roles carved from one base at pairwise disjoint places (slot k: [9k+gap, +6))."""
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=2, max_size=len(ROLES), unique=True))
    slots = draw(st.permutations(range(len(ROLES))))
    gaps = draw(st.lists(st.integers(0, 3), min_size=len(roles), max_size=len(roles)))
    return {role: (9 * slot + gap, False) for role, slot, gap in zip(roles, slots, gaps)}


@pytest.mark.parametrize("backend", BACKENDS[:2])
def test_random_disjoint_slices_are_accepted_in_place(backend):
    """2 (hypothesis): disjoint slices of one buffer (e.g. every state a view into one flat
    buffer) are accepted in place and give the result of independent buffers."""

    @ALIAS_SETTINGS
    @given(layout=disjoint_layouts())
    def check(layout):
        assert not _overlapping_pairs({r: (o, o + 6) for r, (o, _) in layout.items()})
        check_aliasing(backend, layout, inplace=True)

    check()


# --- 3. half precision -----------------------------------------------------------------------

HALF = [
    ("numpy", "float16"),
    pytest.param("torch", "float16", marks=needs_torch),
    pytest.param("torch", "bfloat16", marks=needs_torch),
]


def _half(arr, backend, dtype):
    if backend == "numpy":
        return np.asarray(arr, dtype=np.float64).astype(dtype)
    return torch.from_numpy(np.asarray(arr, dtype=np.float32)).to(getattr(torch, dtype))


def _dtype_name(x):
    return str(x.dtype).removeprefix("torch.")


def _half_problem(kind, rng):
    """(p0, gradients, learn_rate) in float64, before rounding to half precision."""
    if kind == "issue":
        return np.ones(4), [np.full(4, 5e-3)] + [np.zeros(4)] * 4, 0.001
    n, steps = 64, 10
    sign = lambda: rng.choice([-1.0, 1.0], n)  # noqa: E731
    if kind == "tiny":
        grads = [sign() * 10.0 ** rng.uniform(-4, -2, n) for _ in range(steps)]
    else:  # huge, within float16's range (max 65504)
        grads = [sign() * rng.uniform(1e4, 6e4, n) for _ in range(steps)]
    return rng.uniform(-1, 1, n), grads, 0.01


def _half_tolerance(p0, grads, lr, dtype, trajectory):
    """Per element: one half-precision rounding of p (and of the step) per step, plus the
    reference's float32 bound for the float32 averages and step."""
    u = 2.0**-8 if dtype == "bfloat16" else unit_roundoff(np.float16)
    total = np.zeros_like(p0)
    p = p0
    m = v = None
    for t, g in enumerate(grads, 1):
        new_p, m, v = step(p, g, m, v, t, lr)
        total += np.abs(new_p) + np.abs(new_p - p)
        p = new_p
    return 1.1 * u * total + tolerance(trajectory.p_bound, np.float32)


@pytest.mark.parametrize("backend,dtype", HALF)
@pytest.mark.parametrize("kind", ["issue", "tiny", "huge"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_half_precision_params_keep_float32_averages(backend, dtype, kind, inplace):
    """3: float16/bfloat16 params: float32 averages by default, params keep their dtype, and the
    trajectory follows the float64 reference within a half rounding per step."""
    rng = np.random.default_rng(5)
    p0, grads, lr = _half_problem(kind, rng)
    p = _half(p0, backend, dtype)
    gs = [_half(g, backend, dtype) for g in grads]
    p0_exact = to_numpy(p).astype(np.float64)  # what the library starts from, exactly
    gs_exact = [to_numpy(g).astype(np.float64) for g in gs]
    m = v = None
    for t, g in enumerate(gs, 1):
        p, m, v = adamupdate(p, g, m, v, t, lr, inplace=inplace)
        assert _dtype_name(p) == dtype, f"params became {p.dtype}"
        assert _dtype_name(m) == "float32", f"avg_grad is {m.dtype}, not float32"
        assert _dtype_name(v) == "float32", f"avg_sq_grad is {v.dtype}, not float32"
    want = run(p0_exact, gs_exact, lr)
    if kind == "issue":
        assert abs(want.p[0] - 0.99703) < 1e-4  # the issue's float64 value
    got = to_numpy(p).astype(np.float64)
    tol = _half_tolerance(p0_exact, gs_exact, lr, dtype, want)
    worst = np.argmax(np.abs(got - want.p) - tol)
    assert np.all(np.abs(got - want.p) <= tol), (
        f"params[{worst}] = {got[worst]!r}, reference {want.p[worst]!r}, tol {tol[worst]:.3g}"
    )
    assert_matches(to_numpy(m), want.m, want.m_bound, np.float32, "avg_grad")
    assert_matches(to_numpy(v), want.v, want.v_bound, np.float32, "avg_sq_grad")


@pytest.mark.parametrize(
    "backend,state_dtype",
    [("numpy", "float16"), ("numpy", np.float16)]
    + [pytest.param("torch", s, marks=needs_torch) for s in ("float16", "torch.float16")],
)
def test_explicit_float16_averages_still_work(backend, state_dtype):
    """3: state_dtype="float16" asks for half averages explicitly; they follow the reference
    within its float16 bound."""
    if state_dtype == "torch.float16":
        state_dtype = torch.float16
    rng = np.random.default_rng(6)
    p0 = rng.uniform(-1, 1, 16)
    grads = [rng.choice([-1.0, 1.0], 16) * rng.uniform(0.5, 2.0, 16) for _ in range(5)]
    p = _half(p0, backend, "float16")
    gs = [_half(g, backend, "float16") for g in grads]
    m = v = None
    for t, g in enumerate(gs, 1):
        p, m, v = adamupdate(p, g, m, v, t, 0.01, state_dtype=state_dtype)
        assert _dtype_name(p) == _dtype_name(m) == _dtype_name(v) == "float16"
    exact = [to_numpy(g).astype(np.float64) for g in gs]
    want = run(to_numpy(_half(p0, backend, "float16")).astype(np.float64), exact, 0.01)
    assert_matches(to_numpy(p), want.p, want.p_bound, np.float16, "params")
    assert_matches(to_numpy(m), want.m, want.m_bound, np.float16, "avg_grad")
    assert_matches(to_numpy(v), want.v, want.v_bound, np.float16, "avg_sq_grad")


def _bad_state_dtypes():
    cases = [
        ("numpy", s) for s in ("int32", np.int32, "bool", np.bool_, "complex64", np.complex128)
    ]
    if torch is not None:
        cases += [
            ("torch", s) for s in ("int32", torch.int32, torch.bool, torch.complex64, "complex64")
        ]
    return cases


@pytest.mark.parametrize("backend,state_dtype", _bad_state_dtypes(), ids=repr)
def test_non_float_state_dtype_is_refused(backend, state_dtype):
    """3: integer, bool and (for real params) complex state_dtype: TypeError naming state_dtype;
    nothing changed, also in place."""
    rng = np.random.default_rng(7)
    params = [lift(rng.standard_normal(5).astype(np.float32), backend) for _ in range(2)]
    grads = [lift(rng.standard_normal(5).astype(np.float32), backend) for _ in range(2)]
    before = snapshot((params, grads))
    with pytest.raises(TypeError) as info:
        adamupdate(params, grads, None, None, 1, inplace=True, state_dtype=state_dtype)
    assert "state_dtype" in str(info.value), str(info.value)
    assert_unchanged((params, grads), before)


# --- 4. same input, same result --------------------------------------------------------------

INF, NAN = math.inf, math.nan
POOL = [1e20, -1e20, INF, -INF, NAN, 0.0, 0.5, -1.5]
V_POOL = [1e20, INF, NAN, 0.0, 0.25, 1e-30]
PATTERN = 7
LARGE = 50_000
N_LIST = 40


def _complex(re_parts, im_parts):
    out = np.empty(len(re_parts), np.complex64)
    out.real, out.imag = re_parts, im_parts
    return out


def _special_problem(case):
    """(p, [g1, g2], m, v, first iteration) of PATTERN elements."""
    if case == "complex64":
        p = _complex([1, -1, 2, 0.5, 1, -2, 3], [2, 0.5, -1, 0.5, -1, 1, 0])
        g = _complex([INF, 0, NAN, 1e20, -INF, 0, 0.5], [0, INF, 0, 0, 0, -INF, -0.25])
        return p, [g, g[::-1].copy()], None, None, 1
    dtype = np.dtype(case.split("-")[0])
    if case.endswith("overflow"):
        big = 1e20 if dtype == np.float32 else 1e200  # squares to inf in this dtype
        last = 0.5 if dtype == np.float32 else 1e20
        p = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 0.25], dtype)
        g = np.array([big, -big, INF, -INF, NAN, 0.0, last], dtype)
        return p, [g, g[::-1].copy()], None, None, 1
    rng = np.random.default_rng(int(case.rsplit("-", 1)[1]))

    def pick(pool):
        return np.array(rng.choice(pool, PATTERN), dtype)

    with np.errstate(over="ignore"):
        return pick(POOL), [pick(POOL), pick(POOL)], pick(POOL), pick(V_POOL), 3


SPECIAL_CASES = [
    "float32-overflow",
    "float64-overflow",
    "float32-seed-1",
    "float32-seed-2",
    "float64-seed-3",
    "complex64",
]


def _special_path(path):
    """(lift: pattern -> inputs, lower: outputs -> flat numpy, expand: pattern result -> flat)."""
    if path.startswith("numpy-list"):
        return (
            lambda a: [a.copy() for _ in range(N_LIST)],
            lambda out: np.concatenate([to_numpy(x) for x in out]),
            lambda a: np.tile(a, N_LIST),
        )
    backend, size = path.split("-")[:2]
    size = int(size)

    def lift_(a):
        return lift(np.resize(a, size), backend)

    return lift_, to_numpy, lambda a: np.resize(a, size)


def _run_path(path, problem, inplace):
    lift_, lower, _ = _special_path(path)
    p, grads, m, v, t0 = problem
    P = lift_(p)
    M = None if m is None else lift_(m)
    V = None if v is None else lift_(v)
    results = []
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, t0):
            P, M, V = adamupdate(P, lift_(g), M, V, t, inplace=inplace)
            results.append(tuple(lower(x) for x in (P, M, V)))
    return results


def _assert_same(a, b, what):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    # complex: each component on its own (np.isnan(inf+nanj) would hide a wrong real part)
    parts = [(a.real, b.real), (a.imag, b.imag)] if np.iscomplexobj(a) else [(a, b)]
    for x, y in parts:
        if not np.array_equal(x, y, equal_nan=True):
            bad = np.flatnonzero(~((x == y) | (np.isnan(x) & np.isnan(y))))[:5]
            raise AssertionError(f"{what}: elements {bad} differ: {a[bad]} vs {b[bad]}")


SPECIAL_PATHS = [
    "numpy-7",
    f"numpy-{LARGE}",
    "numpy-list-40",
    pytest.param("torch-7", marks=needs_torch),
    pytest.param(f"torch-{LARGE}", marks=needs_torch),
]


def _check_matlab_semantics(case, problem, baseline):
    """What MATLAB's formula gives for the special elements at step 1 (states empty)."""
    p0 = problem[0]
    p, m, v = baseline[0]
    if case.endswith("overflow"):
        assert np.all(np.isinf(v[:2])), f"v of a gradient that squares to inf: {v[:2]}"
        assert p[:2].tobytes() == p0[:2].tobytes(), f"params moved: {p0[:2]} -> {p[:2]}"
        assert m[0] > 0 and np.isfinite(m[0]) and m[1] < 0 and np.isfinite(m[1])
        assert np.isinf(v[2]) and np.isinf(v[3]) and np.isnan(v[4]) and v[5] == 0
        assert p[5] == p0[5] and m[5] == 0, "a zero gradient does not move anything"
    if case == "complex64":
        assert m.dtype == np.complex64 and v.dtype == np.float32
        # (1-b1)*(inf+0j) is inf+0j (real scalar times complex, componentwise)
        assert np.isinf(m[0].real) and m[0].imag == 0, f"m of inf+0j: {m[0]}"
        assert m[1].real == 0 and np.isinf(m[1].imag), f"m of 0+inf j: {m[1]}"
        assert np.isnan(m[2].real) and m[2].imag == 0, f"m of nan+0j: {m[2]}"
        assert np.isinf(v[0]) and np.isinf(v[1]) and np.isnan(v[2])
        # p - a*m/(sqrt(inf)+eps): the zero component of m gives exactly 0
        assert p[0].imag == p0[0].imag, f"params[0] {p0[0]} -> {p[0]}"
        assert p[1].real == p0[1].real, f"params[1] {p0[1]} -> {p[1]}"
        assert np.isnan(p[0].real) and np.isnan(p[1].imag)


@pytest.mark.parametrize("case", ["float32-overflow", "float64-overflow", "complex64"])
@pytest.mark.parametrize("path", SPECIAL_PATHS)
def test_special_values_follow_matlab_order_of_operations(case, path):
    """4: a gradient that squares to inf makes v inf and leaves p unchanged; (1-b1)*(inf+0j) is
    inf+0j (real times complex, componentwise), and p's other component is not touched."""
    problem = _special_problem(case)
    _check_matlab_semantics(case, problem, _run_path(path, problem, inplace=False))


@pytest.mark.parametrize("case", SPECIAL_CASES)
@pytest.mark.parametrize("path", SPECIAL_PATHS)
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_special_values_same_result_on_every_path(case, path, inplace):
    """4: 1e20, -1e20, inf, -inf, nan, 0 (and complex inf/nan): two steps on this path equal a
    small NumPy array out of place, bitwise with NaN positions included. (A failure says the
    paths disagree; the test above says which one is wrong.)"""
    problem = _special_problem(case)
    baseline = _run_path("numpy-7", problem, inplace=False)
    expand = _special_path(path)[2]
    for k, (got, want) in enumerate(zip(_run_path(path, problem, inplace), baseline), 1):
        for name, a, b in zip(("params", "avg_grad", "avg_sq_grad"), got, want):
            _assert_same(a, expand(b), f"{path} step {k} {name}")


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
