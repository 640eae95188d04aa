r"""``BoxInFluid-v0``: push a box through a fluid to a goal position (docs/envs.md).

A box of mass m between two springs (total stiffness k) in a fluid with quadratic drag μ:

$$
m\ddot q = u - k q - \mu\,\dot q\,|\dot q|,
$$

discretised with forward Euler at dt = 0.02 s over T = 4 s (200 steps), m = 1, k = 5, μ = 0.5
(RobustNeuralNetworks.jl, ``rl.md``). The state is x = (q, q̇, q_ref): the goal q_ref ~ U[−1, 1]
is drawn at reset and held, and is part of the observation so one policy serves every goal.
The box starts at rest at q = 0. The stage reward is minus the reference cost

$$
r_t = -\big(10 (q_t - q_\mathrm{ref})^2 + \dot q_t^2 + 0.1 (u_t - u_\mathrm{ref})^2\big),
\qquad u_\mathrm{ref} = k\, q_\mathrm{ref}.
$$

The reference setup leaves u unbounded; here |u| ≤ 50 N (ten times the largest static force
k·|q_ref|), so that the action space is a bounded Box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._env import TwinEnv
from ._twin import TorchTwin

COST_WEIGHTS = (10.0, 1.0, 0.1)


class BoxInFluidTwin(TorchTwin):
    """Batched torch dynamics of `BoxInFluidEnv`; state (B, 3) = (q, q̇, q_ref), u (B, 1).

    Parameters
    ----------
    mass, stiffness, drag : float
        m, k, μ (reference: 1, 5, 0.5).
    dt : float
        Euler step in seconds (reference: 0.02).
    max_force : float
        Actuator limit |u| ≤ max_force.
    goal_range : float
        Goals are drawn from U[−goal_range, goal_range] (reference: 1).
    """

    state_size = 3
    action_size = 1
    observation_size = 3

    def __init__(
        self,
        mass: float = 1.0,
        stiffness: float = 5.0,
        drag: float = 0.5,
        dt: float = 0.02,
        max_force: float = 50.0,
        goal_range: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if not (mass > 0 and dt > 0 and max_force > 0 and stiffness >= 0 and drag >= 0
                and goal_range >= 0):
            raise ValueError(
                "need mass, dt, max_force > 0 and stiffness, drag, goal_range >= 0, got "
                f"mass={mass}, stiffness={stiffness}, drag={drag}, dt={dt}, "
                f"max_force={max_force}, goal_range={goal_range}"
            )
        super().__init__([-max_force], [max_force], dtype=dtype, device=device)
        self.mass, self.stiffness, self.drag = float(mass), float(stiffness), float(drag)
        self.dt, self.goal_range = float(dt), float(goal_range)

    def step(self, state: Tensor, action: Tensor, exogenous: Tensor | None = None) -> Tensor:
        """Forward Euler: q⁺ = q + dt q̇, q̇⁺ = q̇ + dt (u − k q − μ q̇|q̇|)/m, q_ref⁺ = q_ref."""
        q, velocity, goal = state[:, 0:1], state[:, 1:2], state[:, 2:3]
        force = self.clip_action(action)
        accel = (force - self.stiffness * q - self.drag * velocity * velocity.abs()) / self.mass
        return torch.cat([q + self.dt * velocity, velocity + self.dt * accel, goal], dim=1)

    def observe(self, state: Tensor) -> Tensor:
        """The full state (q, q̇, q_ref) is measured."""
        return state

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """r = −(10 (q − q_ref)² + q̇² + 0.1 (u − k q_ref)²)."""
        q, velocity, goal = state[:, 0], state[:, 1], state[:, 2]
        force = self.clip_action(action)[:, 0]
        w_q, w_v, w_u = COST_WEIGHTS
        cost = (w_q * (q - goal) ** 2 + w_v * velocity**2
                + w_u * (force - self.stiffness * goal) ** 2)
        return -cost

    def sample_initial_state(
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """At rest at q = 0 with a goal q_ref ~ U[−goal_range, goal_range]."""
        low = self.action_low
        goal = torch.rand(batch, 1, generator=generator, dtype=low.dtype, device=low.device)
        goal = self.goal_range * (2 * goal - 1)
        return torch.cat([goal.new_zeros(batch, 2), goal], dim=1)


class BoxInFluidEnv(TwinEnv):
    """Gymnasium environment ``BoxInFluid-v0``.

    Observation (q, q̇, q_ref) (q, q̇ unbounded, q_ref ∈ [−1, 1]), action u ∈ [−50, 50] N,
    200-step (4 s) episodes. Reset options: ``{"goal": q_ref}`` fixes the goal;
    ``{"state": (q, q̇, q_ref)}`` fixes everything. Keyword arguments are those of
    `BoxInFluidTwin` plus ``horizon``.
    """

    twin_class = BoxInFluidTwin
    default_horizon = 200
    twin: BoxInFluidTwin

    def _observation_bounds(self) -> tuple[Any, Any]:
        goal = self.twin.goal_range
        return np.array([-np.inf, -np.inf, -goal]), np.array([np.inf, np.inf, goal])

    def _sample_initial_state(self, options: dict[str, Any]) -> np.ndarray:
        goal_range = self.twin.goal_range
        if "goal" in options:
            goal = float(options["goal"])
            self._check_goal(goal)
        else:
            goal = float(self.np_random.uniform(-goal_range, goal_range))
        return np.array([0.0, 0.0, goal])

    def _check_goal(self, goal: float) -> None:
        if not abs(goal) <= self.twin.goal_range:
            raise ValueError(
                f"the goal q_ref must lie in [-{self.twin.goal_range}, {self.twin.goal_range}], "
                f"got {goal}"
            )

    def _check_state(self, state: np.ndarray) -> None:
        self._check_goal(float(state[2]))
