"""Loading a distributed checkpoint runs no code from its folder (one process, no gloo).

DCP's own reader unpickles ``.metadata`` and every non-tensor entry in full; a crafted folder
then runs whatever it names. :func:`adamupdate.distributed.load_checkpoint` must refuse such a
folder with a ``ValueError`` naming the file, and the code must not run (a marker file it would
create stays absent). Each crafted payload is first shown to be live: the plain unpickler, as
DCP uses it, does run it.
"""

from __future__ import annotations

import os
import pickle

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)
dcp = pytest.importorskip("torch.distributed.checkpoint")

from torch.distributed.checkpoint import metadata as dcp_metadata  # noqa: E402

from adamupdate import adamupdate  # noqa: E402
from adamupdate.distributed import (  # noqa: E402
    SafeFileSystemReader,
    SafeLoadPlanner,
    load_checkpoint,
    save_checkpoint,
)
from adamupdate.distributed._checkpoint import _no_dist  # noqa: E402  (DCP's keyword, if any)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is .*single process")


class RunsCode:
    """Unpickles into a call of ``exec`` that creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class CallsSystem:
    """Unpickles into ``os.system(touch marker)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def make_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))


def trained(tmp_path):
    """A network after two steps, saved; returns (folder, net, avg_grad, avg_sq_grad)."""
    net = make_net()
    m = v = None
    for t in (1, 2):
        grads = {n: torch.full_like(p, 0.5 * t) for n, p in net.named_parameters()}
        net, m, v = adamupdate(net, grads, m, v, t)
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, net, m, v, 2)
    return folder, net, m, v


def read_trusted(folder):
    """The saved metadata, read with the full unpickler (the test wrote it)."""
    with open(folder / ".metadata", "rb") as stream:
        return pickle.load(stream)


def write(folder, metadata) -> None:
    with open(folder / ".metadata", "wb") as stream:
        pickle.dump(metadata, stream)


def globals_named(path) -> set:
    """Every (module, name) a pickle file refers to (a trusted file: the test wrote it)."""
    found = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    with open(path, "rb") as stream:
        Recording(stream).load()
    return found


def test_round_trip_through_the_safe_reader(tmp_path):
    folder, net, m, v = trained(tmp_path)
    other = make_net()
    torch.nn.init.zeros_(other[0].weight)
    m2, v2, t = load_checkpoint(folder, other)
    assert t == 2
    for name, p in net.named_parameters():
        assert torch.equal(dict(other.named_parameters())[name], p)
        assert torch.equal(m2[name], m[name]) and torch.equal(v2[name], v[name])


def test_metadata_references_only_dcp_classes(tmp_path):
    """What a real .metadata names (PyTorch's DCP writer, this run's version) is what the
    reader admits; the restricted reader loads it to the same records as pickle does."""
    folder, *_ = trained(tmp_path)
    names = globals_named(folder / ".metadata")
    modules = {module for module, _ in names}
    assert modules <= {
        "torch",
        "torch.distributed.checkpoint.metadata",
        "torch.distributed.checkpoint.filesystem",
        "torch.serialization",
        "pathlib",
        "pathlib._local",
    }
    safe = SafeFileSystemReader(folder).read_metadata()
    trusted = read_trusted(folder)
    assert safe.state_dict_metadata == trusted.state_dict_metadata
    assert safe.storage_data == trusted.storage_data
    assert safe.planner_data == trusted.planner_data


@pytest.mark.parametrize("payload", [RunsCode, CallsSystem])
def test_metadata_that_runs_code_is_refused(tmp_path, payload):
    folder, *_ = trained(tmp_path)
    metadata = read_trusted(folder)
    marker = tmp_path / "ran"
    metadata.planner_data["x"] = payload(str(marker))
    write(folder, metadata)
    # live: the plain unpickler (what DCP's FileSystemReader uses) runs it
    with open(folder / ".metadata", "rb") as stream:
        pickle.load(stream)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match=r"\.metadata.*(builtins\.exec|system)"):
        load_checkpoint(folder, make_net())
    assert not marker.exists()
    # through DCP directly: DCP wraps the ValueError in its CheckpointException
    with pytest.raises(BaseException, match=r"\.metadata: .*refusing to load it"):
        dcp.load({}, storage_reader=SafeFileSystemReader(folder), **_no_dist(dcp.load))
    assert not marker.exists()


