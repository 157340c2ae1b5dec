"""The bulk plan accepts exactly what the per-leaf plan accepts (adamupdate._plan).

Every call is planned from scratch. :func:`adamupdate._plan.make` first tries the bulk path
(``_plan._in_bulk``: NumPy arrays checked from their headers in compiled code, torch tensors
checked attribute column by attribute column) and falls back to the per-leaf plan for anything
the bulk path does not accept; the per-leaf plan gives the precise errors. The bulk path is an
optimisation, never a second opinion: for any input, a call must give bitwise the same results
(and leave its inputs in the same state), or raise the same error, whether or not the bulk path
exists. Hypothesis draws lists of leaves with the mutations a caller can make — dtype views,
transposed and strided leaves, aliases, half-given states, read-only arrays, scalars, mixed
dtypes, inference tensors, ``requires_grad`` parameters, shrunken storages, lazy conjugate and
negative views — and each case runs twice, once as it is and once with the bulk path switched
off. Plus: the plain cases do take the bulk path (so the comparison is not vacuous), and the
usual call's work per tensor is a fixed number of calls, none of them a per-leaf check.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adamupdate import _plan, adamupdate, rmspropupdate, sgdmupdate

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
# Without numba there is no bulk path (it checks for the numba kernel): nothing to compare.
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="the bulk path needs numba")
LIBS = ["numpy", pytest.param("torch", marks=needs_torch)]

if HAS_TORCH:
    import torch

# Derandomized: the same 120 examples every run, so CI never meets a new one by chance.
BULK_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# rule name -> (solver, whether each state accumulates |g|^2, as adamupdate.rules says)
RULES = {
    "adam": (adamupdate, (False, True)),
    "rmsprop": (rmspropupdate, (True,)),
    "sgdm": (sgdmupdate, (False,)),
}
DTYPES = ["float32", "float64", "complex64", "complex128"]
SHAPES = [(), (0,), (3,), (2, 3), (3, 3), (2, 1, 2)]
# Another dtype for a leaf (a copy): mixed precisions, bool and int arrays, float16, and a
# float64 that is not in the machine's byte order.
OTHER_DTYPES = ["float32", "float64", "complex64", "float16", "int32", "bool", "swapped"]
# A view of the same bytes as another dtype of the same item size.
SAME_SIZE = {4: ["int32", "float32"], 8: ["int64", "float64", "complex64"], 16: ["complex128"]}
MUTATIONS = [
    "view_dtype",
    "astype",
    "transpose",
    "fortran",
    "strided",
    "reshape",
    "alias",
    "same_object",
    "readonly",
    "scalar",
    "none",
    "requires_grad",
    "conj",
    "neg",
    "shrink",
]


@dataclass(frozen=True)
class Case:
    lib: str
    rule: str
    inplace: bool
    fresh: bool
    dtype: str
    shapes: tuple[tuple[int, ...], ...]
    seed: int
    special: bool  # NaN, ±Inf and -0.0 in the gradients
    # (kind, role, leaf, other role, other leaf, choice): roles are params, grad, the states;
    # the other leaf is the one an alias points into; choice picks among a kind's variants
    mutations: tuple[tuple[str, int, int, int, int, int], ...]
    inference_call: bool = False  # torch: the call runs under torch.inference_mode()

    @property
    def plain(self) -> bool:
        """The usual call, which the bulk path plans. (Not yet a one-state rule in place:
        the kernel's table repeats that state's row, which the bulk path's overlap check
        takes for two written buffers in one place; the per-leaf plan steps it, correctly.)"""
        one_state_in_place = self.inplace and len(RULES[self.rule][1]) == 1
        return not self.mutations and not self.inference_call and not one_state_in_place


def cases(lib: str) -> st.SearchStrategy[Case]:
    @st.composite
    def draw(draw) -> Case:
        n = draw(st.integers(1, 4))
        rule = draw(st.sampled_from(sorted(RULES)))
        roles = 2 + len(RULES[rule][1])
        mutation = st.tuples(
            st.sampled_from(MUTATIONS),
            st.integers(0, roles - 1),
            st.integers(0, n - 1),
            st.integers(0, roles - 1),
            st.integers(0, n - 1),
            st.integers(0, 7),
        )
        return Case(
            lib=lib,
            rule=rule,
            inplace=draw(st.booleans()),
            fresh=draw(st.booleans()),
            dtype=draw(st.sampled_from(DTYPES)),
            shapes=tuple(draw(st.lists(st.sampled_from(SHAPES), min_size=n, max_size=n))),
            seed=draw(st.integers(0, 2**32 - 1)),
            special=draw(st.booleans()),
            mutations=tuple(draw(st.lists(mutation, max_size=3))),
            inference_call=lib == "torch" and draw(st.booleans()),
        )

    return draw()


# --- building a case (twice: from its recipe, so that both runs get identical inputs) --------
#
# copy.deepcopy would not do: it turns a NumPy view into an array of its own, makes read-only
# arrays writeable and cannot copy a tensor whose storage has shrunk.


def _values(rng: np.random.Generator, shape, dtype, *, special=False, positive=False):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    if positive:
        x = np.abs(x)
    x = np.asarray(x, dtype)
    if special and x.size:
        flat = x.reshape(-1)
        flat[rng.integers(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, -0.0])
    return x


def _real(dtype: str) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)


def _columns(case: Case) -> list[list]:
    """params, grads and each state, as NumPy arrays (``None`` for fresh states)."""
    rng = np.random.default_rng(case.seed)
    squared = RULES[case.rule][1]
    columns = [
        [_values(rng, s, case.dtype) for s in case.shapes],
        [_values(rng, s, case.dtype, special=case.special) for s in case.shapes],
    ]
    for sq in squared:
        dtype = _real(case.dtype) if sq else case.dtype
        states = [_values(rng, s, dtype, positive=sq) for s in case.shapes]
        columns.append([None] * len(case.shapes) if case.fresh else states)
    return columns


def _to_lib(x, lib):
    if lib == "numpy" or x is None:
        return x
    return torch.tensor(x)  # torch's own storage, which can be resized


def _is_tensor(x) -> bool:
    return HAS_TORCH and isinstance(x, torch.Tensor)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or _is_tensor(x)


def _numel(x) -> int:
    return x.size if isinstance(x, np.ndarray) else x.numel()


def _contiguous(x) -> bool:
    return x.flags.c_contiguous if isinstance(x, np.ndarray) else x.is_contiguous()


def _dtype_named(name: str, lib: str):
    if name == "swapped":
        return np.dtype(np.float64).newbyteorder()
    if lib == "numpy":
        return np.dtype(name)
    return getattr(torch, name)


def _mutate(kind: str, leaf, other, choice: int, lib: str):
    """``leaf`` changed by ``kind`` (``other``: the leaf an alias points into; ``choice``: which
    variant); ``leaf`` itself when the mutation does not apply."""
    np_like = lib == "numpy"
    if not _is_array(leaf):  # None, or already a number
        return leaf
    ndim = leaf.ndim
    if kind == "view_dtype":
        if not np_like and (leaf.is_neg() or leaf.is_conj()):
            return leaf  # torch views no lazy view as another dtype
        itemsize = leaf.itemsize if np_like else leaf.element_size()
        names = [d for d in SAME_SIZE.get(itemsize, []) if d != str(leaf.dtype).split(".")[-1]]
        if not names or not ndim:
            return leaf
        return leaf.view(_dtype_named(names[choice % len(names)], lib))
    if kind == "astype":
        names = [d for d in OTHER_DTYPES if d != str(leaf.dtype).split(".")[-1]]
        name = names[choice % len(names)]
        if np_like:
            return leaf.astype(_dtype_named(name, lib))
        return leaf if name == "swapped" else leaf.to(_dtype_named(name, lib))
    if kind == "transpose":
        return leaf.T if np_like else leaf.mT if ndim >= 2 else leaf
    if kind == "fortran":  # same shape and values, column-major memory
        if ndim < 2:
            return leaf
        return leaf.T.copy().T if np_like else leaf.mT.contiguous().mT
    if kind == "strided":  # same shape and values, every other element of a wider buffer
        if not ndim:
            return leaf
        if np_like:
            return np.repeat(leaf, 2, axis=-1)[..., ::2]
        return torch.repeat_interleave(leaf, 2, dim=-1)[..., ::2]
    if kind == "reshape":  # same size and memory, another shape
        return leaf.reshape(1, -1) if ndim == 1 else leaf.reshape(-1)
    if kind in ("alias", "same_object"):
        if not _is_array(other):
            return leaf
        if kind == "same_object" or tuple(other.shape) == tuple(leaf.shape):
            return other
        size = _numel(leaf)
        if _numel(other) < size or not _contiguous(other):
            return other
        return other.reshape(-1)[:size].reshape(leaf.shape)  # a view into other's memory
    if kind == "readonly":
        if np_like:
            leaf.flags.writeable = False
            return leaf
        with torch.inference_mode():  # torch's nearest: a tensor only inference mode writes
            return leaf.clone()
    if kind == "scalar":  # a Python or NumPy number (a state's MATLAB-style scalar 0)
        if not _numel(leaf):
            return leaf
        first = leaf.reshape(-1)[0]
        return first if np_like and choice % 2 else first.item()
    if kind == "none":
        return None
    if np_like:
        return leaf
    if kind == "requires_grad":
        if leaf.is_inference() or not (leaf.is_floating_point() or leaf.is_complex()):
            return leaf
        return torch.nn.Parameter(leaf)
    if kind == "conj":  # a lazy conjugate view that reads as the leaf
        return leaf.conj_physical().conj() if leaf.is_complex() else leaf
    if kind == "neg":  # a lazy negative view that reads as the leaf
        return torch._neg_view(-leaf) if leaf.dtype != torch.bool else leaf
    if kind == "shrink":  # the storage shrinks under the same tensor (as FSDP frees one)
        storage = leaf.untyped_storage()
        storage.resize_(0 if choice % 2 else storage.nbytes() // 2)
        return leaf
    raise AssertionError(kind)


def build(case: Case) -> list[list]:
    columns = [[_to_lib(x, case.lib) for x in column] for column in _columns(case)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex to real drops the imaginary part: as meant
        _apply(case, columns)
    return columns


def _apply(case: Case, columns: list[list]) -> None:
    # Storages shrink last: nothing here may read a leaf whose memory is gone.
    ordered = sorted(case.mutations, key=lambda mutation: mutation[0] == "shrink")
    for kind, role, i, other_role, j, choice in ordered:
        if role >= 2 and case.fresh and kind != "none":
            role = 0  # a fresh state is None: mutate the parameter instead
        if kind == "none" and role < 2:
            continue  # only a state may be missing
        leaf, other = columns[role][i], columns[other_role][j]
        columns[role][i] = _mutate(kind, leaf, other, choice, case.lib)


# --- running a case and recording what it did ---------------------------------------------------


def _readable(x) -> bool:
    """Whether a tensor's storage still holds every element its shape needs."""
    if not x.numel():
        return True
    last = x.storage_offset() + sum((n - 1) * s for n, s in zip(x.shape, x.stride())) + 1
    return x.untyped_storage().nbytes() >= last * x.element_size()


