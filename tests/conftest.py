"""Shared pytest set-up of the test suite.

Layout: the tests are grouped by behaviour in the folders of ``tests/`` (``numerics``,
``engine``, ``soundness``, ``containers``, ``io``, ``adapters``, ``distributed``, ``product``);
a helper module that only one folder's tests use sits beside them (``*_helpers.py``, the
subprocess workers). The independent references stay here, importable from every test as
``import reference`` and ``import solver_reference``: ``tests/`` is on ``sys.path`` through the
``pythonpath`` setting in ``pyproject.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment for a child Python process: the adamupdate these tests import (this
    checkout's ``src``) and ``tests/`` (the references) first on ``PYTHONPATH``."""
    import adamupdate

    src = str(Path(adamupdate.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [src, str(TESTS), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)
