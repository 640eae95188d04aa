"""The C++ CPU kernels equal the pure-torch reference paths (outputs and all gradients).

The kernels are built once per machine (cached in torch's extensions directory, ~30 s on two
cores the first time); the sizes here are tiny but chosen to cover the kernel's edge cases:
batches that fill more than one lane block and end in a partial one, and widths nv that are
not a multiple of the 4-row groups of the triangular solves.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from r2dn_control.nn import (
    ContractingR2DN,
    ContractingREN,
    EquilibriumLayer,
    LipschitzR2DN,
    LipschitzREN,
    cpp,
)
from r2dn_control.nn.activations import ACTIVATIONS
from r2dn_control.nn.equilibrium import solve_equilibrium
from r2dn_control.nn.explicit import rollout
from r2dn_control.nn.fused_ren import fused_ren_rollout

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("cpp_kernels")


def _strictly_lower(n: int, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.tril(scale * torch.randn(n, n, dtype=F64, generator=gen) / n**0.5, -1)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("batch, nv", [(19, 11), (3, 4), (8, 1)])
def test_equilibrium_kernel_equals_torch(activation: str, batch: int, nv: int) -> None:
    act = ACTIVATIONS[activation]
    gen = torch.Generator().manual_seed(1)
    # Entries above the diagonal must be ignored: fill them with noise.
    d11 = (_strictly_lower(nv, 3.0, 0) + torch.triu(torch.randn(nv, nv, dtype=F64), 0))
    d11.requires_grad_(True)
    b = torch.randn(batch, nv, dtype=F64, generator=gen).requires_grad_(True)
    g = torch.randn(batch, nv, dtype=F64, generator=gen)
    layer = EquilibriumLayer(d11, act)
    with torch.no_grad():
        fast = layer(b)
        with cpp.suspended():
            slow = layer(b)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert layer.residual(b, fast).abs().max() < 1e-12
    got = torch.autograd.grad(layer(b), (b, d11), g)
    # With nv = 1 the reference loop never reads D11: its gradient is zero (None here).
    want = torch.autograd.grad(solve_equilibrium(d11, b, act), (b, d11), g, allow_unused=True)
    want = tuple(torch.zeros_like(d11) if w is None else w for w in want)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-10)



@pytest.mark.parametrize("dtype, smallest, ulps", [(F64, 1e-300, 4), (torch.float32, 1e-37, 4)])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_kernel_activations_are_accurate_relative_to_their_value(activation, dtype, smallest,
                                                                 ulps) -> None:
    """σ(v) to a few ulp *of σ(v)* for |v| from tiny to saturated, not only to ~1 ulp of 1.

    An absolute error of eps at tiny v is a relative error of eps/|v|: the REN trajectory then
    loses every digit at small states and an incremental inequality can fail by far more than
    round-off. (nv = 1 and D₁₁ = 0: the kernel returns σ(b) itself.)
    """
    mags = torch.logspace(math.log10(smallest), 1.5, 4001, dtype=F64)
    v = torch.cat([mags, -mags, torch.zeros(1, dtype=F64)]).to(dtype)
    w = cpp.ops().equilibrium_forward(torch.zeros(1, 1, dtype=dtype), v.reshape(-1, 1),
                                      activation).reshape(-1).double()
    exact = getattr(torch, activation)(v.double())
    bound = ulps * torch.finfo(dtype).eps * exact.abs() + torch.finfo(dtype).tiny
    worst = ((w - exact).abs() / bound).max().item()
    assert worst <= 1, f"{activation} ({dtype}) off by {worst * ulps:.1f} ulp of its value"

def _outputs_and_grads(model, u, x0, method):
    e = model._explicit(None, certificate=False)
    y, x_final = rollout(e, u, x0, method)
    loss = y.sin().sum() + x_final.pow(2).sum()
    leaves = [u, x0, *model.parameters()]
    return y, x_final, torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("cls, sizes, kwargs", [
    (ContractingREN, (2, 3, 6, 2), {}),
    (LipschitzREN, (1, 2, 9, 3), {"gamma": 2.0}),  # ny > nu
])
def test_fused_ren_equals_reference(activation, cls, sizes, kwargs) -> None:
    torch.manual_seed(0)
    model = cls(*sizes, activation=activation, dtype=F64, init="random", **kwargs)
    nu, nx = sizes[0], sizes[1]
    u = torch.randn(9, 7, nu, dtype=F64, requires_grad=True)  # 9 = one full block + 1 lane
    x0 = torch.randn(9, nx, dtype=F64, requires_grad=True)
    y_f, x_f, g_f = _outputs_and_grads(model, u, x0, "fused")
    assert y_f.grad_fn is not None
    with cpp.suspended():
        y_r, x_r, g_r = _outputs_and_grads(model, u, x0, "reference")
    torch.testing.assert_close(y_f, y_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(x_f, x_r, rtol=0, atol=1e-10)
    assert len(g_f) == len(g_r) > 2
    for a, b in zip(g_f, g_r):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fused_ren_passes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    nx, nv, steps, batch = 2, 5, 4, 3

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, dtype=F64, generator=gen)).requires_grad_(True)

    inputs = (rand(batch, nx), rand(steps, batch, nx), rand(steps, batch, nv),
              rand(nx, nx, scale=0.5), rand(nx, nv, scale=0.5), rand(nv, nx, scale=0.5),
              _strictly_lower(nv, 2.0, 4).requires_grad_(True))

    def run(x0, dx, dv, a, b1, c1, d11):
        layer = EquilibriumLayer(torch.tril(d11, -1), ACTIVATIONS["tanh"])
        return fused_ren_rollout(layer, x0, dx, dv, a, b1, c1)

    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-8)


def test_float32_kernel_matches_float32_reference() -> None:
    torch.manual_seed(0)
    model = ContractingREN(1, 2, 37, 1, activation="tanh")
    u = torch.randn(21, 30, 1)
    with torch.no_grad():
        y_fast, _ = model(u)
        with cpp.suspended():
            y_ref, _ = model(u)
    assert y_fast.dtype == torch.float32
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)


def test_dispatch_is_automatic() -> None:
    model = ContractingREN(1, 2, 3, 1, dtype=F64)
    u, x0 = torch.randn(2, 4, 1, dtype=F64), torch.zeros(2, 2, dtype=F64)
    e = model.explicit()
    assert _uses_fused(e, u, x0)
    assert not _uses_fused(e, u, x0, "reference")
    with cpp.suspended():
        assert not _uses_fused(e, u, x0)
        with pytest.raises(ValueError, match="C\\+\\+ kernels"):
            rollout(e, u, x0, "fused")
    # Other devices and dtypes are never sent to the CPU kernel.
    assert not cpp.usable(torch.empty(2, device="meta"))
    assert not cpp.usable(torch.empty(2, dtype=torch.bfloat16))
    assert not cpp.usable(torch.empty(2), torch.empty(2, dtype=F64))


def _uses_fused(e, u, x0, method: str = "auto") -> bool:
    """Whether the autograd graph of the rollout contains the fused REN node."""
    y, _ = rollout(e, u, x0, method)
    seen, stack = set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "FusedRENRollout" in type(node).__name__:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_takes_the_torch_path() -> None:
    model = ContractingREN(1, 2, 5, 1, device="cuda")
    u = torch.randn(3, 4, 1, device="cuda")
    assert not _uses_fused(model.explicit(), u, torch.zeros(3, 2, device="cuda"))
    model(u)[0].sum().backward()


def test_kernel_errors_are_clear() -> None:
    ops = cpp.ops()
    d11 = torch.zeros(3, 3, dtype=F64)
    with pytest.raises(RuntimeError, match="unknown activation 'gelu'"):
        ops.equilibrium_forward(d11, torch.zeros(2, 3, dtype=F64), "gelu")
    with pytest.raises(RuntimeError, match="D11 has shape"):
        ops.equilibrium_forward(d11, torch.zeros(2, 4, dtype=F64), "tanh")
    with pytest.raises(RuntimeError, match="dtype"):
        ops.equilibrium_forward(d11, torch.zeros(2, 3), "tanh")


_SUBPROCESS = """
import json, warnings
warnings.simplefilter("error")
import torch
from r2dn_control.nn import ContractingREN, cpp
torch.manual_seed(0)
model = ContractingREN(1, 2, 5, 1, dtype=torch.float64)
u = torch.randn(3, 6, 1, dtype=torch.float64)
y, _ = model(u)
y.square().sum().backward()
print(json.dumps({"available": cpp.available(), "status": cpp.status(),
                  "y": y.flatten().tolist(), "g": model.X.grad.flatten().tolist()}))
