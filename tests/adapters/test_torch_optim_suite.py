"""``adamupdate.torch.Adam`` through torch's own optimizer test machinery.

``torch.testing._internal.common_optimizers`` (shipped in the torch wheel) describes each
optimizer by an ``OptimizerInfo``: the configurations to try (``optim_inputs_func``), the bad
inputs and the errors they must raise (``optim_error_inputs_func``), the LR schedulers to run
with, and which of torch's implementation flags it supports. Torch's ``test/test_optim.py``
drives its generic checks from these. Below, an ``OptimizerInfo`` for our class — torch's own
Adam configurations and error inputs, less what MATLAB does not have — drives the generic checks
that apply to an optimizer whose step is MATLAB's rather than PyTorch's. The checks are written
here from what each of torch's tests asserts, not copied.

Torch's generic checks that do NOT apply, and why (``NOT_APPLICABLE``, kept next to the code so
that a reader can compare with ``test/test_optim.py``):
"""

from __future__ import annotations

import copy
import functools
import io
import re
import warnings

import pytest

torch = pytest.importorskip("torch")
Adam = pytest.importorskip("adamupdate.torch").Adam
# torch's machinery needs the ``expecttest`` package (the ``test`` extra installs it).
pytest.importorskip("expecttest", reason="torch's test machinery needs expecttest")
common = pytest.importorskip("torch.testing._internal.common_optimizers")

NOT_APPLICABLE = {
    "test_complex, test_complex_2d": (
        "they require a complex parameter to step exactly as torch.view_as_real of it; ours keeps "
        "v real, |g|^2 = g conj(g) (optax's convention, MATLAB's for complex dlarrays), so the "
        "two differ by design (test_torch_adapter.py checks complex against the float64 "
        "reference and converts states both ways)"
    ),
    "test_correctness, test_fused_cpu_matches_cuda, test_foreach_matches_forloop (vs torch)": (
        "compare against torch's numbers; ours are MATLAB's (epsilon outside the bias correction)"
    ),
    "test_differentiable_*": "differentiable=True is refused: the step runs outside autograd",
    "amsgrad configurations": "amsgrad=True is refused: MATLAB has no AMSGrad",
    "error inputs 'lr/betas as Tensor ... foreach=True'": (
        "a limit of torch's foreach implementation, not a bad input: foreach chooses no route "
        "here, and Tensor lr/betas work with it"
    ),
    "test_defaults_changed_to_foreach": "mocks torch's private _multi_tensor_adam",
    "CUDA-only checks (fused_matches_forloop on CUDA, peak_memory_foreach, *_large_tensor, "
    "cpu_load_state_dict, state_dict_with_cuda_params, mixed_device_dtype, multigpu)": (
        "need a CUDA device; our route flags change no route (test_torch_adapter.py checks "
        "bitwise that they change nothing)"
    ),
}
__doc__ = (__doc__ or "") + "".join(f"\n- {k}: {v}." for k, v in NOT_APPLICABLE.items())

DEVICE, DTYPE = "cpu", torch.float32
_TORCH_ADAM = next(i for i in common.optim_db if i.optim_cls is torch.optim.Adam)
_FOREACH_LIMIT = re.compile(r"as a Tensor is not supported for capturable=False and foreach=True")


def _inputs(device, dtype=None):
    """torch's Adam configurations, less those MATLAB has no counterpart for (AMSGrad)."""
    return [
        i
        for i in common.optim_inputs_func_adam(device, dtype)
        if not i.kwargs.get("amsgrad", False)
    ]


def _error_inputs(device, dtype):
    return [
        e
        for e in common.optim_error_inputs_func_adam(device, dtype)
        if not _FOREACH_LIMIT.search(e.error_regex)
    ]


INFO = common.OptimizerInfo(
    Adam,
    optim_inputs_func=_inputs,
    optim_error_inputs_func=_error_inputs,
    scheduler_inputs=_TORCH_ADAM.scheduler_inputs,
    supported_impls=("foreach", "fused"),  # "differentiable" is refused
    has_capturable_arg=True,
    supports_fused_on=("cpu", "cuda"),
)


def _configs(skip=()):
    configs = common._get_optim_inputs_including_global_cliquey_kwargs(
        DEVICE, DTYPE, INFO, skip=skip
    )
    assert configs, "torch's machinery gave no configuration"
    return configs


def _ids(configs):
    return [c.desc for c in configs]


CONFIGS = _configs()


