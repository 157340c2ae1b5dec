"""The ``fsdp2`` marker of the distributed tests: skipped where torch cannot run FSDP2 on the
CPU."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the test's fixtures (which would start the gloo ranks); torch only imported for
    # the marked tests, whose modules import it anyway.
    if item.get_closest_marker("fsdp2") is None:
        return
    from distributed_worker import FSDP2_RUNS_HERE

    if not FSDP2_RUNS_HERE:
        pytest.skip("FSDP2 runs on the CPU from torch 2.6 on (torch 2.5 needs CUDA streams)")
