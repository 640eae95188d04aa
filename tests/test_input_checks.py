"""Bad input gives a TypeError/ValueError naming what was expected and what was given (issue 12,
items 9 and 10); each case here was silent or unclear before."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from envs.box_fluid import BoxInFluidEnv, BoxInFluidTwin
from envs.pendulum import PendulumSwingUpTwin
from r2dn_control.nn import LBDN, GeneralR2DN, LipschitzR2DN, LipschitzREN, PassiveR2DN
from r2dn_control.systems import LTIPlant

F64 = torch.float64


def _no_warning():
    return warnings.catch_warnings(action="error")


def test_plant_rejects_integer_and_complex():
    with pytest.raises(TypeError, match="real floating torch.dtype, got torch.int64"):
        LTIPlant([[0.5]], [[1.0]], [[1.0]], [[0.0]], dtype=torch.int64)
    with _no_warning(), pytest.raises(TypeError, match="A must be a real matrix"):
        LTIPlant(np.array([[0.5 + 1j]]), [[1.0]], [[1.0]], [[0.0]])
    with pytest.raises(ValueError, match="B must be finite"):
        LTIPlant([[0.5]], [[np.nan]], [[1.0]], [[0.0]])
    plant = LTIPlant([[0.5]], [[1.0]], [[1.0]], [[0.0]], dtype=F64)
    with pytest.raises(TypeError, match="complex128"):
        plant(torch.ones(3, 1, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"at least one time step, got shape \(0, 1\)"):
        plant(torch.zeros(0, 1, dtype=F64))


@pytest.mark.parametrize("twin", [BoxInFluidTwin(dtype=F64), PendulumSwingUpTwin(dtype=F64)],
                         ids=["box", "pendulum"])
def test_twin_step_rejects_mismatched_batches_and_complex(twin):
    state = twin.sample_initial_state(3)
    with pytest.raises(ValueError, match=r"action must have shape \(3, 1\), got \(4, 1\)"):
        twin.step(state, torch.zeros(4, 1, dtype=F64))
    with pytest.raises(ValueError, match=r"action must have shape \(3, 1\)"):
        twin.reward(state, torch.zeros(4, 1, dtype=F64))
    with pytest.raises(TypeError, match="real floating-point"):
        twin.step(state, torch.zeros(3, 1, dtype=torch.complex128))
    with pytest.raises(ValueError, match="state must have shape"):
        twin.step(state[:, :1], torch.zeros(3, 1, dtype=F64))


def test_env_rejects_complex_action():
    env = BoxInFluidEnv()
    env.reset(seed=0)
    with _no_warning(), pytest.raises(TypeError, match="action must be real"):
        env.step(np.array([1.0 + 2.0j]))


def test_complex_supply_rate_is_rejected_without_warning():
    q = -np.eye(1) + 0j
    with _no_warning(), pytest.raises(TypeError, match="Q must be a real matrix"):
        GeneralR2DN(1, 2, 2, 1, Q=q, S=np.zeros((1, 1)), R=np.eye(1))


@pytest.mark.parametrize("cls", [LipschitzR2DN, LipschitzREN])
def test_gamma_out_of_float_range_is_rejected(cls):
    with pytest.raises(ValueError, match="gamma must lie in"):
        cls(1, 2, 2, 1, gamma=1e40, dtype=torch.float32)
    with pytest.raises(ValueError, match="gamma must lie in"):
        cls(1, 2, 2, 1, gamma=1e300, dtype=F64)
    with pytest.raises(ValueError, match="gamma must lie in"):
        cls(1, 2, 2, 1, gamma=1e-20, dtype=F64)
    with pytest.raises(ValueError, match="gamma must lie in"):
        LBDN(2, 2, gamma=1e40, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_are_rejected_at_construction(dtype):
    with pytest.raises(TypeError, match="torch.float32 or torch.float64"):
        LipschitzR2DN(1, 2, 2, 1, dtype=dtype)
    with pytest.raises(TypeError, match="torch.float32 or torch.float64"):
        LBDN(2, 2, dtype=dtype)


def test_device_mismatch_is_named():
    model = LipschitzR2DN(1, 2, 2, 1, dtype=F64).to("meta")
    with pytest.raises(ValueError, match="u is on device cpu but the model is on meta"):
        model(torch.zeros(3, 1, dtype=F64))
    net = LBDN(2, 2, dtype=F64).to("meta")
    with pytest.raises(ValueError, match="x is on device cpu"):
        net(torch.zeros(3, 2, dtype=F64))


def test_lbdn_checks_its_input():
    net = LBDN(2, 3, (4,), dtype=F64)
    with pytest.raises(TypeError, match="dtype torch.float64.*got torch.int64"):
        net(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor, got ndarray"):
        net(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\).*got \(\)"):
        net(torch.tensor(1.0, dtype=F64))


def test_passivity_and_empty_input_messages():
    with pytest.raises(ValueError, match="input_passivity must be a finite float >= 0, got inf"):
        PassiveR2DN(1, 2, 2, 1, input_passivity=float("inf"))
    model = LipschitzR2DN(2, 2, 2, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"at least one time step, got shape \(0, 2\)"):
        model(torch.zeros(0, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"got shape \(3, 0, 2\)"):
        model(torch.zeros(3, 0, 2, dtype=F64))


def test_typed_narrowings_fail_with_named_errors():
    """The checks added with the mypy annotations (issue 15): each names what was expected."""
    from dataclasses import replace

    from r2dn_control.nn import realtime
    from r2dn_control.nn.explicit import BACKENDS
    from r2dn_control.nn.iqc import SupplyRate

    with pytest.raises(ValueError, match="singular Q .* no Cholesky factors"):
        SupplyRate.passive(0.1, 2).factors(F64)
    l_q, l_r = SupplyRate.lipschitz(4.0, 2, 3).factors(torch.float32)
    assert l_q.dtype == l_r.dtype == torch.float32
    torch.testing.assert_close(l_q.T @ l_q, torch.eye(3) / 4.0)  # L_Qᵀ L_Q = −Q = I/γ
    torch.testing.assert_close(l_r.T @ l_r, torch.eye(2) * 4.0)  # L_Rᵀ L_R = R = γI (S = 0)

    model = LipschitzR2DN(2, 3, 4, 2, hidden=(4,), dtype=F64)
    e = model.explicit()
    x0, drive = torch.zeros(1, 3, dtype=F64), torch.zeros(2, 1, 3, dtype=F64)
    with pytest.raises(TypeError, match="fused REN rollout needs a network of type "
                                        "EquilibriumLayer, got ExplicitMLP"):
        BACKENDS["fused_ren"].run(e, x0, drive, torch.zeros(2, 1, 4, dtype=F64))
    with pytest.raises(TypeError, match="fused R2DN rollout needs a network of type ExplicitMLP"):
        BACKENDS["fused_r2dn"].run(replace(e, network=torch.tanh), x0, drive, drive)
    with pytest.raises(ValueError, match="needs a frozen model"):
        realtime.frozen_step(model)
    detached = e.detached()
    assert all(not t.requires_grad for t in detached.matrices().values())
    assert any(t.requires_grad for t in e.matrices().values())
