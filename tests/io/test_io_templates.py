"""adamupdate.io with torch and JAX leaves and ``like=`` templates: leaves come back as NumPy or
like the template (dtype, device, zero-d states, modules), and mismatches are named by path.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from io_helpers import FORMATS, assert_same, bits  # noqa: E402

# ------------------------------------------------------------------------------------------
# torch and JAX leaves, like=
# ------------------------------------------------------------------------------------------

TORCH_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]


@pytest.mark.parametrize("suffix", FORMATS)
def test_torch_leaves_come_back_as_numpy_or_like_the_template(tmp_path, suffix):
    gen = torch.Generator().manual_seed(0)
    params = {
        str(dtype).removeprefix("torch."): torch.randn(3, 2, generator=gen, dtype=dtype)
        for dtype in TORCH_DTYPES
    }
    params["scalar"] = torch.tensor(2.5)
    params["param"] = torch.nn.Parameter(torch.ones(2))
    like = {name: torch.empty(0, dtype=t.dtype) for name, t in params.items()}
    path = tmp_path / f"t{suffix}"
    aio.save(path, params=params)

    plain = aio.load(path)["params"]
    for name, tensor in params.items():
        got = plain[name]
        assert type(got) is np.ndarray and got.shape == tuple(tensor.shape)
        if tensor.dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
            assert bits(got) == bits(tensor.view(torch.int16).numpy())
        else:
            assert bits(got) == bits(tensor.detach().numpy())

    typed = aio.load(path, like={"params": like})["params"]
    for name, tensor in params.items():
        got = typed[name]
        assert type(got) is torch.Tensor and not got.requires_grad
        assert got.dtype == tensor.dtype and got.device == tensor.device
        assert got.shape == tensor.shape
        want = tensor.detach().reshape(-1).view(torch.uint8)
        assert torch.equal(got.reshape(-1).view(torch.uint8), want)


def test_like_casts_to_the_template_dtype_and_keeps_zero_d_states(tmp_path):
    path = tmp_path / "s.npz"
    aio.save(path, avg=[np.float64(0.0), np.ones(3)], n=2.0)
    template = [torch.ones(3, dtype=torch.float32), torch.ones(3, dtype=torch.float32)]
    out = aio.load(path, like={"avg": template, "n": np.float32(1)})
    assert out["avg"][0].shape == () and out["avg"][0].dtype == torch.float32
    assert out["avg"][1].dtype == torch.float32 and torch.equal(out["avg"][1], torch.ones(3))
    assert type(out["n"]) is np.float32 and out["n"] == 2


@pytest.mark.gpu
def test_cuda_tensors_save_and_come_back_on_the_device(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for PyTorch")
    params = {
        "w": torch.randn(64, 3, device="cuda"),
        "h": torch.randn(5, device="cuda", dtype=torch.bfloat16),
    }
    for suffix in FORMATS:
        path = tmp_path / f"cuda{suffix}"
        aio.save(path, params=params)
        out = aio.load(path, like={"params": params})["params"]
        for name, tensor in params.items():
            assert out[name].device == tensor.device and out[name].dtype == tensor.dtype
            assert torch.equal(out[name], tensor)


def test_jax_leaves_with_like(tmp_path):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    params = {"w": jnp.arange(4, dtype=jnp.float32), "h": jnp.ones(2, dtype=jnp.bfloat16)}
    for suffix in FORMATS:
        path = tmp_path / f"j{suffix}"
        aio.save(path, params=params)
        plain = aio.load(path)["params"]
        assert type(plain["w"]) is np.ndarray and plain["h"].dtype == ml_dtypes.bfloat16
        out = aio.load(path, like={"params": params})["params"]
        for name in params:
            assert isinstance(out[name], jax.Array)
            assert out[name].dtype == params[name].dtype
            assert out[name].devices() == params[name].devices()
            assert bits(np.asarray(out[name])) == bits(np.asarray(params[name]))


def test_module_as_variable_and_as_template(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    names = [name for name, _ in net.named_parameters()]
    states = {
        name: torch.full_like(p, 0.5, dtype=torch.float64)
        for name, p in reversed(list(net.named_parameters()))
    }
    for suffix in FORMATS:
        path = tmp_path / f"net{suffix}"
        aio.save(path, net=net, avg_grad=states)
        plain = aio.load(path)
        assert list(plain["net"]) == names and type(plain["net"]["0.weight"]) is np.ndarray
        out = aio.load(path, like={"net": net, "avg_grad": net})
        assert list(out["avg_grad"]) == names  # named_parameters order
        for name, p in net.named_parameters():
            assert out["net"][name].dtype == p.dtype and torch.equal(out["net"][name], p.detach())
            assert out["avg_grad"][name].dtype == p.dtype  # the parameter's dtype
    aio.save(path, s={"nope": np.ones(1)})
    with pytest.raises(ValueError, match=r"s\['nope'\]: the network has no parameter 'nope'"):
        aio.load(path, like={"s": net})


def test_like_mismatches_are_reported_by_path(tmp_path):
    path = tmp_path / "m.npz"
    aio.save(path, params={"a": [np.ones(2)]})
    with pytest.raises(ValueError, match=r"m\.npz: params\['a'\]: has 1 elements, like has 2"):
        aio.load(path, like={"params": {"a": [np.ones(2), np.ones(2)]}})
    with pytest.raises(ValueError, match=r"params\['b'\]: in like but not in the file"):
        aio.load(path, like={"params": {"a": [None], "b": None}})
    with pytest.raises(ValueError, match="no variable 'typo'"):
        aio.load(path, like={"typo": None})
    with pytest.raises(TypeError, match="like must be a mapping"):
        aio.load(path, like=[1])


def test_namedtuple_whose_module_is_not_imported_falls_back_to_a_dict(tmp_path):
    Hidden = collections.namedtuple("Hidden", "a b")
    Hidden.__module__ = "module_that_is_not_imported"
    for suffix in FORMATS:
        path = tmp_path / f"h{suffix}"
        aio.save(path, value=Hidden(1, np.ones(1)))
        with pytest.warns(UserWarning, match="returned as a dict"):
            plain = aio.load(path)["value"]
        assert_same(plain, {"a": 1, "b": np.ones(1)})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_same(
                aio.load(path, like={"value": Hidden(0, None)})["value"], Hidden(1, np.ones(1))
            )
