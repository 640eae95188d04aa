"""Every training loop refuses non-finite data and never lets a NaN/inf step reach the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r2dn_control.control import (
    Observer,
    YoulaController,
    fit_observer,
    step_disturbances,
    train_policy_gradient,
)
from r2dn_control.nn import ContractingR2DN
from r2dn_control.systems import LTIPlant
from r2dn_control.train.distributed import fit_sequences_distributed
from r2dn_control.train.guard import NonFiniteError
from r2dn_control.train.sysid import fit_sequences

F64 = torch.float64


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _unchanged(module, before) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("fit", [fit_sequences, fit_sequences_distributed])
def test_fit_sequences_rejects_nan_data_and_guards_steps(fit):
    torch.manual_seed(0)
    model = ContractingR2DN(1, 2, 3, 1, hidden=(4,), dtype=F64)
    u = torch.randn(2, 6, 1, dtype=F64)
    y = torch.randn(2, 6, 1, dtype=F64)
    y[1, 3, 0] = float("nan")
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"y must be finite.*\(1, 3, 0\)"):
        fit(model, u, y, max_steps=3, progress=False)
    # Finite data whose squared error overflows: the guard raises before any update.
    huge = torch.full((2, 6, 1), 1e200, dtype=F64)
    with pytest.raises(NonFiniteError, match="not updated"):
        fit(model, u, huge, max_steps=3, progress=False)
    assert _unchanged(model, before)
    with pytest.warns(RuntimeWarning, match="step skipped"):
        result = fit(model, u, huge, max_steps=2, progress=False, on_nonfinite="skip")
    assert result.steps == 2 and _unchanged(model, before)


def test_fit_observer_rejects_nan_instead_of_returning_nan():
    torch.manual_seed(0)
    observer = Observer(ContractingR2DN(1, 2, 3, 2, hidden=(4,), identity_output=True, dtype=F64))
    x = torch.randn(20, 2, dtype=F64)
    x_next = torch.randn(20, 2, dtype=F64)
    y = x[:, :1].clone()
    y[4, 0] = float("inf")
    before = _snapshot(observer)
    with pytest.raises(ValueError, match="y must be finite"):
        fit_observer(observer, x, x_next, y, epochs=2, batches=2, progress=False)
    with pytest.raises(NonFiniteError):
        fit_observer(observer, x, x_next * 1e200, x[:, :1], epochs=2, batches=2, progress=False)
    assert _unchanged(observer, before)


def _youla():
    import control

    t = control.ss(control.tf([0.3], [1, -1.3, 0.64], 1))
    sys = control.ss(t.A, np.hstack([t.B, t.B]), np.vstack([t.C, t.C]), np.zeros((2, 2)), 1.0)
    q = ContractingR2DN(1, 2, 3, 1, hidden=(4,), dtype=F64)
    controller = YoulaController(sys, q, K=np.zeros((1, 2)), L=np.zeros((2, 1)),
                                 control_inputs=[1], measurements=[1])
    return controller, LTIPlant.from_control(sys, dtype=F64)


def test_policy_gradient_rejects_nan_disturbances_and_guards_steps():
    torch.manual_seed(0)
    controller, plant = _youla()
    w = step_disturbances(2, 20, dtype=F64)
    bad = w.clone()
    bad[0, 5, 0] = float("nan")
    before = _snapshot(controller)

    def cost(traj):
        return traj.outputs[..., 0].abs().mean()

    with pytest.raises(ValueError, match="disturbances of epoch 0 must be finite"):
        train_policy_gradient(controller, plant, bad, cost, epochs=1, segment=10, progress=False)
    with pytest.raises(NonFiniteError, match="policy gradient, epoch 0"):
        train_policy_gradient(controller, plant, w, lambda traj: cost(traj) * float("inf"),
                              epochs=1, segment=10, progress=False)
    assert _unchanged(controller, before)
