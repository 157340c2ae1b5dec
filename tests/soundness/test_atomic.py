"""A call either completes or changes nothing: faults injected inside the step.

The engine binds every group (checks, allocations, staging copies, compilation) before it runs
any (see ``adamupdate._plan``). Here the k-th group's bind is made to fail — as an allocation or
a compilation can — and every buffer of every group, in place or not, must be bitwise as it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from adamupdate import adamupdate

DTYPES = ("float32", "float64", "complex64")  # three groups, one per dtype


def _problem(make, n_per_group=2, size=5):
    rng = np.random.default_rng(0)

    def draw(dtype):
        x = rng.standard_normal(size)
        if dtype.startswith("complex"):
            x = x + 1j * rng.standard_normal(size)
        return make(x, dtype)

    params = {f"{d}_{i}": draw(d) for d in DTYPES for i in range(n_per_group)}
    grads = {k: make(np.asarray(_to_numpy(v)) * 0 + 0.5, v.dtype) for k, v in params.items()}
    return params, grads


def _to_numpy(x):
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


def _bytes(tree):
    return {k: (_to_numpy(x).tobytes(), str(x.dtype)) for k, x in tree.items()}


def _failing_bind(group_class, fail_at):
    original = group_class.bind
    calls = {"n": 0}

    def bind(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at + 1:
            raise MemoryError("injected: this group's buffers could not be allocated")
        return original(self, *args, **kwargs)

    return bind


def _libraries():
    libs = {"numpy": (lambda x, d: np.asarray(x).astype(d), "adamupdate.backends.numpy_backend")}
    try:
        import torch

        libs["torch"] = (
            lambda x, d: torch.tensor(np.asarray(x)).to(getattr(torch, str(d).split(".")[-1])),
            "adamupdate.backends.torch_backend",
        )
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        libs["jax"] = (
            lambda x, d: jnp.asarray(np.asarray(x).astype(str(d))),
            "adamupdate.backends.jax_backend",
        )
    except ImportError:
        pass
    return libs


LIBS = _libraries()


@pytest.mark.parametrize("library", list(LIBS))
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("fail_at", [0, 1, 2])
@pytest.mark.parametrize("remembered", [False, True])
def test_a_group_failing_in_the_step_changes_nothing(
    library, inplace, fail_at, remembered, monkeypatch
):
    import contextlib

    if library == "jax":  # float64 leaves for a third group, without changing JAX for others
        import jax

        from reference import jax_x64

        context = jax_x64(jax)
    else:
        context = contextlib.nullcontext()
    with context:
        _fail_inside_the_step(library, inplace, fail_at, remembered, monkeypatch)


def _fail_inside_the_step(library, inplace, fail_at, remembered, monkeypatch):
    import importlib

    make, module = LIBS[library]
    backend = importlib.import_module(module)
    params, grads = _problem(make)
    m = v = None
    t = 1
    if remembered:  # a plan carried by the averages: the failure hits a reused plan
        params, m, v = adamupdate(params, grads, None, None, 1, inplace=inplace)
        t = 2
    before = [_bytes(x) for x in (params, grads)] + [
        None if s is None else _bytes(s) for s in (m, v)
    ]
    if library == "jax" and inplace:
        alive = [x for tree in (params, m, v) if tree is not None for x in tree.values()]
    monkeypatch.setattr(backend.Group, "bind", _failing_bind(backend.Group, fail_at))
    with pytest.raises(MemoryError, match="injected"):
        adamupdate(params, grads, m, v, t, inplace=inplace)
    after = [_bytes(x) for x in (params, grads)] + [
        None if s is None else _bytes(s) for s in (m, v)
    ]
    assert after == before
    if library == "jax" and inplace:
        assert not any(x.is_deleted() for x in alive), "a donated buffer was deleted"
    monkeypatch.undo()
    # the same call goes through afterwards, from the untouched inputs
    adamupdate(params, grads, m, v, t, inplace=inplace)
