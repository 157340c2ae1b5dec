"""Containers ↔ flat lists of leaves: MATLAB's cell arrays, structures and tables.

``flatten(params)`` walks a nested ``list``/``tuple``/``dict``/namedtuple (or a pandas
Learnables-style table) once and returns its leaves in order plus a :class:`Node` tree that can
rebuild the same container around new leaves. ``leaves_like(node, other, name)`` walks a second
container (a gradient or a state) along the same tree, checking as it goes that it has the same
structure and reporting the first mismatch by its path, e.g. ``grad['fc1'][0]``.

Anything that is not a container is a leaf; what a leaf may be is checked elsewhere
(:func:`adamupdate._plan.make`, with the backends of :mod:`adamupdate.backends`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TABLE_COLUMNS = ("Layer", "Parameter", "Value")


@dataclass(frozen=True, slots=True)
class Node:
    """One container of the tree (or a leaf, when ``kind == "leaf"``).

    ``kind`` is one of ``leaf``, ``list``, ``tuple``, ``namedtuple``, ``dict``, ``table``;
    ``keys`` are the dict keys, namedtuple fields or the table's row labels; ``type_`` is the
    container's own class (so ``OrderedDict`` and namedtuples come back as themselves);
    ``table`` is the input frame (its other columns are carried through).
    """

    kind: str
    children: tuple[Node, ...] = ()
    keys: tuple[Any, ...] = ()
    type_: Any = None  # a class, called to rebuild the container (None for leaves and tables)
    table: Any = None
    size: int = 1  # number of leaves below (1 for a leaf)
    flat: bool = False  # every child is a leaf: the leaves can be taken in bulk


LEAF = Node("leaf")


# --- containers of averages that carry a receipt (see adamupdate._network_step._with_receipt) ---


class _Owned:
    """A container of a network's averages carrying the receipt of the call that returned
    them. Copies and pickles are of its plain type (``_plain``): a receipt belongs to these
    very buffers."""

    __slots__ = ()
    _plain: type

    def __reduce__(self) -> Any:
        return self._plain, (self._plain(self),)

    def __copy__(self) -> Any:
        return self._plain(self)

    def __deepcopy__(self, memo: dict) -> Any:
        import copy

        return copy.deepcopy(self._plain(self), memo)


class _OwnedDict(dict, _Owned):
    __slots__ = ("_adamupdate_receipt",)
    _plain = dict


class _OwnedList(list, _Owned):
    __slots__ = ("_adamupdate_receipt",)
    _plain = list


class _OwnedTuple(tuple, _Owned):  # a tuple subclass cannot have slots: the receipt is in __dict__
    _plain = tuple


#: Plain container type -> its twin that can carry a receipt, and back.
OWNED: dict[type, type] = {dict: _OwnedDict, list: _OwnedList, tuple: _OwnedTuple}
PLAIN: dict[type, type] = {owned: plain for plain, owned in OWNED.items()}


_registered_with_jax = False


def register_with_jax() -> None:
    """Make the owned containers JAX pytrees (once, when JAX is loaded), so averages can enter
    and leave ``jax.jit``: they flatten as their plain types do and come back plain."""
    global _registered_with_jax
    jax = sys.modules.get("jax")
    if _registered_with_jax or jax is None:
        return
    register = jax.tree_util.register_pytree_node
    register(_OwnedDict, lambda d: (list(d.values()), tuple(d)), lambda k, v: dict(zip(k, v)))
    register(_OwnedList, lambda x: (list(x), None), lambda _, v: list(v))
    register(_OwnedTuple, lambda x: (list(x), None), lambda _, v: tuple(v))
    _registered_with_jax = True


def _plain(cls: type) -> type:
    """The container type a user sees: an owned twin counts as its plain type."""
    return PLAIN.get(cls, cls)


def is_table(obj: Any) -> bool:
    """True for a pandas DataFrame, without importing pandas for anything else."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def is_empty_state(state: Any) -> bool:
    """MATLAB's ``[]``: ``None``, an empty list or tuple, or an array with no elements."""
    if state is None:
        return True
    if isinstance(state, (list, tuple)):
        return len(state) == 0 and not hasattr(type(state), "_fields")
    if is_table(state) or isinstance(state, dict):
        return False
    size = state.numel() if hasattr(state, "numel") else getattr(state, "size", None)
    return size == 0


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def flatten(tree: Any) -> tuple[list[Any], Node]:
    """Return the leaves of ``tree`` in order and the :class:`Node` that rebuilds it."""
    cls = type(tree)
    if (cls is list or cls is tuple) and _only_leaves(tree, none_ok=False):
        n = len(tree)
        return list(tree), Node(cls.__name__, (LEAF,) * n, type_=cls, size=n, flat=True)
    leaves: list[Any] = []
    node = _flatten_into(tree, leaves, "params", ())
    return leaves, node


