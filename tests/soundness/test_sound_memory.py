"""Issue 17, case 1: a functional call never writes memory the caller can still reach, and
keeps nothing alive once the caller lets go.

``p, m, v = adamupdate(p, g, m, v, t)`` returns new arrays. Whatever the library reuses to
make them, it must never be memory the caller can still see through something Python's
reference count does not show: a NumPy array or a ``bytearray`` under a torch tensor, a file
mapped by ``np.memmap``, a weak reference. And when a training loop is over and every array is
dropped, every one of them is freed.

The arrays here are 2-8 MiB, above any size a library might think worth reusing.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

from adamupdate import adamupdate

N = 1 << 20  # 4 MiB of float32
STEPS = 6


def _functional_loop(p, g, steps=STEPS, m=None, v=None, first=1):
    for t in range(first, first + steps):
        p, m, v = adamupdate(p, g, m, v, t)
    return p, m, v


# --- memory the reference count does not see --------------------------------------------------


def test_torch_from_numpy_parameter_leaves_the_numpy_array_alone():
    """Case 1: ``p = torch.from_numpy(a)`` in a functional loop: ``a`` is never written."""
    torch = pytest.importorskip("torch")
    a = np.ones(N, np.float32)
    g = torch.full((N,), 0.5)
    _functional_loop(torch.from_numpy(a), g)
    assert np.all(a == 1.0), f"the caller's NumPy array was overwritten: a[0] = {a[0]}"


def test_torch_from_numpy_states_leave_the_numpy_arrays_alone():
    """Case 1: averages handed in as ``torch.from_numpy`` views of the caller's arrays."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.standard_normal(N).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal(N).astype(np.float32))
    p, m, v = adamupdate(p, g, None, None, 1)
    m_np, v_np = m.numpy().copy(), v.numpy().copy()
    m_seen, v_seen = m_np.copy(), v_np.copy()
    _functional_loop(p, g, m=torch.from_numpy(m_np), v=torch.from_numpy(v_np), first=2)
    assert np.array_equal(m_np, m_seen) and np.array_equal(v_np, v_seen)


def test_torch_frombuffer_parameter_leaves_the_bytearray_alone():
    """Case 1: ``p = torch.frombuffer(bytearray(...))``: the bytes are never written."""
    torch = pytest.importorskip("torch")
    raw = bytearray(np.ones(N, np.float32).tobytes())
    seen = bytes(raw)
    _functional_loop(torch.frombuffer(raw, dtype=torch.float32), torch.full((N,), 0.5))
    assert bytes(raw) == seen, "the caller's bytearray was overwritten"


def test_torch_from_memmap_parameter_leaves_the_file_alone(tmp_path):
    """Case 1: ``torch.from_numpy(np.memmap(file))``: the file on disk is never written."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.bin"
    np.ones(N, np.float32).tofile(path)
    seen = path.read_bytes()
    # The caller keeps no name for the tensor: the loop's rebinding drops it.
    _functional_loop(
        torch.from_numpy(np.memmap(path, np.float32, mode="r+", shape=(N,))),
        torch.full((N,), 0.5),
    )
    gc.collect()
    assert path.read_bytes() == seen, "the caller's file was written"


def test_numpy_memmap_parameter_leaves_the_file_alone(tmp_path):
    """Case 1, NumPy's own form: an ``np.memmap`` parameter is an input, never an output."""
    path = tmp_path / "weights.bin"
    np.ones(N, np.float32).tofile(path)
    seen = path.read_bytes()
    out = _functional_loop(
        np.memmap(path, np.float32, mode="r+", shape=(N,)), np.full(N, 0.5, np.float32)
    )
    assert not any(isinstance(x, np.memmap) for x in out)
    del out
    gc.collect()
    assert path.read_bytes() == seen


# --- weak references ----------------------------------------------------------------------


def _make(lib):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return lambda x: torch.from_numpy(np.ascontiguousarray(x, np.float32)).clone()
    return lambda x: np.asarray(x, np.float32).copy()


