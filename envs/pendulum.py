r"""``PendulumSwingUp-v0``: swing a torque-limited pendulum up and balance it (§6).

A pendulum of mass m and length l (a uniform rod, inertia ml²/3) with θ = 0 upright:

$$
\ddot\theta = \frac{3g}{2l}\sin\theta + \frac{3}{ml^2}\,\tau,\qquad |\tau| \le 2,
$$

integrated with semi-implicit Euler at dt = 0.05 s and the speed clipped to |θ̇| ≤ 8:
$\dot\theta_{t+1} = \mathrm{clip}(\dot\theta_t + dt\,\ddot\theta_t, \pm 8)$,
$\theta_{t+1} = \theta_t + dt\,\dot\theta_{t+1}$. With g = 10, m = l = 1 the torque
limit is below the static torque needed at θ = π/2, so the policy must pump energy.
Observation (cos θ, sin θ, θ̇); reward

$$
r_t = -\big(\mathrm{wrap}(\theta_t)^2 + 0.1\,\dot\theta_t^2 + 0.001\,\tau_t^2\big),\qquad
\mathrm{wrap}(\theta) = \operatorname{atan2}(\sin\theta, \cos\theta) \in (-\pi, \pi].
$$

These are the conventions of the classic gym ``Pendulum`` task (the swing-up used in the
LBDN-RL paper, arXiv 2405.11432), written here as a closed-form torch simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._env import TwinEnv
from ._twin import TorchTwin


class PendulumSwingUpTwin(TorchTwin):
    """Batched torch dynamics of `PendulumSwingUpEnv`; state (B, 2) = (θ, θ̇), τ (B, 1).

    Parameters
    ----------
    gravity, mass, length : float
        g, m, l (defaults 10, 1, 1).
    dt : float
        Time step (0.05 s).
    max_torque, max_speed : float
        |τ| ≤ max_torque (2), |θ̇| ≤ max_speed (8).
    """

    state_size = 2
    action_size = 1
    observation_size = 3

    def __init__(
        self,
        gravity: float = 10.0,
        mass: float = 1.0,
        length: float = 1.0,
        dt: float = 0.05,
        max_torque: float = 2.0,
        max_speed: float = 8.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if not all(value > 0 for value in (gravity, mass, length, dt, max_torque, max_speed)):
            raise ValueError(
                "gravity, mass, length, dt, max_torque and max_speed must be > 0, got "
                f"{gravity}, {mass}, {length}, {dt}, {max_torque}, {max_speed}"
            )
        super().__init__([-max_torque], [max_torque], dtype=dtype, device=device)
        self.gravity, self.mass, self.length = float(gravity), float(mass), float(length)
        self.dt, self.max_speed = float(dt), float(max_speed)

    def step(self, state: Tensor, action: Tensor, exogenous: Tensor | None = None) -> Tensor:
        """Semi-implicit Euler with the speed clipped to ±max_speed."""
        angle, speed = state[:, 0:1], state[:, 1:2]
        torque = self.clip_action(action)
        accel = (1.5 * self.gravity / self.length * torch.sin(angle)
                 + 3.0 / (self.mass * self.length**2) * torque)
        speed = torch.clamp(speed + self.dt * accel, -self.max_speed, self.max_speed)
        return torch.cat([angle + self.dt * speed, speed], dim=1)

    def observe(self, state: Tensor) -> Tensor:
        """(cos θ, sin θ, θ̇): continuous in θ, unlike θ itself."""
        angle = state[:, 0:1]
        return torch.cat([torch.cos(angle), torch.sin(angle), state[:, 1:2]], dim=1)

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """r = −(wrap(θ)² + 0.1 θ̇² + 0.001 τ²)."""
        angle, speed = state[:, 0], state[:, 1]
        torque = self.clip_action(action)[:, 0]
        wrapped = torch.atan2(torch.sin(angle), torch.cos(angle))
        return -(wrapped**2 + 0.1 * speed**2 + 0.001 * torque**2)

    def sample_initial_state(
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """θ₀ ~ U[−π, π], θ̇₀ ~ U[−1, 1]."""
        low = self.action_low
        unit = torch.rand(batch, 2, generator=generator, dtype=low.dtype, device=low.device)
        scale = unit.new_tensor([np.pi, 1.0])
        return scale * (2 * unit - 1)


class PendulumSwingUpEnv(TwinEnv):
    """Gymnasium environment ``PendulumSwingUp-v0``.

    Observation (cos θ, sin θ, θ̇) ∈ [−1, 1]² × [−8, 8], action τ ∈ [−2, 2], 200-step episodes
    from θ₀ ~ U[−π, π], θ̇₀ ~ U[−1, 1]. Reset option ``{"state": (θ₀, θ̇₀)}`` with
    |θ̇₀| ≤ max_speed. Keyword arguments are those of `PendulumSwingUpTwin` plus
    ``horizon``.
    """

    twin_class = PendulumSwingUpTwin
    default_horizon = 200
    twin: PendulumSwingUpTwin

    def _observation_bounds(self) -> tuple[Any, Any]:
        speed = self.twin.max_speed
        return np.array([-1.0, -1.0, -speed]), np.array([1.0, 1.0, speed])

    def _sample_initial_state(self, options: dict[str, Any]) -> np.ndarray:
        return self.np_random.uniform([-np.pi, -1.0], [np.pi, 1.0])

    def _check_state(self, state: np.ndarray) -> None:
        if abs(state[1]) > self.twin.max_speed:
            raise ValueError(
                f"options['state'] speed must satisfy |θ̇₀| <= {self.twin.max_speed}, "
                f"got {state[1]}"
            )