def _flatten_into(obj: Any, leaves: list[Any], name: str, path: tuple) -> Node:
    cls: Any = _plain(type(obj))
    if isinstance(obj, list):
        children = tuple(
            _flatten_into(item, leaves, name, (*path, i)) for i, item in enumerate(obj)
        )
        size, flat = sum(c.size for c in children), _all_leaves(children)
        return Node("list", children, type_=cls, size=size, flat=flat)
    if isinstance(obj, tuple):
        children = tuple(
            _flatten_into(item, leaves, name, (*path, i)) for i, item in enumerate(obj)
        )
        size, flat = sum(c.size for c in children), _all_leaves(children)
        if _is_namedtuple(obj):
            return Node("namedtuple", children, tuple(cls._fields), cls, size=size, flat=flat)
        return Node("tuple", children, type_=cls, size=size, flat=flat)
    if isinstance(obj, dict):
        keys = tuple(obj)
        children = tuple(_flatten_into(obj[k], leaves, name, (*path, k)) for k in keys)
        size, flat = sum(c.size for c in children), _all_leaves(children)
        return Node("dict", children, keys, cls, size=size, flat=flat)
    if is_table(obj):
        values = _table_values(obj, name, path)
        leaves.extend(values)
        return Node(
            "table",
            (LEAF,) * len(values),
            keys=tuple(range(len(values))),
            table=obj,
            size=len(values),
        )
    if obj is None:
        raise TypeError(f"{format_path(name, path)}: expected an array or a container, got None")
    leaves.append(obj)
    return LEAF


def _only_leaves(items: Any, *, none_ok: bool) -> bool:
    """Whether no item of ``items`` is a container (or ``None``, unless ``none_ok``): checked
    per distinct type, so a list of a thousand arrays costs one pass of ``type()``."""
    for cls in set(map(type, items)):
        if cls is type(None):
            if not none_ok:
                return False
        elif issubclass(cls, (list, tuple, dict)) or _is_table_type(cls):
            return False
    return True


def _is_table_type(cls: type) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and issubclass(cls, pandas.DataFrame)


def _all_leaves(children: tuple[Node, ...]) -> bool:
    return all(child is LEAF for child in children)


def _table_values(frame: Any, name: str, path: tuple) -> list[Any]:
    if "Value" not in frame.columns:
        raise ValueError(
            f"{format_path(name, path)}: a table must have a 'Value' column "
            f"(MATLAB's Learnables table has {', '.join(TABLE_COLUMNS)}); "
            f"got columns {list(frame.columns)}"
        )
    return list(frame["Value"])


def unflatten(node: Node, leaves: list[Any]) -> Any:
    """Rebuild the container described by ``node`` around ``leaves`` (consumed in order)."""
    if node.flat and node.kind in ("list", "tuple"):
        return leaves if node.type_ is list else node.type_(leaves)
    iterator = iter(leaves)
    return _build(node, iterator.__next__)


