"""MATLAB's ``save``/``load`` for training state: parameters, averages, iteration, networks.

``save(path, **variables)`` writes named variables to one file and ``load(path)`` returns them as
a ``{name: value}`` dict, as MATLAB's ``save(file, "params", "avgGrad")`` and ``S = load(file)``
do. The suffix chooses the format:

``.npz`` (NumPy zip) and ``.safetensors``
    Round-trip exactly: nested ``dict`` (key order and key types: ``str``, ``int``, ``float``,
    ``bool``, ``None`` and tuples of those), ``list``, ``tuple``, namedtuples and
    ``collections.OrderedDict``; pandas Learnables tables (``Layer``/``Parameter``/``Value`` and
    any other numeric, string or object columns, the row index and column labels); NumPy arrays
    of any shape (0-d included) with bool, integer, float16/32/64, bfloat16 and complex64/128
    dtypes and either byte order; NumPy scalars; Python ``float``/``int``/``complex``/``bool``/
    ``str``; ``None`` (MATLAB's ``[]``). Every array comes back with its shape, dtype and bits
    (NaN payloads and signed zeros included). PyTorch tensors and JAX arrays are saved as arrays
    (their values, dtype and shape; a ``torch.nn.Module`` as the dict of its
    ``named_parameters()``); they come back as NumPy arrays unless ``load(..., like=...)`` names
    a tensor/array to put them into. Not preserved: memory layout (arrays come back
    C-contiguous), devices and ``requires_grad`` (unless given by ``like``), ``ndarray``
    subclasses (refused), table ``attrs``. The file holds one named entry per array (``params/w``,
    readable by other NumPy/safetensors tools) and a JSON manifest that describes the containers
    (npz: a ``uint8`` entry ``__adamupdate__``; safetensors: the ``adamupdate`` metadata key).
    safetensors has no complex dtype: complex arrays are stored as ``(..., 2)`` real arrays, and
    bfloat16 (also in npz) as its ``uint16`` bits, both tagged in the manifest.

``.mat`` (MATLAB v5, via SciPy)
    Our own files round-trip exactly too (everything above): a MATLAB user sees dicts as
    structures (keys made into valid field names by :func:`matlab_field_names`: ``"0.weight"``
    is ``x0_weight``), lists and tuples as cell arrays, tables as a structure of columns
    (``struct2table`` makes it a table), ``None`` as ``[]``, 1-D arrays as columns, Python
    ``int`` as ``double`` (MATLAB's class for numbers, so ``100*iteration/numIterations`` is not
    integer arithmetic; exact up to 2**53, larger ones stay ``int64``), float16/bfloat16 as
    ``single`` (exact; the raw ``uint16`` bits in the rare case of a signalling NaN). The hidden
    detail MATLAB cannot hold (1-D and 0-d shapes, list vs tuple, Python scalar types, original
    dict keys) is kept in a ``char`` variable ``adamupdate_manifest``, so :func:`load` gives
    back ints, keys and shapes as saved; ``save(..., manifest=False)`` leaves it out, for a
    file meant for MATLAB alone (it then loads as a MATLAB-written file does, below). Arrays
    keep their layout: convert a network's weights with :func:`matlab_learnables`.
    A file written by MATLAB (``save -v7`` or older; not ``-v7.3``) loads into Python containers:
    1x1 structures → ``dict``, structure arrays and cell arrays → ``list`` (a matrix → a list of
    rows), ``char`` → ``str`` (a char matrix → a list of its rows), ``logical`` → bool arrays,
    ``[]`` (0x0 ``double``) → ``None``, numeric arrays with MATLAB's shapes (always ≥ 2-D; a scalar
    is ``(1, 1)``) and class (``single`` stays float32, complex stays complex), sparse matrices
    as SciPy sparse matrices. MATLAB objects (``table``, ``string``, ``dlarray``, ``dlnetwork``,
    function handles) cannot be read: convert them in MATLAB first (``table2struct``,
    ``extractdata``, ``char``).

Nothing in a file is executed or unpickled on load: ``.npy`` members holding objects are refused,
container types are looked up, never imported, and a file that is truncated, not in the format
its suffix says, or whose manifest does not match its entries raises ``ValueError`` naming the
file (and the entry). A ``.mat`` file's element structure is checked before SciPy's reader sees it,
since that reader crashes the process on some malformed files (one flipped byte suffices in
SciPy 1.17). Writing is atomic: a temporary file in the same folder is renamed over
``path`` when complete.

A load is bounded by the file: every size a file declares (an ``.npz`` member's ``.npy`` header
and its size in the zip, a safetensors header, a compressed ``.mat`` variable's tag, a table's
row count) is checked against the manifest and against the bytes the file holds before anything
is allocated or inflated, and compressed data is inflated no further than its declared size.

MATLAB networks: :func:`matlab_learnables` turns a PyTorch network's ``Conv2d`` and ``Linear``
parameters into MATLAB's Learnables layout (``{layer: {"Weights": ..., "Bias": ...}}``) and
:func:`load_matlab_learnables` puts such a dict (e.g. from a ``.mat`` file) back into a network.

Optional packages: ``.safetensors`` needs ``safetensors``, ``.mat`` needs ``scipy`` (both in
``pip install 'adamupdate[io]'``); tables need pandas, tensors torch, JAX arrays jax. None of
them is imported before it is needed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from .._extras import require
from . import _mat, _npz, _safetensors
from ._atomic import atomic
from ._decode import Decoder
from ._encode import Encoder
from ._like import check_like_names, like_plain
from ._manifest import FORMAT, MAT_VARIABLE, NPZ_ENTRY, VERSION, BadFile
from ._matlab_layers import load_matlab_learnables, matlab_learnables

__all__ = ["load", "load_matlab_learnables", "matlab_field_names", "matlab_learnables", "save"]

# Each format's module: NAME, PACKAGE (the optional package it needs, or None), write and read.
_FORMATS: dict[str, ModuleType] = {".npz": _npz, ".safetensors": _safetensors, ".mat": _mat}


def save(path: str | os.PathLike[str], /, *, manifest: bool = True, **variables: Any) -> None:
    """Save named variables to ``path`` (MATLAB's ``save``), in the format of its suffix.

    Parameters
    ----------
    path : str or path-like
        Ends in ``.npz``, ``.safetensors`` or ``.mat`` (see the module documentation for what
        each preserves). An existing file is replaced atomically.
    manifest : bool, default True
        ``False`` (``.mat`` only) writes a file for MATLAB alone: without the
        ``adamupdate_manifest`` variable that lets :func:`load` restore every Python detail.
        Such a file loads as MATLAB's own files do (structures as ``dict``, numbers as 2-D
        arrays; see the module documentation). ``manifest`` is therefore not a variable name.
    **variables
        The values to save, by name: arrays, tensors, scalars, ``None``, nested
        ``dict``/``list``/``tuple``/namedtuples, pandas Learnables tables and
        ``torch.nn.Module`` networks (their ``named_parameters()``). In a ``.mat`` file the names
        must be MATLAB identifiers; dict keys become structure fields by
        :func:`matlab_field_names`.

    Raises
    ------
    ValueError
        Unknown suffix, a bad variable name, a container that contains itself, or
        ``manifest=False`` for a format other than ``.mat``.
    TypeError
        A value that cannot be saved, named by its path (e.g. ``params['fc'][0]``).
    ImportError
        ``safetensors`` or ``scipy`` is missing for that format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from adamupdate import io
    >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
    >>> params = {"w": np.arange(3, dtype=np.float32), "b": [np.float64(0.5), 2.0]}
    >>> io.save(path, params=params, avg_grad=None, iteration=3)
    >>> loaded = io.load(path)
    >>> loaded["params"]["w"], loaded["params"]["b"], loaded["avg_grad"], loaded["iteration"]
    (array([0., 1., 2.], dtype=float32), [np.float64(0.5), 2.0], None, 3)
    """
    target = Path(os.fspath(path))
    fmt = _format_of(target)
    if not isinstance(manifest, bool):
        raise TypeError(f"manifest must be True or False, got {manifest!r}")
    if not manifest and fmt is not _mat:
        raise ValueError(
            f"{target}: manifest=False is for .mat files (a file for MATLAB alone); "
            f"{target.suffix} files need their manifest to be read back"
        )
    if fmt.PACKAGE is not None:
        require(fmt.PACKAGE, "io", f"writing a {target.suffix} file")
    encoder = Encoder(fmt.NAME)
    entries = []
    for name, value in variables.items():
        _check_variable_name(name, fmt)
        entries.append([name, encoder.encode(value, name)])
    contents = {"format": FORMAT, "version": VERSION, "variables": entries}
    with atomic(target) as temporary:
        if manifest:
            fmt.write(temporary, contents, encoder.arrays)
        else:
            _mat.write(temporary, contents, encoder.arrays, with_manifest=False)


def matlab_field_names(keys: Iterable[Any]) -> dict[Any, str]:
    """The MATLAB structure field name each dict key gets in a ``.mat`` file.

    Every character other than a letter, a digit or ``_`` becomes ``_``; a name that does not
    start with a letter gets an ``x`` in front; names are cut to 63 characters (MATLAB's
    limit); a name already taken in the same structure gets ``_2``, ``_3``… So PyTorch's
    ``"0.weight"`` is ``x0_weight`` in MATLAB. :func:`load` restores the original keys from
    the file's manifest; for a file saved with ``manifest=False`` (or edited in MATLAB), invert
    this mapping: ``{field: key for key, field in matlab_field_names(keys).items()}``.

    Examples
    --------
    >>> from adamupdate.io import matlab_field_names
    >>> matlab_field_names(["0.weight", "0.bias", "fc.weight"])
    {'0.weight': 'x0_weight', '0.bias': 'x0_bias', 'fc.weight': 'fc_weight'}
    """
    keys = list(keys)
    return dict(zip(keys, _mat.matlab_names([_mat.display_key(key) for key in keys])))


def load(path: str | os.PathLike[str], *, like: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load the variables saved in ``path`` (MATLAB's ``S = load(file)``).

    Parameters
    ----------
    path : str or path-like
        A ``.npz``, ``.safetensors`` or ``.mat`` file: one written by :func:`save` (restored
        exactly), or one written by other tools (``numpy.savez``, safetensors, MATLAB): see the
        module documentation for how those are read.
    like : mapping of str to object, optional
        Templates by variable name: each array of a variable is put into the library, device
        and dtype of the corresponding leaf of its template — a ``torch.Tensor`` (on the
        template's device, a plain tensor without ``requires_grad``), a JAX array (on the
        template's sharding), a NumPy array or scalar, or a Python scalar. Shapes are the
        file's (a frozen parameter's scalar state stays 0-d). A ``torch.nn.Module`` as template
        stands for its parameters: a dict keyed by parameter name comes back in
        ``named_parameters()`` order with each tensor like its parameter; a list or a table is
        matched with the learnables (``requires_grad`` parameters) by position. A namedtuple
        template also gives the namedtuple type. Variables without a template (or a template
        ``None`` anywhere) come back as NumPy arrays, NumPy scalars and Python scalars as saved.
        ``dict.fromkeys(["params", "avg_grad", "avg_sq_grad"], params)`` is a typical value.

    Returns
    -------
    dict
        ``{name: value}`` in the order saved. Containers come back as saved: ``dict`` (keys and
        their order), ``list``, ``tuple``, ``OrderedDict``, pandas tables. A namedtuple comes
        back as its own class if ``like`` gives it or its module is already imported (``load``
        never imports a module a file names); otherwise as a ``dict`` of its fields, with a
        warning. Other ``list``/``tuple``/``dict`` subclasses likewise need ``like``.

    Raises
    ------
    ValueError
        The file is truncated, corrupt, not of its suffix's format, holds pickled objects, or
        its manifest does not match its entries; or ``like`` does not match the saved
        structure. The message names the file and the entry or path.
    ImportError
        A package needed to read the file or build the result is missing.

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> from adamupdate import io
    >>> path = os.path.join(tempfile.mkdtemp(), "state.safetensors")
    >>> params = {"w": torch.ones(2, dtype=torch.bfloat16), "b": torch.zeros(1)}
    >>> io.save(path, params=params, iteration=7)
    >>> state = io.load(path, like={"params": params})
    >>> state["params"]["w"], state["iteration"]
    (tensor([1., 1.], dtype=torch.bfloat16), 7)
    """
    source = Path(os.fspath(path))
    fmt = _format_of(source)
    if like is not None and not isinstance(like, Mapping):
        raise TypeError(
            f"like must be a mapping of variable name to template, got {type(like).__name__} "
            f"(e.g. like={{'params': params}})"
        )
    if not source.is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file", str(source))
    try:
        manifest, entries = fmt.read(source)
        if manifest is None:  # written by another tool: entries are the variables
            check_like_names(like, entries)
            return {
                name: like_plain(value, (like or {}).get(name), name)
                for name, value in entries.items()
            }
        return Decoder(manifest, entries, like).variables()
    except (BadFile, ValueError) as error:  # a broken file, or like= does not fit it
        raise ValueError(f"{source}: {error}") from None
    except RecursionError:
        raise ValueError(f"{source}: nested too deeply to read") from None


def _format_of(path: Path) -> ModuleType:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; use .npz, .safetensors or .mat"
        )
    return fmt


def _check_variable_name(name: str, fmt: ModuleType) -> None:
    if not name:
        raise ValueError("variable names must not be empty")
    if name in (NPZ_ENTRY, MAT_VARIABLE):
        raise ValueError(f"variable name {name!r} is reserved for the file's manifest")
    if fmt is _mat and not _mat.is_identifier(name):
        raise ValueError(
            f"variable name {name!r}: .mat variables must be MATLAB identifiers (a letter, then "
            f"letters, digits or underscores; at most 63 characters)"
        )