def _bits(x):
    """A leaf's type, dtype, shape and value bits (every NaN alike: IEEE 754 leaves a NaN's
    sign and payload open); ``None`` for a missing leaf."""
    if x is None:
        return None
    if isinstance(x, (float, complex, int, bool)):
        x_np, extra = np.asarray(x), ()
    elif isinstance(x, (np.ndarray, np.generic)):
        x_np = np.asarray(x)
        extra = (x_np.flags.writeable, x_np.flags.c_contiguous) if isinstance(x, np.ndarray) else ()
    else:
        extra = (x.requires_grad, x.is_inference(), x.is_conj(), x.is_neg(), x.stride())
        if not _readable(x):
            return (type(x), str(x.dtype), tuple(x.shape), extra, "storage too small")
        x_np = x.detach().resolve_conj().resolve_neg().cpu().numpy()
    if x_np.dtype.kind in "fc":
        x_np = np.stack([x_np.real, x_np.imag], -1) if x_np.dtype.kind == "c" else x_np.copy()
        x_np[np.isnan(x_np)] = np.nan
    return (type(x), str(x_np.dtype), tuple(x_np.shape), extra, x_np.tobytes())


def _call(case: Case, columns: list[list]):
    solve = RULES[case.rule][0]
    params, grads, *states = (list(c) for c in columns)
    states = [None if all(x is None for x in c) else c for c in states]
    args = (params, grads, *states, *((2,) if case.rule == "adam" else ()))
    mode = torch.inference_mode() if case.inference_call else contextlib.nullcontext()
    with mode:
        return solve(*args, inplace=case.inplace)


