"""Issue 17, case 2: a remembered step checks what a fresh one checks.

A training loop passes back the averages a call returned, and the library may remember what it
planned for them. But a tensor or an array can change under the same Python object — transposed
in place, viewed as another dtype through ``.data =`` or ``.dtype =``, resized, made read-only —
and a gradient can be one of the buffers an in-place step writes. Whatever the library remembers,
a call must give exactly what a fresh call gives on copies of the same (changed) inputs, or raise
the error a fresh call raises with every buffer unchanged.

Each test: a first call (and a second, remembered one), a change between calls, then the
remembered call against a fresh call on independent copies (:func:`twins`, plain containers that
carry nothing from earlier calls), bitwise or same error type. The property test at the end
applies random sequences of such changes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adamupdate import adamupdate

torch = pytest.importorskip("torch")

SIDE = 6  # leaves are SIDE x SIDE: square, so a transpose keeps the shape
INT_OF = {
    np.dtype(np.float16): np.int16,
    np.dtype(np.float32): np.int32,
    np.dtype(np.float64): np.int64,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


@pytest.fixture(scope="module", autouse=True)
def _kernel_loaded():
    """Load the numba kernel first (when installed), so that every NumPy float32/float64 group
    takes it whatever ran before, and float16 groups take the ufunc route: both are tested."""
    big = np.ones(1 << 15, np.float32)
    adamupdate(big, big, None, None, 1)


# --- copies and comparisons ---------------------------------------------------------------


def _twin(x, memo):
    """An independent copy of a leaf with its dtype, shape, layout and read-only flag; the same
    object twice gives the same copy twice (so ``grad is param`` survives)."""
    if x is None:
        return None
    if id(x) in memo:
        return memo[id(x)]
    if isinstance(x, np.ndarray):
        new = x.copy(order="K")
        new.flags.writeable = x.flags.writeable
    else:
        new = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).copy_(x)
    memo[id(x)] = new
    return new


def twins(*trees):
    """Plain-list copies of ``trees`` (lists of leaves, or None), sharing one memo."""
    memo: dict = {}
    return [None if t is None else [_twin(x, memo) for x in t] for t in trees]


def _bits(x):
    if isinstance(x, np.ndarray):
        return x.dtype.str, x.shape, x.tobytes()
    x = x.detach().resolve_neg().resolve_conj().contiguous()
    return str(x.dtype), tuple(x.shape), x.numpy().tobytes()


def _all_bits(*trees):
    return [[_bits(x) for x in tree] for tree in trees if tree is not None]


def _difference(name, got, want):
    """Where two lists of leaves differ (dtype, shape or bits), or ``None``."""
    for i, (a, b) in enumerate(zip(_all_bits(got)[0], _all_bits(want)[0])):
        if a != b:
            what = "dtype" if a[0] != b[0] else "shape" if a[1] != b[1] else "values"
            return f"{name}[{i}]: {what} differ from a fresh call's ({a[:2]} vs {b[:2]})"
    return None


def _call(ps, gs, m, v, t, inplace, state_dtype):
    try:
        return adamupdate(ps, gs, m, v, t, inplace=inplace, state_dtype=state_dtype), None
    except (TypeError, ValueError) as error:
        return None, error


def check_against_fresh(ps, gs, m, v, t, *, inplace, state_dtype=None):
    """Call with these (remembered) leaves and, independently, with fresh copies; assert the
    same results bitwise or the same error type with nothing changed. Returns the results of
    the remembered call (``None`` if it raised)."""
    fresh_args = twins(ps, gs, m, v)
    before = _all_bits(ps, gs, m, v)
    got, error = _call(ps, gs, m, v, t, inplace, state_dtype)
    want, fresh_error = _call(*fresh_args, t, inplace, state_dtype)
    if fresh_error is not None:
        assert error is not None, (
            f"a fresh call raises {type(fresh_error).__name__}: {fresh_error}; "
            "the remembered call accepted the same inputs"
        )
        assert type(error) is type(fresh_error), (
            f"{error!r} where a fresh call raises {fresh_error!r}"
        )
        changed = _all_bits(ps, gs, m, v) != before
        assert not changed, f"a call that raised {error!r} changed a buffer"
        return None
    assert error is None, f"the remembered call raised {error!r}; a fresh call succeeds"
    for name, a, b in zip(("params", "avg_grad", "avg_sq_grad"), got, want):
        difference = _difference(name, a, b)
        assert difference is None, difference
    return got


def _leaves(lib, dtype, seed, n=3, side=SIDE):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((side, side)).astype(dtype) for _ in range(n)]
    return arrays if lib == "numpy" else [torch.from_numpy(a) for a in arrays]


def _started(lib, dtype, inplace, state_dtype=None, steps=2):
    """Parameters, gradients and averages after ``steps`` calls, the last one remembered."""
    ps, gs = _leaves(lib, dtype, 1), _leaves(lib, dtype, 2)
    m = v = None
    for t in range(1, steps + 1):
        ps, m, v = adamupdate(ps, gs, m, v, t, inplace=inplace, state_dtype=state_dtype)
    return ps, gs, m, v, steps + 1


def _with_numpy_warnings_quiet(change):
    """NumPy 2.4 deprecates setting ``.strides``; users can still do it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        change()


