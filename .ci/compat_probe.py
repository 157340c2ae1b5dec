"""Which of the torch APIs that adamupdate relies on beyond torch's stable surface work in the
installed torch: run by ``.ci/compat`` in each of its environments, one line per API.

Each probe calls the API the way the library does (on tiny CPU tensors) rather than only
looking the name up, and names where the library uses it. A missing API is reported, not
raised: the report is the point.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def _fused_adam() -> str:
    import torch

    p, g, m, v = (torch.ones(3) for _ in range(4))
    torch._fused_adam_(
        [p], [g], [m], [v], [], [torch.tensor(1.0)],
        amsgrad=False, lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
        maximize=False, grad_scale=None, found_inf=None,
    )  # fmt: skip
    return "CPU float32 step ran"


def _storage_use_count() -> str:
    import torch

    def count(t: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)

    t = torch.zeros(2)
    alone = count(t)
    view = t[:1]
    shared = count(t)
    del view
    # the engine takes "== 2" to mean "no other tensor shares this storage"
    verdict = "as the engine assumes" if (alone, shared) == (2, 3) else "NOT the engine's 2"
    return f"unshared {alone}, with a view {shared}: {verdict}"


def _foreach_ops() -> str:
    import torch

    a, b = [torch.ones(2)], [torch.full((2,), 4.0)]
    squared = torch._foreach_mul(b, b)
    torch._foreach_mul_(squared, 0.5)
    torch._foreach_add_(a, squared)
    root = torch._foreach_sqrt(a)
    torch._foreach_div_(root, a)
    torch._foreach_sub_(a, root)
    return "mul, mul_, add_, sqrt, div_, sub_ ran"


def _dtensor_public() -> str:
    module = importlib.import_module("torch.distributed.tensor")
    return f"DTensor is {module.DTensor.__module__}.DTensor"


def _dtensor_local_tensor() -> str:
    """``DTensor._local_tensor`` on a one-rank gloo group (the library reads it to step the
    shard in place)."""
    import os

    import torch
    import torch.distributed as dist

    try:
        from torch.distributed.tensor import DTensor, Replicate
    except ImportError:
        from torch.distributed._tensor import DTensor, Replicate  # torch < 2.4
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        local = torch.ones(2)
        d = DTensor.from_local(local, mesh, [Replicate()], run_check=False)
        same = d._local_tensor.data_ptr() == local.data_ptr()
        return f"_local_tensor holds the local shard's memory: {same}"
    finally:
        dist.destroy_process_group()


def _device_mesh_from_group() -> str:
    from torch.distributed.device_mesh import DeviceMesh

    return f"DeviceMesh.from_group exists: {callable(DeviceMesh.from_group)}"


def _fully_shard_public() -> str:
    from torch.distributed.fsdp import fully_shard

    return f"fully_shard from {fully_shard.__module__}"


def _dcp_state_dict() -> str:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    return f"{get_model_state_dict.__name__}, {set_model_state_dict.__name__}"


PROBES: list[tuple[str, str, Callable[[], str]]] = [
    ("torch._fused_adam_ (CPU)", "src/adamupdate/backends/torch_backend.py:641", _fused_adam),
    (
        "torch._C._storage_Use_Count, untyped_storage()._cdata",
        "src/adamupdate/backends/torch_backend.py:572",
        _storage_use_count,
    ),
    ("torch._foreach_* ops", "src/adamupdate/backends/torch_backend.py:681-696", _foreach_ops),
    (
        "torch.distributed.tensor (public DTensor module)",
        "src/adamupdate/backends/torch_backend.py:180, distributed.py:624",
        _dtensor_public,
    ),
    (
        "DTensor._local_tensor",
        "src/adamupdate/backends/torch_backend.py:208,218",
        _dtensor_local_tensor,
    ),
    (
        "DeviceMesh.from_group",
        "src/adamupdate/distributed.py:628",
        _device_mesh_from_group,
    ),
    (
        "torch.distributed.checkpoint.state_dict",
        "src/adamupdate/distributed.py:108,140",
        _dcp_state_dict,
    ),
    (
        "torch.distributed.fsdp.fully_shard (FSDP2, public)",
        "tests/distributed/distributed_worker.py:80,120",
        _fully_shard_public,
    ),
]


def main() -> None:
    import torch

    print(f"torch {torch.__version__}")
    for name, where, probe in PROBES:
        try:
            found = "ok: " + probe()
        except Exception as error:  # the report is the point: any failure is a finding
            found = f"MISSING: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        print(f"  {name:55s} {found}   [{where}]")


if __name__ == "__main__":
    main()
