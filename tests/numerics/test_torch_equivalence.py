"""adamupdate against torch.optim.Adam with MATLAB's epsilon placement emulated.

PyTorch adds eps to sqrt(v_hat) = sqrt(v)/sqrt(1-b2^t); MATLAB adds it to sqrt(v). The two are the
same step when PyTorch's eps for step t is eps/sqrt(1-b2^t), which we set before every step.
The remaining differences are evaluation order only: float64 agrees to ~1e-12 relative after 50
steps (ulp-level differences per step, accumulated), float32 to ~1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from adamupdate import adamupdate  # noqa: E402

TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}
SHAPES = [(7, 5), (3,), (2, 3, 4), ()]


def _torch_kwargs(impl):
    if impl == "foreach":
        return {"foreach": True}
    if impl == "fused":
        return {"fused": True}
    return {"foreach": False}


def _run_both(dtype, impl, lr, b1, b2, eps, n_steps=50, seed=0):
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = torch.optim.Adam(tparams, lr=lr, betas=(b1, b2), eps=eps, **_torch_kwargs(impl))
    m = v = None
    for t in range(1, n_steps + 1):
        grads = [
            np.asarray(rng.standard_normal(s) * 10 ** rng.uniform(-2, 1)).astype(dtype)
            for s in SHAPES
        ]
        params, m, v = adamupdate(params, grads, m, v, t, lr, b1, b2, eps)
        for tp, g in zip(tparams, grads, strict=True):
            tp.grad = torch.from_numpy(g.copy())
        for group in opt.param_groups:
            group["eps"] = eps / math.sqrt(1.0 - b2**t)
        opt.step()
    return params, m, v, tparams, opt


@pytest.mark.parametrize("impl", ["single", "foreach", "fused"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "lr,b1,b2,eps", [(1e-3, 0.9, 0.999, 1e-8), (0.05, 0.75, 0.95, 1e-8), (1e-2, 0.5, 0.99, 1e-3)]
)
def test_fifty_steps_match_torch_adam(impl, dtype, lr, b1, b2, eps):
    params, m, v, tparams, opt = _run_both(dtype, impl, lr, b1, b2, eps)
    tol = TOL[dtype]
    assert isinstance(params, list) and len(params) == len(SHAPES)
    for i, (p, mm, vv, tp) in enumerate(zip(params, m, v, tparams, strict=True)):
        assert p.dtype == dtype and p.shape == SHAPES[i]
        state = opt.state[tp]
        np.testing.assert_allclose(p, tp.detach().numpy(), **tol, err_msg=f"params[{i}]")
        np.testing.assert_allclose(mm, state["exp_avg"].numpy(), **tol, err_msg=f"m[{i}]")
        np.testing.assert_allclose(vv, state["exp_avg_sq"].numpy(), **tol, err_msg=f"v[{i}]")


def test_unadjusted_torch_eps_differs():
    """Sanity check of the test itself: without the eps rescaling torch gives another answer."""
    dtype, lr, b1, b2, eps = np.float64, 1e-2, 0.9, 0.999, 1e-3
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(10)
    g = rng.standard_normal(10) * 1e-3
    ours = adamupdate(p0.astype(dtype), g, None, None, 1, lr, b1, b2, eps)[0]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.Adam([tp], lr=lr, betas=(b1, b2), eps=eps)
    tp.grad = torch.from_numpy(g.copy())
    opt.step()
    assert np.max(np.abs(ours - tp.detach().numpy())) > 1e-4
