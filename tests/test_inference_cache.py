"""The inference cache of the explicit weights never returns stale weights.

Property: after any sequence of parameter, buffer and setting changes (optimizer steps,
``p.data`` writes that version counters miss, numpy writes, ``load_state_dict``, re-assigned
parameters, a changed contraction rate, ``.to()``), a cached inference call gives exactly the
output of the same model with the cache off; a call with nothing changed reuses the cached
weights (no rebuild); and calls that need a graph never use it.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from r2dn_control.nn import ContractingR2DN, ContractingREN, LipschitzR2DN, cpp
from r2dn_control.nn._inference_cache import InferenceCache

F64 = torch.float64
MUTATIONS = ("optimizer", "data", "numpy", "state_dict", "reassign", "rate", "none")


def _model(cls, seed: int):
    torch.manual_seed(seed)
    kwargs = {"hidden": (4, 3)} if cls is not ContractingREN else {}
    return cls(2, 3, 4, 2, dtype=F64, **kwargs)


def _uncached(model, u):
    model.inference_cache = False
    try:
        with torch.no_grad():
            return model(u)
    finally:
        model.inference_cache = True


def _mutate(model, kind: str, index: int, scale: float) -> None:
    params = list(model.named_parameters())
    name, p = params[index % len(params)]
    if kind == "optimizer":
        p.grad = torch.full_like(p, scale)
        torch.optim.SGD([p], lr=1.0).step()
        p.grad = None
    elif kind == "data":  # invisible to version counters
        p.data.add_(scale)
    elif kind == "numpy":
        p.detach().numpy().reshape(-1)[0] += scale
    elif kind == "state_dict":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state[name] = state[name] + scale
        model.load_state_dict(state)
    elif kind == "reassign":
        module_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(module_name) if module_name else model
        setattr(owner, attr, torch.nn.Parameter(p.detach() + scale))
    elif kind == "rate":
        model.contraction_rate = 0.5 + 0.5 * abs(scale) / (1 + abs(scale))


@pytest.mark.parametrize("native", [True, False], ids=["cpp", "torch"])
@pytest.mark.parametrize("cls", [ContractingR2DN, LipschitzR2DN, ContractingREN])
@given(seed=st.integers(0, 2**16),
       steps=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 100),
                                st.floats(-1.0, 1.0, allow_subnormal=False)),
                      min_size=1, max_size=4))
def test_cached_calls_equal_uncached_after_any_change(cls, native, seed, steps) -> None:
    model = _model(cls, seed)
    u = torch.randn(2, 5, 2, dtype=F64)
    with contextlib.nullcontext() if native else cpp.suspended():
        with torch.no_grad():
            model(u)  # fills the cache
        for kind, index, scale in steps:
            _mutate(model, kind, index, scale)
            with torch.no_grad():
                y, x = model(u)
            y_ref, x_ref = _uncached(model, u)
            assert torch.equal(y, y_ref) and torch.equal(x, x_ref), kind


def _count_builds(model, monkeypatch) -> list[int]:
    calls = [0]
    build = model._build_cast

    def counting(*args, **kwargs):
        calls[0] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(model, "_build_cast", counting)
    return calls


@pytest.mark.parametrize("native", [True, False], ids=["cpp", "torch"])
def test_unchanged_model_reuses_weights(native, monkeypatch) -> None:
    model = _model(ContractingR2DN, 0)
    calls = _count_builds(model, monkeypatch)
    u = torch.randn(2, 5, 2, dtype=F64)
    with contextlib.nullcontext() if native else cpp.suspended():
        with torch.no_grad():
            first = model(u)
            second = model(u)
        assert calls[0] == 1
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        with torch.inference_mode():
            model(u)
            model(u)
        assert calls[0] == 2  # inference-mode tensors are cached apart
        model.inference_cache = False
        with torch.no_grad():
            model(u)
        assert calls[0] == 3
        model.inference_cache = True
        model.eval()  # a scalar setting of a module changed
        with torch.no_grad():
            model(u)
        assert calls[0] == 4
        model.double()  # .to() clears the cache
        with torch.no_grad():
            model(u)
        assert calls[0] == 5


def test_calls_that_need_a_graph_bypass_the_cache(monkeypatch) -> None:
    model = _model(ContractingR2DN, 1)
    calls = _count_builds(model, monkeypatch)
    u = torch.randn(2, 5, 2, dtype=F64)
    with torch.no_grad():
        model(u)
    y, x = model(u)
    assert calls[0] == 2 and y.requires_grad
    (y.sum() + x.sum()).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # Nothing requires grad: cached, and usable with an input that requires grad even when
    # the cache was filled under inference_mode.
    model.requires_grad_(False)
    with torch.inference_mode():
        model(u)
    u_grad = u.clone().requires_grad_(True)
    y, _ = model(u_grad)
    y.sum().backward()
    assert u_grad.grad is not None
    # One more build (inference mode); the last call reuses the first no_grad call's entry:
    # backward() changed no parameter.
    assert calls[0] == 3


def test_cache_entries_are_per_key() -> None:
    module = torch.nn.Linear(2, 2)
    cache = InferenceCache()
    assert cache.get(module, "a", lambda: 1) == 1
    assert cache.get(module, "b", lambda: 2) == 2
    assert cache.get(module, "a", lambda: 3) == 1
    with torch.no_grad():
        module.weight[0, 0] += 1
    assert cache.get(module, "a", lambda: 4) == 4
    cache.clear()
    assert cache.get(module, "b", lambda: 5) == 5


def test_snapshot_kernels_compare_bytes() -> None:
    if not cpp.available():
        pytest.skip(f"C++ kernels unavailable: {cpp.status()}")
    tensors = [torch.randn(3, 2), torch.arange(4, dtype=F64), torch.zeros(0)]
    snap = cpp.ops().snapshot_bytes(tensors)
    assert snap.dtype == torch.uint8 and snap.numel() == 3 * 2 * 4 + 4 * 8
    assert cpp.ops().snapshot_equal(tensors, snap)
    tensors[1][2] = -0.0 if tensors[1][2] == 0 else 0.0
    assert not cpp.ops().snapshot_equal(tensors, snap)
    assert not cpp.ops().snapshot_equal(tensors[:1], snap)
    nan = torch.tensor([float("nan")])
    assert cpp.ops().snapshot_equal([nan], cpp.ops().snapshot_bytes([nan]))
