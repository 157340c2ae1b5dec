"""adamupdate on nested containers (a top-level cell array as a list, dicts, namedtuples), Python
and NumPy scalars, zero-d arrays, and in place, against the float64 reference
(``tests/reference.py``; tolerances as in test_matlab_reference.py); inputs untouched unless
``inplace``.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

import reference as ref
from adamupdate import adamupdate
from matlab_helpers import average_dtype, real_dtype

# --------------------------------------------------------------------------------------------
# Containers, scalars
# --------------------------------------------------------------------------------------------

Pair = collections.namedtuple("Pair", ["weight", "bias"])


def _leaves(tree):
    if isinstance(tree, dict):
        for k in tree:
            yield from _leaves(tree[k])
    elif isinstance(tree, (list, tuple)):
        for x in tree:
            yield from _leaves(x)
    else:
        yield tree


def _assert_same_structure(a, b, path="root"):
    assert ref.container_type(a) is ref.container_type(b), (path, type(a), type(b))
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            _assert_same_structure(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_structure(x, y, f"{path}[{i}]")
    else:
        assert np.shape(a) == np.shape(b), path
        assert np.asarray(a).dtype == np.asarray(b).dtype, (path, a.dtype, b.dtype)


def _make_tree(rng, scale=1.0):
    def arr(shape, dtype=np.float64):
        return np.asarray(scale * rng.standard_normal(shape)).astype(dtype)

    return {
        "fc1": [arr((4, 3)), arr((4,))],
        "fc2": (arr((2, 4), np.float32), arr((2,), np.float32)),
        "nt": Pair(arr((3, 3)), arr(())),
        "deep": {"cell": [[arr((2, 2))], (arr((5,)),)], "c": arr((2,), np.complex128) + 1j},
    }


def _call_per_leaf(params, grad, m, v, t, *hp):
    out = []
    pl = list(_leaves(params))
    gl = list(_leaves(grad))
    ml = [None] * len(pl) if m is None else list(_leaves(m))
    vl = [None] * len(pl) if v is None else list(_leaves(v))
    for p_, g_, m_, v_ in zip(pl, gl, ml, vl, strict=True):
        out.append(adamupdate(p_, g_, m_, v_, t, *hp))
    return out


def test_container_matches_leaves_one_by_one():
    rng = np.random.default_rng(21)
    params = _make_tree(rng)
    params["scalar"] = np.float32(0.5)  # a NumPy scalar leaf stays a NumPy scalar
    hp = (0.01, 0.8, 0.99, 1e-7)
    p, m, v = params, None, None
    grads = []
    for t in (1, 2, 3):
        grad = _make_tree(rng, 0.1)
        grad["scalar"] = np.float32(-0.25)
        grads.append(grad)
        expected = _call_per_leaf(p, grad, m, v, t, *hp)
        p_new, m_new, v_new = adamupdate(p, grad, m, v, t, *hp)
        _assert_same_structure(p_new, params)
        _assert_same_structure(m_new, grad)
        _assert_same_structure(v_new["fc1"], grad["fc1"])
        assert type(p_new["nt"]) is Pair and type(m_new["nt"]) is Pair and type(v_new["nt"]) is Pair
        assert v_new["deep"]["c"].dtype == np.float64  # complex leaf: real v
        leaves = zip(_leaves(p_new), _leaves(m_new), _leaves(v_new), expected, strict=True)
        for i, (pp, mm, vv, (pe, me, ve)) in enumerate(leaves):
            np.testing.assert_array_equal(pp, pe, err_msg=f"leaf {i}")
            np.testing.assert_array_equal(mm, me, err_msg=f"leaf {i}")
            np.testing.assert_array_equal(vv, ve, err_msg=f"leaf {i}")
        p, m, v = p_new, m_new, v_new
    # and against the reference, leaf by leaf, after three steps
    leaf_grads = [list(_leaves(g)) for g in grads]
    for i, (p0_leaf, p_leaf) in enumerate(zip(_leaves(params), _leaves(p), strict=True)):
        dtype = np.asarray(p0_leaf).dtype
        traj = ref.run(np.asarray(p0_leaf), [lg[i] for lg in leaf_grads], *hp)
        ref.assert_matches(p_leaf, traj.p, traj.p_bound, dtype, f"leaf {i}")


@pytest.mark.parametrize("kind", [list, tuple])
def test_top_level_cell_array(kind):
    rng = np.random.default_rng(22)
    params = kind([rng.standard_normal((2, 3)), rng.standard_normal(4).astype(np.float32)])
    grad = kind([rng.standard_normal((2, 3)), rng.standard_normal(4).astype(np.float32)])
    p1, m1, v1 = adamupdate(params, grad, None, None, 1, 0.05)
    assert type(p1) is kind and ref.container_type(m1) is kind and ref.container_type(v1) is kind
    assert len(p1) == 2
    for i in range(2):
        traj = ref.run(params[i], [grad[i]], 0.05)
        ref.assert_matches(p1[i], traj.p, traj.p_bound, params[i].dtype, f"p[{i}]")
        assert p1[i].dtype == params[i].dtype and m1[i].dtype == grad[i].dtype


def test_python_float_params():
    p1, m1, v1 = adamupdate(0.5, 0.25, None, None, 1, 0.1)
    assert type(p1) is float
    exp_p, exp_m, exp_v = ref.step_scalar(0.5, 0.25, None, None, 1, 0.1, 0.9, 0.999, 1e-8)
    assert math.isclose(p1, exp_p, rel_tol=1e-15)
    assert math.isclose(float(m1), exp_m, rel_tol=1e-15)
    assert math.isclose(float(v1), exp_v, rel_tol=1e-15)
    assert np.ndim(m1) == 0 and np.ndim(v1) == 0
    p2, m2, v2 = adamupdate(p1, -0.5, m1, v1, 2, 0.1)
    assert type(p2) is float
    exp2 = ref.step_scalar(exp_p, -0.5, exp_m, exp_v, 2, 0.1, 0.9, 0.999, 1e-8)
    assert math.isclose(p2, exp2[0], rel_tol=1e-15)
    assert math.isclose(float(m2), exp2[1], rel_tol=1e-15)
    assert math.isclose(float(v2), exp2[2], rel_tol=1e-15)


def test_python_complex_params():
    p1, m1, v1 = adamupdate(1 + 2j, 0.5 - 0.5j, None, None, 1, 0.1)
    assert type(p1) is complex
    assert np.iscomplexobj(m1) and not np.iscomplexobj(v1)
    exp_p, _, exp_v = ref.step_scalar(1 + 2j, 0.5 - 0.5j, None, None, 1, 0.1, 0.9, 0.999, 1e-8)
    assert ref.is_close_scalar(p1, exp_p, 1e-15)
    assert math.isclose(float(v1), exp_v, rel_tol=1e-15)


@pytest.mark.parametrize("scalar_type", [np.float64, np.float32, np.float16, np.complex64])
def test_numpy_scalar_params(scalar_type):
    p0 = scalar_type(0.75)
    g = scalar_type(-0.5)
    p1, m1, v1 = adamupdate(p0, g, None, None, 1, 0.01)
    assert type(p1) is scalar_type, type(p1)
    assert np.asarray(m1).dtype == average_dtype(scalar_type)
    assert np.asarray(v1).dtype == real_dtype(average_dtype(scalar_type))
    traj = ref.run(np.asarray(p0), [np.asarray(g)], 0.01)
    ref.assert_matches(np.asarray(p1), traj.p, traj.p_bound, scalar_type, "p")


def test_zero_dim_array_params_stay_arrays():
    p1, m1, v1 = adamupdate(np.array(0.75), np.array(-0.5), None, None, 1, 0.01)
    assert isinstance(p1, np.ndarray) and p1.shape == () and p1.dtype == np.float64
    assert isinstance(m1, np.ndarray) and m1.shape == ()
    assert isinstance(v1, np.ndarray) and v1.shape == ()
    traj = ref.run(0.75, [-0.5], 0.01)
    ref.assert_matches(p1, traj.p, traj.p_bound, np.float64, "p")


# --------------------------------------------------------------------------------------------
# In-place mode, inputs untouched by default
# --------------------------------------------------------------------------------------------


def _snapshot(tree):
    if isinstance(tree, dict):
        return ("dict", type(tree), [(k, id(x), _snapshot(x)) for k, x in tree.items()])
    if isinstance(tree, (list, tuple)):
        return ("seq", type(tree), [(id(x), _snapshot(x)) for x in tree])
    if isinstance(tree, np.ndarray):
        return ("arr", tree.dtype.str, tree.shape, tree.strides, tree.tobytes())
    return ("obj", type(tree), repr(tree))


def test_inputs_untouched_by_default():
    rng = np.random.default_rng(31)
    params = _make_tree(rng)
    grad = _make_tree(rng, 0.1)
    p1, m1, v1 = adamupdate(params, grad, None, None, 1)
    grad2 = _make_tree(rng, 0.1)
    before = [_snapshot(x) for x in (p1, grad2, m1, v1)]
    p2, m2, v2 = adamupdate(p1, grad2, m1, v1, 2)
    after = [_snapshot(x) for x in (p1, grad2, m1, v1)]
    assert before == after
    # and the results are new buffers, not views of the inputs
    for new, old in ((p2, p1), (m2, m1), (v2, v1), (p2, grad2), (m2, grad2)):
        for a, b in zip(_leaves(new), _leaves(old), strict=True):
            assert not np.shares_memory(a, b)


def test_inplace_updates_buffers_and_returns_same_objects():
    rng = np.random.default_rng(32)
    p0 = rng.standard_normal((5, 4))
    g1, g2 = rng.standard_normal((2, 5, 4))
    expected1 = adamupdate(p0, g1, None, None, 1, 0.01)
    expected2 = adamupdate(expected1[0], g2, expected1[1], expected1[2], 2, 0.01)

    p = p0.copy()
    g1_copy = g1.copy()
    p1, m1, v1 = adamupdate(p, g1, None, None, 1, 0.01, inplace=True)
    assert p1 is p
    np.testing.assert_array_equal(p, expected1[0])
    np.testing.assert_array_equal(m1, expected1[1])
    np.testing.assert_array_equal(v1, expected1[2])
    np.testing.assert_array_equal(g1, g1_copy)  # the gradient is never written
    p2, m2, v2 = adamupdate(p1, g2, m1, v1, 2, 0.01, inplace=True)
    assert p2 is p and m2 is m1 and v2 is v1
    np.testing.assert_array_equal(p, expected2[0])
    np.testing.assert_array_equal(m1, expected2[1])
    np.testing.assert_array_equal(v1, expected2[2])


def test_inplace_on_container_leaves_and_views():
    rng = np.random.default_rng(33)
    params = _make_tree(rng)
    backing = rng.standard_normal((6, 8))
    params["view"] = backing[::2, 1:]  # a non-contiguous view into a bigger buffer
    grad = _make_tree(rng, 0.1)
    grad["view"] = rng.standard_normal((3, 7))
    m0 = adamupdate(params, grad, None, None, 1)[1]
    v0 = adamupdate(params, grad, None, None, 1)[2]
    expected = adamupdate(params, grad, m0, v0, 2)

    leaves_p = list(_leaves(params))
    leaves_m, leaves_v = list(_leaves(m0)), list(_leaves(v0))
    backing_before = backing.copy()
    p1, m1, v1 = adamupdate(params, grad, m0, v0, 2, inplace=True)
    for new_leaves, old_leaves in ((p1, leaves_p), (m1, leaves_m), (v1, leaves_v)):
        for got, orig in zip(_leaves(new_leaves), old_leaves, strict=True):
            assert isinstance(orig, np.ndarray)
            assert got is orig
    for a, b in zip(_leaves(p1), _leaves(expected[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(m1), _leaves(expected[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    # the view wrote through to its base, and only to the viewed elements
    np.testing.assert_array_equal(backing[::2, 1:], expected[0]["view"])
    np.testing.assert_array_equal(backing[1::2], backing_before[1::2])
    np.testing.assert_array_equal(backing[::2, 0], backing_before[::2, 0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex64], ids=lambda d: d.__name__)
def test_large_array_and_many_leaves_match_reference(dtype):
    """Sizes that a fast (multi-tensor / compiled) kernel would take, against the reference."""
    rng = np.random.default_rng([61, np.dtype(dtype).num])
    cplx = np.issubdtype(dtype, np.complexfloating)

    def draw(shape, scale=1.0):
        x = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)
        return np.asarray(scale * x).astype(dtype)

    shapes = [(50_000,), *[(int(rng.integers(1, 6)), 3) for _ in range(300)]]
    params = [draw(s) for s in shapes]
    grads = [[draw(s, 0.1) for s in shapes] for _ in range(3)]
    hp = (0.01, 0.9, 0.999, 1e-8)
    p, m, v = params, None, None
    for t, g in enumerate(grads, start=1):
        p, m, v = adamupdate(p, g, m, v, t, *hp)
    assert isinstance(p, list) and len(p) == len(shapes)
    # in-place mode on copies gives the same bits
    p_in = [x.copy() for x in params]
    p_ip, m_ip, v_ip = p_in, None, None
    for t, g in enumerate(grads, start=1):
        p_ip, m_ip, v_ip = adamupdate(p_ip, g, m_ip, v_ip, t, *hp, inplace=True)
    for i in range(len(shapes)):
        assert p_ip[i] is p_in[i]
        np.testing.assert_array_equal(p_ip[i], p[i], err_msg=f"inplace p[{i}]")
        np.testing.assert_array_equal(m_ip[i], m[i], err_msg=f"inplace m[{i}]")
        np.testing.assert_array_equal(v_ip[i], v[i], err_msg=f"inplace v[{i}]")
    # the big leaf alone gives the same bits as inside the list
    alone = params[0], None, None
    for t, g in enumerate(grads, start=1):
        alone = adamupdate(alone[0], g[0], alone[1], alone[2], t, *hp)
    np.testing.assert_array_equal(alone[0], p[0])
    for i in range(len(shapes)):
        traj = ref.run(params[i], [g[i] for g in grads], *hp)
        ref.assert_matches(p[i], traj.p, traj.p_bound, dtype, f"p[{i}]")
        ref.assert_matches(m[i], traj.m, traj.m_bound, dtype, f"m[{i}]")
        ref.assert_matches(v[i], traj.v, traj.v_bound, dtype, f"v[{i}]")