# --- torch: a tensor changed under the same object ---------------------------------------------


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("which", ["params", "avg_grad", "avg_sq_grad"])
def test_torch_transposed_in_place_under_the_same_object(which, inplace):
    """Case 2: ``x.t_()`` keeps shape and address and changes the layout."""
    ps, gs, m, v, t = _started("torch", np.float32, inplace)
    {"params": ps, "avg_grad": m, "avg_sq_grad": v}[which][0].t_()
    check_against_fresh(ps, gs, m, v, t, inplace=inplace)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("which", ["params", "avg_grad"])
def test_torch_data_viewed_as_integers_is_refused(which, dtype, inplace):
    """Case 2: ``x.data = x.data.view(torch.int32)``: a fresh plan raises TypeError."""
    ps, gs, m, v, t = _started("torch", dtype, inplace)
    leaf = {"params": ps, "avg_grad": m}[which][0]
    leaf.data = leaf.data.view(INT_OF[leaf.dtype])
    check_against_fresh(ps, gs, m, v, t, inplace=inplace)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("change", ["data_swap", "resize", "neg_view", "new_storage"])
def test_torch_other_changes_under_the_same_object(change, inplace):
    """Case 2: ``.data =`` another shape, ``resize_``, a lazy negation, a fresh storage."""
    ps, gs, m, v, t = _started("torch", np.float32, inplace)
    if change == "data_swap":
        ps[1].data = torch.ones(SIDE * SIDE)
    elif change == "resize":
        m[2].resize_(SIDE * SIDE)
    elif change == "neg_view":
        ps[0].data = torch._neg_view(ps[0].data)
    else:
        v[0].data = v[0].data.clone()
    check_against_fresh(ps, gs, m, v, t, inplace=inplace)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("alias", ["param", "avg_grad", "avg_sq_grad"])
def test_torch_gradient_that_is_a_written_buffer_is_refused_in_place(alias, dtype):
    """Case 2: in place, a gradient that is a parameter or an average another leaf writes is
    refused by a fresh plan (ValueError); a remembered one must refuse it too."""
    state_dtype = torch.float16 if dtype == np.float16 else None  # gradients match them
    ps, gs, m, v, t = _started("torch", dtype, True, state_dtype)
    gs = [gs[0], {"param": ps, "avg_grad": m, "avg_sq_grad": v}[alias][0], gs[2]]
    check_against_fresh(ps, gs, m, v, t, inplace=True, state_dtype=state_dtype)


