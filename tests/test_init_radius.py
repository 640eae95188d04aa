"""``init_radius``: long-memory initial poles at a radius r ≤ ᾱ below the certified rate ᾱ.

For every family of ``families.FAMILIES`` and hypothesis draws of ᾱ and r ≤ ᾱ (float64): the
initial eigenvalues of A lie in [0.95 r, r] (not at ᾱ), and the implied certificate still
satisfies the LMIs of docs/theory.md §4 at ᾱ itself (the rate the model is certified for).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import FAMILIES, Family, Sizes
from hypothesis import given
from hypothesis import strategies as st
from test_certificates_property import LMI_TOL, implied_margins

from r2dn_control.nn import ContractingR2DN, ContractingREN
from r2dn_control.nn.checkpoint import load_model, save_model

EIG_TOL = 1e-9


def build(family: Family, seed: int, nx: int, **common):
    torch.manual_seed(seed)
    nu = ny = 2
    return family.build(Sizes(nu, nx, 3, ny, (4,)), np.random.default_rng(seed),
                        {"init": "long_memory", "dtype": torch.float64, **common})


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@given(rate=st.floats(0.3, 1.0), share=st.floats(0.05, 1.0), nx=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_initial_poles_sit_at_the_radius_and_the_certificate_holds_at_the_rate(
        family: Family, rate: float, share: float, nx: int, seed: int) -> None:
    radius = share * rate
    model = build(family, seed, nx, contraction_rate=rate, init_radius=radius)
    assert model.contraction_rate == rate and model.init_radius == radius
    eig = torch.linalg.eigvals(model.explicit(torch.float64).A).abs()
    assert eig.max() <= radius * (1 + EIG_TOL), (eig, radius)
    assert eig.min() >= 0.95 * radius * (1 - EIG_TOL), (eig, radius)
    contraction, dissipation = implied_margins(model)
    assert contraction >= -LMI_TOL, f"contraction LMI at ᾱ violated: margin {contraction:.3e}"
    if dissipation is not None:
        assert dissipation >= -LMI_TOL, f"(Q,S,R) LMI violated: margin {dissipation:.3e}"


@pytest.mark.parametrize("cls", [ContractingR2DN, ContractingREN])
def test_default_radius_is_the_rate_and_draws_the_same_initial_state(cls) -> None:
    torch.manual_seed(3)
    default = cls(2, 5, 3, 1, init="long_memory", contraction_rate=0.9, dtype=torch.float64)
    torch.manual_seed(3)
    explicit = cls(2, 5, 3, 1, init="long_memory", contraction_rate=0.9, init_radius=0.9,
                   dtype=torch.float64)
    assert default.init_radius == 0.9
    for (name, p), q in zip(default.state_dict().items(), explicit.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_checkpoint_keeps_the_radius(tmp_path) -> None:
    torch.manual_seed(0)
    model = ContractingR2DN(1, 4, 3, 1, hidden=(4,), init="long_memory", contraction_rate=0.99,
                            init_radius=0.9, dtype=torch.float64)
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.init_radius == 0.9 and loaded.contraction_rate == 0.99
    u = torch.randn(2, 6, 1, dtype=torch.float64)
    torch.testing.assert_close(loaded(u)[0], model(u)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [ContractingR2DN, ContractingREN])
@pytest.mark.parametrize("kwargs, error, match", [
    ({"init": "long_memory", "contraction_rate": 0.9, "init_radius": 0.95}, ValueError,
     "at most contraction_rate = 0.9, got 0.95"),
    ({"init": "random", "init_radius": 0.5}, ValueError, "only applies to init='long_memory'"),
    ({"init": "long_memory", "init_radius": 0.0}, ValueError, r"init_radius must be in \(0, 1\]"),
    ({"init": "long_memory", "init_radius": True}, TypeError, "init_radius must be a float"),
    ({"init": "long_memory", "init_radius": "0.5"}, TypeError, "init_radius must be a float"),
])
def test_bad_radius_is_rejected(cls, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        cls(2, 3, 3, 1, **kwargs)
