"""The plan a call makes, carried by the averages it returns (adamupdate._plan).

A training loop passes the returned averages back; the next call finds their plan and, when it
is handed the very leaves the plan last produced, steps without checking them again. Every test
here changes something such a remembered step could rely on — a leaf in its container, a
buffer, a shape, a layout, a flag — and checks that the step notices: it is refused with the
full path's error (naming the leaf) and changes nothing, or it computes exactly what a call
planned from scratch computes (bit for bit) and what the float64 reference
(tests/reference.py) computes. Plus who owns a plan (the averages, nothing module-global), that
the cost per tensor of a remembered step does not grow with the number of tensors, and networks.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import os
import pickle
import subprocess
import sys
import weakref
from collections import Counter

import numpy as np
import pytest

from adamupdate import _plan, adamupdate
from reference import assert_matches, run

N_TENSORS = 40  # enough for NumPy's kernel group (32 arrays) by itself
STEPS = 6
# Leaves per call for each route: "small" groups take the kernel only once numba is loaded
# (by an earlier call), "no_numba" forces the routes of a machine without numba (NumPy's
# ufuncs, torch's foreach ops).
SIZES = {"kernel": N_TENSORS, "small": 3, "no_numba": 3}
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
LIBS = ["numpy", pytest.param("torch", marks=needs_torch)]


def problem(seed=0, n=N_TENSORS, shape=(7,), steps=STEPS, dtype=np.float64):
    rng = np.random.default_rng(seed)

    def draw():
        x = np.asarray(rng.standard_normal(shape))
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)

    params = [draw() for _ in range(n)]
    grads = [[draw() for _ in range(n)] for _ in range(steps)]
    return params, grads


def expected(params, grads):
    return [run(p, [g[i] for g in grads]) for i, p in enumerate(params)]


def check(params, m, v, want):
    """Float64 results against the float64 reference (one rounding per operation apart)."""
    assert len(params) == len(m) == len(v) == len(want)
    for p_i, m_i, v_i, w in zip(params, m, v, want):
        np.testing.assert_allclose(_np(p_i), w.p, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(_np(m_i), w.m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(_np(v_i), w.v, rtol=1e-13, atol=1e-18)


def _np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def _snapshot(*columns):
    return [_np(x).copy() for column in columns for x in column]


def _unchanged(before, *columns):
    after = [_np(x) for column in columns for x in column]
    return len(before) == len(after) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after)
    )


def _same_bits(a, b):
    a, b = _np(a), _np(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture(params=list(SIZES))
def size(request, monkeypatch):
    """How many leaves a test's calls pass, and so which route steps them (see SIZES)."""
    if request.param == "no_numba":
        from adamupdate.backends import numpy_backend

        monkeypatch.setattr(numpy_backend, "_fast_kernel", lambda: None)
    return request.param


@pytest.fixture
def makes(monkeypatch):
    """The plans made (the number of leaves of each): adamupdate._plan.make, counted."""
    calls = []
    real = _plan.make

    def counting(rule, params, *args, **kwargs):
        calls.append(len(params))
        return real(rule, params, *args, **kwargs)

    monkeypatch.setattr(_plan, "make", counting)
    return calls


# --- NumPy: what a remembered step must notice ---------------------------------------------------


@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_numpy_loop_with_reused_or_new_gradients(same_grad_objects, size, makes):
    params0, grads = problem(n=SIZES[size])
    params = [p.copy() for p in params0]
    buffers = [np.empty_like(p) for p in params]
    m = v = None
    for t, g in enumerate(grads, 1):
        if same_grad_objects:  # written into the same buffers, as p.grad is in PyTorch
            for buffer, value in zip(buffers, g):
                buffer[...] = value
            g = buffers
        out, m_new, v_new = adamupdate(params, g, m, v, t, inplace=True)
        assert out is params
        if t > 1:  # the same containers and buffers, updated where they are
            assert m_new is m and v_new is v
        m, v = m_new, v_new
    check(params, m, v, expected(params0, grads))
    assert makes == [SIZES[size]]  # planned once, remembered since
    kernel = m._adamupdate_plan.groups[0].step.kernel  # the route it took
    if size == "no_numba":
        assert kernel is None
    elif size == "kernel" and importlib.util.find_spec("numba") is not None:
        assert kernel is not None


