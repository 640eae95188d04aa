r"""Initial-state estimators: the unknown x₀ of each measured experiment.

A recurrent model simulated from the wrong initial state is wrong until the state has forgotten
it; on short records this transient is the main source of error. Two estimators (docs/theory.md
§7):

* `LearnedInitialStates` (``x0="learn"``): one free state per *training* experiment,
  trained with the model. New experiments start from zero (plus a washout).
* `StateEncoder` (``x0="encoder"``): a network that maps the first ``washout`` samples of
  measured ``(u, y)`` (normalised) to x₀; it applies to new experiments.

What guarantee survives: the model's certified bounds hold for *any* pair of initial states, with
the Δx₀ term. For a contracting model ``‖Δx_t‖_𝒫 ≤ ᾱᵗ ‖Δx₀‖_𝒫``; for a Lipschitz model
``‖Δy‖² ≤ γ²‖Δu‖² + c‖Δx₀‖²_𝒫``. Starting from an estimated x̂₀ instead of zero changes only which
Δx₀ enters these inequalities; the estimator itself carries no guarantee.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

X0_KINDS = ("zero", "learn", "encoder")


class LearnedInitialStates(nn.Module):
    """One learned initial state per training experiment, initialised at zero."""

    def __init__(self, experiments: int, state_size: int, **factory) -> None:
        super().__init__()
        self.states = nn.Parameter(torch.zeros(experiments, state_size, **factory))

    def forward(self, indices: Tensor | list[int]) -> Tensor:
        return self.states[torch.as_tensor(indices, device=self.states.device)]


class StateEncoder(nn.Module):
    r"""x̂₀ = W₂ tanh(W₁ [u₀..u_{w−1}, y₀..y_{w−1}] + b₁) + b₂ on the first ``window`` samples.

    The last layer starts at zero, so an untrained encoder gives x̂₀ = 0 (the ``x0="zero"``
    behaviour) and training can only move away from it where that lowers the loss.
    """

    def __init__(self, input_size: int, output_size: int, state_size: int, window: int,
                 hidden: int = 64, **factory) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"the encoder needs washout >= 1 samples, got {window!r}")
        self.window, self.state_size = window, state_size
        last = nn.Linear(hidden, state_size, **factory)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        self.net = nn.Sequential(nn.Linear(window * (input_size + output_size), hidden, **factory),
                                 nn.Tanh(), last)

    def forward(self, u: Tensor, y: Tensor) -> Tensor:
        """``u`` (batch, ≥window, nu), ``y`` (batch, ≥window, ny) → x̂₀ (batch, state_size)."""
        if u.shape[1] < self.window or y.shape[1] < self.window:
            raise ValueError(f"the encoder reads the first {self.window} samples, got "
                             f"{u.shape[1]} input and {y.shape[1]} output samples")
        window = torch.cat([u[:, : self.window], y[:, : self.window]], -1)
        return self.net(window.reshape(window.shape[0], -1))
