"""The observer experiment's training schedule matches the paper's code (plateau ÷10)."""

from __future__ import annotations

import pytest
import torch

from r2dn_control.control import fit_observer
from r2dn_control.control.training import plateau_schedule
from r2dn_control.experiments import observer


def _epoch_learning_rates(monkeypatch: pytest.MonkeyPatch, patience: int, epochs: int
                          ) -> list[float]:
    """lr used in each epoch of fit_observer (1 chunk per epoch) on a flat loss."""
    seen: list[float] = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):  # type: ignore[override]
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    torch.manual_seed(0)
    obs = observer.make_observer(observer.PRESETS["test"], "r2dn")
    n, sites = 64, observer.PRESETS["test"].sites
    x, x_next, y = torch.rand(n, sites), torch.rand(n, sites), torch.rand(n, 2)
    # lr 1e-12: the loss cannot improve by the relative threshold 1e-4 after epoch 1.
    fit_observer(obs, x, x_next, y, epochs=epochs, batches=1, lr=1e-12, patience=patience,
                 progress=False)
    return [lr / 1e-12 for lr in seen]


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_fit_observer_divides_lr_after_patience_flat_epochs(monkeypatch, patience):
    # Epoch 1 sets the best loss; epochs 2 … patience+1 do not improve, so the rate is
    # divided before epoch patience+2 (optax reduce_on_plateau, as in the paper's code),
    # and again patience epochs later.
    epochs = 2 * patience + 2
    scales = _epoch_learning_rates(monkeypatch, patience, epochs)
    expected = [1.0] * (patience + 1) + [0.1] * patience + [0.01]
    assert scales == pytest.approx(expected, rel=1e-9)


def test_plateau_schedule_rejects_non_positive_patience():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="patience must be a positive int"):
            plateau_schedule(opt, bad)
