"""Hypothesis fuzz suite of the public API: every input is handled correctly or rejected with a
``TypeError``/``ValueError`` naming what was expected and what was given.

Each drawn case is classified as

* ``handled``: accepted, and the result passes the oracle (shape, dtype, finiteness);
* ``clear``: rejected with TypeError/ValueError whose message says what was expected
  ("must", "expected", "needs", ...) and what was given ("got", or the offending value);
* ``unclear``: any other exception, or a TypeError/ValueError without both parts;
* ``silent``: accepted although the input is invalid, or accepted with a wrong result.

The tests fail on an unclear or silent case. ``R2DN_FUZZ_EXAMPLES`` sets the draws per test
(default 25); the totals are printed at the end of the module (``pytest -s``) and written as JSON
to ``$R2DN_FUZZ_REPORT`` when set (see ``benchmarks/fuzz_report.py``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.box_fluid import BoxInFluidEnv, BoxInFluidTwin
from envs.pendulum import PendulumSwingUpTwin
from r2dn_control.control import Observer
from r2dn_control.nn import (
    LBDN,
    ContractingR2DN,
    ContractingREN,
    LipschitzR2DN,
    PassiveR2DN,
    load_model,
    save_model,
)
from r2dn_control.systems import LTIPlant, to_nlsys

EXAMPLES = int(os.environ.get("R2DN_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None)
COUNTS: Counter[str] = Counter()
PER_API: dict[str, Counter[str]] = {}
_EXPECTED = re.compile(r"\b(must|expected|expects|needs|need|should|only|refusing|cannot|not|"
                       r"convert|but)\b")
_GIVEN = re.compile(r"\b(got|given|but|is on|has)\b|=|\d")


def _record(api: str, outcome: str) -> None:
    COUNTS[outcome] += 1
    PER_API.setdefault(api, Counter())[outcome] += 1


def classify(api: str, call: Callable[[], object], valid: bool,
             oracle: Callable[[object], bool] = lambda result: True) -> str:
    """Run ``call``; record and return its outcome (raises AssertionError if unclear/silent)."""
    try:
        result = call()
    except (TypeError, ValueError) as err:
        message = str(err)
        clear = bool(_EXPECTED.search(message)) and bool(_GIVEN.search(message))
        outcome = "clear" if clear else "unclear"
        _record(api, outcome)
        assert clear, f"{api}: unclear {type(err).__name__}: {message}"
        return outcome
    except Exception as err:  # the point is to see any other exception
        _record(api, "unclear")
        raise AssertionError(f"{api}: {type(err).__name__} instead of a clear error: {err}") from err
    ok = valid and bool(oracle(result))
    _record(api, "handled" if ok else "silent")
    assert ok, f"{api}: accepted {'a wrong result' if valid else 'an invalid input'}"
    return "handled"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    total = sum(COUNTS.values())
    print(f"\nfuzz: {total} inputs tried, {COUNTS['handled']} handled, {COUNTS['clear']} clear "
          f"errors, {COUNTS['unclear']} unclear, {COUNTS['silent']} silent wrong")
    for api, counts in sorted(PER_API.items()):
        print(f"  {api:<22} {dict(counts)}")
    path = os.environ.get("R2DN_FUZZ_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"total": COUNTS, "per_api": PER_API}, fh, indent=1)


# --------------------------------------------------------------------------- value strategies
DTYPES = [torch.float32, torch.float64, torch.int64, torch.complex64, torch.bool, torch.float16]
SPECIAL = [0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e300, 1e-300, 1e40]


@st.composite
def tensors(draw, shapes=None):
    """Tensors (or look-alikes) of random dtype, shape and values, specials included."""
    kind = draw(st.sampled_from(["tensor"] * 6 + ["numpy", "list", "none", "scalar"]))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(st.sampled_from([1.0, 3, "x", True]))
    shape = draw(shapes if shapes is not None else
                 st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple))
    values = np.asarray(draw(st.lists(st.sampled_from(SPECIAL) | st.floats(-3, 3),
                                      min_size=1, max_size=4)))
    array = np.resize(values, int(np.prod(shape)) if shape else 1).reshape(shape)
    if kind == "numpy":
        return array
    if kind == "list":
        return array.tolist()
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(all="ignore"):
        if dtype in (torch.int64, torch.bool):
            array = np.nan_to_num(array, nan=0, posinf=7, neginf=-7).clip(-7, 7)
        return torch.as_tensor(array).to(dtype)


def near(shape: tuple[int, ...]):
    """Shapes equal to ``shape`` or one entry off (or a dimension missing/extra)."""
    def mutate(data):
        op, i, d = data
        s = list(shape)
        if op == 0 or not s:
            return tuple(s)
        i %= len(s)
        if op == 1:
            s[i] = max(0, s[i] + d)
        elif op == 2:
            s.pop(i)
        else:
            s.insert(i, abs(d) + 1)
        return tuple(s)
    return st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(-2, 2)).map(mutate)


def _is_real(value, dtype) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == dtype


def _finite(t) -> bool:
    return bool(torch.isfinite(t).all())


# --------------------------------------------------------------------------- models
torch.manual_seed(0)
MODELS = {
    "ContractingR2DN": ContractingR2DN(2, 3, 4, 2, hidden=(4,), dtype=torch.float64),
    "LipschitzR2DN": LipschitzR2DN(2, 3, 4, 2, hidden=(4,), gamma=2.0, dtype=torch.float32),
    "PassiveR2DN": PassiveR2DN(2, 3, 4, 2, hidden=(4,), input_passivity=0.1,
                               dtype=torch.float64),
    "ContractingREN": ContractingREN(2, 3, 4, 2, dtype=torch.float32),
}
MODEL_NAMES = sorted(MODELS)


def _valid_sequence(u, x0, nu, nx, dtype) -> tuple[bool, tuple[int, ...] | None]:
    """Whether (u, x0) is a valid model/plant call, and the expected output batch layout."""
    if not _is_real(u, dtype) or u.dim() not in (2, 3) or u.shape[-1] != nu:
        return False, None
    if u.shape[-2] == 0 or (u.dim() == 3 and u.shape[0] == 0):
        return False, None
    batched = u.dim() == 3
    if x0 is not None:
        expected = (u.shape[0], nx) if batched else (nx,)
        if not _is_real(x0, dtype) or tuple(x0.shape) != expected:
            return False, None
    return True, tuple(u.shape[:-1])


def _finite_in_finite_out(inputs, outputs) -> bool:
    finite_in = all(_finite(t) for t in inputs if t is not None)
    return (not finite_in) or all(_finite(t) for t in outputs)


@FUZZ
@given(name=st.sampled_from(MODEL_NAMES), data=st.data())
def test_model_forward(name, data):
    model = MODELS[name]
    u = data.draw(tensors(st.one_of(near((2, 3, 2)), near((3, 2)))))
    x0 = data.draw(st.none() | tensors(st.one_of(near((2, 3)), near((3,)))))
    valid, lead = _valid_sequence(u, x0, 2, 3, model.dtype)

    def oracle(result):
        y, x = result
        return (tuple(y.shape) == (*lead, 2) and y.dtype == model.dtype
                and _finite_in_finite_out([u, x0], [y, x]))

    with torch.no_grad():
        classify(f"{name}.forward", lambda: model(u, x0), valid, oracle)


@FUZZ
@given(name=st.sampled_from(MODEL_NAMES), data=st.data())
def test_model_step_and_frozen(name, data):
    model = MODELS[name]
    u = data.draw(tensors(st.one_of(near((3, 2)), near((2,)))))
    x = data.draw(st.none() | tensors(st.one_of(near((3, 3)), near((3,)))))
    valid = _is_real(u, model.dtype) and u.dim() in (1, 2) and u.shape[-1] == 2
    if valid and x is not None:
        expected = (u.shape[0], 3) if u.dim() == 2 else (3,)
        valid = _is_real(x, model.dtype) and tuple(x.shape) == expected

    def oracle(result):
        y, x_next = result
        return (tuple(y.shape) == (*u.shape[:-1], 2) and tuple(x_next.shape) == (*u.shape[:-1], 3)
                and _finite_in_finite_out([u, x], [y, x_next]))

    with torch.no_grad(), model.frozen():
        classify(f"{name}.step", lambda: model.step(x, u), valid, oracle)


@FUZZ
@given(dtype=st.sampled_from(DTYPES + [None, "float64", 3]), name=st.sampled_from(MODEL_NAMES))
def test_model_explicit(dtype, name):
    model = MODELS[name]
    valid = dtype is None or dtype in (torch.float32, torch.float64)

    def oracle(explicit):
        return explicit.A.dtype == (model.dtype if dtype is None else dtype) and _finite(explicit.A)

    with torch.no_grad():
        classify("explicit", lambda: model.explicit(dtype), valid, oracle)


SIZE = st.sampled_from([1, 2, 3, 0, -1, 2.0, True, None, "2"])


@FUZZ
@given(sizes=st.tuples(SIZE, SIZE, SIZE, SIZE),
       gamma=st.sampled_from([1.0, 0.5, 3, 0.0, -1.0, float("nan"), float("inf"), 1e300, 1e40,
                              1e-20, np.float64(2.0), "1", None]),
       dtype=st.sampled_from(DTYPES + [None]))
def test_lipschitz_constructor(sizes, gamma, dtype):
    def positive(n):
        return isinstance(n, int) and not isinstance(n, bool) and n > 0

    g = float(gamma) if isinstance(gamma, (int, float)) and not isinstance(gamma, bool) else None
    limit = (3.4e38 if dtype == torch.float32 else 1.7e308) ** 0.25
    valid = (all(positive(n) for n in sizes) and dtype in (None, torch.float32, torch.float64)
             and g is not None and 1.5e-8 <= g <= limit)

    def build():
        model = LipschitzR2DN(*sizes, gamma=gamma, hidden=(3,), dtype=dtype)
        with torch.no_grad():
            return model(torch.ones(2, 3, sizes[0], dtype=model.dtype))

    classify("LipschitzR2DN()", build, valid, lambda result: _finite(result[0]))


NET = LBDN(2, 3, (4,), gamma=2.0, dtype=torch.float64)


@FUZZ
@given(x=tensors(st.one_of(near((4, 2)), near((2,)), near((2, 3, 2)))))
def test_lbdn_forward(x):
    valid = _is_real(x, torch.float64) and x.dim() >= 1 and x.shape[-1] == 2
    with torch.no_grad():
        classify("LBDN.forward", lambda: NET(x), valid,
                 lambda y: tuple(y.shape) == (*x.shape[:-1], 3) and _finite_in_finite_out([x], [y]))


PLANT = LTIPlant([[0.5, 0.1], [0.0, 0.8]], [[0.0], [1.0]], [[1.0, 0.0]], [[0.0]], dtype=torch.float64)


@FUZZ
@given(data=st.data())
def test_plant_forward_and_step(data):
    u = data.draw(tensors(st.one_of(near((2, 5, 1)), near((5, 1)), near((2, 1)))))
    x0 = data.draw(st.none() | tensors(st.one_of(near((2, 2)), near((2,)))))
    if isinstance(u, torch.Tensor) and u.dim() in (1, 2) and data.draw(st.booleans()):
        valid = _is_real(u, torch.float64) and u.shape[-1] == 1
        if valid and x0 is not None:
            expected = (u.shape[0], 2) if u.dim() == 2 else (2,)
            valid = _is_real(x0, torch.float64) and tuple(x0.shape) == expected
        classify("LTIPlant.step", lambda: PLANT.step(x0, u), valid,
                 lambda r: tuple(r[0].shape) == (*u.shape[:-1], 1))
        return
    valid, lead = _valid_sequence(u, x0, 1, 2, torch.float64)
    if isinstance(u, torch.Tensor) and u.dim() == 3 and u.shape[0] == 0 and not valid:
        # An empty batch (0, T, nu) is simulated as such: outputs (0, T, ny).
        valid, lead = _valid_sequence(u.new_zeros(1, *u.shape[1:]), None, 1, 2, torch.float64)
        valid = valid and (x0 is None or (_is_real(x0, torch.float64)
                                          and tuple(x0.shape) == (0, 2)))
        lead = (0, *lead[1:]) if valid else lead
    classify("LTIPlant.forward", lambda: PLANT(u, x0), valid,
             lambda r: tuple(r[0].shape) == (*lead, 1) and _finite_in_finite_out([u, x0], r))


@FUZZ
@given(matrix=st.sampled_from(["ok", "complex", "nan", "ragged", "3d", "wrong", "int"]),
       dtype=st.sampled_from(DTYPES + [None]))
def test_plant_constructor(matrix, dtype):
    a = {"ok": [[0.5]], "complex": [[0.5 + 1j]], "nan": [[np.nan]], "ragged": [[0.5], [1, 2]],
         "3d": [[[0.5]]], "wrong": [[0.5, 0.1]], "int": [[1]]}[matrix]
    valid = matrix in ("ok", "int") and (dtype is None or dtype.is_floating_point)
    classify("LTIPlant()", lambda: LTIPlant(a, [[1.0]], [[1.0]], [[0.0]], dtype=dtype), valid,
             lambda plant: plant.A.dtype.is_floating_point)


@FUZZ
@given(dt=st.sampled_from([1.0, 0.1, True, False, 0, -1.0, float("nan"), "1", None, 2]),
       name=st.sampled_from(MODEL_NAMES))
def test_to_nlsys(dt, name):
    valid = dt is True or (isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0)
    classify("to_nlsys", lambda: to_nlsys(MODELS[name], dt=dt), valid,
             lambda sys: sys.ninputs == 2 and sys.noutputs == 2)


OBSERVER = Observer(ContractingR2DN(2, 2, 3, 2, hidden=(3,), identity_output=True,
                                    dtype=torch.float64), input_size=1)


@FUZZ
@given(data=st.data())
def test_observer_step(data):
    x_hat = data.draw(tensors(st.one_of(near((3, 2)), near((2,)))))
    y = data.draw(tensors(st.one_of(near((3, 1)), near((1,)))))
    u = data.draw(st.none() | tensors(st.one_of(near((3, 1)), near((1,)))))
    valid = (all(_is_real(t, torch.float64) for t in (y, u)) and y.dim() in (1, 2)
             and y.shape[-1] == 1 and tuple(u.shape) == tuple(y.shape)
             and (x_hat is None  # None: start from x̂ = 0, like model.step
                  or (_is_real(x_hat, torch.float64)
                      and tuple(x_hat.shape) == (*y.shape[:-1], 2))))
    with torch.no_grad():
        classify("Observer.step", lambda: OBSERVER.step(x_hat, y, u), valid,
                 lambda x_next: tuple(x_next.shape) == (*y.shape[:-1], 2))


TWINS = {"box": BoxInFluidTwin(dtype=torch.float64), "pendulum": PendulumSwingUpTwin()}


@FUZZ
@given(name=st.sampled_from(sorted(TWINS)), data=st.data())
def test_twin_step(name, data):
    twin = TWINS[name]
    nx = twin.state_size
    dtype = twin.action_low.dtype
    state = data.draw(tensors(near((3, nx))))
    action = data.draw(tensors(near((3, 1))))
    valid = (all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (state, action))
             and state.dim() == 2 and state.shape[1] == nx
             and tuple(action.shape) == (state.shape[0], 1))
    valid = valid and state.dtype == action.dtype == dtype
    if valid is False and all(isinstance(t, torch.Tensor) and t.is_floating_point()
                              for t in (state, action)) and state.dim() == 2 \
            and state.shape[1] == nx and tuple(action.shape) == (state.shape[0], 1):
        valid = True  # mixed float dtypes are promoted, as in torch
    classify(f"{name}Twin.step", lambda: twin.step(state, action), valid,
             lambda nxt: tuple(nxt.shape) == tuple(state.shape))


@FUZZ
@given(action=tensors(near((1,))), seed=st.integers(0, 3))
def test_env_step(action, seed):
    env = BoxInFluidEnv()
    env.reset(seed=seed)
    array = action.detach().numpy() if isinstance(action, torch.Tensor) else action
    valid = False
    if array is not None and not isinstance(array, (str, bool)):
        with np.errstate(all="ignore"):
            arr = np.asarray(array)
        valid = (arr.shape == (1,) and arr.dtype.kind in "biuf" and bool(np.isfinite(arr).all()))
    classify("BoxInFluidEnv.step", lambda: env.step(action), valid,
             lambda out: out[0].shape == (3,) and np.isfinite(out[1]))


@FUZZ
@given(meta=st.sampled_from([1, 2.5, "s", None, np.float32(1.5), np.arange(3), [1, (2, 3)],
                             {"a": {"b": 1}}, object(), {1: 2}, torch.ones(2), 1 + 2j,
                             np.array([1 + 1j])]),
       corrupt=st.integers(-1, 40))
def test_checkpoint(meta, corrupt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "m.pt"
    model = MODELS["ContractingR2DN"]
    storable = not (type(meta) is object or isinstance(meta, complex)
                    or (isinstance(meta, dict) and any(not isinstance(k, str) for k in meta))
                    or (isinstance(meta, np.ndarray) and meta.dtype.kind == "c"))
    outcome = classify("save_model", lambda: save_model(model, path, value=meta), storable)
    if outcome != "handled":
        return
    if corrupt >= 0:  # flip one byte somewhere in the file
        data = bytearray(path.read_bytes())
        position = (corrupt * 7919) % len(data)
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))

    def load():
        loaded, metadata = load_model(path)
        return loaded, metadata

    def oracle(result):
        loaded, _ = result
        return all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                     model.state_dict().values()))

    # A flipped byte may fall in zip padding/unused bytes and leave everything intact: then
    # loading must give back exactly the saved model.
    classify("load_model", load, True, oracle)


def _youla():
    import control

    from r2dn_control.control import YoulaController

    t = control.ss(control.tf([0.3], [1, -1.3, 0.64], 1))
    sys = control.ss(t.A, np.hstack([t.B, t.B]), np.vstack([t.C, t.C]), np.zeros((2, 2)), 1.0)
    q = ContractingR2DN(1, 2, 3, 1, hidden=(3,), dtype=torch.float64)
    controller = YoulaController(sys, q, K=np.zeros((1, 2)), L=np.zeros((2, 1)),
                                 control_inputs=[1], measurements=[1])
    return controller, LTIPlant.from_control(sys, dtype=torch.float64)


YOULA, YOULA_PLANT = _youla()


@FUZZ
@given(w=tensors(st.one_of(near((2, 4, 1)))))
def test_youla_closed_loop(w):
    from r2dn_control.control import simulate_closed_loop

    valid = (_is_real(w, torch.float64) and w.dim() == 3 and w.shape[-1] == 1
             and w.shape[0] > 0 and w.shape[1] > 0)

    def oracle(traj):
        return (tuple(traj.outputs.shape) == (*w.shape[:2], 2)
                and _finite_in_finite_out([w], [traj.outputs]))

    with torch.no_grad():
        classify("simulate_closed_loop", lambda: simulate_closed_loop(YOULA_PLANT, YOULA, w),
                 valid, oracle)