def _linear(contiguous=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        weight = torch.randn(10, 5, generator=g)
        bias = torch.randn(10, generator=g)
    else:  # every other element: strided parameters
        weight = torch.randn(10, 5, 2, generator=g)[..., 0]
        bias = torch.randn(10, 2, generator=g)[..., 0]
    return torch.nn.Parameter(weight), torch.nn.Parameter(bias), torch.randn(5, generator=g)


def _closure(optimizer, weight, bias, x):
    def closure():
        optimizer.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    return closure


def _moved_the_right_way(kwargs, before, after):
    return after > before if kwargs.get("maximize", False) else after < before


# --- the checks --------------------------------------------------------------------------------


def test_error_inputs_raise_torchs_errors():
    inputs = INFO.optim_error_inputs_func(device=DEVICE, dtype=DTYPE)
    assert len(inputs) >= 6  # torch's own bad inputs for Adam: 6 in torch 2.5, 8 in 2.13
    for error_input in inputs:
        given = error_input.optimizer_error_input
        assert error_input.error_on == common.OptimizerErrorEnum.CONSTRUCTION_ERROR
        if issubclass(error_input.error_type, Warning):
            with pytest.warns(error_input.error_type, match=error_input.error_regex):
                Adam(given.params, **given.kwargs)
        else:
            with pytest.raises(error_input.error_type, match=error_input.error_regex):
                Adam(given.params, **given.kwargs)


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_goes_the_right_direction(config, contiguous):
    weight, bias, x = _linear(contiguous)
    optimizer = Adam([weight, bias], **config.kwargs)
    closure = _closure(optimizer, weight, bias, x)
    before = closure().item()
    for _ in range(20):
        optimizer.step(closure)
    assert _moved_the_right_way(config.kwargs, before, closure().item())


@pytest.mark.parametrize("schedulers", range(len(INFO.scheduler_inputs)))
def test_goes_the_right_direction_with_torchs_schedulers(schedulers):
    weight, bias, x = _linear()
    optimizer = Adam([weight, bias], lr=0.01)
    running = [make(optimizer) for make in INFO.scheduler_inputs[schedulers]]
    closure = _closure(optimizer, weight, bias, x)
    before = closure().item()
    for _ in range(20):
        loss = optimizer.step(closure)
        for scheduler in running:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(loss.item())
            else:
                scheduler.step()
    assert closure().item() < before


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_param_groups(config):
    # A group decaying, a group not; and a group whose rate (1e-28) is too small to move it.
    weight, bias, x = _linear()
    idle = torch.nn.Parameter(torch.randn(2))
    idle_before = idle.detach().clone()
    no_decay = {**config.kwargs, "weight_decay": 0.0}
    kwargs = {**config.kwargs, "lr": config.kwargs.get("lr", 1e-3)}
    optimizer = Adam(
        [
            {"params": [weight], **kwargs},
            {"params": [bias], **{**no_decay, "lr": kwargs["lr"]}},
            {"params": [idle]},
        ],
        lr=1e-28,
    )
    closure = _closure(optimizer, weight, bias, x)
    before = closure().item()
    for _ in range(20):
        closure()
        idle.grad = torch.rand_like(idle)
        optimizer.step()
    assert _moved_the_right_way(config.kwargs, before, closure().item())
    assert torch.equal(idle.detach(), idle_before)


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_step_is_a_no_op_without_gradients_and_for_zero_gradients(config):
    params = [torch.randn(2, 3, requires_grad=True) for _ in range(2)]
    before = [p.detach().clone() for p in params]
    optimizer = Adam(params, **config.kwargs)
    optimizer.step(lambda: torch.tensor([1.0]))  # no .grad at all
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    assert len(optimizer.state) == 0
    if config.kwargs.get("weight_decay", 0) == 0:  # decay moves parameters without gradients
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_can_be_printed_and_deep_copied(config):
    params = [torch.nn.Parameter(torch.randn(2, 3)) for _ in range(2)]
    optimizer = Adam(params, **config.kwargs)
    for p in params:
        p.grad = torch.rand_like(p)
    for _ in range(3):
        optimizer.step()
    assert "Adam" in repr(optimizer)
    public = {k for k in vars(optimizer) if not k.startswith("_")}
    assert public == {k for k in vars(copy.deepcopy(optimizer)) if not k.startswith("_")}


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_state_dict_is_deterministic_and_resumes(config):
    weight, bias, x = _linear()
    optimizer = Adam([weight, bias], **config.kwargs)
    closure = _closure(optimizer, weight, bias, x)
    for _ in range(10):
        optimizer.step(closure)
    with torch.no_grad():
        weight_c, bias_c = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())
    optimizer_c = Adam([weight_c, bias_c], **config.kwargs)
    saved = copy.deepcopy(optimizer.state_dict())
    optimizer_c.load_state_dict(copy.deepcopy(saved))
    closure_c = _closure(optimizer_c, weight_c, bias_c, x)
    for _ in range(10):
        optimizer.step(closure)
        optimizer_c.step(closure_c)
        assert torch.equal(weight, weight_c) and torch.equal(bias, bias_c)
    torch.testing.assert_close(optimizer.state_dict(), optimizer_c.state_dict())
    optimizer_c.param_groups.extend(optimizer_c.param_groups)  # repeated groups: same record
    assert (
        optimizer.state_dict()["param_groups"][-1] == (optimizer_c.state_dict()["param_groups"][-1])
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_loads_older_state_dicts_and_number_steps(config):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.BatchNorm2d(2))
    x = torch.rand(1, 4, 16, 16)
    optimizer = Adam(model.parameters(), **config.kwargs)

    def step():
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

    for _ in range(3):
        step()
    old = copy.deepcopy(optimizer.state_dict())
    for group in old["param_groups"]:  # before torch had these flags
        for flag in ("maximize", "foreach", "fused", "differentiable", "capturable"):
            group.pop(flag, None)
    for entry in old["state"].values():  # before torch kept steps as tensors
        entry["step"] = entry["step"].item()
    optimizer.load_state_dict(old)
    step()
    assert all(int(s["step"]) == 4 for s in optimizer.state.values())