"""


def test_fallback_when_disabled_by_environment() -> None:
    env = {**os.environ, cpp.DISABLE_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the fallback is silent
    result = json.loads(out.stdout)
    assert result["available"] is False and cpp.DISABLE_ENV in result["status"]
    torch.manual_seed(0)
    model = ContractingREN(1, 2, 5, 1, dtype=F64)
    u = torch.randn(3, 6, 1, dtype=F64)
    y, _ = model(u)  # the kernel, in this process
    y.square().sum().backward()
    torch.testing.assert_close(y.flatten(), torch.tensor(result["y"], dtype=F64),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(model.X.grad.flatten(), torch.tensor(result["g"], dtype=F64),
                               rtol=1e-10, atol=1e-10)


# --- R2DN time loops (r2dn_forward / r2dn_adjoint) -------------------------------------------


@pytest.fixture(params=["lanes", "aten"])
def r2dn_loop(request, monkeypatch) -> str:
    """Run each R2DN test through both C++ loops: lane blocks, and (width limit 0) ATen calls.

    The pure-torch loops are patched to fail, so a test passes only if the kernel ran.
    """
    from r2dn_control import config
    from r2dn_control.nn import fused_rollout as fr

    if request.param == "aten":
        monkeypatch.setitem(config.defaults, "nn.cpp.loop_width", 0)

    def not_here(*args, **kwargs):
        raise AssertionError("the pure-torch loop ran although the C++ kernel applies")

    real = (fr._forward_loop, fr._adjoint_loop)
    monkeypatch.setattr(fr, "_forward_loop", not_here)
    monkeypatch.setattr(fr, "_adjoint_loop", not_here)
    monkeypatch.setattr(fr, "_REAL_LOOPS", real, raising=False)
    return request.param


def _with_torch_loops(fn):
    """Call fn with the kernels suspended and the real pure-torch loops restored."""
    from r2dn_control.nn import fused_rollout as fr

    patched = (fr._forward_loop, fr._adjoint_loop)
    fr._forward_loop, fr._adjoint_loop = fr._REAL_LOOPS
    try:
        with cpp.suspended():
            return fn()
    finally:
        fr._forward_loop, fr._adjoint_loop = patched


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("cls, hidden, output_layer", [
    (ContractingR2DN, (5, 6), "linear"),
    (ContractingR2DN, (), "linear"),
    (ContractingR2DN, (5, 6), "sandwich"),
    # (4,): at some other widths this model's parameterisation alone amplifies rounding past
    # 1e-10 in a few parameter gradients (the pure-torch path vs the reference, no kernel).
    (LipschitzR2DN, (4,), "sandwich"),
])
def test_r2dn_kernel_equals_torch_and_reference(r2dn_loop, activation, cls, hidden,
                                                output_layer) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, 4, 2, hidden=hidden, activation=activation, output_layer=output_layer,
                dtype=F64)
    # 19 = a full float64 lane block of 16 and a partial one of 3 (widths 4…6: row groups of 3
    # and a remainder).
    u = torch.randn(19, 7, 2, dtype=F64, requires_grad=True)
    x0 = torch.randn(19, 3, dtype=F64, requires_grad=True)
    y_c, x_c, g_c = _outputs_and_grads(model, u, x0, "fused")
    y_t, x_t, g_t = _with_torch_loops(lambda: _outputs_and_grads(model, u, x0, "fused"))
    y_r, x_r, g_r = _outputs_and_grads(model, u, x0, "reference")
    assert len(g_c) == len(g_r) > 2
    for other_y, other_x, other_g in ((y_t, x_t, g_t), (y_r, x_r, g_r)):
        torch.testing.assert_close(y_c, other_y, rtol=0, atol=1e-10)
        torch.testing.assert_close(x_c, other_x, rtol=0, atol=1e-10)
        for a, b in zip(g_c, other_g):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_r2dn_kernel_passes_gradcheck(r2dn_loop) -> None:
    from r2dn_control.nn.fused_rollout import fused_rollout
    from r2dn_control.nn.lbdn import ExplicitMLP

    gen = torch.Generator().manual_seed(5)
    nx, nv, width, steps, batch = 2, 3, 5, 4, 10

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, dtype=F64, generator=gen)).requires_grad_(True)

    inputs = (rand(batch, nx), rand(steps, batch, nx), rand(steps, batch, nv),
              rand(nx, nx, scale=0.5), rand(nx, nv, scale=0.5), rand(nv, nx, scale=0.5),
              rand(nv, width, scale=0.5), rand(width, nv, scale=0.5), rand(width), rand(nv))

    def run(x0, dx, dv, a, b1, c1, w0, w1, b0, bias1):
        net = ExplicitMLP((w0, w1), (b0, bias1), ACTIVATIONS["sigmoid"], "sigmoid")
        return fused_rollout(net, x0, dx, dv, a, b1, c1)

    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-8)


def test_r2dn_float32_kernel_matches_float32_torch(r2dn_loop) -> None:
    torch.manual_seed(0)
    model = ContractingR2DN(1, 2, 16, 1, hidden=(8, 8), activation="tanh")
    # 37 = a float32 lane block of 32 and a partial one of 5
    u = torch.randn(37, 30, 1, requires_grad=True)
    x0 = torch.zeros(37, 2, requires_grad=True)
    y_fast, _, g_fast = _outputs_and_grads(model, u, x0, "fused")
    y_ref, _, g_ref = _with_torch_loops(lambda: _outputs_and_grads(model, u, x0, "fused"))
    assert y_fast.dtype == torch.float32
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_r2dn_kernel_errors_are_clear() -> None:
    ops = cpp.ops()
    z = torch.zeros
    x0, dx, dv = z(2, 1, dtype=F64), z(3, 2, 1, dtype=F64), z(3, 2, 4, dtype=F64)
    a, b1, c1 = z(1, 1, dtype=F64), z(1, 4, dtype=F64), z(4, 1, dtype=F64)
    ws, bs = [z(4, 5, dtype=F64), z(5, 4, dtype=F64)], [z(5, dtype=F64), z(4, dtype=F64)]
    with pytest.raises(RuntimeError, match="unknown activation 'gelu'"):
        ops.r2dn_forward(x0, dx, dv, a, b1, c1, ws, bs, "gelu", 32, True)
    with pytest.raises(RuntimeError, match="W_1 has shape"):
        ops.r2dn_forward(x0, dx, dv, a, b1, c1, [ws[0], z(5, 3, dtype=F64)], bs, "tanh", 32, True)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.r2dn_forward(x0.float(), dx, dv, a, b1, c1, ws, bs, "tanh", 32, True)


_SUBPROCESS_R2DN = """
import json, warnings
warnings.simplefilter("error")
import torch
from r2dn_control.nn import ContractingR2DN, cpp
torch.manual_seed(0)
model = ContractingR2DN(1, 2, 5, 1, hidden=(4, 3), dtype=torch.float64)
u = torch.randn(3, 6, 1, dtype=torch.float64)
y, _ = model(u)
y.square().sum().backward()
grads = [p.grad.flatten().tolist() for p in model.parameters()]
print(json.dumps({"available": cpp.available(), "y": y.flatten().tolist(), "g": grads}))
"""


def test_r2dn_fallback_when_disabled_by_environment() -> None:
    env = {**os.environ, cpp.DISABLE_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS_R2DN], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    result = json.loads(out.stdout)
    assert result["available"] is False
    torch.manual_seed(0)
    model = ContractingR2DN(1, 2, 5, 1, hidden=(4, 3), dtype=F64)
    u = torch.randn(3, 6, 1, dtype=F64)
    y, _ = model(u)  # the kernel, in this process
    y.square().sum().backward()
    torch.testing.assert_close(y.flatten(), torch.tensor(result["y"], dtype=F64),
                               rtol=0, atol=1e-10)
    for p, g in zip(model.parameters(), result["g"]):
        torch.testing.assert_close(p.grad.flatten(), torch.tensor(g, dtype=F64),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (F64, 1e-10)])
def test_r2dn_kernel_ragged_tiles_match_torch(r2dn_loop, dtype, tol) -> None:
    """Widths and lane counts that are not multiples of the transpose tiles (8 float32 / 4
    float64 lanes): full tiles, ragged feature edges and a partial lane block of more than
    one tile, against the pure-torch loops in the same dtype."""
    torch.manual_seed(1)
    model = ContractingR2DN(2, 5, 13, 2, hidden=(11, 8, 9), activation="tanh", dtype=dtype)
    # 45 = a float32 lane block of 32 + 13 (one tile of 8 and 5 lanes); float64: 2 × 16 + 13.
    u = torch.randn(45, 6, 2, dtype=dtype, requires_grad=True)
    x0 = torch.randn(45, 5, dtype=dtype, requires_grad=True)
    y_fast, x_fast, g_fast = _outputs_and_grads(model, u, x0, "fused")
    y_ref, x_ref, g_ref = _with_torch_loops(lambda: _outputs_and_grads(model, u, x0, "fused"))
    torch.testing.assert_close(y_fast, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x_fast, x_ref, rtol=tol, atol=tol)
    assert len(g_fast) == len(g_ref) > 2
    for a, b in zip(g_fast, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_r2dn_inference_forward_equals_training_forward(r2dn_loop, dtype, monkeypatch) -> None:
    """Under no_grad the C++ forward keeps neither v nor the hidden outputs (save=False);
    outputs and final state equal the recorded (save=True) forward (to BLAS round-off: the
    ATen loop's float32 matmuls may block differently on a reused scratch step)."""
    from r2dn_control.nn import fused_rollout as fr

    torch.manual_seed(2)
    model = ContractingR2DN(2, 3, 9, 2, hidden=(11, 8), activation="tanh", dtype=dtype)
    u = torch.randn(37, 5, 2, dtype=dtype)
    x0 = torch.randn(37, 3, dtype=dtype)
    y_train, x_train = model(u, x0)
    assert y_train.requires_grad

    def no_function(*args, **kwargs):
        raise AssertionError("the autograd.Function ran under no_grad")

    monkeypatch.setattr(fr._FusedR2DNRollout, "apply", no_function)
    with torch.no_grad():
        y_infer, x_infer = model(u, x0)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(y_infer, y_train.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(x_infer, x_train.detach(), rtol=tol, atol=tol)


def _gram_reference(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor, torch.Tensor]:
    """XᵀG and Σ_r G in float64 with their error scales |X|ᵀ|G| and Σ_r |G| (the bound of any
    summation order is a multiple of these, not of the possibly cancelling result)."""
    x, g = x.double(), g.double()
    return x.T @ g, g.sum(0), x.abs().T @ g.abs(), g.abs().sum(0)


def _assert_gram(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor,
                 rtol: float) -> None:
    assert got.shape == want.shape
    excess = (got.double() - want).abs() - rtol * scale
    assert torch.isfinite(got).all() and (excess <= 1e-300).all(), float(excess.max())


@given(rows=st.one_of(st.integers(0, 70), st.integers(0, 5000)), m=st.integers(1, 130),
       n=st.integers(1, 130), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_gram_pairs_equals_matmul_and_sum(rows: int, m: int, n: int, threads: int,
                                          seed: int) -> None:
    """The weight-gradient kernel (every tile shape, ragged and swapped column tiles, K blocks,
    row chunks per thread): XᵀG and Σ_r G equal torch.mm and sum, float64 to 1e-12 and float32
    to 1e-5 relative to |X|ᵀ|G| (resp. Σ|G|), both operand orders."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, m, dtype=F64, generator=gen)
    g = torch.randn(rows, n, dtype=F64, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p64, s64 = cpp.ops().gram_pairs([x, g], [g, x])
        p32, s32 = cpp.ops().gram_pairs([x.float()], [g.float()])
    finally:
        torch.set_num_threads(before)
    for a, b, product, total in ((x, g, p64[0], s64[0]), (g, x, p64[1], s64[1])):
        want, want_sum, scale, sum_scale = _gram_reference(a, b)
        _assert_gram(product, want, scale, 1e-12)
        _assert_gram(total, want_sum, sum_scale, 1e-12)
    want, want_sum, scale, sum_scale = _gram_reference(x.float(), g.float())
    _assert_gram(p32[0], want, scale, 1e-5)
    _assert_gram(s32[0], want_sum, sum_scale, 1e-5)


@given(batch=st.integers(1, 70), steps=st.integers(1, 6), nx=st.integers(1, 20),
       nv=st.integers(1, 20), widths=st.lists(st.integers(1, 40), min_size=0, max_size=3),
       activation=st.sampled_from(sorted(ACTIVATIONS)), threads=st.sampled_from([1, 2]),
       save=st.booleans(), seed=st.integers(0, 2**16))
def test_lane_forward_equals_aten_forward(batch: int, steps: int, nx: int, nv: int,
                                          widths: list[int], activation: str, threads: int,
                                          save: bool, seed: int) -> None:
    """The lane-loop forward (register-blocked products of every row count: full row blocks,
    each shorter last block, single rows; partial lane blocks) equals the ATen loop
    (max_loop_width 0) on the same inputs in float64: states and w, and with save also v and
    the hidden outputs, to 1e-12 relative to the entries' size (the two loops add the same
    products in different orders)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, dtype=F64, generator=gen)

    fans = [nv, *widths, nv]
    weights = [rand(a, b, scale=1 / a ** 0.5) for a, b in zip(fans, fans[1:])]
    biases = [rand(b) for b in fans[1:]]
    inputs = (rand(batch, nx), rand(steps, batch, nx), rand(steps, batch, nv),
              rand(nx, nx, scale=0.5 / nx ** 0.5), rand(nx, nv, scale=0.5 / nv ** 0.5),
              rand(nv, nx, scale=1 / nx ** 0.5))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        lanes = cpp.ops().r2dn_forward(*inputs, weights, biases, activation, 128, save)
        aten = cpp.ops().r2dn_forward(*inputs, weights, biases, activation, 0, save)
    finally:
        torch.set_num_threads(before)
    # Without save, v and the hidden outputs are scratch that callers must not read.
    got = [lanes[0], lanes[2], *((lanes[1], *lanes[3]) if save else ())]
    want = [aten[0], aten[2], *((aten[1], *aten[3]) if save else ())]
    assert len(got) == len(want) == 2 + (1 + len(widths) if save else 0)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * (1 + float(b.abs().max())))