def _build(node: Node, take: Callable[[], Any]) -> Any:
    kind = node.kind
    if kind == "leaf":
        return take()
    if kind == "list":
        items: Any = [_build(child, take) for child in node.children]
        return items if node.type_ is list else node.type_(items)
    if kind == "tuple":
        items = tuple(_build(child, take) for child in node.children)
        return items if node.type_ is tuple else node.type_(items)
    if kind == "namedtuple":
        return node.type_(*(_build(child, take) for child in node.children))
    if kind == "dict":
        items = {key: _build(child, take) for key, child in zip(node.keys, node.children)}
        return items if node.type_ is dict else node.type_(items)
    # table: copy the frame (other columns carried through) and put the new values in place.
    frame = node.table.copy(deep=False)
    values = [take() for _ in node.children]
    frame["Value"] = object_column(values, frame.index)
    return frame


def object_column(values: list[Any], index: Any) -> Any:
    """A pandas column holding ``values`` as they are (tensors, arrays): filled element by
    element, so that no pandas version tries to turn a tensor into a NumPy array."""
    import numpy as np

    pandas = sys.modules["pandas"]
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return pandas.Series(column, index=index, dtype=object)


def same_structure_leaves(node: Node, obj: Any) -> list[Any] | None:
    """The leaves of ``obj`` if it has exactly ``node``'s containers, else ``None`` — fast.

    The cheap check of a cached plan: containers whose children are all leaves are read in bulk.
    Tables are not handled (``None``). Whether a leaf is an array is not checked here.
    """
    leaves: list[Any] = []
    return leaves if _same_into(node, obj, leaves) else None


def _same_into(node: Node, obj: Any, out: list[Any]) -> bool:
    if node.kind == "leaf":
        out.append(obj)
        return True
    if _plain(type(obj)) is not node.type_:
        return False
    if node.kind == "dict":
        if len(obj) != len(node.keys):
            return False
        try:
            values = [obj[key] for key in node.keys]
        except KeyError:
            return False
    else:
        if len(obj) != len(node.children):
            return False
        values = obj
    if node.flat:
        out.extend(values)
        return True
    return all(_same_into(child, value, out) for child, value in zip(node.children, values))


def contains_table(node: Node) -> bool:
    if node.flat:
        return node.kind == "table"
    return node.kind == "table" or any(contains_table(child) for child in node.children)


def leaves_like(node: Node, other: Any, name: str, *, allow_empty: bool = False) -> list[Any]:
    """The leaves of ``other``, which must have the structure of ``node``.

    With ``allow_empty`` (for the two averages), ``None`` — MATLAB's empty ``[]`` — may stand
    for any whole subtree and yields ``None`` for each of its leaves.

    Raises
    ------
    TypeError, ValueError
        Naming ``name`` and the path of the first place where ``other`` differs.
    """
    if (
        node.flat
        and node.kind in ("list", "tuple")
        and _plain(type(other)) is node.type_
        and len(other) == node.size
        and _only_leaves(other, none_ok=allow_empty)
    ):
        return list(other)
    leaves: list[Any] = []
    _collect_like(node, other, name, (), leaves, allow_empty)
    return leaves


