"""Every call is planned from scratch (adamupdate._plan), and a loop notices what changes.

Nothing is remembered between calls: every call checks every leaf (in bulk when it can, see
tests/engine/test_bulk_plan.py). Every test here changes something between the calls of a training
loop — a leaf in its container, a buffer, a shape, a layout, a flag, a storage, a learn-rate
factor — and checks that the next call notices: it is refused with the full path's error
(naming the leaf) and changes nothing, or it computes exactly what a call on fresh copies
computes (bit for bit) and what the float64 reference (tests/reference.py) computes. Plus what
the averages are (the caller's plain containers) and that nothing keeps a discarded model
alive. A network's averages: tests/containers/test_network_averages.py.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

from adamupdate import _plan, _reuse, adamupdate
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


def _same_objects(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


@pytest.fixture(params=list(SIZES))
def size(request, monkeypatch):
    """How many leaves a test's calls pass, and so which route steps them (see SIZES)."""
    if request.param == "no_numba":
        from adamupdate.backends import numpy_backend

        monkeypatch.setattr(numpy_backend, "numba_kernel", lambda: None)
    return request.param


@pytest.fixture
def plans(monkeypatch):
    """The plans this test's calls made (adamupdate._plan.make, watched): which route ran."""
    made = []
    real = _plan.make

    def watched(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(_plan, "make", watched)
    return made


# --- NumPy: what each call must notice ----------------------------------------------------------


@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_numpy_loop_with_reused_or_new_gradients(same_grad_objects, size, plans):
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
        if t > 1:  # the caller's buffers, updated where they are
            assert _same_objects(m_new, m) and _same_objects(v_new, v)
        m, v = m_new, v_new
    check(params, m, v, expected(params0, grads))
    assert len(plans) == STEPS  # every call planned
    kernel = plans[-1].groups[0].step.kernel  # the route the last step took
    if size == "no_numba":
        assert kernel is None
    elif size == "kernel" and importlib.util.find_spec("numba") is not None:
        assert kernel is not None


def test_replacing_a_leaf_in_the_container_is_noticed(size):
    params0, grads = problem(1, n=SIZES[size])
    params = [p.copy() for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # the caller swaps in a copy: the buffer it replaced must not be written
            old = params[1]
            params[1] = old.copy()
            frozen = old.copy()
        _, m, v = adamupdate(params, g, m, v, t, inplace=True)
    check(params, m, v, expected(params0, grads))
    assert np.array_equal(old, frozen)


def test_a_non_contiguous_gradient_mid_loop(size):
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
    """Made read-only between two calls: the next call refuses it before it writes anything;
    once writeable again, the loop goes on correctly."""
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


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
@pytest.mark.parametrize("elements", [7, 1 << 18], ids=["small", "large"])
def test_nothing_holds_a_discarded_model(elements, inplace, lib):
    """Once the caller drops a model, its averages and its gradients, they are freed: nothing
    module-global holds them (nor, for large functional outputs, the memory blocks of
    adamupdate._reuse they live in, or the blocks those replaced)."""
    conv = _convert(lib)
    params0, grads = problem(7, n=3, shape=(elements,), steps=3)
    params = [conv(p) for p in params0]
    m = v = g = None
    for t in (1, 2, 3):
        g = [conv(x) for x in grads[t - 1]]
        params, m, v = adamupdate(params, g, m, v, t, inplace=inplace)
    blocks = [_reuse.block_of(x) for x in (params[0], m[0], v[0])]
    blocks += [block.__dict__.get("previous") for block in blocks if block is not None]
    if elements == 1 << 18 and not inplace:
        assert blocks[0] is not None  # large functional outputs do live in blocks
    watch = [weakref.ref(x) for x in (params[0], m[0], v[0], g[0], *blocks) if x is not None]
    del params, m, v, g, blocks
    gc.collect()
    assert [w() for w in watch] == [None] * len(watch)


# --- a shape changed under the same object ----------------------------------------------------


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
    next call refuses it, naming the leaf, and changes nothing."""
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
def test_a_shape_changed_everywhere_is_stepped_as_new_arrays_are(inplace, size, lib):
    """Parameter, averages and gradients all reshaped mid-loop, under the same objects: a
    consistent new problem, stepped exactly as reshaped copies (new objects) are."""
    conv = _convert(lib)
    params0, grads = problem(12, n=SIZES[size], shape=(3, 4))
    results = []
    for same_objects in (True, False):
        params = [conv(p) for p in params0]
        m = v = None
        for t, g in enumerate(grads, 1):
            g = [conv(x) for x in g]
            if t >= 4:
                g[0] = g[0].reshape(4, 3)
            if t == 4 and same_objects:
                for leaf in (params[0], m[0], v[0]):
                    _reshape(lib, leaf, (4, 3))
            elif t == 4:
                params, m, v = (list(column) for column in (params, m, v))
                for column in (params, m, v):
                    column[0] = _copy(lib, column[0]).reshape(4, 3)
            params, m, v = adamupdate(params, g, m, v, t, inplace=inplace)
        assert tuple(params[0].shape) == tuple(m[0].shape) == tuple(v[0].shape) == (4, 3)
        results.append((params, m, v))
    for a, b in zip(*(_flat(r) for r in results)):
        assert _same_bits(a, b)
    params, m, v = ([_np(x).reshape(3, 4) for x in column] for column in results[0])
    check(params, m, v, expected(params0, grads))


def _flat(result):
    return [x for column in result for x in column]


def _copy(lib, x):
    return x.copy() if lib == "numpy" else x.clone()


def _copies(lib, states):
    return None if states is None else [_copy(lib, x) for x in states]


# --- what the averages are ------------------------------------------------------------------------

PLAIN = {"list": list, "tuple": tuple, "dict": dict}


def _container(kind, leaves):
    if kind == "dict":
        return {f"w{i}": x for i, x in enumerate(leaves)}
    return PLAIN[kind](leaves)


def _values(container):
    return list(container.values()) if isinstance(container, dict) else list(container)


@pytest.mark.parametrize("kind", list(PLAIN))
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_the_averages_come_back_in_the_callers_plain_containers(kind, inplace):
    """A call's averages are of the very container type of its gradients (no subclass, nothing
    attached); in place, they hold the caller's own buffers, updated where they are."""
    params0, grads = problem(13)
    params = _container(kind, [p.copy() for p in params0])
    m = v = None
    for t, g in enumerate(grads, 1):
        out, m_new, v_new = adamupdate(params, _container(kind, g), m, v, t, inplace=inplace)
        for state in (m_new, v_new):
            assert type(state) is PLAIN[kind]
            assert not hasattr(state, "_adamupdate_receipt")
        if inplace:
            assert out is params
            if t > 1:
                assert _same_objects(_values(m_new), _values(m))
                assert _same_objects(_values(v_new), _values(v))
        else:
            assert type(out) is PLAIN[kind]
        params, m, v = out, m_new, v_new
    check(_values(params), _values(m), _values(v), expected(params0, grads))


DTYPES = ["float32", "float64", "complex64"]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_a_loop_on_its_own_averages_equals_a_loop_on_copies(lib, dtype, inplace, size):
    """Passing back the averages a call returned, or copies of them, gives the same bits, and
    what the float64 reference gives (leaves of 0 to 2 dimensions, 20 steps)."""
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
    for own in (True, False):
        params = [conv(p) for p in params0]
        m = v = None
        for t, g in enumerate(grads, 1):
            if not own:
                m, v = _copies(lib, m), _copies(lib, v)
            params, m, v = adamupdate(params, [conv(x) for x in g], m, v, t, inplace=inplace)
        finals.append(_flat((params, m, v)))
    assert all(_same_bits(a, b) for a, b in zip(*finals))
    params, m, v = (finals[0][k * len(shapes) : (k + 1) * len(shapes)] for k in range(3))
    for p_i, m_i, v_i, w in zip(params, m, v, expected(params0, grads)):
        assert_matches(_np(p_i), w.p, w.p_bound, dtype, "params")
        assert_matches(_np(m_i), w.m, w.m_bound, dtype, "avg_grad")
        assert_matches(_np(v_i), w.v, w.v_bound, dtype, "avg_sq_grad")


# --- PyTorch ---------------------------------------------------------------------------------

if HAS_TORCH:
    import torch


def _torch_check(params, m, v, want):
    check([p.numpy() for p in params], [x.numpy() for x in m], [x.numpy() for x in v], want)


@needs_torch
@pytest.mark.parametrize("same_grad_objects", [True, False])
def test_torch_loop_with_reused_or_new_gradients(same_grad_objects, size):
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
            assert _same_objects(m_new, m) and _same_objects(v_new, v)
        m, v = m_new, v_new
    _torch_check(params, m, v, expected(params0, grads))


@needs_torch
def test_torch_storage_swapped_under_the_same_object(size):
    params0, grads = problem(5, n=SIZES[size])
    params = [torch.tensor(p) for p in params0]
    m = v = None
    for t, g in enumerate(grads, 1):
        if t == 4:  # same Python objects, new storage: the old addresses must not be written
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
    """Swapping a state's or a gradient's storage for a smaller one (same Python object) is
    refused, naming the leaf — the kernel never reads or writes past the new buffer."""
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
    behind them: the next call must refuse it rather than read or write memory the tensor no
    longer owns. In a child process: a failure may be a crash."""
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


_SHRUNK_CAST_SCRIPT = """
import torch
from adamupdate import adamupdate
params = [torch.zeros(64)]  # small: the foreach route, no numba to load in the child
grad = torch.ones(64, dtype=torch.float64)  # converted to float32 by the call
grad.untyped_storage().resize_(16)
try:
    adamupdate(params, [grad], None, None, 1)
except (TypeError, ValueError) as error:
    print("refused:", error)
else:
    print("NOT REFUSED")
"""


@needs_torch
def test_torch_shrunk_gradient_of_another_precision_is_refused():
    """A gradient of another precision whose storage has shrunk is refused as one of the
    parameter's precision is, not converted by reading memory it no longer owns."""
    proc = subprocess.run(
        [sys.executable, "-c", _SHRUNK_CAST_SCRIPT],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("refused: grad[0]: its storage holds fewer"), proc.stdout


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
    """On every route and every call, an in-place step is an in-place operation to autograd."""
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


def _env():
    from pathlib import Path

    import adamupdate

    src = str(Path(next(iter(adamupdate.__path__))).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
