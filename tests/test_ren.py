"""REN families and the equilibrium layer: numerics of the solve and its implicit gradient,
the REN-specific algebra, initialisations and input validation.

The certificate properties (LMIs and trajectory inequalities) run over every REN family in
``test_certificates_property.py`` through ``families.FAMILIES``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from r2dn_control.certify.lmi import StateSpaceBlocks, relative_margin
from r2dn_control.nn import (
    ACTIVATIONS,
    ContractingREN,
    EquilibriumLayer,
    GeneralREN,
    LipschitzREN,
    PassiveREN,
    rollout,
)
from r2dn_control.nn._implicit import ImplicitIOBlock
from r2dn_control.nn.equilibrium import solve_equilibrium
from r2dn_control.nn.iqc import SupplyRate
from r2dn_control.nn.ren import supply_terms

F64 = torch.float64
REN_CLASSES = [
    (ContractingREN, {}),
    (LipschitzREN, {"gamma": 2.0}),
    (GeneralREN, {"Q": -np.diag([1.0, 2.0]), "S": 0.3 * np.ones((2, 2)), "R": 2 * np.eye(2)}),
    (PassiveREN, {"input_passivity": 0.2}),
]
ids = [c.__name__ for c, _ in REN_CLASSES]


def strictly_lower(nv: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Random strictly lower-triangular D₁₁ with entries of size scale/√nv (lecun-like)."""
    g = torch.Generator().manual_seed(seed)
    return torch.tril(scale / nv**0.5 * torch.randn(nv, nv, generator=g, dtype=F64), -1)


def margins(model) -> tuple[float, float | None]:
    e = model.explicit(F64)
    ss = StateSpaceBlocks.from_explicit(e)
    metric, lam = e.metric.numpy(), e.multiplier.numpy()
    rate = model.contraction_rate
    contraction = relative_margin(ss, metric, lam, rate)
    if model.supply is None:
        return contraction, None
    s = model.supply
    return contraction, relative_margin(ss, metric, lam, rate, (s.Q.numpy(), s.S.numpy(),
                                                                s.R.numpy()))


# ------------------------------------------------------------------ equilibrium layer
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_equilibrium_residual_is_round_off(activation: str, scale: float) -> None:
    layer = EquilibriumLayer(strictly_lower(40, scale), ACTIVATIONS[activation])
    b = 2.0 * torch.randn(64, 40, dtype=F64, generator=torch.Generator().manual_seed(1))
    w = layer(b)
    assert w.shape == b.shape
    assert layer.residual(b, w).abs().max().item() < 1e-12
    # The loop really solves the implicit equation: the naive explicit guess w = σ(b) does not.
    assert layer.residual(b, ACTIVATIONS[activation](b)).abs().max().item() > 1e-3