def test_replacing_a_leaf_in_the_container_is_noticed(size, makes):
    params0, grads = problem(1, n=SIZES[size])
    params = [p.copy() for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # the caller swaps in a copy: the old plan's buffer must not be written
            old = params[1]
            params[1] = old.copy()
            frozen = old.copy()
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    check(params, m, v, expected(params0, grads))
    assert np.array_equal(old, frozen)
    assert len(makes) == 2


def test_a_non_contiguous_gradient_in_a_remembered_loop(size):
    params0, grads = problem(2, n=SIZES[size])
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


@pytest.mark.parametrize("victim", ["params", "avg_grad", "avg_sq_grad"])
def test_read_only_buffer_in_place_is_refused_and_nothing_changes(victim, size):
    """Made read-only after the plan was made: the remembered step must notice before it
    writes anything; once writeable again, the loop goes on correctly."""
    params0, grads = problem(3, n=SIZES[size])
    params = [p.copy() for p in params0]
    _, m, v = adamupdate(params, grads[0], None, None, 1, inplace=True)
    _, m, v = adamupdate(params, grads[1], m, v, 2, inplace=True)
    target = {"params": params, "avg_grad": m, "avg_sq_grad": v}[victim][1]
    target.flags.writeable = False
    before = _snapshot(params, m, v)
    with pytest.raises(ValueError, match=rf"{victim}\[1\].*read-only"):
        adamupdate(params, grads[2], m, v, 3, inplace=True)
    assert _unchanged(before, params, m, v)
    target.flags.writeable = True
    for t in range(3, STEPS + 1):
        _, m, v = adamupdate(params, grads[t - 1], m, v, t, inplace=True)
    check(params, m, v, expected(params0, grads))


def test_a_discarded_model_is_freed_with_its_plan():
    """Nothing module-global keeps a model, its averages, its gradients or its plan alive."""
    for inplace in (True, False):
        for n in SIZES.values():
            params0, grads = problem(7, n=n)
            params = [p.copy() for p in params0]
            m = v = None
            for t, g in enumerate(grads[:3], 1):
                out, m, v = adamupdate(params, g, m, v, t, inplace=inplace)
                params = out
            plan = m._adamupdate_plan
            watch = [weakref.ref(x) for x in (params[0], m[0], v[0], g[0], plan)]
            del params, out, m, v, g, grads, plan
            gc.collect()
            assert [w() for w in watch] == [None] * len(watch), (inplace, n)


# --- a shape changed under the same object -----------------------------------------------------


def _reshape(lib, leaf, shape):
    """Change ``leaf``'s shape without changing the object (or its memory)."""
    if lib == "numpy":
        leaf.shape = shape
    else:
        leaf.data = leaf.data.view(shape)


def _convert(lib):
    if lib == "numpy":
        return np.copy
    import torch

    return torch.tensor


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
@pytest.mark.parametrize("victim", ["params", "avg_grad", "avg_sq_grad"])
def test_a_shape_changed_under_the_same_object_is_refused(victim, inplace, size, lib):
    """(3, 4) -> (4, 3): the same size and memory, but no longer its gradient's shape. The
    full path refuses it, naming the leaf; a remembered step must too, changing nothing."""
    conv = _convert(lib)
    params0, grads = problem(11, n=SIZES[size], shape=(3, 4), steps=3)
    params = [conv(p) for p in params0]
    m = v = None
    for t in (1, 2):
        params, m, v = adamupdate(params, [conv(x) for x in grads[t - 1]], m, v, t, inplace=inplace)
    _reshape(lib, {"params": params, "avg_grad": m, "avg_sq_grad": v}[victim][0], (4, 3))
    before = _snapshot(params, m, v)
    g = [conv(x) for x in grads[2]]
    with pytest.raises(ValueError, match=r"\[0\]: shape \(\d, \d\) does not match params"):
        adamupdate(params, g, m, v, 3, inplace=inplace)
    assert _unchanged(before, params, m, v)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_a_shape_changed_everywhere_is_computed_as_the_full_path_would(inplace, size, lib):
    """Parameter, averages and gradients all reshaped mid-loop: a consistent new problem,
    stepped exactly as a call planned from scratch steps it."""
    conv = _convert(lib)
    params0, grads = problem(12, n=SIZES[size], shape=(3, 4))
    results = []
    for remembered in (True, False):
        params = [conv(p) for p in params0]
        m = v = None
        for t, g in enumerate(grads, 1):
            g = [conv(x) for x in g]
            if t >= 4:
                g[0] = g[0].reshape(4, 3)
            if t == 4:
                for leaf in (params[0], m[0], v[0]):
                    _reshape(lib, leaf, (4, 3))
            if not remembered:  # plain copies carry no plan: every call is planned afresh
                m, v = _plain_copies(lib, m), _plain_copies(lib, v)
            params, m, v = adamupdate(params, g, m, v, t, inplace=inplace)
        assert tuple(params[0].shape) == tuple(m[0].shape) == tuple(v[0].shape) == (4, 3)
        results.append((params, m, v))
    for a, b in zip(*(_flat(r) for r in results)):
        assert _same_bits(a, b)
    params, m, v = ([_np(x).reshape(3, 4) for x in column] for column in results[0])
    check(params, m, v, expected(params0, grads))


def _flat(result):
    return [x for column in result for x in column]


# --- who owns a plan -----------------------------------------------------------------------------


def _container(kind, leaves):
    if kind == "list":
        return list(leaves)
    if kind == "tuple":
        return tuple(leaves)
    return {f"w{i}": x for i, x in enumerate(leaves)}


def _values(container):
    return list(container.values()) if isinstance(container, dict) else list(container)


@pytest.mark.parametrize("kind", ["list", "tuple", "dict"])
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_the_averages_carry_the_plan(kind, inplace, makes):
    params0, grads = problem(13)
    params = _container(kind, [p.copy() for p in params0])
    m = v = None
    plan = None
    for t, g in enumerate(grads, 1):
        params, m, v = adamupdate(params, _container(kind, g), m, v, t, inplace=inplace)
        for state in (m, v):
            assert isinstance(state, {"list": list, "tuple": tuple, "dict": dict}[kind])
            assert type(state).__mro__[1] is {"list": list, "tuple": tuple, "dict": dict}[kind]
        plan = plan or m._adamupdate_plan
        assert m._adamupdate_plan is plan and v._adamupdate_plan is plan
    assert makes == [N_TENSORS]
    check(_values(params), _values(m), _values(v), expected(params0, grads))


@pytest.mark.parametrize("kind", ["list", "tuple", "dict"])
@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_of_the_averages_are_plain_and_carry_no_plan(kind, duplicate, makes):
    plain = {"list": list, "tuple": tuple, "dict": dict}[kind]
    params0, grads = problem(14)
    params = _container(kind, [p.copy() for p in params0])
    m = v = None
    for t in (1, 2):
        params, m, v = adamupdate(params, _container(kind, grads[t - 1]), m, v, t)
    m2, v2 = duplicate(m), duplicate(v)
    for state, original in ((m2, m), (v2, v)):
        assert type(state) is plain
        assert not hasattr(state, "_adamupdate_plan")
        assert all(np.array_equal(a, b) for a, b in zip(_values(state), _values(original)))
    assert len(makes) == 1
    g = _container(kind, grads[2])
    out_a, m_a, v_a = adamupdate(params, g, m, v, 3)  # remembered
    assert len(makes) == 1
    out_b, m_b, v_b = adamupdate(params, g, m2, v2, 3)  # a copy: planned from scratch
    assert len(makes) == 2
    assert m_b._adamupdate_plan is not m._adamupdate_plan
    for a, b in zip(
        _flat((_values(out_a), _values(m_a), _values(v_a))),
        _flat((_values(out_b), _values(m_b), _values(v_b))),
    ):
        assert _same_bits(a, b)


# --- a remembered loop computes what a loop planned from scratch computes ------------------


DTYPES = ["float32", "float64", "complex64"]


def _plain_copies(lib, states):
    if states is None:
        return None
    return [x.copy() for x in states] if lib == "numpy" else [x.clone() for x in states]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_remembered_steps_equal_steps_planned_from_scratch(lib, dtype, inplace, size, makes):
    conv = _convert(lib)
    steps = 20
    rng = np.random.default_rng(15)
    shapes = [tuple(rng.integers(1, 6, rng.integers(0, 3))) for _ in range(SIZES[size])]
    params0, grads = [], [[] for _ in range(steps)]
    for shape in shapes:
        p, gs = problem(int(rng.integers(1 << 30)), n=1, shape=shape, steps=steps, dtype=dtype)
        params0.append(p[0])
        for t in range(steps):
            grads[t].append(gs[t][0])
    finals = []
    for remembered in (True, False):
        del makes[:]
        params = [conv(p) for p in params0]
        m = v = None
        for t, g in enumerate(grads, 1):
            if not remembered:
                m, v = _plain_copies(lib, m), _plain_copies(lib, v)
            params, m, v = adamupdate(params, [conv(x) for x in g], m, v, t, inplace=inplace)
        assert len(makes) == (1 if remembered else steps)
        finals.append(_flat((params, m, v)))
    assert all(_same_bits(a, b) for a, b in zip(*finals))
    params, m, v = (finals[0][k * len(shapes) : (k + 1) * len(shapes)] for k in range(3))
    for p_i, m_i, v_i, w in zip(params, m, v, expected(params0, grads)):
        assert_matches(_np(p_i), w.p, w.p_bound, dtype, "params")
        assert_matches(_np(m_i), w.m, w.m_bound, dtype, "avg_grad")
        assert_matches(_np(v_i), w.v, w.v_bound, dtype, "avg_sq_grad")


# --- the cost of a remembered step per tensor ----------------------------------------------


def _calls_in(step, *args):
    """Python and C function calls made by ``step(*args)`` in this thread, by function name."""
    counts = Counter()

    def profile(frame, event, arg):
        if event == "call":
            counts[frame.f_code.co_name] += 1
        elif event == "c_call":
            counts[getattr(arg, "__qualname__", repr(arg))] += 1

    gc.disable()
    sys.setprofile(profile)
    try:
        step(*args)
    finally:
        sys.setprofile(None)
        gc.enable()
    return counts


def _advance(loop, t):
    """One step of ``loop`` (a dict holding the arguments), as a training loop makes it."""
    loop["params"], loop["m"], loop["v"] = adamupdate(
        loop["params"], loop["grads"], loop["m"], loop["v"], t, inplace=loop["inplace"]
    )


#: Functions that plan a step (check and describe every leaf): a remembered step calls none.
PLANNING = {"make", "describe", "check_leaf", "_check_like", "flatten", "leaves_like"}


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_the_cost_per_tensor_does_not_grow_with_the_number_of_tensors(lib, inplace, makes):
    """Counted, not timed: the calls a remembered step makes are a fixed number plus a fixed
    number per tensor, the same for 10, 100 and 1000 tensors, and none of them plans."""
    conv = _convert(lib)
    totals = {}
    for n in (10, 100, 1000):
        del makes[:]
        rng = np.random.default_rng(n)
        draw = [conv(rng.standard_normal(4096).astype(np.float32)) for _ in range(2 * n)]
        loop = {"params": draw[:n], "grads": draw[n:], "m": None, "v": None, "inplace": inplace}
        for t in (1, 2):  # planned, then remembered once (first launches settle)
            _advance(loop, t)
        per_step = [_calls_in(_advance, loop, t) for t in range(3, 13)]
        assert makes == [n]  # one plan over 12 steps
        for counts in per_step:
            assert counts == per_step[0], "every remembered step makes the same calls"
            assert not PLANNING & set(counts), PLANNING & set(counts)
        totals[n] = sum(per_step[0].values())
    per_tensor = (totals[100] - totals[10]) / 90
    assert totals[1000] - totals[100] == 10 * (totals[100] - totals[10]), (totals, per_tensor)


# --- PyTorch ---------------------------------------------------------------------------------

if HAS_TORCH:
    import torch


def _torch_check(params, m, v, want):
    check([p.numpy() for p in params], [x.numpy() for x in m], [x.numpy() for x in v], want)


@needs_torch
@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_torch_loop_with_reused_or_new_gradients(same_grad_objects, size, makes):
    params0, grads = problem(4, n=SIZES[size])
    params = [torch.tensor(p) for p in params0]
    buffers = [torch.empty_like(p) for p in params]
    m = v = None
    for t, g in enumerate(grads, 1):
        g = [torch.tensor(x) for x in g]
        if same_grad_objects:
            for buffer, value in zip(buffers, g):
                buffer.copy_(value)
            g = buffers
        out, m_new, v_new = adamupdate(params, g, m, v, t, inplace=True)
        assert out is params
        if t > 1:
            assert m_new is m and v_new is v
        m, v = m_new, v_new
    _torch_check(params, m, v, expected(params0, grads))
    assert makes == [SIZES[size]]


@needs_torch
def test_torch_storage_swapped_under_the_same_object(size):
    params0, grads = problem(5, n=SIZES[size])
    params = [torch.tensor(p) for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # same Python objects, new storage: remembered addresses would be dangling
            old = params[0].data
            for p in params:
                p.data = p.data.clone()
            m[0].data = m[0].data.clone()
            frozen = old.clone()
        _, m, v = adamupdate(params, [torch.tensor(x) for x in g], m, v, t, inplace=True)
    _torch_check(params, m, v, expected(params0, grads))
    assert torch.equal(old, frozen)  # the storage left behind is not written


@needs_torch
@pytest.mark.parametrize("when", ["mid_loop", "throughout"])
@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed"])
def test_torch_gradient_in_another_layout(layout, when, size):
    """A gradient whose memory is laid out unlike its parameter's pairs elements by index, not
    by memory order — both when it appears mid-loop and when every gradient has it."""
    rng = np.random.default_rng(6)
    shape = (2, 3, 4, 5)
    params0 = [rng.standard_normal(shape) for _ in range(SIZES[size])]
    grads = [[rng.standard_normal(shape) for _ in params0] for _ in range(STEPS)]
    relayout = {
        "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
        "strided": lambda x: torch.repeat_interleave(x, 2, dim=-1)[..., ::2],
        "transposed": lambda x: x.transpose(0, 1).contiguous().transpose(0, 1),
    }[layout]
    params = [torch.tensor(p) for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        g = [torch.tensor(x) for x in g]
        if when == "throughout":
            g = [relayout(x) for x in g]
        elif t == 5:
            g[0] = relayout(g[0])
        assert g[0].stride() != params[0].stride() or (when == "mid_loop" and t != 5)
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    _torch_check(params, m, v, expected(params0, grads))


@needs_torch
@pytest.mark.parametrize("victim", ["avg_grad", "grad"])
def test_torch_storage_of_another_size_under_the_same_object_is_never_walked(victim):
    """Swapping a state's or a gradient's storage for a smaller one (same Python object) must
    raise or compute correctly — never let the kernel read or write past the new buffer."""
    n = 1 << 14
    params = [torch.zeros(n) for _ in range(N_TENSORS)]
    grads = [torch.ones(n) for _ in range(N_TENSORS)]
    m = v = None
    for t in (1, 2, 3):
        _, m, v = adamupdate(params, grads, m, v, t, inplace=True)
    target = m[0] if victim == "avg_grad" else grads[0]
    target.data = torch.zeros(n // 4)
    before = _snapshot(params, m, v)
    with pytest.raises(ValueError, match=rf"{victim}\[0\]: shape"):
        adamupdate(params, grads, m, v, 4, inplace=True)
    assert _unchanged(before, params, m, v)


_RESIZE_SCRIPT = """
import sys, torch
from adamupdate import adamupdate
n = 1 << 14
for victim in ("params", "avg_grad", "avg_sq_grad", "grad"):  # grad last: nothing checks it
    for nbytes in (16, 0):
        params = [torch.zeros(n) for _ in range(40)]
        grads = [torch.ones(n) for _ in range(40)]
        m = v = None
        for t in (1, 2, 3):
            _, m, v = adamupdate(params, grads, m, v, t, inplace=True)
        target = {"params": params, "avg_grad": m, "avg_sq_grad": v, "grad": grads}[victim][0]
        target.untyped_storage().resize_(nbytes)  # as FSDP frees a parameter's storage
        try:
            adamupdate(params, grads, m, v, 4, inplace=True)
        except (TypeError, ValueError, RuntimeError) as error:
            print(victim, nbytes, "refused:", error, flush=True)
        else:
            print(victim, nbytes, "NOT REFUSED", flush=True)
"""


@needs_torch
def test_torch_storage_resized_under_the_same_object_is_never_walked():
    """``untyped_storage().resize_()`` keeps the tensor object and its shape but not the memory
    behind them: a remembered step must refuse it, as the full path does, rather than read or
    write memory the tensor no longer owns. In a child process: a failure may be a crash."""
    proc = subprocess.run(
        [sys.executable, "-c", _RESIZE_SCRIPT],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, f"child exited with {proc.returncode} after {lines}"
    assert len(lines) == 8 and all("refused:" in line for line in lines), lines


@needs_torch
def test_torch_lazy_conjugate_and_negative_views_are_honoured(size):
    rng = np.random.default_rng(8)
    shape = (64, 65)
    p0 = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    g0 = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    want = run(p0, [g0] * 3)
    # a conjugate view of conj(g) reads as g; so does a negative view of -g
    for lazy in (
        lambda g: torch.tensor(np.conj(g)).conj(),
        lambda g: torch._neg_view(torch.tensor(-g)),
    ):
        params = [torch.tensor(p0) for _ in range(SIZES[size])]
        grads = [lazy(g0) for _ in range(SIZES[size])]
        assert grads[0].is_conj() or grads[0].is_neg()
        m = v = None
        for t in (1, 2, 3):
            _, m, v = adamupdate(params, grads, m, v, t, inplace=True)
        _torch_check(params, m, v, [want] * SIZES[size])


@needs_torch
def test_torch_in_place_update_bumps_autograd_version_counters(size):
    """Planned or remembered, an in-place step is an in-place operation to autograd."""
    n = SIZES[size]
    params = [torch.zeros(1 << 12, requires_grad=True) for _ in range(n)]
    grads = [torch.ones(1 << 12) for _ in params]
    m = v = None
    for t in (1, 2, 3):
        saved = (params[0] * params[0]).sum()  # the graph saves params[0] for backward
        version = params[0]._version
        _, m, v = adamupdate(params, grads, m, v, t, inplace=True)
        assert params[0]._version > version
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved.backward()


# --- networks --------------------------------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _grads(net, t):
    from adamupdate import nn as ann

    g = torch.Generator().manual_seed(t)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
    loss = torch.nn.functional.mse_loss(net(x), y)
    return ann.gradients(loss, net, form="dict")


@needs_torch
def test_a_network_reuses_its_plan_and_its_averages(makes):
    net = _net()
    params = {k: p.detach().clone() for k, p in net.named_parameters()}  # the functional twin
    m = v = m2 = v2 = None
    for t in range(1, 11):
        g = _grads(net, t)
        previous = (m, v, None, None) if m is None else (m, v, dict(m), m["0.weight"].clone())
        result, m, v = adamupdate(net, g, m, v, t, learn_rate=0.01)
        assert result is net
        if t > 1:  # the same containers holding the same tensors, updated in place
            assert m is previous[0] and v is previous[1]
            assert all(m[k] is previous[2][k] for k in m)
            assert not torch.equal(m["0.weight"], previous[3])
        params, m2, v2 = adamupdate(params, g, m2, v2, t, learn_rate=0.01)
        for k, p in net.named_parameters():
            assert torch.equal(p.detach(), params[k]), (t, k)
            assert torch.equal(m[k], m2[k]) and torch.equal(v[k], v2[k]), (t, k)
    assert type(m).__mro__[1] is dict and m._adamupdate_plan is v._adamupdate_plan
    assert len(makes) == 2  # the network's plan once, the functional twin's once


@needs_torch
def test_a_learn_rate_factor_changed_mid_training_takes_effect_at_once(makes):
    """A factor set between steps applies from the next step (the plan is made again); a
    factor 0 freezes the parameter and both its averages. Against per-parameter functional
    calls with learn_rate * factor."""
    from adamupdate import nn as ann

    lr = 0.01
    net = _net()
    twin = {k: p.detach().clone() for k, p in net.named_parameters()}
    twin_m, twin_v = dict.fromkeys(twin), dict.fromkeys(twin)
    factors = dict.fromkeys(twin, 1.0)
    m = v = None
    for t in range(1, 11):
        if t == 4:
            ann.set_learn_rate_factor(net, "0", "weight", 0.5)
            factors["0.weight"] = 0.5
        if t == 7:
            ann.set_learn_rate_factor(net, "2", "bias", 0)
            factors["2.bias"] = 0.0
            frozen = (net[2].bias.detach().clone(), m["2.bias"].clone(), v["2.bias"].clone())
        g = _grads(net, t)
        _, m, v = adamupdate(net, g, m, v, t, learn_rate=lr)
        for k in twin:
            if factors[k]:
                twin[k], twin_m[k], twin_v[k] = adamupdate(
                    twin[k], g[k], twin_m[k], twin_v[k], t, learn_rate=lr * factors[k]
                )
        for k, p in net.named_parameters():
            assert torch.equal(p.detach(), twin[k]), (t, k)
            assert torch.equal(m[k], twin_m[k]) and torch.equal(v[k], twin_v[k]), (t, k)
    assert torch.equal(net[2].bias.detach(), frozen[0])
    assert torch.equal(m["2.bias"], frozen[1]) and torch.equal(v["2.bias"], frozen[2])
    assert not torch.equal(net[2].weight.detach(), _net()[2].weight.detach())
    network_plans = [n for n in makes if n == 4]
    assert len(network_plans) == 3  # planned at steps 1, 4 and 7, remembered otherwise


def _env():
    from pathlib import Path

    import adamupdate

    src = str(Path(next(iter(adamupdate.__path__))).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
