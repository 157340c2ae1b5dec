"""Reading a ``torch.distributed.checkpoint`` (DCP) directory without running code from it.

DCP's :class:`~torch.distributed.checkpoint.FileSystemReader` loads the checkpoint's
``.metadata`` with ``pickle.load`` and its :class:`~torch.distributed.checkpoint.DefaultLoadPlanner`
loads every non-tensor entry with ``torch.load(..., weights_only=False)`` (PyTorch 2.13,
``filesystem.py`` and ``default_planner.py``): either runs whatever a crafted file names. The two
classes here close both doors and change nothing else:

- :class:`SafeFileSystemReader` reads ``.metadata`` with an unpickler that admits only what DCP
  writes there (checked with ``pickletools`` on checkpoints written by PyTorch 2.13): the
  dataclasses of ``torch.distributed.checkpoint.metadata``, the storage record
  ``torch.distributed.checkpoint.filesystem._StorageInfo``, ``torch.Size``, torch dtypes,
  layouts and memory formats, ``pathlib`` paths (read as strings) and ``set``/``frozenset``.
  Anything else, a file that is not a DCP metadata record, a storage record that points outside
  the checkpoint directory or past the end of its data file, or one that needs a stream
  transform (DCP's experimental compression extensions) raises ``ValueError`` naming the file.
- :class:`SafeLoadPlanner` loads non-tensor entries with ``torch.load(..., weights_only=True)``
  (plain containers, numbers, strings, tensors) and hands DCP's planner only bytes it wrote
  itself from that result.

Tensor entries need nothing more: the reader loads them with ``torch.load(...,
weights_only=True)`` already.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint import filesystem as _filesystem
from torch.distributed.checkpoint import metadata as _metadata
from torch.distributed.checkpoint.planner import ReadItem

__all__ = ["RefusedCheckpoint", "SafeFileSystemReader", "SafeLoadPlanner", "read_metadata"]

# The Python classes a .metadata pickle may name, by (module, name). Only their constructors,
# __new__ and __setstate__ run while it is read.
_CLASSES: dict[tuple[str, str], type] = {
    (_metadata.__name__, cls.__name__): cls
    for cls in (
        _metadata.Metadata,
        _metadata.MetadataIndex,
        _metadata.StorageMeta,
        _metadata.TensorStorageMetadata,
        _metadata.BytesStorageMetadata,
        _metadata.ChunkStorageMetadata,
        _metadata.TensorProperties,
        _metadata._MEM_FORMAT_ENCODING,
    )
}
_CLASSES[(_filesystem.__name__, "_StorageInfo")] = _filesystem._StorageInfo
_STORAGE_INFO = _filesystem._StorageInfo
_PATH_CLASSES = ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")
_TORCH_CONSTANTS = (torch.dtype, torch.layout, torch.memory_format)


class RefusedCheckpoint(ValueError):
    """A checkpoint file that would need trust to read: ``"<path>: why"``."""


def _layout(name: Any) -> torch.layout:
    """What ``torch.serialization._get_layout`` gives, looked up among torch's layouts only."""
    value = vars(torch).get(str(name).removeprefix("torch."))
    if not isinstance(value, torch.layout):
        raise pickle.UnpicklingError(f"unknown layout {name!r}")
    return value


def _path(*parts: Any) -> str:
    """A pickled ``pathlib`` path, as the string it names (the checkpoint id it was saved as)."""
    if not all(isinstance(part, str) for part in parts):
        raise pickle.UnpicklingError("malformed path")
    return os.path.join(*parts) if parts else ""


class _MetadataUnpickler(pickle.Unpickler):
    """Admits the globals DCP's metadata is made of and nothing else (no persistent ids)."""

    def find_class(self, module: str, name: str) -> Any:
        cls = _CLASSES.get((module, name))
        if cls is not None:
            return cls
        if module == "torch":
            value = vars(torch).get(name)  # vars, not getattr: no lazy submodule import
            if value is torch.Size or isinstance(value, _TORCH_CONSTANTS):
                return value
        if (module, name) == ("torch.serialization", "_get_layout"):
            return _layout
        if module in ("pathlib", "pathlib._local") and name in _PATH_CLASSES:
            return _path
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset")):
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(
            f"{module}.{name} is not part of a checkpoint's metadata; refusing to load it"
        )


def _namespaces() -> dict[type, dict[str, Any]]:
    return {cls: dict(vars(cls)) for cls in _CLASSES.values()}


def _restore(before: dict[type, dict[str, Any]]) -> bool:
    """Undo attributes a pickle's BUILD set on an admitted class itself; True if any was."""
    changed = False
    for cls, namespace in before.items():
        now = vars(cls)
        for key in [k for k in now if k not in namespace or now[k] is not namespace[k]]:
            changed = True
            if key in namespace:
                type.__setattr__(cls, key, namespace[key])
            else:
                type.__delattr__(cls, key)
    return changed