def outcome(case: Case):
    """What a call did: its error, or its outputs (each one a new leaf's bits, or the input
    it is) and its inputs afterwards; plus whether the bulk path planned it."""
    columns = build(case)
    taken = []
    real = _plan._in_bulk

    def spy(*args, **kwargs):
        plan = real(*args, **kwargs)
        taken.append(plan is not None)
        return plan

    ids = {id(x): (r, i) for r, column in enumerate(columns) for i, x in enumerate(column)}
    before = [[_bits(x) for x in column] for column in columns]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_plan, "_in_bulk", spy)
        try:
            result = _call(case, columns)
        except Exception as error:  # the error is what is compared
            after = [[_bits(x) for x in column] for column in columns]
            assert after == before, f"a failing call changed its inputs: {error}"
            return ("raised", type(error), _message(error)), taken
    after = [[_bits(x) for x in column] for column in columns]
    for i in range(len(columns[1])):
        assert after[1][i] == before[1][i], f"grad[{i}] was written"
    if not case.inplace:
        assert after == before, "a functional call changed its inputs"
    outputs = [
        [("input", ids[id(x)]) if id(x) in ids else _bits(x) for x in column] for column in result
    ]
    return ("returned", [type(c) for c in result], outputs, after), taken


def _message(error: Exception) -> str:
    """The error's message; of two buffers that share memory, without their names: where
    several pairs overlap, the plan names the first pair in address order, which changes
    from one allocation to the next (not from one path to the other)."""
    message = str(error)
    if "share memory" in message:
        return re.sub(r"\w+\[\d+\]", "<leaf>", message)
    return message