@given(batch=st.integers(1, 70), steps=st.integers(1, 6),
       widths=st.lists(st.integers(1, 40), min_size=0, max_size=3),
       activation=st.sampled_from(sorted(ACTIVATIONS)), threads=st.sampled_from([1, 2]),
       dtype=st.just(F64), seed=st.integers(0, 2**16))
def test_lane_adjoint_weight_gradients_equal_products_of_its_loop(
        batch: int, steps: int, widths: list[int], activation: str, threads: int,
        dtype: torch.dtype, seed: int) -> None:
    """The lane-loop adjoint's own LBDN gradients (staged rows of a few steps through the gram
    micro-kernel, partial lane blocks, a partial per thread) equal Σ hᵀg and Σ g formed from
    the g^{z,k} and g^w that the ATen loop (max_loop_width 0) returns for the same inputs:
    float64 to 1e-12 relative to Σ|h|ᵀ|g| (resp. Σ|g|), and the two loops' λ, g^w, g^v. (In
    float32 the two loops round differently over the steps and cancelling entries differ by
    ~1e-3 relative; float32 is checked through the model in the tests above.)"""
    gen = torch.Generator().manual_seed(seed)
    nx, nv = 2, 3

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, dtype=F64, generator=gen).to(dtype)

    fans = [nv, *widths, nv]
    weights = [rand(a, b, scale=0.5) for a, b in zip(fans, fans[1:])]
    vs = rand(steps, batch, nv)
    acts = [ACTIVATIONS[activation](rand(steps, batch, w)) for w in widths]
    inputs = (rand(steps, batch, nx), rand(steps, batch, nv), rand(batch, nx),
              rand(nx, nx, scale=0.5), rand(nx, nv, scale=0.5), rand(nv, nx, scale=0.5))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        lanes = cpp.ops().r2dn_adjoint(*inputs, weights, vs, acts, activation, 128)
        aten = cpp.ops().r2dn_adjoint(*inputs, weights, vs, acts, activation, 0)
    finally:
        torch.set_num_threads(before)
    lams, g_w, g_v, g_z, d_w, d_b = lanes
    assert g_z == [] and aten[4] == [] and len(d_w) == len(d_b) == len(weights)
    tol = 1e-12 if dtype == F64 else 1e-4
    for got, want in zip(lanes[:3], aten[:3]):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    for k, (h, g) in enumerate(zip([vs, *acts], [*aten[3], aten[1]])):
        want, want_sum, scale, sum_scale = _gram_reference(h.reshape(-1, h.shape[-1]),
                                                           g.reshape(-1, g.shape[-1]))
        _assert_gram(d_w[k], want, scale, tol)
        _assert_gram(d_b[k], want_sum, sum_scale, tol)


