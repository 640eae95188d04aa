"""Certificates (issue 4): tiers agree, bounds are sound, and bad models are never certified."""

from __future__ import annotations

import json
from unittest import mock

import control
import numpy as np
import pytest
import torch
from families import FAMILIES, Sizes

from r2dn_control import certify
from r2dn_control.certify import sdp
from r2dn_control.certify.lmi import StateSpaceBlocks
from r2dn_control.nn import LBDN, ContractingR2DN, LipschitzR2DN

SIZES = Sizes(2, 3, 3, 2, (4,))


def build(family, seed: int, dtype=torch.float64, **common):
    torch.manual_seed(seed)
    return family.build(SIZES if not family.square_io else Sizes(2, 3, 3, 2, (4,)),
                        np.random.default_rng(seed), {"dtype": dtype, **common})


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_is_certified_at_its_prescribed_rate_and_supply(family) -> None:
    model = build(family, 3, contraction_rate=0.9)
    res = certify.contraction(model, rate=0.9)
    assert res.certified, res
    assert res.bound == 0.9
    if model.supply is not None:
        s = model.supply
        diss = certify.dissipativity(model, s.Q.numpy(), s.S.numpy(), s.R.numpy())
        assert diss.certified, diss


@pytest.mark.parametrize("family", [f for f in FAMILIES if "Lipschitz" in f.name],
                         ids=lambda f: f.name)
def test_certified_gamma_is_at_most_the_prescribed_one(family) -> None:
    model = build(family, 5)
    gamma = model.gamma
    fast = certify.lipschitz(model, method="implied")
    tight = certify.lipschitz(model, method="sdp")
    assert fast.certified and fast.bound == gamma
    assert tight.certified, tight
    assert tight.bound <= gamma * (1 + 1e-4)
    # Empirical lower bound <= true gain <= certified bound.
    low = certify.lipschitz_lower_bound(model, steps=10, iters=25)
    assert low <= tight.bound


@pytest.mark.parametrize("seed", [0, 1])
def test_kyp_route_agrees_with_the_sdp(seed) -> None:
    torch.manual_seed(seed)
    model = LipschitzR2DN(2, 3, 3, 2, hidden=(4,), gamma=2.0, dtype=torch.float64)
    k = certify.lipschitz(model, method="kyp")
    s = certify.lipschitz(model, method="sdp")
    assert k.certified and s.certified, (k, s)
    assert abs(k.bound - s.bound) <= 1e-4 * s.bound, (k.bound, s.bound)
    rate_k = certify.contraction(model, method="kyp")
    rate_s = certify.contraction(model, method="sdp", rtol=1e-4)
    assert rate_k.certified and rate_s.certified
    assert abs(rate_k.bound - rate_s.bound) <= 2e-3, (rate_k.bound, rate_s.bound)


def test_float32_model_is_verified_in_float64() -> None:
    torch.manual_seed(2)
    model = LipschitzR2DN(2, 3, 3, 2, gamma=1.0, dtype=torch.float32)
    target = certify.as_target(model)
    assert target.blocks.A.dtype == np.float64
    res = certify.lipschitz(model, method="implied")
    assert res.certified and res.P.dtype == np.float64


def _rescaled(model, radius: float) -> certify.Target:
    t = certify.as_target(model)
    a = t.blocks.A * (radius / np.abs(np.linalg.eigvals(t.blocks.A)).max())
    t.blocks = StateSpaceBlocks(**{**t.blocks.__dict__, "A": a})
    return t


@pytest.mark.parametrize("method", ["auto", "kyp", "sdp"])
def test_unstable_r2dn_is_never_certified(method) -> None:
    torch.manual_seed(0)
    target = _rescaled(ContractingR2DN(2, 3, 4, 2, dtype=torch.float64), 1.2)
    assert not certify.contraction(target, rate=1.0, method=method).certified
    assert not certify.contraction(target, method=method).certified
    assert not certify.lipschitz(target, method="sdp" if method == "sdp" else "auto").certified


def test_large_weight_rnn_is_never_certified() -> None:
    """x⁺ = tanh(Wx + Uu) with ‖W‖ ≫ 1: v = Wx + Uu, w = tanh(v), x⁺ = w, y = x."""
    rng = np.random.default_rng(0)
    n = 4
    w, u = 3.0 * rng.normal(size=(n, n)), rng.normal(size=(n, 1))
    blocks = StateSpaceBlocks(np.zeros((n, n)), np.eye(n), np.zeros((n, 1)), w, np.eye(n),
                              np.zeros((n, n)), u, np.zeros((n, n)), np.zeros((n, 1)))
    target = certify.Target.from_blocks(blocks, "slope", torch.tanh, name="RNN")
    assert not certify.contraction(target).certified
    assert not certify.lipschitz(target).certified
    # The adversarial search shows why: two trajectories that do not contract.
    assert certify.contraction_lower_bound(target, steps=10, iters=20) > 1.0


