"""``load(..., like=...)``: loaded arrays put into the library, device and dtype of templates.

A template is matched with the loaded value along its structure (the ``*_templates`` helpers
give each child its template, or ``None``) and :func:`convert` turns one loaded array into a
torch tensor, a JAX array, a NumPy array or a scalar like its template.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ._manifest import is_jax_array, is_module, is_namedtuple, is_tensor, sub
from ._storage import NAMED_DTYPES, Raw


def check_like_names(like: Mapping[str, Any] | None, variables: Iterable[str]) -> None:
    names = set(variables)
    for name in like or {}:
        if name not in names:
            raise ValueError(f"like[{name!r}]: the file has no variable {name!r}")


def sequence_templates(template: Any, size: int, where: str) -> list[Any]:
    if template is None:
        return [None] * size
    if not isinstance(template, (list, tuple)):
        raise ValueError(f"{where}: saved a list/tuple, like has a {type(template).__name__}")
    if len(template) != size:
        raise ValueError(f"{where}: has {size} elements, like has {len(template)}")
    return list(template)


def mapping_templates(template: Any, keys: list[Any], where: str) -> list[Any]:
    if template is None:
        return [None] * len(keys)
    if is_namedtuple(template):
        template = template._asdict()
    if not isinstance(template, Mapping):
        raise ValueError(f"{where}: saved a dict, like has a {type(template).__name__}")
    for key in keys:
        if key not in template:
            raise ValueError(f"{sub(where, key)}: not in like")
    if len(template) != len(keys):
        extra = next(k for k in template if k not in set(keys))
        raise ValueError(f"{sub(where, extra)}: in like but not in the file")
    return [template[key] for key in keys]


def network_parameters(net: Any, keys: Iterable[Any], where: str) -> dict[str, Any]:
    """``net``'s named parameters (the templates of a dict keyed by them); each key names one."""
    params = dict(net.named_parameters())
    for key in keys:
        if key not in params:
            raise ValueError(f"{sub(where, key)}: the network has no parameter {key!r}")
    return params


def convert(raw: Raw, template: Any, where: str) -> Any:
    """A loaded array in the library, device and dtype of ``template``."""
    if is_tensor(template):
        torch = sys.modules["torch"]
        data = raw.data
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        if raw.tag == "bfloat16":
            tensor = torch.from_numpy(data.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(data)
        return tensor.to(device=template.device, dtype=template.dtype)
    if is_jax_array(template):
        jax = sys.modules["jax"]
        return jax.device_put(np.asarray(raw.numpy(), dtype=template.dtype), template.sharding)
    if type(template) is np.ndarray:
        return np.asarray(raw.numpy(), dtype=template.dtype)
    scalar_type = type(template)
    if isinstance(template, np.generic) or scalar_type in (float, int, complex, bool):
        data = raw.numpy()
        if data.size != 1:
            raise ValueError(
                f"{where}: like has a scalar ({scalar_type.__name__}), the file an array of "
                f"shape {data.shape}"
            )
        value = data.reshape(())[()]
        if isinstance(template, np.generic):
            return template.dtype.type(value)
        return scalar_type(value)
    raise ValueError(
        f"{where}: like has a {scalar_type.__name__}, which is not an array, tensor or scalar"
    )


def like_plain(value: Any, template: Any, where: str) -> Any:
    """Apply ``like`` to a foreign file's plain values (dicts, lists, arrays)."""
    if template is None:
        return value
    if is_module(template) and isinstance(value, dict):
        params = network_parameters(template, value, where)
        return {
            name: like_plain(value[name], params[name], sub(where, name))
            for name in params
            if name in value
        }
    if isinstance(value, dict):
        keys = list(value)
        templates = mapping_templates(template, keys, where)
        return {k: like_plain(value[k], t, sub(where, k)) for k, t in zip(keys, templates)}
    if isinstance(value, list):
        templates = sequence_templates(template, len(value), where)
        return [like_plain(v, t, sub(where, i)) for i, (v, t) in enumerate(zip(value, templates))]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "V" and value.dtype.name in NAMED_DTYPES:  # e.g. BF16 entries
            raw = Raw(value.view(NAMED_DTYPES[value.dtype.name]), value.dtype.name)
        else:
            raw = Raw(value, value.dtype.str)
        return convert(raw, template, where)
    return value
