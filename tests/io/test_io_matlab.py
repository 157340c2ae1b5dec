"""adamupdate.io and MATLAB: files MATLAB writes (simulated with ``scipy.io.savemat`` as MATLAB lays
them out) load into Python containers, MATLAB objects are refused by name, and ``dlnetwork``
Learnables map to torch layers and back, computing what MATLAB computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from adamupdate import io as aio

scipy_io = pytest.importorskip("scipy.io")
pytest.importorskip("safetensors")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

from io_helpers import assert_same  # noqa: E402

# ------------------------------------------------------------------------------------------
# Files written by MATLAB (simulated with scipy.io.savemat as MATLAB lays them out)
# ------------------------------------------------------------------------------------------


def test_matlab_written_file_loads_into_python_containers(tmp_path):
    cell = np.empty((1, 3), dtype=object)
    cell[0, 0] = np.arange(6, dtype=np.float32).reshape(2, 3)
    cell[0, 1] = "name"
    cell[0, 2] = np.array([[1 + 2j]], np.complex64)
    grid = np.empty((2, 2), dtype=object)
    grid[:] = [[np.ones((1, 1)), "b"], ["c", np.zeros((0, 0))]]
    people = np.array(
        [[(np.array([[1.0]]), "ada"), (np.array([[2.0]]), "bob")]],
        dtype=[("id", object), ("name", object)],
    )
    matlab = {
        "s": {"w": np.ones((3, 1)), "flag": np.array([[True, False]]), "cell": cell},
        "people": people,
        "grid": grid,
        "empty": np.zeros((0, 0)),
        "empty_cell": np.empty((0, 0), dtype=object),
        "z": np.array([[np.complex128(complex(np.inf, -0.0))]]),
        "i": np.array([[7]], np.int32),
        "chars": np.array(["ab", "cd"]),
        "bigarray": np.arange(24.0).reshape(2, 3, 4),
    }
    path = tmp_path / "matlab.mat"
    scipy_io.savemat(path, matlab)
    out = aio.load(path)
    assert list(out) == list(matlab)
    s = out["s"]
    assert list(s) == ["w", "flag", "cell"]
    assert_same(s["w"], np.ones((3, 1)))
    assert_same(s["flag"], np.array([[True, False]]))  # logical → bool
    assert type(s["cell"]) is list and len(s["cell"]) == 3
    assert_same(s["cell"][0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert s["cell"][1] == "name"
    assert_same(s["cell"][2], np.array([[1 + 2j]], np.complex64))  # single complex stays so
    assert_same(
        out["people"],
        [{"id": np.array([[1.0]]), "name": "ada"}, {"id": np.array([[2.0]]), "name": "bob"}],
    )
    assert out["grid"][0][1] == "b" and out["grid"][1][0] == "c" and out["grid"][1][1] is None
    assert out["empty"] is None and out["empty_cell"] == []
    assert_same(out["z"], matlab["z"])
    assert_same(out["i"], np.array([[7]], np.int32))
    assert out["chars"] == ["ab", "cd"]
    assert_same(out["bigarray"], np.arange(24.0).reshape(2, 3, 4))


def test_matlab_objects_are_refused_by_name(tmp_path, monkeypatch):
    from scipy.io import matlab as mio

    path = tmp_path / "obj.mat"
    scipy_io.savemat(path, {"net": np.ones((1, 1))})
    real = mio.loadmat

    def with_object(*args, **kwargs):
        contents = real(*args, **kwargs)
        contents["net"] = mio.MatlabOpaque(np.empty((1, 1), dtype=[("s0", "O")]))
        return contents

    monkeypatch.setattr(scipy_io, "loadmat", with_object)
    with pytest.raises(ValueError, match=r"obj\.mat: net is a MATLAB object"):
        aio.load(path)


# ------------------------------------------------------------------------------------------
# MATLAB dlnetwork Learnables ↔ torch layers
# ------------------------------------------------------------------------------------------


def digits_net():
    train_digits = pytest.importorskip("adamupdate.examples.train_digits")
    torch.manual_seed(0)
    net = train_digits.DigitsNet(torch.rand(1, 28, 28))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # nonzero biases too
    return net


def test_digits_net_round_trips_through_matlab_layout_and_mat_file(tmp_path):
    net = digits_net()
    learnables = aio.matlab_learnables(net, input_shapes={"fc": (20, 24, 24)})
    shapes = {layer: {k: v.shape for k, v in p.items()} for layer, p in learnables.items()}
    assert shapes == {
        "conv_1": {"Weights": (5, 5, 1, 20), "Bias": (1, 1, 20)},
        "conv_2": {"Weights": (3, 3, 20, 20), "Bias": (1, 1, 20)},
        "conv_3": {"Weights": (3, 3, 20, 20), "Bias": (1, 1, 20)},
        "fc": {"Weights": (10, 11520), "Bias": (10, 1)},
    }
    # [h w cin cout] ← [cout cin h w], element by element
    w = net.conv_2.weight.detach().numpy()
    assert learnables["conv_2"]["Weights"][2, 1, 7, 5] == w[5, 7, 2, 1]
    path = tmp_path / "digits.mat"
    aio.save(path, learnables=learnables)
    # what MATLAB sees: single arrays with MATLAB's shapes
    raw = scipy_io.loadmat(path)["learnables"][0, 0]
    assert raw["conv_1"][0, 0]["Weights"].shape == (5, 5, 1, 20)
    assert raw["conv_1"][0, 0]["Weights"].dtype == np.float32
    assert raw["fc"][0, 0]["Bias"].shape == (10, 1)

    other = digits_net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    loaded = aio.load(path)["learnables"]
    aio.load_matlab_learnables(other, loaded, input_shapes={"fc": (20, 24, 24)})
    for (name, p), q in zip(net.named_parameters(), other.parameters()):
        assert torch.equal(p.view(torch.int32), q.view(torch.int32)), name


def test_matlab_layout_computes_what_matlab_computes():
    """An independent MATLAB-semantics forward pass (HWC images, [h w cin cout] filters,
    column-major flattening into the fully connected layer) gives torch's logits."""
    net = digits_net().double()
    L = aio.matlab_learnables(net, input_shapes={"fc": (20, 24, 24)})
    image = torch.rand(
        1, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    want = net.logits(image)[0].detach().numpy()

    def conv(x, weights, bias, pad):  # x: [H W C]
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        kh, kw = weights.shape[:2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))
        return np.einsum("hwcij,ijco->hwo", windows, weights) + bias.reshape(1, 1, -1)

    x = (image - net.mean)[0].numpy().transpose(1, 2, 0)  # [C H W] → MATLAB's [H W C]
    x = np.maximum(conv(x, L["conv_1"]["Weights"], L["conv_1"]["Bias"], 0), 0)
    x = np.maximum(conv(x, L["conv_2"]["Weights"], L["conv_2"]["Bias"], 1), 0)
    x = np.maximum(conv(x, L["conv_3"]["Weights"], L["conv_3"]["Bias"], 1), 0)
    got = L["fc"]["Weights"] @ x.reshape(-1, order="F") + L["fc"]["Bias"][:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def test_matlab_written_learnables_load_into_a_network(tmp_path):
    """A .mat as MATLAB writes it (no manifest; trailing singleton dims dropped)."""
    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(3, 1, 2))  # one filter: MATLAB stores 2x2x3
    net.add_module("fc", torch.nn.Linear(4, 2))
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((2, 2, 3)).astype(np.float32)  # [h w cin], cout=1 dropped
    bias = np.array([[0.5]], np.float32)  # MATLAB's [1 1 1] is 1x1
    fc = rng.standard_normal((2, 4)).astype(np.float32)
    fc_bias = np.array([[1.0], [2.0]], np.float32)
    structure = {"conv": {"Weights": weights, "Bias": bias}, "fc": {"Weights": fc, "Bias": fc_bias}}
    path = tmp_path / "from_matlab.mat"
    scipy_io.savemat(path, {"S": structure})
    aio.load_matlab_learnables(net, aio.load(path)["S"])
    assert np.array_equal(net.conv.weight.detach().numpy()[0], weights.transpose(2, 0, 1))
    assert net.conv.bias.item() == 0.5
    assert np.array_equal(net.fc.weight.detach().numpy(), fc)
    assert np.array_equal(net.fc.bias.detach().numpy(), [1.0, 2.0])


def test_learnables_errors_name_the_layer():
    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(1, 2, 3))
    net.add_module("norm", torch.nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match=r"layer 'norm' \(BatchNorm2d\)"):
        aio.matlab_learnables(net)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="layer '0': a grouped Conv2d"):
        aio.matlab_learnables(grouped)

    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(1, 2, 3))
    values = aio.matlab_learnables(net)
    before = net.conv.weight.detach().clone()
    bad = {"conv": {"Weights": np.ones((3, 3, 2, 2)), "Bias": values["conv"]["Bias"] + 1}}
    with pytest.raises(ValueError, match=r"layer 'conv': Weights has shape \(3, 3, 2, 2\)"):
        aio.load_matlab_learnables(net, bad)
    assert torch.equal(net.conv.weight, before)  # nothing written
    with pytest.raises(ValueError, match="layer 'fc'"):
        aio.load_matlab_learnables(net, {**values, "fc": values["conv"]})
    with pytest.raises(ValueError, match="layer 'conv': missing 'Bias'"):
        aio.load_matlab_learnables(net, {"conv": {"Weights": values["conv"]["Weights"]}})
    with pytest.raises(ValueError, match="input_shapes"):
        aio.matlab_learnables(net, input_shapes={"conv": (1, 1, 1)})
