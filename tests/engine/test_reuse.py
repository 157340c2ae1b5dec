"""Large functional outputs reuse only blocks nothing can reach (adamupdate._reuse).

A functional loop's outputs alternate between two blocks of memory; any way the caller keeps
an old array — the array, a view, a tensor made from it, a memoryview, a weak reference, a
torch view or an autograd graph — keeps its block out of reuse, and its values unchanged.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from adamupdate import _reuse, adamupdate
from reference import assert_matches, run

N = 1 << 19  # 2 MiB of float32: above the reuse threshold
LR = 0.01


def _start(lib: str):
    rng = np.random.default_rng(7)
    p = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(p), torch.from_numpy(g)
    return p, g


def _values(x) -> np.ndarray:
    return np.array(x.detach().numpy() if hasattr(x, "detach") else x, copy=True)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_a_functional_loop_alternates_between_two_blocks(lib, monkeypatch):
    taken: list[bool] = []
    real = _reuse._take_previous

    def spy(replaced, nbytes):
        found = real(replaced, nbytes)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(_reuse, "_take_previous", spy)
    p, g = _start(lib)
    m = v = None
    for t in range(1, 6):
        taken.clear()
        p, m, v = adamupdate(p, g, m, v, t, LR)
        assert _reuse.block_of(p) is not None
        # step 1 replaces the caller's array (no block), step 2 a block with no predecessor;
        # from step 3 on each output takes the block its input's input lived in
        assert taken == ([] if t == 1 else [t > 2] * 3), t


@pytest.mark.parametrize(
    "keep",
    ["array", "view", "memoryview", "weakref-block", "from_numpy", "torch-view", "saved"],
)
def test_anything_that_reaches_an_old_output_keeps_it_out_of_reuse(keep):
    torch = pytest.importorskip("torch")
    lib = "torch" if keep in ("torch-view", "saved") else "numpy"
    p, g = _start(lib)
    p, m, v = adamupdate(p, g, None, None, 1, LR)
    if keep == "saved":  # an autograd graph that saved the parameter
        p = torch.nn.Parameter(p)
    held = p
    kept_values = _values(p)
    if keep == "view":
        held = p[10:]
        kept_values = kept_values[10:]
    elif keep == "memoryview":
        held = memoryview(p)
    elif keep == "weakref-block":
        held = weakref.ref(_reuse.block_of(p))
    elif keep == "from_numpy":
        held = torch.from_numpy(p)
    elif keep == "torch-view":
        held = p.view(-1)[10:]
        kept_values = kept_values[10:]
    elif keep == "saved":
        held = (p * p).sum().grad_fn  # keeps p in its graph
    old_block = _reuse.block_of(p)
    for t in range(2, 6):
        p, m, v = adamupdate(p, g, m, v, t, LR)
        assert _reuse.block_of(p) is not old_block
    if keep in ("array", "view", "from_numpy", "torch-view"):
        np.testing.assert_array_equal(_values(held), kept_values)
    elif keep == "memoryview":
        np.testing.assert_array_equal(np.frombuffer(held, np.float32), kept_values)
    del held


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_reused_blocks_give_the_reference_result(lib):
    p, g = _start(lib)
    want = run(_values(p), [_values(g)] * 6, LR)
    m = v = None
    for t in range(1, 7):
        p, m, v = adamupdate(p, g, m, v, t, LR)
    assert_matches(_values(p), want.p, want.p_bound, np.float32, "p")
    assert_matches(_values(m), want.m, want.m_bound, np.float32, "m")
    assert_matches(_values(v), want.v, want.v_bound, np.float32, "v")


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_nothing_is_held_after_the_loop_drops_its_arrays(lib):
    def train() -> list:
        p, g = _start(lib)
        m = v = None
        for t in range(1, 5):
            p, m, v = adamupdate(p, g, m, v, t, LR)
        blocks = {id(b): b for b in map(_reuse.block_of, (p, m, v))}
        for b in list(blocks.values()):
            if b.__dict__.get("previous") is not None:
                blocks[id(b.previous)] = b.previous
        return [weakref.ref(b) for b in blocks.values()]

    refs = train()
    gc.collect()
    assert refs and all(r() is None for r in refs)
