"""By-construction guarantees, as properties over random families, sizes and parameters.

For every family in ``families.FAMILIES`` and every hypothesis draw (sizes incl. nu != ny and
nv < nx, parameter scales 0.1–10, both inits, polar on/off, ᾱ ≤ 1, float32/float64):

1. the certificate implied by the parameterization (𝒫 = EᵀP⁻¹E and its multiplier) satisfies
   the LMI of docs/theory.md §4 in float64: contraction (4a) for all, (Q,S,R) (4b) where a supply rate
   is prescribed;
2. on random pairs of trajectories the incremental inequalities themselves hold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import FAMILIES, Family, Sizes
from hypothesis import given
from hypothesis import strategies as st

from r2dn_control.certify.lmi import StateSpaceBlocks, relative_margin

LMI_TOL = 1e-9  # relative to max(1, max|𝒫|); float64 round-off is ~1e-14 here
TRAJ_TOL = 1e-9


@st.composite
def drawn_models(draw, family: Family):
    nu = draw(st.integers(1, 4))
    ny = nu if family.square_io else draw(st.integers(1, 4))
    nx = draw(st.integers(1, 6))
    nv = draw(st.integers(1, 6))
    hidden = tuple(draw(st.lists(st.integers(1, 8), max_size=2)))
    common = dict(
        init=draw(st.sampled_from(["random", "long_memory"])),
        polar=draw(st.booleans()),
        contraction_rate=draw(st.sampled_from([1.0, 0.99, 0.9, 0.5])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        activation=draw(st.sampled_from(["relu", "tanh"])),
    )
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    perturb = draw(st.sampled_from(["none", "scale", "resample"]))
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = family.build(Sizes(nu, nx, nv, ny, hidden), rng, common)
    with torch.no_grad():
        for p in model.parameters():
            if perturb == "scale":
                p.mul_(scale)
            elif perturb == "resample":
                p.copy_(scale * torch.randn_like(p))
    return model


def supply_matrices(model):
    s = model.supply
    return None if s is None else (s.Q.numpy(), s.S.numpy(), s.R.numpy())


def implied_margins(model) -> tuple[float, float | None]:
    e = model.explicit(torch.float64)
    ss = StateSpaceBlocks.from_explicit(e)
    metric, mult = e.metric.cpu().numpy(), e.multiplier.cpu().numpy()
    rate = model.contraction_rate
    contraction = relative_margin(ss, metric, mult, rate)
    supply = supply_matrices(model)
    dissipation = None if supply is None else relative_margin(ss, metric, mult, rate, supply)
    return contraction, dissipation


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@given(data=st.data())
def test_implied_certificate_holds(family: Family, data) -> None:
    model = data.draw(drawn_models(family))
    contraction, dissipation = implied_margins(model)
    assert contraction >= -LMI_TOL, f"contraction LMI violated: margin {contraction:.3e}"
    if dissipation is not None:
        assert dissipation >= -LMI_TOL, f"(Q,S,R) LMI violated: margin {dissipation:.3e}"


def _states(model, u: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (B, T, ny) and states x_0..x_T (B, T+1, nx) via ``step``."""
    xs, ys = [x0], []
    with model.frozen():
        for t in range(u.shape[1]):
            y, x = model.step(xs[-1], u[:, t])
            xs.append(x)
            ys.append(y)
    return torch.stack(ys, 1), torch.stack(xs, 1)


