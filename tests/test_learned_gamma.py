"""``gamma="learn"``: a trained Lipschitz bound, its gradient, checkpoints and argument errors.

The guarantee itself (the incremental inequality at the model's current γ after random
parameter perturbation) is the ``*-learnedγ`` families of ``test_certificates_property.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from r2dn_control.nn import ContractingR2DN, ContractingREN, LipschitzR2DN, LipschitzREN
from r2dn_control.nn.checkpoint import load_model, save_model

LIPSCHITZ = [LipschitzR2DN, LipschitzREN]


def _model(cls, **kw):
    torch.manual_seed(0)
    return cls(2, 3, 4, 2, dtype=torch.float64, **kw)


@pytest.mark.parametrize("cls", LIPSCHITZ, ids=lambda c: c.__name__)
def test_learned_gamma_starts_at_gamma_init_and_has_a_gradient(cls) -> None:
    model = _model(cls, gamma="learn", gamma_init=2.5)
    gamma = model.gamma_bound()
    assert model.learns_gamma
    assert gamma.dim() == 0 and gamma.dtype == torch.float64
    assert abs(gamma.item() - 2.5) <= 1e-12 and model.gamma == pytest.approx(2.5, rel=1e-12)
    y, _ = model(torch.randn(3, 7, 2, dtype=torch.float64))
    (y.pow(2).sum() + gamma).backward()
    grad = model.lipschitz_bound.log_gamma.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs() > 0
    # The supply rate follows the parameter: Q = −I/γ, R = γI at the new value.
    with torch.no_grad():
        model.lipschitz_bound.log_gamma.fill_(math.log(0.3))
    assert model.gamma == pytest.approx(0.3, rel=1e-12)
    assert torch.allclose(model.supply.R, 0.3 * torch.eye(2, dtype=torch.float64))
    assert torch.allclose(model.supply.Q, -torch.eye(2, dtype=torch.float64) / 0.3)


@pytest.mark.parametrize("cls", LIPSCHITZ, ids=lambda c: c.__name__)
def test_learned_gamma_matches_the_fixed_model_at_the_same_value(cls) -> None:
    """Same seed, γ = γ_init: the learned and the fixed model are the same function."""
    learned, fixed = _model(cls, gamma="learn", gamma_init=0.7), _model(cls, gamma=0.7)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items()
                           if not k.startswith("lipschitz_bound.")})
    u = torch.randn(2, 9, 2, dtype=torch.float64)
    torch.testing.assert_close(learned(u)[0], fixed(u)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", LIPSCHITZ, ids=lambda c: c.__name__)
def test_fixed_gamma_has_no_parameter_and_an_exact_bound(cls) -> None:
    model = _model(cls, gamma=0.1)
    assert not model.learns_gamma
    assert model.gamma_bound().item() == 0.1 and model.gamma == 0.1
    assert not any(k.startswith("lipschitz_bound") for k in model.state_dict())
    assert model.float().gamma_bound().item() == 0.1  # no float32 round-off of γ


@pytest.mark.parametrize("cls", LIPSCHITZ, ids=lambda c: c.__name__)
def test_learned_gamma_round_trips_a_checkpoint(cls, tmp_path) -> None:
    model = _model(cls, gamma="learn", gamma_init=1.5)
    with torch.no_grad():
        model.lipschitz_bound.log_gamma.add_(0.4)
    assert model.init_kwargs["gamma"] == "learn" and model.init_kwargs["gamma_init"] == 1.5
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.learns_gamma and loaded.gamma == model.gamma
    u = torch.randn(2, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(u)[0], model(u)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [ContractingR2DN, ContractingREN], ids=lambda c: c.__name__)
def test_non_lipschitz_families_have_no_gamma(cls) -> None:
    model = _model(cls)
    assert model.gamma_bound() is None and model.gamma is None and not model.learns_gamma


@pytest.mark.parametrize("cls", LIPSCHITZ, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"gamma": "learned"}, TypeError, "gamma must be a float > 0 or 'learn'"),
    ({"gamma": "learn", "gamma_init": 0.0}, ValueError, "gamma_init must be a finite float > 0"),
    ({"gamma": "learn", "gamma_init": "1"}, TypeError, "gamma_init must be a positive float"),
    ({"gamma": -1.0}, ValueError, "gamma must be a finite float > 0"),
])
def test_bad_gamma_arguments_are_named(cls, kw, error, match) -> None:
    with pytest.raises(error, match=match):
        cls(2, 3, 4, 2, **kw)
