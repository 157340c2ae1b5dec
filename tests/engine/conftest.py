"""Fixtures of the engine tests."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _write_error_report():
    """With ``ADAMUPDATE_ERROR_REPORT=path.json``, write the largest errors the test_backends_*.py
    files measured (``backend_helpers.MEASURED``) once they have all run."""
    yield
    path = os.environ.get("ADAMUPDATE_ERROR_REPORT")
    if path:
        from backend_helpers import MEASURED

        with open(path, "w") as f:
            json.dump(dict(sorted(MEASURED.items())), f, indent=1)