def _summand_size(explicit, xs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per step (B, T), a bound on the magnitude of the terms summed to compute x_{t+1}.

    x⁺ = A x + B₁ w + B₂ u + b_x with w = φ(b) (for a REN φ solves w = σ(D₁₁w + b)),
    b = C₁ x + D₁₂ u + b_v. Float64 evaluates each of them to a relative eps of its summands'
    magnitudes, so the error in x⁺ is a modest multiple of eps times the value returned here.
    An error δb in b moves w by at most ‖(I − |D₁₁|)⁻¹‖₂ ‖δb‖ (σ is 1-Lipschitz and D₁₁
    strictly lower triangular, so |(I − J D₁₁)⁻¹| ≤ (I − |D₁₁|)⁻¹ for every 0 ≤ J ≤ I).
    """
    def norm(m: torch.Tensor) -> float:
        return torch.linalg.matrix_norm(m, 2).item()

    x = xs[:, :-1]
    b = x @ explicit.C1.T + u @ explicit.D12.T + explicit.bv
    w = explicit.network(b.reshape(-1, b.shape[-1])).reshape(b.shape)
    xn, un, wn, bn = x.norm(dim=-1), u.norm(dim=-1), w.norm(dim=-1), b.norm(dim=-1)
    d11 = explicit.D11
    if d11 is None:
        amplify, solve = 1.0, 0.0
    else:
        nv = d11.shape[0]
        lower = torch.tril(d11, -1).abs()
        amplify = norm(torch.linalg.inv(torch.eye(nv, dtype=lower.dtype) - lower))
        solve = norm(lower)
    b_terms = norm(explicit.C1) * xn + norm(explicit.D12) * un + explicit.bv.norm() + bn
    w_error = amplify * (b_terms + solve * wn + wn)
    return (norm(explicit.A) * xn + norm(explicit.B1) * (wn + w_error) + norm(explicit.B2) * un
            + explicit.bx.norm())


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@given(data=st.data())
def test_incremental_inequalities_on_trajectories(family: Family, data) -> None:
    model = data.draw(drawn_models(family)).double()
    batch, steps = 6, 25
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    nu, nx = model.input_size, model.state_size
    x_scale = data.draw(st.sampled_from([0.1, 1.0, 10.0]))
    u1 = torch.randn(batch, steps, nu, generator=g, dtype=torch.float64)
    u2 = u1 + torch.randn(batch, steps, nu, generator=g, dtype=torch.float64) * data.draw(
        st.sampled_from([0.0, 0.01, 1.0]))
    xa = x_scale * torch.randn(batch, nx, generator=g, dtype=torch.float64)
    xb = x_scale * torch.randn(batch, nx, generator=g, dtype=torch.float64)
    explicit = model.explicit(torch.float64)
    metric = explicit.metric
    # The LMI test above accepts λ_min(M) ≥ −LMI_TOL·max(1, max|𝒫|); per step that allows
    # V(Δx⁺) − ᾱ²V(Δx) − s(Δu, Δy) up to LMI_TOL·max(1, max|𝒫|)·‖(Δx, Δw, Δu)‖², which is what
    # float64 can resolve when 𝒫 is badly conditioned (draws reach cond(𝒫) ≈ 1e16).
    lmi_slack = LMI_TOL * max(1.0, metric.abs().max().item())
    c1_norm = torch.linalg.matrix_norm(explicit.C1, 2).item()
    d12_norm = torch.linalg.matrix_norm(explicit.D12, 2).item()

    def pnorm(dx: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.einsum("...i,ij,...j->...", dx, metric, dx).clamp_min(0))

    def xi_squared(dx: torch.Tensor, du: torch.Tensor) -> torch.Tensor:
        """An upper bound on ‖(Δx, Δw, Δu)‖² per step, using ‖Δw‖ ≤ ‖Δv‖ = ‖C₁Δx + D₁₂Δu‖."""
        nx_, nu_ = dx.norm(dim=-1), du.norm(dim=-1)
        return nx_**2 + (c1_norm * nx_ + d12_norm * nu_) ** 2 + nu_**2

    # Contraction: same input, different initial states.
    _, xs1 = _states(model, u1, xa)
    _, xs2 = _states(model, u1, xb)
    dx = xs1 - xs2
    dist = pnorm(dx)  # (B, T+1)
    # Round-off: each computed state carries an absolute error of order eps times the size of
    # the *summands* of its update (not of the result, which can cancel), in the 𝒫-norm up to
    # √λ_max(𝒫) times that (draws reach cond(𝒫) ≈ 1e16, e.g. a learned γ at its 1e-10 floor).
    root_lmax = torch.linalg.eigvalsh(metric).max().clamp_min(0).sqrt()
    size = 1 + root_lmax * (_summand_size(explicit, xs1, u1) + _summand_size(explicit, xs2, u1))
    rate = model.contraction_rate
    allowed = torch.sqrt((rate * dist[:, :-1]) ** 2
                         + lmi_slack * xi_squared(dx[:, :-1], torch.zeros_like(dx[:, :-1, :1])))
    assert torch.all(dist[:, 1:] <= allowed + TRAJ_TOL * size), (
        f"contraction violated: worst excess {(dist[:, 1:] - allowed).max():.3e}"
    )

    if model.supply is None:
        return
    # Dissipation: different inputs and initial states; Σ s(Δu, Δy) ≥ −V(Δx₀).
    y1, xs1 = _states(model, u1, xa)
    y2, xs2 = _states(model, u2, xb)
    du, dy = u1 - u2, y1 - y2
    v0 = pnorm(xa - xb) ** 2
    slack = lmi_slack * xi_squared(xs1[:, :-1] - xs2[:, :-1], du).sum(1)
    supplied = model.supply.evaluate(du, dy).sum(1)
    scale = 1 + v0 + (du**2).sum((1, 2)) * model.supply.R.abs().max() + (dy**2).sum((1, 2))
    assert torch.all(supplied >= -v0 - slack - TRAJ_TOL * scale), "(Q,S,R) dissipation violated"
    gamma = getattr(model, "gamma", None)
    if gamma is not None:
        lhs = dy.pow(2).sum((1, 2)).sqrt()
        rhs = gamma * du.pow(2).sum((1, 2)).sqrt() + torch.sqrt(gamma * (v0 + slack))
        assert torch.all(lhs <= rhs * (1 + 1e-9) + TRAJ_TOL), (
            f"Lipschitz bound violated: max ratio {(lhs / rhs).max().item():.6f}"
        )


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_lmi_check_rejects_an_unstable_model(family: Family) -> None:
    """The check can fail: rescale A to spectral radius 1.2 and the implied certificate breaks."""
    torch.manual_seed(0)
    sizes = Sizes(2, 3, 4, 2, (4,))
    model = family.build(sizes, np.random.default_rng(0), {"dtype": torch.float64})
    e = model.explicit(torch.float64)
    radius = torch.linalg.eigvals(e.A).abs().max()
    ss = StateSpaceBlocks.from_explicit(e)
    ss = StateSpaceBlocks(**{**ss.__dict__, "A": ss.A * (1.2 / radius.item())})
    assert relative_margin(ss, e.metric.numpy(), e.multiplier.numpy()) < -1e-6


def test_lmi_check_rejects_a_gain_below_the_prescribed_one() -> None:
    """A Lipschitz R2DN's implied certificate proves γ, not γ/10."""
    from r2dn_control.nn import LipschitzR2DN

    torch.manual_seed(1)
    model = LipschitzR2DN(2, 3, 4, 2, gamma=2.0, full_d22=True, dtype=torch.float64)
    e = model.explicit(torch.float64)
    ss = StateSpaceBlocks.from_explicit(e)
    gamma = 0.2
    supply = (-np.eye(2) / gamma, np.zeros((2, 2)), gamma * np.eye(2))
    assert relative_margin(ss, e.metric.numpy(), 1.0, 1.0, supply) < -1e-6
