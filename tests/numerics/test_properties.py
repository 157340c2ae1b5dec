"""Hypothesis properties: structure round trips, and bad calls that fail cleanly.

Profiles: ``ci`` (40 examples, no deadline) is loaded when the ``CI`` environment variable is
set; otherwise ``adamupdate-dev`` (60 examples, no deadline).
"""

from __future__ import annotations

import collections
import math
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from adamupdate import adamupdate

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "adamupdate-dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "adamupdate-dev")

Pair = collections.namedtuple("Pair", ["weight", "bias"])
KEYS = [f"key{i}" for i in range(8)]
HP_NAMES = ("learn_rate", "grad_decay", "sq_grad_decay", "epsilon")


# --------------------------------------------------------------------------------------------
# Tree helpers (independent of adamupdate's own tree code)
# --------------------------------------------------------------------------------------------


def is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def map_leaves(fn, tree):
    if isinstance(tree, dict):
        return {k: map_leaves(fn, x) for k, x in tree.items()}
    if is_namedtuple(tree):
        return type(tree)(*(map_leaves(fn, x) for x in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_leaves(fn, x) for x in tree)
    return fn(tree)


def leaves(tree):
    if isinstance(tree, dict):
        for x in tree.values():
            yield from leaves(x)
    elif isinstance(tree, (list, tuple)):
        for x in tree:
            yield from leaves(x)
    else:
        yield tree


def iter_nodes(tree, path=()):
    """Yield ``(path, node)``; path components ("key", k) / ("idx", i) / ("field", name, i)."""
    yield path, tree
    if isinstance(tree, dict):
        for k, x in tree.items():
            yield from iter_nodes(x, (*path, ("key", k)))
    elif is_namedtuple(tree):
        for i, (name, x) in enumerate(zip(tree._fields, tree, strict=True)):
            yield from iter_nodes(x, (*path, ("field", name, i)))
    elif isinstance(tree, (list, tuple)):
        for i, x in enumerate(tree):
            yield from iter_nodes(x, (*path, ("idx", i)))


def replace_at(tree, path, fn):
    """A copy of ``tree`` (containers on the path copied, the rest shared) with fn(node) at path."""
    if not path:
        return fn(tree)
    comp, rest = path[0], path[1:]
    if comp[0] == "key":
        out = dict(tree)
        out[comp[1]] = replace_at(tree[comp[1]], rest, fn)
        return out
    i = comp[-1]
    items = list(tree)
    items[i] = replace_at(items[i], rest, fn)
    return type(tree)(*items) if is_namedtuple(tree) else type(tree)(items)


def snapshot(tree):
    """Everything observable about an input: types, keys, order, identities, bytes."""
    if isinstance(tree, dict):
        return ("dict", type(tree), [(k, id(x), snapshot(x)) for k, x in tree.items()])
    if isinstance(tree, (list, tuple)):
        return ("seq", type(tree), [(id(x), snapshot(x)) for x in tree])
    if isinstance(tree, np.ndarray):
        return ("arr", tree.dtype.str, tree.shape, tree.strides, tree.tobytes())
    return ("obj", type(tree), repr(tree))


def assert_same_structure(a, b, *, state_of=None, path="root"):
    """``a`` mirrors ``b``: container types, key order, lengths, leaf shapes and dtypes.

    With ``state_of="v"`` the leaf dtype of ``a`` is the real dtype of ``b``'s.
    """
    assert ref.container_type(a) is ref.container_type(b), (path, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same_structure(a[k], b[k], state_of=state_of, path=f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_structure(x, y, state_of=state_of, path=f"{path}[{i}]")
    else:
        assert np.shape(a) == np.shape(b), (path, np.shape(a), np.shape(b))
        want = np.asarray(b).dtype
        if state_of == "v":
            want = np.finfo(want).dtype
        assert np.asarray(a).dtype == want, (path, np.asarray(a).dtype, want)


def word(name: str) -> str:
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


def component_pattern(comp) -> str:
    if comp[0] == "key":
        return word(comp[1])
    if comp[0] == "idx":
        return rf"\[{comp[1]}\]"
    return rf"(?:\[{comp[2]}\]|{word(comp[1])})"  # namedtuple: [i] or .field


def assert_message_names(exc: BaseException, argument: str, path=(), also=()) -> None:
    msg = str(exc)
    assert re.search(word(argument), msg), f"{argument!r} not named in: {msg!r}"
    pos = 0
    for comp in path:
        found = re.compile(component_pattern(comp)).search(msg, pos)
        assert found, f"path component {comp!r} (of {path!r}) not in order in: {msg!r}"
        pos = found.end()
    for extra in also:
        assert re.search(word(extra), msg), f"{extra!r} not in: {msg!r}"


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
leaf_specs = st.tuples(shapes, st.sampled_from([np.float32, np.float64]))
LEAF = object()


def _containers(children):
    small = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        small,
        small.map(tuple),
        st.dictionaries(st.sampled_from(KEYS), children, min_size=1, max_size=3),
        st.tuples(children, children).map(lambda wb: Pair(*wb)),
    )


spec_trees = st.recursive(leaf_specs, _containers, max_leaves=6)


def _build(spec, rng, scale):
    def make(leaf_spec):
        shape, dtype = leaf_spec
        return np.asarray(scale * rng.standard_normal(shape)).astype(dtype)

    # leaf specs are (shape-tuple, dtype) pairs; shape-tuples hold ints only
    def walk(node):
        if isinstance(node, tuple) and len(node) == 2 and isinstance(node[1], type):
            return make(node)
        if isinstance(node, dict):
            return {k: walk(x) for k, x in node.items()}
        if is_namedtuple(node):
            return type(node)(*(walk(x) for x in node))
        return type(node)(walk(x) for x in node)

    return walk(spec)


@st.composite
def problems(draw):
    spec = draw(spec_trees)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    params = _build(spec, rng, 1.0)
    grad = _build(spec, rng, 0.1)
    grad2 = _build(spec, rng, 0.1)
    return params, grad, grad2


valid_hps = st.tuples(
    st.one_of(st.just(0.0), st.floats(1e-5, 0.5)),
    st.one_of(st.just(0.0), st.floats(0.0, 0.999)),
    st.one_of(st.just(0.0), st.floats(0.0, 0.9999)),
    st.one_of(st.just(1e-300), st.floats(1e-12, 1e-2)),
)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@given(problems(), valid_hps, st.integers(1, 10**6))
def test_structure_round_trip_and_values(problem, hps, t0):
    params, grad, grad2 = problem
    before = [snapshot(x) for x in (params, grad, grad2)]
    p1, m1, v1 = adamupdate(params, grad, None, None, t0, *hps)
    assert_same_structure(p1, params)
    assert_same_structure(m1, grad)
    assert_same_structure(v1, grad, state_of="v")
    p2, m2, v2 = adamupdate(p1, grad2, m1, v1, t0 + 1, *hps)
    assert_same_structure(p2, params)
    assert_same_structure(m2, grad)
    assert_same_structure(v2, grad, state_of="v")
    assert [snapshot(x) for x in (params, grad, grad2)] == before
    # numbers: each leaf against the reference, two steps from t0
    rows = zip(
        leaves(params), leaves(grad), leaves(grad2), leaves(p2), leaves(m2), leaves(v2), strict=True
    )
    for p0, g1, g2, p_out, m_out, v_out in rows:
        traj = ref.run(p0, [g1, g2], *hps, first_iteration=t0)
        ref.assert_matches(p_out, traj.p, traj.p_bound, p0.dtype, "p")
        ref.assert_matches(m_out, traj.m, traj.m_bound, p0.dtype, "m")
        ref.assert_matches(v_out, traj.v, traj.v_bound, p0.dtype, "v")


@given(problems())
def test_keyword_hyper_parameters_equal_positional(problem):
    params, grad, _ = problem
    a = adamupdate(params, grad, None, None, 2, 0.01, 0.8, 0.99, 1e-6)
    b = adamupdate(
        params,
        grad,
        None,
        None,
        2,
        learn_rate=0.01,
        grad_decay=0.8,
        sq_grad_decay=0.99,
        epsilon=1e-6,
    )
    for x, y in zip(a, b, strict=True):
        for lx, ly in zip(leaves(x), leaves(y), strict=True):
            np.testing.assert_array_equal(lx, ly)


@given(problems())
def test_inplace_updates_leaves_in_place(problem):
    params, grad, grad2 = problem
    m1, v1 = adamupdate(params, grad, None, None, 1)[1:]
    expected = adamupdate(params, grad2, m1, v1, 2, 0.01)
    p_leaves, m_leaves, v_leaves = list(leaves(params)), list(leaves(m1)), list(leaves(v1))
    grad2_before = snapshot(grad2)
    out = adamupdate(params, grad2, m1, v1, 2, 0.01, inplace=True)
    assert snapshot(grad2) == grad2_before
    for got_tree, orig_leaves, exp_tree in zip(
        out, (p_leaves, m_leaves, v_leaves), expected, strict=True
    ):
        for got, orig, exp in zip(leaves(got_tree), orig_leaves, leaves(exp_tree), strict=True):
            assert got is orig
            np.testing.assert_array_equal(orig, exp)


# --------------------------------------------------------------------------------------------
# Bad structure: raise, name the argument and path, touch nothing
# --------------------------------------------------------------------------------------------


def _other_shape(shape, choice, allow_scalar):
    options = [(*shape, 2), (1, *shape), ((shape[0] + 1, *shape[1:]) if shape else (2,))]
    if len(shape) >= 2 and shape[::-1] != shape:
        options.append(shape[::-1])
    if shape and allow_scalar:
        # A scalar would broadcast: still a mismatch for a gradient. (Not for a state: DESIGN
        # lets a frozen parameter's state be MATLAB's scalar 0, so 0-d states may be legal.)
        options.append(())
    return options[choice % len(options)]


def _candidates(tree):
    out = []
    for path, node in iter_nodes(tree):
        if isinstance(node, np.ndarray):
            out.append(("shape", path))
            out.append(("wrap_leaf", path))
        elif isinstance(node, dict):
            if len(node) >= 2 or path:
                out.append(("missing_key", path))
            out.append(("extra_key", path))
        elif isinstance(node, (list, tuple)) and not is_namedtuple(node):
            out.append(("longer", path))
            if len(node) >= 2:
                out.append(("shorter", path))
    return out


def _mutate(tree, kind, path, choice, *, allow_scalar=True):
    """Return (mutated tree, path expected in the message, extra names expected)."""
    if kind == "shape":

        def fn(leaf):
            return np.zeros(_other_shape(leaf.shape, choice, allow_scalar), dtype=leaf.dtype)

        return replace_at(tree, path, fn), path, ()
    if kind == "wrap_leaf":
        return replace_at(tree, path, lambda leaf: [leaf]), path, ()
    if kind == "missing_key":
        node = dict(iter_nodes(tree))[path]
        key = list(node)[choice % len(node)]
        return (
            replace_at(tree, path, lambda d: {k: x for k, x in d.items() if k != key}),
            path,
            (key,),
        )
    if kind == "extra_key":
        first = next(iter(dict(iter_nodes(tree))[path].values()))
        return replace_at(tree, path, lambda d: {**d, "zz_extra": first}), path, ("zz_extra",)
    if kind == "longer":
        return replace_at(tree, path, lambda s: type(s)([*s, s[0]])), path, ()
    if kind == "shorter":
        return replace_at(tree, path, lambda s: type(s)(list(s)[:-1])), path, ()
    raise AssertionError(kind)


@given(problems(), st.data(), st.sampled_from(["grad", "avg_grad", "avg_sq_grad"]), st.booleans())
def test_structure_mismatch_raises_names_path_and_touches_nothing(problem, data, target, inplace):
    params, grad, grad2 = problem
    cands = _candidates(grad)
    kind, path = data.draw(st.sampled_from(cands))
    choice = data.draw(st.integers(0, 7))
    if target == "grad":
        bad_grad, expected_path, also = _mutate(grad, kind, path, choice)
        args = [params, bad_grad, None, None, 1]
    else:
        p1, m1, v1 = adamupdate(params, grad, None, None, 1)
        if target == "avg_grad":
            m1, expected_path, also = _mutate(m1, kind, path, choice, allow_scalar=False)
        else:
            v1, expected_path, also = _mutate(v1, kind, path, choice, allow_scalar=False)
        args = [p1, grad2, m1, v1, 2]
    before = [snapshot(x) for x in args]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(*args, inplace=inplace)
    assert [snapshot(x) for x in args] == before
    assert_message_names(info.value, target, expected_path, also)


@given(problems(), st.booleans())
def test_grad_of_another_kind_is_rejected(problem, inplace):
    params, grad, _ = problem
    wrong = "not an array" if isinstance(params, (list, dict, tuple)) else {"key0": grad}
    before = [snapshot(params), snapshot(wrong)]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(params, wrong, None, None, 1, inplace=inplace)
    assert [snapshot(params), snapshot(wrong)] == before
    assert_message_names(info.value, "grad")


# --------------------------------------------------------------------------------------------
# Bad hyper-parameters and iteration counters
# --------------------------------------------------------------------------------------------

BAD_HP = {
    "learn_rate": [-0.1, -1e-300, math.nan, math.inf, -math.inf, "0.1", 1j],
    "grad_decay": [1.0, 1.5, -0.1, math.nan, math.inf, "0.9"],
    "sq_grad_decay": [1.0, 1.0000001, -0.5, math.nan, -math.inf, "0.999"],
    "epsilon": [0.0, -1e-8, math.nan, math.inf, "1e-8"],
}
BAD_ITERATION = [
    0,
    -1,
    1.5,
    True,
    False,
    "1",
    math.nan,
    math.inf,
    None,
    np.float64(2.5),
    np.int64(0),
    np.True_,
    -(2**63),
]
VALID_HP = {"learn_rate": 0.01, "grad_decay": 0.9, "sq_grad_decay": 0.999, "epsilon": 1e-8}


@given(
    problems(),
    st.sampled_from([(n, v) for n, vals in BAD_HP.items() for v in vals]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_bad_hyper_parameter_rejected(problem, bad, positional, with_states, inplace):
    params, grad, grad2 = problem
    name, value = bad
    if with_states:
        params, m, v = adamupdate(params, grad, None, None, 1)
        grad, t = grad2, 2
    else:
        m = v = None
        t = 1
    hp = dict(VALID_HP, **{name: value})
    before = [snapshot(x) for x in (params, grad, m, v)]
    with pytest.raises((ValueError, TypeError)) as info:
        if positional:
            adamupdate(params, grad, m, v, t, *(hp[k] for k in HP_NAMES), inplace=inplace)
        else:
            adamupdate(params, grad, m, v, t, **hp, inplace=inplace)
    assert [snapshot(x) for x in (params, grad, m, v)] == before
    assert_message_names(info.value, name)


@given(problems(), st.sampled_from(range(len(BAD_ITERATION))), st.booleans(), st.booleans())
def test_bad_iteration_rejected(problem, which, with_states, inplace):
    params, grad, grad2 = problem
    bad = BAD_ITERATION[which]
    if with_states:
        params, m, v = adamupdate(params, grad, None, None, 1)
        grad = grad2
    else:
        m = v = None
    before = [snapshot(x) for x in (params, grad, m, v)]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(params, grad, m, v, bad, inplace=inplace)
    assert [snapshot(x) for x in (params, grad, m, v)] == before
    assert_message_names(info.value, "iteration")


@pytest.mark.parametrize("value", [0.0, np.float32(0.0), 0])
def test_zero_learn_rate_and_decays_are_valid(value):
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 0.25])
    p1, m1, v1 = adamupdate(p, g, None, None, 1, value, value, value)
    np.testing.assert_array_equal(p1, p)  # learn_rate 0 keeps the parameters
    np.testing.assert_array_equal(m1, g)  # grad_decay 0: m = g
    np.testing.assert_array_equal(v1, g * g)  # sq_grad_decay 0: v = g^2


def _other_dtype(dtype):
    return np.float32 if np.dtype(dtype) == np.float64 else np.float64


@given(problems(), st.data())
def test_a_gradient_of_another_precision_is_computed_in_the_parameters(problem, data):
    """MATLAB computes single parameters with double gradients in single precision: the
    result is the one of the gradient converted to the parameter's dtype first."""
    params, grad, _ = problem
    leaf_paths = [path for path, node in iter_nodes(grad) if isinstance(node, np.ndarray)]
    path = data.draw(st.sampled_from(leaf_paths))
    dtype = {}

    def recast(leaf):
        dtype["param"] = leaf.dtype  # grad's leaves have their parameters' dtypes
        return leaf.astype(_other_dtype(leaf.dtype))

    other = replace_at(grad, path, recast)
    converted = replace_at(other, path, lambda leaf: leaf.astype(dtype["param"]))
    before = snapshot(other)
    got = adamupdate(params, other, None, None, 1)
    want = adamupdate(params, converted, None, None, 1)
    assert snapshot(other) == before
    for a, b in zip(got, want):
        leaves_a = [(p, x) for p, x in iter_nodes(a) if isinstance(x, np.ndarray)]
        leaves_b = [(p, x) for p, x in iter_nodes(b) if isinstance(x, np.ndarray)]
        assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
        for (_, x), (_, y) in zip(leaves_a, leaves_b):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


@given(problems(), st.data(), st.sampled_from(["avg_grad", "avg_sq_grad"]), st.booleans())
def test_dtype_mismatch_raises_names_path_and_touches_nothing(problem, data, target, inplace):
    params, grad, grad2 = problem
    leaf_paths = [path for path, node in iter_nodes(grad) if isinstance(node, np.ndarray)]
    path = data.draw(st.sampled_from(leaf_paths))

    def recast(leaf):
        return leaf.astype(_other_dtype(leaf.dtype))

    p1, m1, v1 = adamupdate(params, grad, None, None, 1)
    if target == "avg_grad":
        m1 = replace_at(m1, path, recast)
    else:
        v1 = replace_at(v1, path, recast)
    args = [p1, grad2, m1, v1, 2]
    before = [snapshot(x) for x in args]
    with pytest.raises((ValueError, TypeError)) as info:
        adamupdate(*args, inplace=inplace)
    assert [snapshot(x) for x in args] == before
    assert_message_names(info.value, target, path)