def _collect_like(
    node: Node, obj: Any, name: str, path: tuple, out: list[Any], allow_empty: bool
) -> None:
    if allow_empty and obj is None:
        out.extend([None] * node.size)
        return
    kind = node.kind
    if kind == "leaf":
        if _is_container(obj):
            raise TypeError(
                f"{format_path(name, path)}: expected an array like params, "
                f"got a {type(obj).__name__} container"
            )
        if obj is None:
            raise TypeError(
                f"{format_path(name, path)}: expected an array like params, got None"
                + (_NO_GRADIENT if name == "grad" else "")
            )
        out.append(obj)
        return
    where = format_path(name, path)
    if kind in ("list", "tuple", "namedtuple"):
        if _plain(type(obj)) is not node.type_:
            raise TypeError(
                f"{where}: expected a {node.type_.__name__} like params, got {type(obj).__name__}"
            )
        if len(obj) != len(node.children):
            raise ValueError(f"{where}: has {len(obj)} elements, params has {len(node.children)}")
        for i, (child, item) in enumerate(zip(node.children, obj)):
            _collect_like(child, item, name, (*path, i), out, allow_empty)
        return
    if kind == "dict":
        if not isinstance(obj, dict):
            raise TypeError(f"{where}: expected a dict like params, got {type(obj).__name__}")
        for key in node.keys:
            if key not in obj:
                raise ValueError(
                    f"{format_path(name, (*path, key))}: missing (params has it)"
                    + _keys_given_instead(obj, node.keys)
                )
        if len(obj) != len(node.keys):
            extra = next(k for k in obj if k not in set(node.keys))
            raise ValueError(f"{format_path(name, (*path, extra))}: not in params")
        for key, child in zip(node.keys, node.children):
            _collect_like(child, obj[key], name, (*path, key), out, allow_empty)
        return
    # table
    if not is_table(obj):
        raise TypeError(f"{where}: expected a table like params, got {type(obj).__name__}")
    values = _table_values(obj, name, path)
    if len(values) != len(node.children):
        raise ValueError(f"{where}: has {len(values)} rows, params has {len(node.children)}")
    _check_table_labels(node.table, obj, where)
    for row, value in enumerate(values):
        if allow_empty and value is None:
            out.append(None)
            continue
        _collect_like(LEAF, value, name, (*path, _Row(row, obj)), out, allow_empty)


# A None gradient: the parameter received none (MATLAB's dlgradient would give zeros).
_NO_GRADIENT = (
    " (this parameter received no gradient; pass zeros of its shape, as MATLAB's dlgradient "
    "returns for an unused learnable)"
)


def _keys_given_instead(obj: dict, keys: tuple[Any, ...]) -> str:
    """The keys of ``obj`` that params lacks, the closest match named: a misspelling shows."""
    import difflib

    unknown = [key for key in obj if key not in set(keys)]
    if not unknown:
        return ""
    close = difflib.get_close_matches(str(unknown[0]), [str(k) for k in keys], n=1)
    mean = f" (a misspelling of {close[0]!r}?)" if close else ""
    return f"; given instead: {', '.join(map(repr, unknown[:5]))}{mean}"


def _check_table_labels(reference: Any, frame: Any, where: str) -> None:
    """Rows are matched by position, as MATLAB does; differing names there mean a mix-up."""
    for column in ("Layer", "Parameter"):
        if column in reference.columns and column in frame.columns:
            for row, (want, got) in enumerate(zip(reference[column], frame[column])):
                if want != got:
                    raise ValueError(
                        f"{where}.Value[{row}]: row {row} has {column} {got!r}, "
                        f"params has {want!r} (tables are matched row by row)"
                    )


@dataclass(frozen=True)
class _Row:
    """A table row in a path; printed with its Layer/Parameter names when the table has them."""

    index: int
    frame: Any


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (list, tuple, dict)) or is_table(obj)


def format_path(name: str, path: tuple) -> str:
    """``grad['fc1'][0]`` style path of a leaf, for error messages."""
    parts = [name]
    for key in path:
        if isinstance(key, _Row):
            label = _row_label(key.frame, key.index)
            parts.append(f".Value[{key.index}]{label}")
        else:
            parts.append(f"[{key!r}]")
    return "".join(parts)


def _row_label(frame: Any, row: int) -> str:
    names = [
        f"{column}={frame[column].iloc[row]!r}"
        for column in ("Layer", "Parameter")
        if column in frame.columns
    ]
    return f" ({', '.join(names)})" if names else ""


def leaf_path(node: Node, index: int) -> tuple:
    """The path of leaf number ``index`` — computed only when an error needs it."""
    path: list[Any] = []
    while node.kind != "leaf":
        for position, child in enumerate(node.children):
            if index < child.size:
                if node.kind == "table":
                    path.append(_Row(position, node.table))
                elif node.kind in ("dict", "namedtuple"):
                    path.append(node.keys[position])
                else:
                    path.append(position)
                node = child
                break
            index -= child.size
    return tuple(path)