def test_weights_only_round_trip():
    weight, bias, x = _linear()
    optimizer = Adam([weight, bias], lr=0.01, weight_decay=0.1, maximize=True)
    closure = _closure(optimizer, weight, bias, x)
    for _ in range(3):
        optimizer.step(closure)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    torch.testing.assert_close(loaded, optimizer.state_dict())


@pytest.mark.parametrize("flag", ["foreach", "fused"])
def test_implementation_flags_match_the_for_loop(flag):
    # torch's test_foreach_matches_forloop / test_fused_matches_forloop, with a 0-d parameter.
    results = []
    for config in _inputs(DEVICE):
        for value in (False, True):
            torch.manual_seed(1)
            model = torch.nn.Sequential(
                torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1)
            ).double()
            empty = torch.empty((), dtype=torch.float64, requires_grad=True)
            empty.grad = torch.rand_like(empty)
            optimizer = Adam([*model.parameters(), empty], **{**config.kwargs, flag: value})
            x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64).reshape(3, 2)
            for i in range(7):
                optimizer.zero_grad()
                if i != 3:  # a step with every gradient None
                    model(x).sum().backward()
                optimizer.step()
            results.append([p.detach().clone() for p in model.parameters()])
        off, on = results[-2:]
        assert all(torch.equal(a, b) for a, b in zip(off, on)), config.desc


def test_step_hooks_and_state_dict_hooks_run():
    weight, bias, x = _linear()
    optimizer = Adam([weight, bias])
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    optimizer.register_state_dict_post_hook(
        lambda opt, state: state.update(extra=1) or state  # type: ignore[func-returns-value]
    )
    optimizer.register_load_state_dict_pre_hook(
        lambda opt, state: calls.append("load") or None  # type: ignore[func-returns-value]
    )
    optimizer.step(_closure(optimizer, weight, bias, x))
    assert calls == ["pre", "post"]
    saved = optimizer.state_dict()
    assert saved["extra"] == 1
    optimizer.load_state_dict(saved)
    assert calls[-1] == "load"


def test_duplicate_parameters_warn_as_in_torch():
    p = torch.nn.Parameter(torch.zeros(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Adam([p, p])
    assert any("duplicate parameters" in str(w.message) for w in caught)


def test_the_machinery_drives_every_supported_flag():
    # The configurations include fused and maximize set True (torch adds foreach only where
    # its foreach kernels run, not on the CPU; test_implementation_flags_match_the_for_loop
    # sets it), and no AMSGrad.
    flags = {k for c in CONFIGS for k, v in c.kwargs.items() if v is True}
    assert {"fused", "maximize"} <= flags and "amsgrad" not in flags
    assert functools.reduce(lambda n, c: n + ("weight_decay" in c.kwargs), CONFIGS, 0) > 0