def test_other_classes_are_refused(tmp_path):
    from collections import OrderedDict

    folder, *_ = trained(tmp_path)
    metadata = read_trusted(folder)
    metadata.planner_data = OrderedDict(metadata.planner_data)
    write(folder, metadata)
    with pytest.raises(ValueError, match=r"\.metadata.*collections\.OrderedDict"):
        load_checkpoint(folder, make_net())


def test_setting_attributes_on_admitted_classes_is_undone(tmp_path):
    """BUILD applied to an admitted class itself would set class attributes for the whole
    process: they are removed again and the file refused."""
    folder, *_ = trained(tmp_path)
    # push the Metadata class, BUILD it with slot state {"tampered": True}, stop
    crafted = (
        b"\x80\x04c" + dcp_metadata.__name__.encode() + b"\nMetadata\nN}\x8c\x08tampered\x88s\x86b."
    )
    # live: the plain unpickler sets the attribute
    assert pickle.loads(crafted) is dcp_metadata.Metadata
    assert vars(dcp_metadata.Metadata)["tampered"] is True
    delattr(dcp_metadata.Metadata, "tampered")

    (folder / ".metadata").write_bytes(crafted)
    with pytest.raises(ValueError, match=r"\.metadata"):
        load_checkpoint(folder, make_net())
    assert "tampered" not in vars(dcp_metadata.Metadata)


def test_not_a_pickle(tmp_path):
    folder, *_ = trained(tmp_path)
    (folder / ".metadata").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"\.metadata: not a readable DCP metadata file"):
        load_checkpoint(folder, make_net())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relative_path": "../outside.distcp"}, "not a file in the checkpoint folder"),
        ({"relative_path": "/etc/passwd"}, "not a file in the checkpoint folder"),
        ({"transform_descriptors": ["zstd"]}, "stream transforms"),
        ({"offset": 10**9}, "past the end"),
        ({"length": -1}, "bad offset or length"),
    ],
)
def test_storage_records_stay_inside_the_folder(tmp_path, change, message):
    folder, *_ = trained(tmp_path)
    metadata = read_trusted(folder)
    index = next(iter(metadata.storage_data))
    for key, value in change.items():
        setattr(metadata.storage_data[index], key, value)
    write(folder, metadata)
    with pytest.raises(ValueError, match=rf"\.metadata: storage record .*{message}"):
        load_checkpoint(folder, make_net())


def test_non_tensor_entry_that_runs_code_is_refused(tmp_path):
    """The learn-rate factors are DCP's one non-tensor entry; DCP's planner loads such entries
    with torch.load(weights_only=False)."""
    _, net, m, v = trained(tmp_path)
    marker = tmp_path / "ran"
    state = {
        "model": net.state_dict(),
        "avg_grad": m,
        "avg_sq_grad": v,
        "iteration": torch.tensor(2),
        "learn_rate_factors": RunsCode(str(marker)),
    }
    evil = tmp_path / "evil"
    dcp.save(state, checkpoint_id=evil, **_no_dist(dcp.save))
    assert not marker.exists()
    # live: DCP's default planner runs it
    dcp.load({"learn_rate_factors": []}, checkpoint_id=evil, **_no_dist(dcp.load))
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match=r"evil: entry 'learn_rate_factors' is not plain data"):
        load_checkpoint(evil, make_net())
    assert not marker.exists()
    # the reader and planner used directly with DCP
    with pytest.raises(BaseException, match="is not plain data"):
        dcp.load(
            {"learn_rate_factors": []},
            storage_reader=SafeFileSystemReader(evil),
            planner=SafeLoadPlanner(),
            **_no_dist(dcp.load),
        )
    assert not marker.exists()


def test_plain_non_tensor_entries_load(tmp_path):
    folder, *_ = trained(tmp_path)
    state = {"learn_rate_factors": []}
    dcp.load(
        state,
        storage_reader=SafeFileSystemReader(folder),
        planner=SafeLoadPlanner(),
        **_no_dist(dcp.load),
    )
    assert state["learn_rate_factors"] == [
        ["0.weight", 1.0],
        ["0.bias", 1.0],
        ["1.weight", 1.0],
        ["1.bias", 1.0],
    ]