def per_leaf_outcome(case: Case):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_plan, "_in_bulk", lambda *args, **kwargs: None)
        return outcome(case)


def check_same(case: Case) -> None:
    with_bulk, taken = outcome(case)
    without, _ = per_leaf_outcome(case)
    assert with_bulk == without
    if case.plain:  # the usual call: the bulk path must plan it, or this test proves nothing
        assert taken == [True], case


@pytest.fixture(scope="module", autouse=True)
def _numba_loaded():
    """Load (and compile) the numba kernel once: after that, small NumPy groups take it too,
    and with it the bulk path."""
    n = 40
    adamupdate([np.ones(3) for _ in range(n)], [np.ones(3) for _ in range(n)], None, None, 1)


@needs_numba
@pytest.mark.parametrize("lib", LIBS)
def test_the_bulk_path_changes_nothing_but_the_route(lib):
    @BULK_SETTINGS
    @given(case=cases(lib))
    def check(case):
        check_same(case)

    check()


# --- the cases that matter most, by hand (hypothesis may draw them rarely) --------------------


def _case(lib, mutations=(), *, rule="adam", inplace=True, fresh=False, dtype="float32"):
    shapes = ((2, 3), (3, 3), (2, 3))
    return Case(lib, rule, inplace, fresh, dtype, shapes, 7, False, tuple(mutations))


def _m(kind, role, i, other_role=0, j=0, choice=0):
    return (kind, role, i, other_role, j, choice)


P, G, S0, S1 = range(4)  # the roles: params, grad, avg_grad, avg_sq_grad
HAND_PICKED = {
    "grad_is_a_written_param": [_m("same_object", G, 0, P, 0)],
    "grad_views_a_written_state": [_m("alias", G, 2, S0, 0)],
    "two_params_are_one_array": [_m("same_object", P, 2, P, 0)],
    "state_aliases_another_state": [_m("alias", S1, 0, S0, 0)],
    "half_given_states": [_m("none", S1, 1)],
    "read_only_param": [_m("readonly", P, 1)],
    "read_only_state": [_m("readonly", S0, 2)],
    "scalar_state": [_m("scalar", S0, 0)],
    "numpy_scalar_state": [_m("scalar", S1, 2, choice=1)],
    # astype's choices for a float32 leaf: float64, complex64, float16, int32, bool, swapped
    "float64_state": [_m("astype", S0, 1)],
    "float64_grad": [_m("astype", G, 1)],
    "complex_grad": [_m("astype", G, 0, choice=1)],
    "float16_grad": [_m("astype", G, 1, choice=2)],
    "int_grad_view": [_m("view_dtype", G, 0)],
    "int_param": [_m("astype", P, 2, choice=3)],
    "bool_grad": [_m("astype", G, 2, choice=4)],
    "byte_swapped_state": [_m("astype", S1, 1, choice=5)],
    "transposed_state": [_m("transpose", S0, 0)],
    "column_major_param": [_m("fortran", P, 0)],
    "strided_grad": [_m("strided", G, 2)],
    "reshaped_state": [_m("reshape", S1, 0)],
    "requires_grad_param": [_m("requires_grad", P, 0)],
    "inference_param": [_m("readonly", P, 0)],
    "shrunk_grad": [_m("shrink", G, 1)],
    "freed_param": [_m("shrink", P, 0, choice=1)],
    "negative_view_grad": [_m("neg", G, 0)],
}


