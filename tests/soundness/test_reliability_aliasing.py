"""Reliability contract (issue #11), 2: in place, overlapping buffers (within a leaf or between
leaves) are refused naming both paths; out of place, aliased inputs give the result of their
copies, bitwise. Expected values from the float64 reference (``tests/reference.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adamupdate import adamupdate
from reference import assert_matches, run

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

from reliability_helpers import (
    ARGS,
    BACKENDS,
    assert_unchanged,
    independent_copy,
    lift,
    names,
    needs_torch,
    snapshot,
    to_numpy,
)

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
