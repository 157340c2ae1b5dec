"""Learnables tables that print their values: MATLAB shows ``{5×5×1×20 dlarray}`` in a
Learnables table, pandas would show ``Parameter containing:\\ntensor(...`` in every cell.

:class:`LearnablesTable` is a ``pandas.DataFrame`` whose ``Value`` column holds the real
tensors (the network's own parameters, or the gradients), as before; only its printed forms
(``repr``, ``to_string``, notebooks' HTML) describe each value in one line: its size, its
dtype, its device when not the CPU, and its first elements. pandas is imported with this
module, which is imported only when a table is made.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from ._extras import require

pandas = require("pandas", "torch", "a Learnables table")
_DataFrame: Any = pandas.DataFrame  # pandas ships no type information

_SHOWN = 3  # elements shown per value


def describe(value: Any) -> str:
    """One line for a table cell: ``2×3 float32 [-0.5325, 0.1934, 0.421, …]``.

    >>> import numpy as np
    >>> describe(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    '2×2 float32 [1, 2, 3, …]'
    >>> describe(np.float64(0.5))
    '0.5'
    """
    shape = getattr(value, "shape", None)
    if shape is None:
        return str(value)
    dims = tuple(shape)
    dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    device = getattr(value, "device", None)
    where = f" {device}" if device is not None and str(device) not in ("cpu", "CPU") else ""
    try:
        flat = value.reshape(-1)[: _SHOWN + 1]
        if hasattr(flat, "detach"):
            flat = flat.detach().cpu()
        numbers = [_number(x) for x in flat.tolist()]
    except (AttributeError, TypeError, RuntimeError):
        numbers = []
    if not dims:
        return numbers[0] if numbers else str(value)
    size = "×".join(map(str, dims)) if len(dims) > 1 else f"{dims[0]}×1"
    shown = ", ".join(numbers[:_SHOWN]) + (", …" if len(numbers) > _SHOWN else "")
    return f"{size} {dtype}{where} [{shown}]"


def _number(x: Any) -> str:
    if isinstance(x, complex):
        return f"{x:.4g}"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


class LearnablesTable(_DataFrame):
    """A DataFrame with ``Layer``, ``Parameter`` and ``Value`` columns that prints each value as
    :func:`describe` does; everything else is a ``pandas.DataFrame``'s (``Value`` holds the
    tensors themselves)."""

    # Saved by adamupdate.io as the plain DataFrame it is (see io/_encode.py).
    _adamupdate_plain_table = True

    @property
    def _constructor(self) -> type:
        return LearnablesTable

    def _formatters(self) -> dict[str, Any]:
        if "Value" not in self.columns:
            return {}
        # Left-aligned, as text reads; whole, since each line is already short.
        width = max((len(describe(v)) for v in self["Value"]), default=0)
        return {"Value": lambda value: describe(value).ljust(width)}

    def __repr__(self) -> str:
        # The options pandas' own repr uses (display.max_rows, width, ...).
        params = importlib.import_module("pandas.io.formats.format").get_dataframe_repr_params()
        params["max_colwidth"] = None
        text = self.to_string(formatters=self._formatters(), justify="left", **params)
        return "\n".join(line.rstrip() for line in text.splitlines())

    def _repr_html_(self) -> str:
        return self.to_html(
            formatters=self._formatters(), max_rows=pandas.get_option("display.max_rows")
        )
