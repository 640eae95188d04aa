r"""``YoulaLinear-v0``: the Youla-REN paper's linear plant (docs/experiments.md, youla).

The closed loop in Youla form is $[z;\tilde y] = [T_0\ T_1; T_2\ 0][w;\tilde u]$ with
$T_0 = T_1 = -T_2 = T$,

$$
T(q) = \frac{0.3}{q^2 - 2\rho\cos\varphi\, q + \rho^2},\qquad \rho = 0.8,\ \varphi = 0.2\pi,
\ T_s = 1,
$$

realised as $(A, B, C) = ([[2\rho\cos\varphi, -\rho^2], [1, 0]], [1, 0]^\top, [0, 0.3])$.
Three copies are stacked into x = (x₁, x₂, x₃) ∈ ℝ⁶:

$$
x_1^+ = A x_1 + B w,\quad x_2^+ = A x_2 + B\,\mathrm{clip}(\tilde u, \pm 5),\quad
x_3^+ = A x_3 + B w,\qquad z = C x_1 + C x_2,\quad \tilde y = -C x_3.
$$

The agent sees ỹ and applies ũ (the Youla parameter Q maps ỹ to ũ). The disturbance w is
piecewise constant, held 50 steps at amplitudes ~ U[−10, 10]. The reward is minus the paper's
stage cost, $r_t = -(|z_t|_1 + 10^{-4}\|\mathrm{clip}(\tilde u_t)\|^2)$, so the mean
reward over an episode is minus the paper's cost.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._env import TwinEnv
from ._twin import TorchTwin

RHO = 0.8
PHI = 0.2 * math.pi
GAIN = 0.3


def youla_matrices() -> dict[str, np.ndarray]:
    """The stacked plant ``A`` (6×6), ``B_u``, ``B_w`` (6×1), ``C_z``, ``C_y`` (1×6), float64."""
    a = np.array([[2 * RHO * math.cos(PHI), -(RHO**2)], [1.0, 0.0]])
    b = np.array([[1.0], [0.0]])
    c = np.array([[0.0, GAIN]])
    zero_a, zero_b, zero_c = np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((1, 2))
    return {
        "A": np.block([[a, zero_a, zero_a], [zero_a, a, zero_a], [zero_a, zero_a, a]]),
        "B_u": np.vstack([zero_b, b, zero_b]),
        "B_w": np.vstack([b, zero_b, b]),
        "C_z": np.hstack([c, c, zero_c]),
        "C_y": np.hstack([zero_c, zero_c, -c]),
    }


class YoulaLinearTwin(TorchTwin):
    """Batched torch dynamics of `YoulaLinearEnv` (state (B, 6), action ũ (B, 1)).

    Parameters
    ----------
    max_control : float
        Actuator limit |ũ| ≤ max_control (paper: 5).
    hold_time : int
        Steps each disturbance level is held (paper: 50).
    amplitude : float
        Disturbance levels ~ U[−amplitude, amplitude] (paper: 10).
    control_weight : float
        Weight of ‖ũ‖² in the stage cost (paper: 1e-4).
    """

    state_size = 6
    action_size = 1
    observation_size = 1
    exogenous_size = 1

    def __init__(
        self,
        max_control: float = 5.0,
        hold_time: int = 50,
        amplitude: float = 10.0,
        control_weight: float = 1e-4,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if not max_control > 0 or not amplitude >= 0 or not control_weight >= 0:
            raise ValueError(
                "need max_control > 0, amplitude >= 0, control_weight >= 0, got "
                f"{max_control}, {amplitude}, {control_weight}"
            )
        if isinstance(hold_time, bool) or not isinstance(hold_time, int) or hold_time < 1:
            raise ValueError(f"hold_time must be a positive int, got {hold_time!r}")
        super().__init__([-max_control], [max_control], dtype=dtype, device=device)
        self.hold_time, self.amplitude = hold_time, float(amplitude)
        self.control_weight = float(control_weight)
        for name, value in youla_matrices().items():
            self.register_buffer(name, torch.as_tensor(value, dtype=dtype, device=device))

    def step(self, state: Tensor, action: Tensor, exogenous: Tensor | None = None) -> Tensor:
        """x⁺ = A x + B_w w + B_u clip(ũ)."""
        if exogenous is None:
            raise ValueError("YoulaLinearTwin.step needs the disturbance w (B, 1)")
        return state @ self.A.T + exogenous @ self.B_w.T + self.clip_action(action) @ self.B_u.T

    def observe(self, state: Tensor) -> Tensor:
        """ỹ = −C x₃."""
        return state @ self.C_y.T

    def performance(self, state: Tensor) -> Tensor:
        """The performance output z = C x₁ + C x₂, shape (B, 1)."""
        return state @ self.C_z.T

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """r = −(|z|₁ + control_weight ‖clip(ũ)‖²)."""
        control = self.clip_action(action)
        cost = self.performance(state).abs().sum(-1) + self.control_weight * (control**2).sum(-1)
        return -cost

    def sample_initial_state(
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """The paper starts every episode at rest: x₀ = 0."""
        return self.A.new_zeros(batch, self.state_size)

    def sample_exogenous(
        self, batch: int, steps: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Piecewise-constant w: a level ~ U[−amplitude, amplitude] held ``hold_time`` steps."""
        pieces = -(-steps // self.hold_time)
        levels = torch.rand(
            batch, pieces, 1, generator=generator, dtype=self.A.dtype, device=self.A.device
        )
        levels = self.amplitude * (2 * levels - 1)
        return levels.repeat_interleave(self.hold_time, dim=1)[:, :steps]


class YoulaLinearEnv(TwinEnv):
    """Gymnasium environment ``YoulaLinear-v0``: learn the Youla parameter Q: ỹ ↦ ũ.

    Observation ỹ ∈ ℝ (unbounded), action ũ ∈ [−5, 5], 800-step episodes (the paper's training
    and test horizon) from x₀ = 0. ``info`` adds ``"z"`` (the performance output at the new
    state); ``info["exogenous"]`` is the disturbance w_t of the step. Keyword arguments are those of
    `YoulaLinearTwin` plus ``horizon``.
    """

    twin_class = YoulaLinearTwin
    default_horizon = 800
    twin: YoulaLinearTwin

    def _observation_bounds(self) -> tuple[Any, Any]:
        return np.full(1, -np.inf), np.full(1, np.inf)

    def _on_reset(self, options: dict[str, Any]) -> None:
        self._level = 0.0

    def _sample_initial_state(self, options: dict[str, Any]) -> np.ndarray:
        return np.zeros(self.twin.state_size)

    def _draw_exogenous(self) -> np.ndarray:
        # A new level at the start of every hold period, from the env's seeded generator.
        if self._t % self.twin.hold_time == 0:
            self._level = float(self.np_random.uniform(-self.twin.amplitude, self.twin.amplitude))
        return np.array([self._level])

    def _extra_info(self) -> dict[str, Any]:
        with torch.no_grad():
            z = self.twin.performance(self._state)[0].numpy().copy()
        return {"z": z}