# --- NumPy: an array changed under the same object ---------------------------------------------


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("which", ["params", "avg_grad", "avg_sq_grad"])
def test_numpy_dtype_changed_under_the_same_object_is_refused(which, dtype, inplace):
    """Case 2: ``M[0].dtype = np.int64`` (an integer view of the same bytes) is refused."""
    ps, gs, m, v, t = _started("numpy", dtype, inplace)
    leaf = {"params": ps, "avg_grad": m, "avg_sq_grad": v}[which][0]
    leaf.dtype = INT_OF[leaf.dtype]
    check_against_fresh(ps, gs, m, v, t, inplace=inplace)


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("which", ["params", "avg_grad"])
def test_numpy_transposed_under_the_same_object(which, dtype, inplace):
    """Case 2: the strides of a square array reversed in place (NumPy's ``t_()``)."""
    ps, gs, m, v, t = _started("numpy", dtype, inplace)
    leaf = {"params": ps, "avg_grad": m}[which][0]

    def transpose():
        leaf.strides = leaf.strides[::-1]

    _with_numpy_warnings_quiet(transpose)
    check_against_fresh(ps, gs, m, v, t, inplace=inplace)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("change", ["reshape", "read_only_param", "read_only_state"])
def test_numpy_shape_and_writeability_changed_under_the_same_object(change, dtype):
    """Case 2: ``.shape =`` another shape; a buffer made read-only before an in-place call."""
    ps, gs, m, v, t = _started("numpy", dtype, True)
    if change == "reshape":
        ps[1].shape = (SIDE * SIDE,)
    elif change == "read_only_param":
        ps[2].flags.writeable = False
    else:
        v[0].flags.writeable = False
    check_against_fresh(ps, gs, m, v, t, inplace=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("alias", ["param", "avg_grad"])
def test_numpy_small_group_gradient_that_is_a_written_buffer_is_refused(alias, dtype):
    """Case 2: NumPy small groups in place: a gradient that *is* a parameter or average that
    the step writes is refused by a fresh plan (ValueError); a remembered one must refuse it."""
    state_dtype = dtype  # the averages' dtype is the gradients' (float16 too)
    ps, gs, m, v, t = _started("numpy", dtype, True, state_dtype)
    gs = [gs[0], {"param": ps, "avg_grad": m}[alias][0], gs[2]]
    check_against_fresh(ps, gs, m, v, t, inplace=True, state_dtype=state_dtype)


def test_numpy_gradient_that_is_a_view_of_a_written_parameter_is_refused():
    """Case 2: the same with a view (not the object itself) of the parameter as gradient."""
    ps, gs, m, v, t = _started("numpy", np.float16, True)
    with pytest.raises(ValueError, match="share memory"):
        adamupdate(ps, [gs[0], ps[0][:, :], gs[2]], m, v, t, inplace=True)


# --- state_dtype equal but not identical ---------------------------------------------------


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "functional"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_state_dtype_equal_but_not_identical_changes_nothing(lib, inplace):
    """Case 2: ``state_dtype="float" + "32"`` on every call gives what one fresh plan with
    ``state_dtype="float32"`` gives, call after call."""
    ps, gs = _leaves(lib, np.float32, 1), _leaves(lib, np.float32, 2)
    qs, hs = twins(ps, gs)
    m = v = n = w = None
    for t in range(1, 5):
        name = "".join(["float", str(32)])  # equal to "float32", a new object each call
        ps, m, v = adamupdate(ps, gs, m, v, t, inplace=inplace, state_dtype=name)
        fresh = twins(qs, n, w)
        qs, n, w = adamupdate(*fresh[:1], hs, *fresh[1:], t, inplace=inplace, state_dtype="float32")
        for name, a, b in zip(("params", "avg_grad", "avg_sq_grad"), (ps, m, v), (qs, n, w)):
            difference = _difference(name, a, b)
            assert difference is None, f"step {t}: {difference}"


# --- the property: any sequence of changes ----------------------------------------------------

TORCH_CHANGES = [
    "new_grad",
    "transpose_param",
    "transpose_state",
    "transposed_grad",
    "int_view_param",
    "int_view_state",
    "data_swap_shape",
    "data_swap_same",
    "resize_state",
    "neg_view_param",
    "grad_is_param",
    "grad_is_state",
]
NUMPY_CHANGES = [
    "new_grad",
    "transpose_param",
    "transpose_state",
    "transposed_grad",
    "int_view_param",
    "int_view_state",
    "reshape_param",
    "read_only_param",
    "read_only_state",
    "grad_is_param",
    "grad_is_state",
]


def _apply(lib, dtype, change, i, j, ps, gs, m, v, seed):
    """One change between calls to leaf ``i`` (of the parameters, or of the averages chosen by
    ``j``); a gradient becomes leaf ``j % 3`` of the parameters or an average. Returns the
    (possibly new) gradient list."""
    states = (m, v)[j // 3]
    if change == "new_grad":
        gs = list(gs)
        gs[i] = _leaves(lib, dtype, seed, n=1)[0]
    elif change == "transposed_grad":
        gs = list(gs)
        gs[i] = gs[i].T
    elif change in ("grad_is_param", "grad_is_state"):
        gs = list(gs)
        gs[i] = (ps if change == "grad_is_param" else states)[j % 3]
    elif lib == "torch":
        leaf = ps[i] if change.endswith("param") else states[i]
        if change.startswith("transpose"):
            leaf.t_()
        elif change.startswith("int_view"):
            if leaf.dtype.is_floating_point:
                leaf.data = leaf.data.view(INT_OF[leaf.dtype])
        elif change == "data_swap_shape":
            leaf.data = torch.ones(SIDE * SIDE, dtype=leaf.dtype)
        elif change == "data_swap_same":
            leaf.data = leaf.data.clone()
        elif change == "resize_state":
            leaf.resize_(SIDE * SIDE)
        elif change == "neg_view_param":
            leaf.data = torch._neg_view(leaf.data)
    else:
        leaf = ps[i] if change.endswith("param") else states[i]
        if change.startswith("transpose"):

            def transpose():
                leaf.strides = leaf.strides[::-1]

            _with_numpy_warnings_quiet(transpose)
        elif change.startswith("int_view"):
            if leaf.dtype.kind == "f":
                leaf.dtype = INT_OF[leaf.dtype]
        elif change == "reshape_param":
            leaf.shape = (SIDE * SIDE,)
        elif change.startswith("read_only"):
            leaf.flags.writeable = False
    return gs


@st.composite
def scenarios(draw):
    lib = draw(st.sampled_from(["numpy", "torch"]))
    changes = NUMPY_CHANGES if lib == "numpy" else TORCH_CHANGES
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(changes),
                st.integers(0, 2),
                st.integers(0, 5),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return {
        "lib": lib,
        "dtype": draw(st.sampled_from([np.float32, np.float64, np.float16])),
        "inplace": draw(st.booleans()),
        "equal_state_dtype": draw(st.booleans()),
        "steps": steps,
    }


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_any_sequence_of_changes_between_calls_matches_a_fresh_call(scenario):
    """Case 2 property: random changes between remembered calls (transposes, dtype views,
    ``.data`` swaps, resizes, read-only flags, gradients that are written buffers, an equal
    but not identical ``state_dtype``): every call equals a fresh call on copies, bitwise, or
    raises the same error with nothing changed."""
    lib, inplace = scenario["lib"], scenario["inplace"]
    dtype = scenario["dtype"]
    if scenario["equal_state_dtype"]:
        state_dtype = "".join(
            ["float", "16" if dtype == np.float16 else str(np.dtype(dtype).itemsize * 8)]
        )
    else:
        state_dtype = None
    ps, gs = _leaves(lib, dtype, 1), _leaves(lib, dtype, 2)
    ps, m, v = adamupdate(ps, gs, None, None, 1, inplace=inplace, state_dtype=state_dtype)
    ps, m, v = adamupdate(ps, gs, m, v, 2, inplace=inplace, state_dtype=state_dtype)
    for t, (change, i, j) in enumerate(scenario["steps"], start=3):
        gs = _apply(lib, dtype, change, i, j, ps, gs, m, v, seed=t)
        got = check_against_fresh(ps, gs, m, v, t, inplace=inplace, state_dtype=state_dtype)
        if got is None:
            return  # both refused the same way, nothing changed: the loop would stop here
        ps, m, v = got
