"""PyTorch's routes (fused, foreach, the numba kernel) against the float64 reference of
backend_helpers.py; leaves of several libraries in one call; autograd and in-place behaviour.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from adamupdate import adamupdate
from backend_helpers import (
    RTOL,
    assert_within,
    jax_lib,
    numpy_lib,
    random_values,
    ref_start,
    reference_step,
    rel_errors,
    torch_lib,
    torch_route_step,
)

# --------------------------------------------------------------------------------------------
# PyTorch: both kernels, mixed containers, autograd, in-place
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_fused_foreach_and_numba_paths_agree_with_reference(dtype):
    torch = pytest.importorskip("torch")
    from adamupdate.rules.adam import coefficients

    rng = np.random.default_rng(5)
    shapes = [(17,), (3, 4), ()]
    tdt = getattr(torch, dtype)
    p0 = [random_values(rng, s, False, 1.0) for s in shapes]
    grads = [[random_values(rng, s, False) for s in shapes] for _ in range(15)]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    finals = {}
    for kernel in ("fused", "foreach", "numba"):
        ps = [torch.tensor(x, dtype=tdt) for x in p0]
        refs = [ref_start(x.double().numpy()) for x in ps]
        ms = vs = None
        worst = {"p": 0.0, "m": 0.0, "v": 0.0}
        for t, gs in enumerate(grads, 1):
            gt = [torch.tensor(g, dtype=tdt) for g in gs]
            c = coefficients(lr, b1, b2, eps, t)
            ps, ms, vs = torch_route_step(kernel, ps, gt, ms, vs, c)
            for i in range(len(shapes)):
                refs[i] = reference_step(refs[i], gt[i].double().numpy(), t, lr, b1, b2, eps)
                errors = rel_errors(
                    {k: x[i].double().numpy() for k, x in zip("pmv", (ps, ms, vs))}, refs[i]
                )
                for k in worst:
                    worst[k] = max(worst[k], errors[k])
        assert_within(worst, RTOL[dtype], f"torch-{kernel}/{dtype}")
        finals[kernel] = ps
    for a, b, r in zip(finals["fused"], finals["foreach"], refs):
        diff = np.abs(a.double().numpy() - b.double().numpy()) / r.sp
        assert np.max(diff) <= 2 * RTOL[dtype]
    # the numba kernel applies MATLAB's operations in MATLAB's order, as the NumPy path does
    npdt = np.dtype(dtype)
    pn, mn, vn = [x.astype(npdt) for x in p0], None, None
    for t, gs in enumerate(grads, 1):
        pn, mn, vn = adamupdate(pn, [g.astype(npdt) for g in gs], mn, vn, t, lr, b1, b2, eps)
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(finals["numba"], pn))


def test_mixed_container_each_leaf_in_its_own_library():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    libs = {"np": numpy_lib(), "torch": torch_lib(), "jax": jax_lib()}
    rng = np.random.default_rng(3)
    values = {k: random_values(rng, (6,), False, 1.0) for k in libs}
    grads = {k: random_values(rng, (6,), False) for k in libs}
    params = {k: lib.make(values[k], "float32") for k, lib in libs.items()}
    grad = {k: lib.make(grads[k], "float32") for k, lib in libs.items()}
    p, m, v = adamupdate(params, grad, None, None, 1, 0.01)
    assert isinstance(p["np"], np.ndarray) and isinstance(m["np"], np.ndarray)
    assert isinstance(p["torch"], torch.Tensor) and isinstance(v["torch"], torch.Tensor)
    assert isinstance(p["jax"], jax.Array) and isinstance(m["jax"], jax.Array)
    for k, lib in libs.items():
        ref = reference_step(
            ref_start(lib.to_numpy(params[k])), lib.to_numpy(grad[k]), 1, 0.01, 0.9, 0.999, 1e-8
        )
        errors = rel_errors(
            {"p": lib.to_numpy(p[k]), "m": lib.to_numpy(m[k]), "v": lib.to_numpy(v[k])}, ref
        )
        assert_within(errors, RTOL["float32"], f"mixed/{k}")
    # a second step with those states
    p2, _, _ = adamupdate(p, grad, m, v, 2, 0.01)
    assert all(not np.array_equal(libs[k].to_numpy(p2[k]), libs[k].to_numpy(p[k])) for k in libs)


@pytest.mark.parametrize("argument", ["grad", "avg_grad", "avg_sq_grad"])
def test_leaf_from_another_library_is_a_type_error_naming_the_path(argument):
    torch = pytest.importorskip("torch")
    params = {"b": torch.zeros(3), "w": torch.ones(3)}
    args = {
        "grad": {"b": torch.ones(3), "w": torch.ones(3)},
        "avg_grad": {"b": torch.zeros(3), "w": torch.zeros(3)},
        "avg_sq_grad": {"b": torch.zeros(3), "w": torch.zeros(3)},
    }
    args[argument]["w"] = np.ones(3, np.float32)  # a NumPy leaf for a torch parameter

    def values(x):
        return x.numpy().copy() if isinstance(x, torch.Tensor) else np.array(x)

    snapshot = {k: {kk: values(vv) for kk, vv in d.items()} for k, d in args.items()}
    with pytest.raises(TypeError, match=rf"{argument}\['w'\]"):
        adamupdate(params, args["grad"], args["avg_grad"], args["avg_sq_grad"], 2, inplace=True)
    # nothing was touched, not even the leaves before the bad one
    assert torch.equal(params["b"], torch.zeros(3)) and torch.equal(params["w"], torch.ones(3))
    for k, d in args.items():
        for kk, vv in d.items():
            np.testing.assert_array_equal(values(vv), snapshot[k][kk])


def test_torch_returned_params_are_detached_leaves_that_keep_requires_grad():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    b = torch.randn(3, generator=gen).requires_grad_()
    c = torch.randn(2, generator=gen)  # requires_grad=False stays False
    x = torch.randn(5, 4, generator=gen)
    params = [w, b, c]
    m = v = None
    first = weakref.ref(w)
    for t in range(1, 101):
        loss = ((x @ params[0] + params[1]) ** 2).sum() + params[2].sum() * 0
        grads = torch.autograd.grad(loss, params[:2], create_graph=True)  # grads carry a graph
        grads = [*grads, torch.ones(2)]
        params, m, v = adamupdate(params, grads, m, v, t, 0.01)
        assert isinstance(params[0], torch.nn.Parameter)
        assert params[0].requires_grad and params[1].requires_grad
        assert not params[2].requires_grad
        for x_ in (*params, *m, *v):
            assert x_.grad_fn is None and x_.is_leaf
        for s in (*m, *v):
            assert not s.requires_grad
        assert all(p._version < 10 for p in params)  # fresh tensors, no history piling up
        if t == 1:
            del w, b, c
    gc.collect()
    assert first() is None  # the first parameter is not kept alive by any graph


def test_torch_inplace_keeps_storage_and_objects():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    w = torch.nn.Parameter(torch.tensor(rng.standard_normal((6, 2)), dtype=torch.float32))
    z = torch.tensor(rng.standard_normal((5,)), dtype=torch.complex64)  # foreach path
    params = {"w": w, "z": z}
    ptrs = {k: x.data_ptr() for k, x in params.items()}
    gen = torch.Generator().manual_seed(1)
    refs = {k: ref_start(x.detach().numpy()) for k, x in params.items()}
    m = v = None
    for t in range(1, 101):
        grad = {k: torch.randn(x.shape, dtype=x.dtype, generator=gen) for k, x in params.items()}
        out, m2, v2 = adamupdate(params, grad, m, v, t, 0.001, inplace=True)
        assert out["w"] is w and out["z"] is z
        assert {k: x.data_ptr() for k, x in out.items()} == ptrs
        if m is not None:
            assert all(m2[k] is m[k] and v2[k] is v[k] for k in params)
        m, v = m2, v2
        assert w.grad_fn is None and w.requires_grad and isinstance(w, torch.nn.Parameter)
        for k in params:
            refs[k] = reference_step(refs[k], grad[k].numpy(), t, 0.001, 0.9, 0.999, 1e-8)
    for k in params:
        errors = rel_errors(
            {"p": params[k].detach().numpy(), "m": m[k].numpy(), "v": v[k].numpy()}, refs[k]
        )
        # 100 steps rather than 20: with b2 = 0.999 the rounding errors of v add up over all
        # of them (measured 1.1e-6 for v, 4e-7 for p), hence 2.5x the 20-step tolerance
        assert_within(errors, 2.5 * RTOL["float32"], f"torch-inplace-100/{k}")


def test_torch_float16_params_with_float32_states():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(2)

    def randn():
        return torch.randn(8, generator=gen).half()

    p = randn()
    m = v = None
    for t in range(1, 4):
        p, m, v = adamupdate(p, randn(), m, v, t, state_dtype="float32")
        assert p.dtype == torch.float16
        assert m.dtype == torch.float32 and v.dtype == torch.float32
    ptrs = (p.data_ptr(), m.data_ptr(), v.data_ptr())
    for t in (4, 5):
        g = randn()
        p2, m2, v2 = adamupdate(p, g, m, v, t, state_dtype=torch.float32, inplace=True)
        assert p2 is p and (p2.data_ptr(), m2.data_ptr(), v2.data_ptr()) == ptrs
        assert m2.dtype == torch.float32 and v2.dtype == torch.float32
        assert m2 is m and v2 is v  # the caller's own state objects come back
        m, v = m2, v2


def test_torch_inplace_returns_the_callers_state_objects():
    torch = pytest.importorskip("torch")
    p, g = torch.zeros(3), torch.ones(3)
    m, v = torch.zeros(3), torch.ones(3)
    p2, m2, v2 = adamupdate(p, g, m, v, 2, inplace=True)
    assert p2 is p
    assert m2.data_ptr() == m.data_ptr()  # written in place either way
    assert m2 is m and v2 is v