@given(rows=st.integers(1, 400), m=st.integers(1, 40), n=st.integers(1, 40),
       pad=st.integers(1, 20), dtype=st.sampled_from([F64, torch.float32]))
def test_gram_pairs_reads_strided_rows_only(rows: int, m: int, n: int, pad: int,
                                            dtype: torch.dtype) -> None:
    """Row-strided views (column slices of a wider buffer full of NaN) give the contiguous
    copies' results: the kernel's whole-vector loads past a row's end reach only padding lanes
    that are discarded, and no element outside the view is used."""
    gen = torch.Generator().manual_seed(rows * 7 + m * 131 + n)
    x = torch.randn(rows, m, dtype=dtype, generator=gen)
    g = torch.randn(rows, n, dtype=dtype, generator=gen)
    x_buf = torch.full((rows, m + pad), math.nan, dtype=dtype)
    g_buf = torch.full((rows, n + 2 * pad), math.nan, dtype=dtype)
    x_view, g_view = x_buf[:, 1:1 + m], g_buf[:, pad:pad + n]
    x_view.copy_(x)
    g_view.copy_(g)
    assert x_view.stride(0) == m + pad and g_view.stride(0) == n + 2 * pad
    got_p, got_s = cpp.ops().gram_pairs([x_view], [g_view])
    want_p, want_s = cpp.ops().gram_pairs([x], [g])
    rtol = 1e-12 if dtype == F64 else 1e-5
    _, _, scale, sum_scale = _gram_reference(x, g)
    _assert_gram(got_p[0], want_p[0].double(), scale, rtol)
    _assert_gram(got_s[0], want_s[0].double(), sum_scale, rtol)


