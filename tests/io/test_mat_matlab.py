"""``.mat`` files as MATLAB expects them (issue 20, case 3), read back with ``scipy.io.loadmat``
and its defaults — the classes and names MATLAB's ``load`` would show."""

from __future__ import annotations

import numpy as np
import pytest

from adamupdate import io

scipy_io = pytest.importorskip("scipy.io")
torch = pytest.importorskip("torch")


def _variables(path) -> dict:
    return {k: v for k, v in scipy_io.loadmat(path).items() if not k.startswith("__")}


def test_python_ints_are_double_in_matlab_and_int_in_python(tmp_path) -> None:
    path = tmp_path / "state.mat"
    io.save(path, iteration=5, epoch=2, big=2**60, exact=2**53, step=np.int64(7))
    seen = _variables(path)
    # MATLAB's 100*iteration/numIterations must not be integer arithmetic: double, as MATLAB.
    assert seen["iteration"].dtype == np.float64 and seen["iteration"].shape == (1, 1)
    assert seen["iteration"][0, 0] == 5.0
    assert seen["exact"].dtype == np.float64 and seen["exact"][0, 0] == 2.0**53
    assert seen["big"].dtype == np.int64 and seen["big"][0, 0] == 2**60  # not exact in double
    assert seen["step"].dtype == np.int64  # a NumPy integer keeps its class
    back = io.load(path)
    assert back["iteration"] == 5 and type(back["iteration"]) is int
    assert back["big"] == 2**60 and type(back["big"]) is int
    assert back["step"] == 7 and isinstance(back["step"], np.int64)


def test_manifest_false_leaves_only_the_variables(tmp_path) -> None:
    path = tmp_path / "for_matlab.mat"
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    io.save(path, manifest=False, params=dict(net.named_parameters()), iteration=3)
    seen = _variables(path)
    assert sorted(seen) == ["iteration", "params"]  # no adamupdate_manifest
    assert seen["params"].dtype.names == ("x0_weight", "x0_bias")
    weight = seen["params"]["x0_weight"][0, 0]
    assert np.array_equal(weight, net[0].weight.detach().numpy())
    # It loads back as MATLAB's own files do: a dict of the fields, numbers as 2-D arrays.
    back = io.load(path)
    assert list(back["params"]) == ["x0_weight", "x0_bias"]
    assert back["iteration"].shape == (1, 1) and back["iteration"][0, 0] == 3.0


def test_the_manifest_is_there_by_default(tmp_path) -> None:
    path = tmp_path / "ours.mat"
    io.save(path, x=np.ones(2))
    assert "adamupdate_manifest" in _variables(path)


def test_manifest_false_only_for_mat(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"manifest=False is for \.mat files"):
        io.save(tmp_path / "x.npz", manifest=False, x=np.ones(2))
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(TypeError, match="manifest must be True or False"):
        io.save(tmp_path / "x.mat", manifest="no", x=np.ones(2))


def test_name_mapping_is_documented_and_reversible(tmp_path) -> None:
    keys = ["0.weight", "0.bias", "fc.weight", "fc_weight", "1x", ("a", 2)]
    fields = io.matlab_field_names(keys)
    assert fields == {
        "0.weight": "x0_weight",
        "0.bias": "x0_bias",
        "fc.weight": "fc_weight",
        "fc_weight": "fc_weight_2",
        "1x": "x1x",
        ("a", 2): "a_2",
    }
    path = tmp_path / "keys.mat"
    io.save(path, d={key: float(i) for i, key in enumerate(keys)})
    assert _variables(path)["d"].dtype.names == tuple(fields.values())  # what MATLAB shows
    assert list(io.load(path)["d"]) == keys  # the manifest restores the keys
    io.save(path, manifest=False, d={key: float(i) for i, key in enumerate(keys)})
    original = {field: key for key, field in fields.items()}  # the inverse, for MATLAB's files
    assert [original[f] for f in io.load(path)["d"]] == keys


def test_matlab_layout_of_a_network(tmp_path) -> None:
    net = torch.nn.Sequential()
    net.add_module("conv", torch.nn.Conv2d(1, 4, 3))
    net.add_module("fc", torch.nn.Linear(4, 2))
    path = tmp_path / "net.mat"
    io.save(path, manifest=False, learnables=io.matlab_learnables(net))
    conv = _variables(path)["learnables"]["conv"][0, 0]
    assert conv["Weights"][0, 0].shape == (3, 3, 1, 4)  # MATLAB's [h w cin cout]
    assert np.array_equal(conv["Weights"][0, 0][:, :, 0, 1], net.conv.weight.detach().numpy()[1, 0])
