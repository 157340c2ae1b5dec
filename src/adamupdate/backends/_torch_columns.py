"""Columns of tensors that compute with ``torch._foreach_*`` ops.

A rule's step body (:attr:`adamupdate.rules.Rule.step`) is written with ``+ - * /`` and
``xp.sqrt``; given :class:`Column`\\ s and :data:`NAMESPACE` it runs on a whole group of tensors
at once, each operation one multi-tensor op — the ``foreach`` route of
:mod:`adamupdate.backends.torch_backend`. Every operation rounds as the tensor operation it
stands for: a Python scalar is applied in the tensors' precision, ``s - x`` is ``(-x) + s``
(negation is exact, and IEEE addition commutes), and shapes broadcast (complex numbers as pairs
of reals over a real ``(..., 1)`` divisor).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch


class Column:
    """A list of tensors with elementwise arithmetic through ``torch._foreach_*``."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Any) -> None:
        self.tensors = list(tensors)

    @staticmethod
    def _other(other: Any) -> Any:
        return other.tensors if isinstance(other, Column) else other

    def __add__(self, other: Any) -> Column:
        return Column(torch._foreach_add(self.tensors, self._other(other)))

    __radd__ = __add__  # only a scalar lands here: addition commutes exactly

    def __sub__(self, other: Any) -> Column:
        return Column(torch._foreach_sub(self.tensors, self._other(other)))

    def __rsub__(self, other: Any) -> Column:  # scalar - column
        return Column(torch._foreach_add(torch._foreach_neg(self.tensors), other))

    def __mul__(self, other: Any) -> Column:
        return Column(torch._foreach_mul(self.tensors, self._other(other)))

    __rmul__ = __mul__  # only a scalar lands here: multiplication commutes exactly

    def __truediv__(self, other: Any) -> Column:
        return Column(torch._foreach_div(self.tensors, self._other(other)))

    def __rtruediv__(self, other: Any) -> Column:  # scalar / column
        return Column([other / t for t in self.tensors])

    def __neg__(self) -> Column:
        return Column(torch._foreach_neg(self.tensors))


def _sqrt(x: Column) -> Column:
    return Column(torch._foreach_sqrt(x.tensors))


#: The ``xp`` a step body gets with columns.
NAMESPACE = SimpleNamespace(sqrt=_sqrt)