def test_equilibrium_ignores_the_upper_triangle_in_forward_and_gradient() -> None:
    lower = strictly_lower(6, seed=3)
    full = (lower + torch.triu(torch.randn(6, 6, dtype=F64), 0)).requires_grad_(True)
    b = torch.randn(5, 6, dtype=F64)
    w = EquilibriumLayer(full, torch.tanh)(b)
    torch.testing.assert_close(w, EquilibriumLayer(lower, torch.tanh)(b), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(w.square().sum(), full)
    assert torch.all(torch.triu(grad) == 0) and torch.tril(grad, -1).abs().max() > 1e-3


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_implicit_gradient_equals_autograd_through_the_loop(activation: str) -> None:
    act = ACTIVATIONS[activation]
    d11 = strictly_lower(12, 3.0, seed=4).requires_grad_(True)
    b = torch.randn(9, 12, dtype=F64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    g = torch.randn(9, 12, dtype=F64, generator=torch.Generator().manual_seed(6))
    w = EquilibriumLayer(d11, act)(b)
    assert "Equilibrium" in type(w.grad_fn).__name__  # the custom IFT backward is in use
    implicit = torch.autograd.grad(w, (b, d11), g)
    reference = torch.autograd.grad(solve_equilibrium(d11, b, act), (b, d11), g)
    for got, want in zip(implicit, reference):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu"])
def test_implicit_gradient_passes_gradcheck(activation: str) -> None:
    act = ACTIVATIONS[activation]
    d11 = strictly_lower(4, seed=7).requires_grad_(True)
    b = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(8)).requires_grad_()
    assert torch.autograd.gradcheck(lambda b_, d_: EquilibriumLayer(d_, act)(b_), (b, d11))


def test_implicit_gradient_of_a_whole_ren_rollout_matches_the_reference_path() -> None:
    torch.manual_seed(0)
    model = LipschitzREN(2, 3, 7, 3, gamma=3.0, activation="tanh", dtype=F64)
    u = torch.randn(4, 10, 2, dtype=F64)
    x0 = torch.randn(4, 3, dtype=F64)
    params = list(model.parameters())

    def loss(reference: bool) -> list[torch.Tensor]:
        e = model.explicit()
        if reference:
            e = replace(e, network=replace(e.network, implicit_backward=False))
        y, x_final = rollout(e, u, x0)
        return torch.autograd.grad(y.sin().sum() + x_final.square().sum(), params)

    for got, want in zip(loss(False), loss(True)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_equilibrium_under_no_grad_float32_and_bad_input() -> None:
    d11 = strictly_lower(5).float().requires_grad_(True)
    layer = EquilibriumLayer(d11, torch.relu)
    with torch.no_grad():
        w = layer(torch.randn(2, 3, 5))  # leading dims are flattened and restored
    assert w.shape == (2, 3, 5) and w.dtype == torch.float32 and not w.requires_grad
    with pytest.raises(ValueError, match=r"last dimension 5, got shape \(2, 4\)"):
        layer(torch.randn(2, 4))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="square"):
        EquilibriumLayer(torch.zeros(3, 4), torch.relu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_equilibrium_on_cuda_matches_cpu() -> None:
    d11 = strictly_lower(16, seed=2)
    b = torch.randn(8, 16, dtype=F64)
    g = torch.randn(8, 16, dtype=F64)
    results = []
    for device in ("cpu", "cuda"):
        d, bb = d11.to(device).requires_grad_(True), b.to(device).requires_grad_(True)
        w = EquilibriumLayer(d, torch.tanh)(bb)
        grads = torch.autograd.grad(w, (bb, d), g.to(device))
        results.append([w.cpu(), *(t.cpu() for t in grads)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------ REN algebra
@pytest.mark.parametrize("cls, kw", REN_CLASSES, ids=ids)
def test_explicit_model_has_ren_structure(cls, kw) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, 5, 2, dtype=F64, **kw)
    e = model.explicit()
    assert e.D11 is not None and e.D11.shape == (5, 5)
    assert torch.all(torch.triu(e.D11) == 0)  # acyclic: strictly lower triangular
    assert e.network.D11 is e.D11
    assert e.multiplier.shape == (5,) and e.multiplier.min() > 0  # Λ = ½diag(H₂₂) ≻ 0
    assert torch.linalg.eigvalsh(e.metric).min() > 0
    contraction, dissipation = margins(model)
    assert contraction > 0 and (dissipation is None or dissipation > 0)


def test_implied_certificate_needs_the_diagonal_multiplier() -> None:
    """The LMI check is sharp enough to fail: a scalar or scaled-down Λ breaks it."""
    torch.manual_seed(3)
    model = ContractingREN(1, 3, 6, 1, dtype=F64)
    e = model.explicit()
    ss = StateSpaceBlocks.from_explicit(e)
    lam = e.multiplier.numpy()
    assert relative_margin(ss, e.metric.numpy(), lam) > 0
    assert relative_margin(ss, e.metric.numpy(), 0.01 * lam) < 0


@pytest.mark.parametrize("gamma", [0.5, 4.0])
def test_supply_terms_reduce_to_the_lipschitz_formulas(gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    nx, nv, nu, ny = 2, 3, 2, 3
    io = ImplicitIOBlock(*(torch.randn(*s, dtype=F64, generator=g)
                           for s in [(nx, nu), (ny, nx), (nv, nu), (ny, nv)]),
                         D22=0.1 * torch.randn(ny, nu, dtype=F64, generator=g))
    top_left, ncal, r1 = supply_terms(io, SupplyRate.lipschitz(gamma, nu, ny))
    torch.testing.assert_close(r1, gamma * torch.eye(nu, dtype=F64) - io.D22.T @ io.D22 / gamma)
    out = torch.cat([io.C2, io.D21], 1)
    torch.testing.assert_close(top_left, out.T @ out / gamma)
    # Ĉ₂ = D₂₂ᵀQC₂ = −D₂₂ᵀC₂/γ, D̂₂₁ = −D₂₂ᵀD₂₁/γ − D̂₁₂ᵀ, then B̂₂.
    want = torch.cat([(-io.D22.T @ io.C2 / gamma).T,
                      (-io.D22.T @ io.D21 / gamma - io.D12_hat.T).T, io.B2_hat], 0)
    torch.testing.assert_close(ncal, want)


@pytest.mark.parametrize("nu, ny", [(1, 3), (2, 4), (3, 1)])
@pytest.mark.parametrize("cls", [LipschitzREN, GeneralREN])
def test_more_outputs_than_inputs_works(cls, nu: int, ny: int) -> None:
    """docs/theory.md §2: the reference code's I_ny in the contraction builder crashes when ny > nu."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    kw = {"gamma": 2.0} if cls is LipschitzREN else {
        "Q": -np.eye(ny), "S": rng.normal(size=(nu, ny)), "R": 20.0 * np.eye(nu)}
    model = cls(nu, 2, 4, ny, dtype=F64, **kw)
    with torch.no_grad():
        for p in model.N22.parameters():
            p.normal_()  # move D₂₂ away from its centre
    y, _ = model(torch.randn(3, 5, nu, dtype=F64))
    assert y.shape == (3, 5, ny)
    e = model.explicit()
    assert e.D22.shape == (ny, nu)
    if cls is LipschitzREN:
        assert 1e-3 < torch.linalg.matrix_norm(e.D22, 2) < 2.0
    contraction, dissipation = margins(model)
    assert contraction > 0 and dissipation > 0


def test_lipschitz_feedthrough_options() -> None:
    torch.manual_seed(2)
    centre = LipschitzREN(2, 3, 4, 2, gamma=2.0, full_d22=False).explicit(F64)
    assert centre.D22.abs().max() == 0
    full = LipschitzREN(2, 3, 4, 2, gamma=2.0)
    assert full.explicit(F64).D22.abs().max() < 1e-12  # N starts at 0 ...
    with torch.no_grad():
        for p in full.N22.parameters():
            p.normal_()
    assert full.explicit(F64).D22.abs().max() > 1e-3  # ... but is learnable


def test_passive_feedthrough_makes_r1_positive_definite() -> None:
    torch.manual_seed(0)
    nu = 3
    model = PassiveREN(nu, 2, 4, nu, input_passivity=0.7, dtype=F64)
    d22 = model.explicit().D22
    r1 = d22 + d22.T - 1.4 * torch.eye(nu, dtype=F64)
    assert torch.linalg.eigvalsh(r1).min() > 0
    x3 = model.X3.detach()
    torch.testing.assert_close(r1, 2 * (x3.T @ x3) + 2 * model.eps * torch.eye(nu, dtype=F64))


# ------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("cls, kw", REN_CLASSES, ids=ids)
@pytest.mark.parametrize("rate", [1.0, 0.9, 0.5])
def test_long_memory_eigenvalues_sit_just_below_the_rate(cls, kw, rate: float) -> None:
    torch.manual_seed(0)
    model = cls(2, 8, 6, 2, init="long_memory", contraction_rate=rate, dtype=F64, **kw)
    e = model.explicit()
    eig = torch.linalg.eigvals(e.A).abs()
    assert eig.max() <= rate * (1 + 1e-9)
    assert eig.min() >= 0.95 * rate * (1 - 1e-9)
    # No feedback through the equilibrium layer at init: B̂₁ = Ĉ₁ = 0.
    assert e.B1.abs().max() < 1e-10 and e.C1.abs().max() < 1e-10
    assert margins(model)[0] >= 0


def test_identity_output_and_init_output_zero() -> None:
    model = ContractingREN(2, 4, 3, 4, identity_output=True, dtype=F64)
    x0 = torch.randn(3, 4, dtype=F64)
    y, _ = model(torch.randn(3, 1, 2, dtype=F64), x0)
    torch.testing.assert_close(y[:, 0], x0 + model.by)
    for cls, kw in REN_CLASSES:
        zero = cls(2, 3, 4, 2, init_output_zero=True, dtype=F64, **kw)
        e = zero.explicit()
        assert e.C2.abs().max() == 0 and e.D21.abs().max() == 0 and e.by.abs().max() == 0


# ------------------------------------------------------------------ calling
@pytest.mark.parametrize("cls, kw", REN_CLASSES, ids=ids)
def test_shapes_unbatched_and_state_carry(cls, kw) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, 5, 2, dtype=F64, activation="tanh", **kw)
    u = torch.randn(4, 9, 2, dtype=F64)
    x0 = torch.randn(4, 3, dtype=F64)
    y, x_final = model(u, x0)
    assert y.shape == (4, 9, 2) and x_final.shape == (4, 3)
    y1, x1 = model(u[1], x0[1])
    assert y1.shape == (9, 2) and x1.shape == (3,)
    torch.testing.assert_close(y1, y[1], rtol=1e-12, atol=1e-12)
    y_a, x_mid = model(u[:, :4], x0)
    y_b, x_end = model(u[:, 4:], x_mid)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_end, x_final, rtol=1e-12, atol=1e-12)
    y_t, x_next = model.step(x0, u[:, 0])
    torch.testing.assert_close(y_t, y[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_next, model(u[:, :1], x0)[1], rtol=1e-12, atol=1e-12)


def test_float32_model_trains_every_parameter() -> None:
    torch.manual_seed(0)
    model = GeneralREN(2, 3, 5, 2, Q=-np.eye(2), S=np.zeros((2, 2)), R=np.eye(2),
                       activation="tanh")
    y, x_final = model(torch.randn(3, 6, 2))
    assert y.dtype == torch.float32
    (y.square().sum() + x_final.square().sum()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.numel() and (p.grad is None or not p.grad.any())]
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: LipschitzREN(2, 3, 4, 2, gamma=0.0), ValueError, r"gamma must be .*> 0, got 0"),
        (lambda: LipschitzREN(2, 3, 4, 2, gamma=-2.0), ValueError, "gamma"),
        (lambda: LipschitzREN(2, 3, 4, 2, gamma="2"), TypeError, "gamma"),
        (lambda: ContractingREN(2, 3, 4, 2, contraction_rate=0.0), ValueError,
         r"contraction_rate must be in \(0, 1\], got 0"),
        (lambda: ContractingREN(2, 3, 4, 2, contraction_rate=1.5), ValueError, "contraction_rate"),
        (lambda: ContractingREN(2, 3, 0, 2), ValueError, "features"),
        (lambda: ContractingREN(2, 3, 4, 2, activation="gelu"), ValueError, "activation"),
        (lambda: ContractingREN(2, 3, 4, 2, init="zeros"), ValueError, "init"),
        (lambda: ContractingREN(2, 3, 4, 2, hidden=(8,)), TypeError, "hidden"),
        (lambda: ContractingREN(2, 3, 4, 2, identity_output=True), ValueError,
         "output_size == state_size, got output_size=2, state_size=3"),
        (lambda: PassiveREN(2, 3, 4, 3), ValueError,
         "input_size == output_size, got input_size=2, output_size=3"),
        (lambda: PassiveREN(2, 3, 4, 2, input_passivity=-1.0), ValueError, "input_passivity"),
        (lambda: GeneralREN(2, 3, 4, 2, Q=np.eye(2), S=np.zeros((2, 2)), R=np.eye(2)),
         ValueError, "negative definite"),
        (lambda: GeneralREN(2, 3, 4, 2, Q=-np.eye(2), S=3 * np.eye(2), R=-20 * np.eye(2)),
         ValueError, "positive definite"),
        (lambda: GeneralREN(2, 3, 4, 2, Q=-np.eye(3), S=np.zeros((2, 2)), R=np.eye(2)),
         ValueError, r"Q must have shape \(2, 2\), got \(3, 3\)"),
    ],
)
def test_constructors_reject_bad_arguments(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_forward_rejects_bad_input() -> None:
    model = ContractingREN(2, 3, 4, 2)
    with pytest.raises(ValueError, match=r"input = 2, got \(4, 5, 3\)"):
        model(torch.randn(4, 5, 3))
    with pytest.raises(TypeError, match="dtype"):
        model(torch.randn(4, 5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"x0 must have shape \(4, 3\)"):
        model(torch.randn(4, 5, 2), torch.zeros(4, 2))