def test_gram_pairs_edge_shapes() -> None:
    """No samples: zeros; no columns of X: empty product, the sums still formed."""
    p, s = cpp.ops().gram_pairs([torch.randn(0, 3, dtype=F64), torch.randn(6, 0, dtype=F64)],
                                [torch.randn(0, 5, dtype=F64), torch.ones(6, 2, dtype=F64)])
    assert p[0].shape == (3, 5) and not p[0].any() and s[0].shape == (5,) and not s[0].any()
    assert p[1].shape == (0, 2) and s[1].tolist() == [6.0, 6.0]


def test_weight_gradients_dispatch_equals_torch() -> None:
    """`weight_gradients` with the kernel (products up to GRAM_MAX_SIDE wide) and beyond it
    (torch.mm) equals the all-torch path, time-major (T, B, n) inputs flattened."""
    from r2dn_control.nn import fused_rollout as fr

    gen = torch.Generator().manual_seed(3)
    widths = [(1, 1), (16, 1), (1, 16), (16, 24), (fr.GRAM_MAX_SIDE + 1, 3)]
    xs = [torch.randn(9, 7, m, dtype=F64, generator=gen) for m, _ in widths]
    gs = [torch.randn(9, 7, n, dtype=F64, generator=gen) for _, n in widths]
    assert [fr._gram_fits(x, g) for x, g in zip(xs, gs, strict=True)] == [True] * 4 + [False]
    got = fr.weight_gradients(xs, gs, True)
    want = fr.weight_gradients(xs, gs, False)
    for a, b in zip([*got[0], *got[1]], [*want[0], *want[1]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gram_pairs_errors_are_clear() -> None:
    a = torch.randn(5, 2, dtype=F64)
    with pytest.raises(RuntimeError, match="same K"):
        cpp.ops().gram_pairs([a], [torch.randn(4, 2, dtype=F64)])
    with pytest.raises(RuntimeError, match="as many xs as gs"):
        cpp.ops().gram_pairs([a, a], [a])
    with pytest.raises(RuntimeError, match="CPU tensors of one dtype"):
        cpp.ops().gram_pairs([a], [a.float()])
    with pytest.raises(RuntimeError, match="unit column stride"):
        cpp.ops().gram_pairs([torch.randn(2, 5, dtype=F64).T], [a])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        cpp.ops().gram_pairs([a.half()], [a.half()])