def test_unstable_lti_is_never_certified_and_stable_lti_is() -> None:
    bad = control.ss(np.diag([0.5, 1.05]), np.ones((2, 1)), np.ones((1, 2)), 0, dt=1)
    for method in ("auto", "sdp"):
        assert not certify.contraction(bad, method=method).certified
        assert not certify.lipschitz(bad, method=method).certified
    good = control.ss(np.diag([0.5, 0.8]), np.ones((2, 1)), np.ones((1, 2)), 0, dt=1)
    rate = certify.contraction(good)
    assert rate.certified and 0.8 <= rate.bound <= 0.8 * (1 + 1e-3)
    gamma = certify.lipschitz(good)  # H∞ norm = 1/(1-0.5) + 1/(1-0.8) = 7 at z = 1
    assert gamma.certified and abs(gamma.bound - 7.0) < 1e-4 * 7
    with pytest.raises(ValueError, match="discrete-time"):
        certify.contraction(control.ss(-1.0, 1.0, 1.0, 0.0))


def test_gain_below_the_true_gain_is_not_certified_and_empirically_refuted() -> None:
    torch.manual_seed(4)
    model = LipschitzR2DN(1, 2, 2, 1, gamma=2.0, full_d22=True, dtype=torch.float64)
    low = certify.lipschitz_lower_bound(model, steps=10, iters=40)
    gamma = 0.5 * low  # provably below the true gain
    q, s, r = -np.eye(1) / gamma, np.zeros((1, 1)), gamma * np.eye(1)
    assert not certify.dissipativity(model, q, s, r).certified
    assert certify.lipschitz(model).bound >= low


def test_solver_failure_is_inconclusive() -> None:
    torch.manual_seed(0)
    model = LipschitzR2DN(2, 3, 3, 2, gamma=2.0, dtype=torch.float64)

    def boom(self, *args, **kwargs):
        raise certify_error("mocked failure")

    import cvxpy as cp

    certify_error = cp.error.SolverError
    with mock.patch.object(cp.Problem, "solve", boom):
        res = certify.lipschitz(model, method="sdp")
        assert res.status == "inconclusive"
        assert certify.contraction(model, rate=0.999, method="sdp").status == "inconclusive"

    def inaccurate(self, *args, **kwargs):
        self._status = cp.OPTIMAL_INACCURATE

    with mock.patch.object(cp.Problem, "solve", inaccurate), \
            mock.patch.object(cp.Problem, "status", property(lambda self: self._status)):
        assert certify.lipschitz(model, method="sdp").status == "inconclusive"


def test_failed_revalidation_is_inconclusive() -> None:
    torch.manual_seed(0)
    model = LipschitzR2DN(2, 3, 3, 2, gamma=2.0, dtype=torch.float64)
    real = sdp.solve

    def corrupt(*args, **kwargs):
        ans = real(*args, **kwargs)
        ans.metric = ans.metric * 0.5  # no longer a certificate
        return ans

    with mock.patch.object(sdp, "solve", corrupt):
        res = certify.lipschitz(model, method="sdp")
    assert res.status == "inconclusive", res


def test_lbdn_and_closed_loop() -> None:
    torch.manual_seed(0)
    net = LBDN(3, 2, (6,), gamma=3.0, dtype=torch.float64)
    res = certify.lipschitz(net)
    assert res.certified and res.bound == pytest.approx(3.0, rel=1e-12)
    x = torch.randn(200, 3, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(net))(x)
    assert torch.linalg.matrix_norm(jac, 2).max() <= 3.0 + 1e-9
    # A stable strictly proper plant in feedback with a small-gain contracting controller.
    ctrl = ContractingR2DN(1, 2, 2, 1, contraction_rate=0.5, init_output_zero=True,
                           dtype=torch.float64)
    plant = control.ss(np.array([[0.5]]), np.ones((1, 1)), np.ones((1, 1)), np.zeros((1, 1)), dt=1)
    loop = certify.ClosedLoop(ctrl, plant)
    assert certify.contraction(loop, rate=0.99).certified
    assert certify.lipschitz(loop).certified


def test_result_repr_and_json() -> None:
    torch.manual_seed(0)
    res = certify.lipschitz(LipschitzR2DN(1, 2, 2, 1, gamma=1.0), method="implied")
    text = repr(res)
    assert "certified" in text and "bound=1" in text
    data = json.loads(res.to_json())
    assert data["status"] == "certified" and len(data["P"]) == 2


def test_cli_prints_a_table(tmp_path, capsys) -> None:
    from r2dn_control.certify.cli import main
    from r2dn_control.nn.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    save_model(LipschitzR2DN(1, 2, 2, 1, gamma=1.5, dtype=torch.float64), path)
    code = main([str(path), "--json", str(tmp_path / "out.json"), "--method", "sdp"])
    out = capsys.readouterr().out
    assert "lipschitz" in out and "contraction" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["lipschitz"]["status"] == "certified" and code == 0