def _values(x):
    if isinstance(x, np.ndarray):
        return x.copy()
    return x.detach().numpy().copy()


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_a_weak_reference_to_a_dropped_input_never_shows_a_new_result(lib):
    """Case 1: a ``weakref.ref`` to an array the caller dropped is dead, or still holds the
    values it had; it is never one of a later call's results."""
    make = _make(lib)
    p, g = make(np.linspace(-1, 1, N)), make(np.full(N, 0.5))
    m = v = None
    watched = []  # (weak reference, the values it had when the caller dropped it)
    for t in range(1, STEPS + 1):
        for x in (p, m, v):
            if x is not None:
                watched.append((weakref.ref(x), _values(x)))
        p, m, v = adamupdate(p, g, m, v, t)
        for ref, values in watched:
            x = ref()
            if x is None:
                continue
            assert not any(x is y for y in (p, m, v)), f"step {t}: a dropped input came back"
            assert np.array_equal(_values(x), values), f"step {t}: a dropped input was rewritten"


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_a_weak_value_dictionary_never_maps_to_a_new_result(lib):
    """Case 1: a ``WeakValueDictionary`` entry of a dropped parameter is gone or unchanged."""
    make = _make(lib)
    p, g = make(np.linspace(-1, 1, N)), make(np.full(N, 0.5))
    m = v = None
    cache: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    seen = {}
    for t in range(1, STEPS + 1):
        cache[t] = p
        seen[t] = _values(p)
        p, m, v = adamupdate(p, g, m, v, t)
        for key in list(cache.keys()):
            x = cache.get(key)
            if x is not None:
                assert x is not p and x is not m and x is not v, f"step {t}: entry {key}"
                assert np.array_equal(_values(x), seen[key]), f"step {t}: entry {key} rewritten"


# --- nothing kept alive -------------------------------------------------------------------


def _train_and_watch(lib, inplace, refs, containers, shapes=((N,), (256, 1024), (N // 2,))):
    """A training function: makes its arrays, runs a loop, returns nothing. Every array the
    loop sees, given or returned, is watched through a weak reference."""
    make = _make(lib)
    rng = np.random.default_rng(7)
    if containers:
        p = [make(rng.standard_normal(s)) for s in shapes]
        g = [make(rng.standard_normal(s)) for s in shapes]
    else:
        p, g = make(rng.random(shapes[0])), make(rng.random(shapes[0]))
    m = v = None

    def watch(*trees):
        for tree in trees:
            for x in tree if isinstance(tree, (list, tuple)) else [tree]:
                if x is not None:
                    refs.append(weakref.ref(x))

    for t in range(1, STEPS + 1):
        watch(p, g, m, v)
        p, m, v = adamupdate(p, g, m, v, t, inplace=inplace)
        watch(p, m, v)


@pytest.mark.parametrize("containers", [False, True], ids=["bare", "list"])
@pytest.mark.parametrize("inplace", [False, True], ids=["functional", "inplace"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_every_array_of_a_finished_training_loop_is_freed(lib, inplace, containers):
    """Case 1: after a training function returns, no array it made or got back is alive."""
    refs: list[weakref.ref] = []
    _train_and_watch(lib, inplace, refs, containers)
    gc.collect()
    alive = [ref for ref in refs if ref() is not None]
    assert not alive, f"{len(alive)} of {len(refs)} arrays of a finished loop are still alive"


def test_numpy_memory_returns_to_its_baseline_after_a_training_loop():
    """Case 1: traced NumPy memory after a dropped functional loop is back where it was."""
    # Shapes no other test uses, so that nothing made before tracing started can stand in
    # for the loop's own arrays; a small loop first loads and compiles what the big one needs.
    shapes = ((N + 17,), (N // 2 + 3,))
    _train_and_watch("numpy", False, [], True, shapes=((40_003,), (40_001,)))
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        _train_and_watch("numpy", False, [], True, shapes=shapes)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # The loop's arrays are 2-4 MiB each; allow well under one of them.
    assert held < 512 * 1024, f"{held / 2**20:.1f} MiB still held after the loop returned"


# --- torch: outputs are new storage, inputs untouched ------------------------------------------


def _span(t):
    lo = t.data_ptr()
    return lo, lo + t.untyped_storage().nbytes()


@pytest.mark.parametrize("containers", [False, True], ids=["bare", "list"])
def test_torch_functional_outputs_never_share_storage_with_inputs(containers):
    """Case 1: a functional call's outputs own storage disjoint from every input, and the
    inputs' autograd version counters do not move (nothing was written into them)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(3)
    shapes = [(N,), (512, 512)] if containers else [(N,)]
    p = [torch.randn(s, generator=gen) for s in shapes]
    g = [torch.randn(s, generator=gen) for s in shapes]
    if not containers:
        p, g = p[0], g[0]
    m = v = None
    held = []  # everything the caller still holds, checked against every later output
    for t in range(1, STEPS + 1):
        inputs = [x for tree in (p, g, m, v) if tree is not None for x in _leaves(tree)]
        versions = [x._version for x in inputs]
        values = [x.clone() for x in inputs]
        held += inputs
        p, m, v = adamupdate(p, g, m, v, t)
        outputs = [x for tree in (p, m, v) for x in _leaves(tree)]
        for out in outputs:
            lo, hi = _span(out)
            for x in held:
                xlo, xhi = _span(x)
                assert hi <= xlo or xhi <= lo, f"step {t}: an output shares a held input's memory"
        assert [x._version for x in inputs] == versions, f"step {t}: an input's version moved"
        assert all(torch.equal(x, y) for x, y in zip(inputs, values)), f"step {t}: input written"


def _leaves(tree):
    return list(tree) if isinstance(tree, (list, tuple)) else [tree]