def read_metadata(path: str | os.PathLike[str]) -> _metadata.Metadata:
    """A DCP ``.metadata`` file, unpickled with only DCP's metadata classes, and checked.

    Raises
    ------
    RefusedCheckpoint
        (a ``ValueError``) naming ``path``: the file names anything else, is not a DCP
        metadata record, or a storage record points outside its directory or data file.
    """
    path = os.fspath(path)
    before = _namespaces()
    try:
        with open(path, "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
    except (OSError, MemoryError):
        raise
    except Exception as error:  # every way a crafted pickle can fail to load
        raise RefusedCheckpoint(f"{path}: not a readable DCP metadata file ({error})") from None
    finally:
        tampered = _restore(before)
    if tampered:
        raise RefusedCheckpoint(f"{path}: the metadata sets attributes on DCP's classes")
    _check(metadata, path)
    return metadata


def _check(metadata: Any, path: str) -> None:
    """The structure DCP's loader relies on, and storage records inside the checkpoint."""
    if not isinstance(metadata, _metadata.Metadata):
        raise RefusedCheckpoint(f"{path}: holds a {type(metadata).__name__}, not DCP metadata")
    entries = metadata.state_dict_metadata
    kinds = (_metadata.TensorStorageMetadata, _metadata.BytesStorageMetadata)
    if not isinstance(entries, dict) or not all(
        isinstance(k, str) and isinstance(v, kinds) for k, v in entries.items()
    ):
        raise RefusedCheckpoint(f"{path}: malformed state_dict_metadata")
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise RefusedCheckpoint(f"{path}: malformed storage_data")
    folder = os.path.dirname(path)
    sizes: dict[str, int] = {}
    for index, info in storage.items():
        if not isinstance(index, _metadata.MetadataIndex) or not isinstance(info, _STORAGE_INFO):
            raise RefusedCheckpoint(f"{path}: malformed storage_data")
        name = info.relative_path
        where = f"{path}: storage record of {index.fqn!r}"
        if not (
            isinstance(name, str)
            and name not in ("", ".", "..")
            and os.path.basename(name) == name
            and "/" not in name
            and "\0" not in name
        ):
            raise RefusedCheckpoint(f"{where}: {name!r} is not a file in the checkpoint folder")
        transforms = getattr(info, "transform_descriptors", None)  # from torch 2.6 on
        if transforms:
            raise RefusedCheckpoint(
                f"{where}: needs stream transforms {list(transforms)!r}, which are not read"
            )
        offset, length = info.offset, info.length
        if not (type(offset) is int and type(length) is int and offset >= 0 and length >= 0):
            raise RefusedCheckpoint(f"{where}: bad offset or length")
        if name not in sizes:
            try:
                sizes[name] = os.path.getsize(os.path.join(folder, name))
            except OSError:
                raise RefusedCheckpoint(f"{where}: data file {name!r} is missing") from None
        if offset + length > sizes[name]:
            raise RefusedCheckpoint(
                f"{where}: bytes {offset}..{offset + length} lie past the end of {name!r} "
                f"({sizes[name]} bytes)"
            )


class SafeFileSystemReader(FileSystemReader):
    """DCP's ``FileSystemReader``, reading ``.metadata`` without a full unpickle.

    The metadata pickle may name only what DCP writes there (PyTorch 2.13): the dataclasses of
    ``torch.distributed.checkpoint.metadata``, the storage record
    ``torch.distributed.checkpoint.filesystem._StorageInfo``, ``torch.Size``, torch dtypes,
    layouts and memory formats, ``pathlib`` paths (read back as strings) and ``set``/
    ``frozenset``; attributes it would set on those classes themselves are undone. The result
    must be a DCP ``Metadata`` whose storage records name files in the checkpoint folder, lie
    inside them and need no stream transform (DCP's experimental compression). Anything else
    raises ``ValueError`` naming the file, before any data file is opened. Tensor data is read
    as DCP reads it, with ``torch.load(..., weights_only=True)``.

    Use it with :class:`SafeLoadPlanner`, for example to load a
    :meth:`ZeroAdamupdate.state_dict` saved with ``torch.distributed.checkpoint.save``::

        dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())

    (DCP wraps the ``ValueError`` in its ``CheckpointException``.)
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> _metadata.Metadata:
        """The checkpoint's metadata (``.metadata``, or ``__<rank>.metadata`` for ``rank=``),
        read and checked as the class describes."""
        rank = kwargs.get("rank")
        # the file names FileSystemReader reads (``.metadata``, or ``__<rank>.metadata`` when
        # each rank wrote its own)
        name = ".metadata" if rank is None else f"__{rank}.metadata"
        metadata = read_metadata(os.path.join(os.fspath(self.path), name))
        if metadata.storage_meta is None:
            metadata.storage_meta = _metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id  # as FileSystemReader.read_metadata does
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's ``DefaultLoadPlanner``, loading non-tensor entries without a full unpickle.

    DCP saves every value of a state dict that is not a tensor (here: the learn-rate factors)
    with ``torch.save`` and its default planner loads it with ``torch.load(...,
    weights_only=False)``, which runs whatever the bytes name. This planner loads them with
    ``weights_only=True`` (containers, numbers, strings, tensors) and raises ``ValueError``
    naming the entry for anything else.
    """

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        """Load one non-tensor entry with ``torch.load(..., weights_only=True)``."""
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as error:
            raise RefusedCheckpoint(
                f"entry {read_item.dest_index.fqn!r} is not plain data: {error}"
            ) from None
        # DefaultLoadPlanner puts the entry where it belongs (flattened keys): give it bytes
        # written here, from the object the restricted load made, so its own full unpickle
        # only ever sees plain data
        clean = io.BytesIO()
        torch.save(obj, clean)
        clean.seek(0)
        super().load_bytes(read_item, clean)