@needs_numba
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
@pytest.mark.parametrize("name", sorted(HAND_PICKED))
def test_hand_picked_cases_agree(name, inplace, lib):
    check_same(_case(lib, HAND_PICKED[name], inplace=inplace))


@needs_numba
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lazy", ["conj", "neg"])
def test_lazy_views_agree(lazy, dtype, lib):
    check_same(_case(lib, [_m(lazy, G, 0), _m(lazy, S0, 1)], dtype=dtype))


@needs_numba
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "given"])
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_plain_calls_take_the_bulk_path(inplace, fresh, dtype, rule, lib):
    """Every kernel dtype, every rule, fresh or given states, in place or not: planned in bulk
    (check_same asserts it, see Case.plain), with the per-leaf plan's results."""
    check_same(_case(lib, rule=rule, inplace=inplace, fresh=fresh, dtype=dtype))


@needs_torch
@needs_numba
def test_an_inference_mode_call_agrees():
    """Under inference_mode the caller may write inference tensors: both paths accept them."""
    case = _case("torch", [_m("readonly", P, 0), _m("readonly", S0, 1)])
    check_same(Case(**{**case.__dict__, "inference_call": True}))


# --- the cost of the usual call -----------------------------------------------------------------


def _calls_in(step, *args):
    """Python and C function calls made by ``step(*args)`` in this thread, by function name.
    (A C function that ``map`` calls for each tensor is one call here: that is the point.)"""
    counts = Counter()

    def profile(frame, event, arg):
        if event == "call":
            counts[frame.f_code.co_name] += 1
        elif event == "c_call":
            counts[getattr(arg, "__qualname__", repr(arg))] += 1

    # Collected first, so that every measured step starts from the same memory: a block held
    # by garbage in a cycle cannot be taken over by a functional output (adamupdate._reuse)
    # until a collection, which would otherwise fall between some steps and not others.
    gc.collect()
    gc.disable()
    sys.setprofile(profile)
    try:
        step(*args)
    finally:
        sys.setprofile(None)
        gc.enable()
    return counts


def _advance(loop, t):
    loop["params"], loop["m"], loop["v"] = adamupdate(
        loop["params"], loop["grads"], loop["m"], loop["v"], t, inplace=loop["inplace"]
    )


#: The per-leaf plan's checks: the bulk path calls none of them.
PER_LEAF = {"describe", "check_leaf", "_check_like", "_check_writeable"}


@needs_numba
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "out"])
def test_the_usual_call_checks_in_bulk_at_any_size(lib, inplace):
    """Counted, not timed: a call on 40, 140 or 640 tensors makes the same calls every step,
    a fixed number plus a fixed number per tensor, and none of the per-leaf plan's checks —
    every call is checked, column by column."""
    conv = (lambda x: x) if lib == "numpy" else torch.from_numpy
    totals = {}
    for n in (40, 140, 640):  # from 32 tensors on, any NumPy group takes the kernel
        rng = np.random.default_rng(n)
        # 1024 elements a tensor: every call is large enough for the kernel's threads
        draw = [conv(rng.standard_normal(1024).astype(np.float32)) for _ in range(2 * n)]
        loop = {"params": draw[:n], "grads": draw[n:], "m": None, "v": None, "inplace": inplace}
        for t in (1, 2):  # first launches settle
            _advance(loop, t)
        per_step = [_calls_in(_advance, loop, t) for t in range(3, 6)]
        for counts in per_step:
            assert counts == per_step[0], "every step makes the same calls"
            assert counts["make"] == 1 and counts["_in_bulk"] == 1
            assert not PER_LEAF & set(counts), PER_LEAF & set(counts)
        totals[n] = sum(per_step[0].values())
    assert totals[640] - totals[140] == 5 * (totals[140] - totals[40]), totals
