"""`flax_lecun_init_`: the reference flax code's initial distribution, as an option.

1. The draw: every redrawn matrix has std 1/√rows (the formula of the module docstring),
   entries within the ±2/0.8796 truncation, the truncated-normal shape; zero parameters stay
   zero; the magnitudes are reset to the new norms.
2. A model drawn this way is still contracting: the implied certificate satisfies the LMI of
   docs/theory.md §4 in float64, and on random trajectory pairs
   ‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫 itself (hypothesis).
3. The scaling experiment's ``r2dn_init`` / ``r2dn_output_layer`` options build what they say;
   bad inputs raise clear errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_certificates_property import LMI_TOL, implied_margins

from r2dn_control.experiments import scaling
from r2dn_control.nn import LBDN, ContractingR2DN, ContractingREN, SandwichLayer
from r2dn_control.nn._algebra import frobenius
from r2dn_control.nn.flax_init import TRUNCATED_STD, flax_lecun_init_, flax_lecun_normal_

REDRAWN = ("X", "Y", "B1_hat", "C1", "B2", "D12", "C2", "D21")


def test_truncated_std_is_that_of_a_standard_normal_truncated_at_two() -> None:
    # Var of N(0,1) | |z| ≤ 2: 1 − 2·2φ(2)/(2Φ(2) − 1).
    phi = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert TRUNCATED_STD == pytest.approx(math.sqrt(1 - 4 * phi / mass), rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 200), (40, 25), (1, 5000)])
def test_one_matrix_has_std_one_over_root_rows_and_is_truncated(shape) -> None:
    g = torch.Generator().manual_seed(0)
    rows = shape[0]
    draws = torch.stack([flax_lecun_normal_(torch.empty(shape, dtype=torch.float64), g)
                         for _ in range(40)])
    n = draws.numel()
    std = 1 / math.sqrt(rows)
    # The sample std of n draws has a relative standard error ≈ √(κ/(4n)); κ − 1 < 2 here.
    assert draws.std().item() == pytest.approx(std, rel=6 * math.sqrt(2 / (4 * n)))
    assert draws.abs().max().item() <= 2 * std / TRUNCATED_STD * (1 + 1e-12)
    # Shape of the truncated normal: P(|z| < σ_pre) = erf(1/√2) / erf(√2) ≈ 0.7153.
    within = (draws.abs() < std / TRUNCATED_STD).double().mean().item()
    expected = math.erf(1 / math.sqrt(2)) / math.erf(math.sqrt(2))
    assert within == pytest.approx(expected, abs=6 * math.sqrt(expected * (1 - expected) / n))


def _model(seed: int, **kw) -> ContractingR2DN:
    torch.manual_seed(seed)
    base = dict(hidden=(6, 4), dtype=torch.float64)
    return flax_lecun_init_(ContractingR2DN(3, 2, 5, 2, **{**base, **kw}))


def test_every_parameter_std_matches_the_formula_over_draws() -> None:
    models = [_model(s) for s in range(300)]
    named = [dict(m.named_parameters()) for m in models]
    first = named[0]
    expected = {name: 1 / math.sqrt(first[name].shape[-2]) for name in REDRAWN}
    for k, layer in enumerate(models[0].network.sandwich_layers):
        expected[f"network.layers.{k}.weight"] = 1 / math.sqrt(layer.in_features + layer.out_features)
    for name, std in expected.items():
        pooled = torch.stack([p[name].detach() for p in named])
        n = pooled.numel()
        assert pooled.std().item() == pytest.approx(std, rel=6 * math.sqrt(2 / (4 * n))), name
        assert pooled.abs().max().item() <= 2 * std / TRUNCATED_STD * (1 + 1e-12), name
    for m in models[:20]:  # zero-initialised parameters stay zero; magnitudes follow the draw
        for name in ("bx", "bv", "by", "D22"):
            assert torch.count_nonzero(getattr(m, name)) == 0, name
        assert m.polar_scale.item() == pytest.approx(frobenius(m.X, m.eps).item(), rel=1e-14)
        for layer in m.network.sandwich_layers:
            assert layer.scale.item() == pytest.approx(
                frobenius(layer.weight, layer.eps).item(), rel=1e-14)
            if layer.log_psi is not None:
                assert torch.count_nonzero(layer.log_psi) == 0


def test_identity_and_zero_outputs_are_left_alone() -> None:
    ident = _model(1, identity_output=True)
    assert torch.equal(ident.C2, torch.eye(2, dtype=torch.float64))
    assert torch.count_nonzero(ident.D21) == 0
    zero = _model(2, init_output_zero=True)
    assert torch.count_nonzero(zero.C2) == 0 and torch.count_nonzero(zero.D21) == 0


def test_lbdn_and_layer_are_redrawn_and_keep_their_function_class() -> None:
    torch.manual_seed(0)
    net = LBDN(4, 3, (7,), dtype=torch.float64)
    before = [layer.weight.clone() for layer in net.sandwich_layers]
    assert flax_lecun_init_(net) is net
    for old, layer in zip(before, net.sandwich_layers):
        assert not torch.equal(old, layer.weight)
        assert layer.scale.item() == pytest.approx(frobenius(layer.weight, layer.eps).item())
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    gain = (net(x) - net(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    assert gain.max().item() <= 1 + 1e-12
    layer = SandwichLayer(3, 2, dtype=torch.float64)
    assert flax_lecun_init_(layer) is layer


@given(nu=st.integers(1, 3), nx=st.integers(1, 5), nv=st.integers(1, 6),
       hidden=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       polar=st.booleans(), rate=st.sampled_from([1.0, 0.95, 0.7]),
       activation=st.sampled_from(["relu", "tanh"]), seed=st.integers(0, 2**31 - 1))
def test_a_flax_drawn_model_is_contracting(nu, nx, nv, hidden, polar, rate, activation,
                                           seed) -> None:
    torch.manual_seed(seed)
    model = flax_lecun_init_(ContractingR2DN(
        nu, nx, nv, nu, hidden=tuple(hidden), polar=polar, contraction_rate=rate,
        activation=activation, dtype=torch.float64))
    contraction, _ = implied_margins(model)
    assert contraction >= -LMI_TOL, f"contraction LMI violated: margin {contraction:.3e}"
    g = torch.Generator().manual_seed(seed)
    batch, steps = 8, 20
    u = torch.randn(batch, steps, nu, generator=g, dtype=torch.float64)
    xa = 3 * torch.randn(batch, nx, generator=g, dtype=torch.float64)
    xb = 3 * torch.randn(batch, nx, generator=g, dtype=torch.float64)
    metric = model.explicit(torch.float64).metric

    def pnorm(dx: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.einsum("...i,ij,...j->...", dx, metric, dx).clamp_min(0))

    with model.frozen():
        for t in range(steps):
            before = pnorm(xa - xb)
            xa, xb = model.step(xa, u[:, t])[1], model.step(xb, u[:, t])[1]
            size = 1 + pnorm(xa) + pnorm(xb)  # float64 round-off scale of the new states
            assert torch.all(pnorm(xa - xb) <= rate * before + 1e-9 * size), t


def test_bad_inputs_name_what_was_expected() -> None:
    with pytest.raises(TypeError, match="expects a ContractingR2DN, LBDN or SandwichLayer"):
        flax_lecun_init_(ContractingREN(1, 2, 3, 1))
    with pytest.raises(ValueError, match="init='random', got init='long_memory'"):
        flax_lecun_init_(ContractingR2DN(1, 2, 3, 1, init="long_memory"))
    with pytest.raises(ValueError, match=r"needs a matrix \(2-D tensor\), got shape \(4,\)"):
        flax_lecun_normal_(torch.empty(4))
    with pytest.raises(ValueError, match="r2dn_init must be one of"):
        scaling.ScalingConfig(r2dn_init="xavier")
    with pytest.raises(ValueError, match="r2dn_output_layer must be 'linear' or 'sandwich'"):
        scaling.ScalingConfig(r2dn_output_layer="dense")


@pytest.mark.parametrize("r2dn_init", scaling.R2DN_INITS)
@pytest.mark.parametrize("output_layer", ["linear", "sandwich"])
def test_scaling_builds_its_r2dn_with_the_configured_init(r2dn_init: str,
                                                          output_layer: str) -> None:
    config = scaling.ScalingConfig(r2dn_widths=(4,), r2dn_features=3, r2dn_layers=2,
                                   r2dn_init=r2dn_init, r2dn_output_layer=output_layer)
    torch.manual_seed(5)
    model = scaling.make_model(config, "r2dn", 4)
    assert model.network.output_layer == output_layer
    torch.manual_seed(5)
    reference = ContractingR2DN(1, 1, 3, 1, hidden=(4, 4), identity_output=True, init="random",
                                output_layer=output_layer)
    if r2dn_init == "flax":
        flax_lecun_init_(reference)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("staircase, expected", [(True, [0, 0, 1, 1, 2]),
                                                  (False, [0.0, 0.5, 1.0, 1.5, 2.0])])
def test_scaling_decay_is_stepped_or_continuous(staircase: bool, expected) -> None:
    assert [scaling.decades(k, 4, staircase) for k in (0, 2, 4, 6, 8)] == expected
