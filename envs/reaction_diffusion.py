r"""``ReactionDiffusionObserver-v0``: state estimation of a reaction–diffusion PDE (§2).

$$
\partial_t\xi = \partial_z^2\xi + R(\xi),\quad R(\xi) = \tfrac12\,\xi(1-\xi)(\xi-\tfrac12),
\qquad \xi(0,t) = \xi(L,t) = b(t),
$$

on L = 10 with nx = 51 sites (dx = 0.2) and explicit Euler sub-steps of dt = σ dx² (σ = 0.1):

$$
E_b(\xi)_i = \xi_i + dt\Big(\frac{\xi_{i-1} - 2\xi_i + \xi_{i+1}}{dx^2} + R(\xi_i)\Big)
\ (0 < i < 50),\qquad E_b(\xi)_0 = E_b(\xi)_{50} = b.
$$

One sample step is $\xi_{t+1} = E_{b_t}^4(\xi_t)$: four sub-steps, the reference code's
quirk (its 5-iteration loop returns the iterate before the fifth update), so Δt = 0.016. The
boundary input is a clipped random walk $b_{t+1} = \mathrm{clip}(b_t + 0.05 n_t, 0, 1)$,
$n_t \sim N(0, 1)$ (the exogenous input), and the measurement is
$y_t = (b_t, \xi_t[25])$.

As an environment: the observation is y_t, the action is an estimate $\hat\xi_t$ of the
current state (the output of an observer with identity output, see docs/experiments.md, observer), the
reward is $-\frac{1}{51}\|\hat\xi_t - \xi_t\|^2$, and ``info["state"]`` carries the true
state (ξ, b). The estimate does not affect the PDE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._env import TwinEnv
from ._twin import TorchTwin


class ReactionDiffusionTwin(TorchTwin):
    """Batched torch dynamics of the PDE; state (B, nx + 1) = (ξ, b), action ξ̂ (B, nx).

    Parameters
    ----------
    sites : int
        Number of grid points nx (paper: 51); the measured site is ``sites // 2``.
    length : float
        Domain length L (paper: 10).
    sigma : float
        dt / dx² (paper: 0.1; explicit Euler needs σ ≤ 1/2).
    sub_steps : int
        Euler sub-steps per sample (paper code: 4).
    noise_scale : float
        Standard deviation of the boundary random walk's increments (paper: 0.05).
    """

    observation_size = 2
    exogenous_size = 1

    def __init__(
        self,
        sites: int = 51,
        length: float = 10.0,
        sigma: float = 0.1,
        sub_steps: int = 4,
        noise_scale: float = 0.05,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(sites, bool) or not isinstance(sites, int) or sites < 3:
            raise ValueError(f"sites must be an int >= 3, got {sites!r}")
        if not 0 < sigma <= 0.5:
            raise ValueError(f"sigma = dt/dx² must be in (0, 1/2] for a stable scheme, got {sigma}")
        if isinstance(sub_steps, bool) or not isinstance(sub_steps, int) or sub_steps < 1:
            raise ValueError(f"sub_steps must be a positive int, got {sub_steps!r}")
        if not length > 0 or not noise_scale >= 0:
            raise ValueError(f"need length > 0 and noise_scale >= 0, got {length}, {noise_scale}")
        # The true state stays in [0, 1] (maximum principle), so estimates are clipped there.
        super().__init__([0.0] * sites, [1.0] * sites, dtype=dtype, device=device)
        self.sites, self.sub_steps, self.noise_scale = sites, sub_steps, float(noise_scale)
        self.state_size = sites + 1
        self.action_size = sites
        self.dx = length / (sites - 1)
        self.dt = sigma * self.dx**2
        self.middle = sites // 2

    def euler_substep(self, field: Tensor, boundary: Tensor) -> Tensor:
        """E_b(ξ) for field (B, nx) and boundary (B, 1), without in-place ops (autograd)."""
        inner = field[:, 1:-1]
        laplacian = (field[:, :-2] - 2 * inner + field[:, 2:]) / self.dx**2
        reaction = 0.5 * inner * (1 - inner) * (inner - 0.5)
        return torch.cat([boundary, inner + self.dt * (laplacian + reaction), boundary], dim=1)

    def step(self, state: Tensor, action: Tensor, exogenous: Tensor | None = None) -> Tensor:
        """(ξ, b)⁺ = (E_b⁴(ξ), clip(b + noise_scale·n, 0, 1)); the action plays no part."""
        if exogenous is None:
            raise ValueError("ReactionDiffusionTwin.step needs the noise n (B, 1)")
        field, boundary = state[:, : self.sites], state[:, self.sites :]
        for _ in range(self.sub_steps):
            field = self.euler_substep(field, boundary)
        boundary = torch.clamp(boundary + self.noise_scale * exogenous, 0.0, 1.0)
        return torch.cat([field, boundary], dim=1)

    def observe(self, state: Tensor) -> Tensor:
        """y = (b, ξ[middle])."""
        middle = state[:, self.middle : self.middle + 1]
        return torch.cat([state[:, self.sites :], middle], dim=1)

    def reward(self, state: Tensor, action: Tensor) -> Tensor:
        """r = −mean_i (clip(ξ̂)_i − ξ_i)²."""
        error = self.clip_action(action) - state[:, : self.sites]
        return -(error**2).mean(-1)

    def sample_initial_state(
        self, batch: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """The paper's training start: ξ₀ = 0, b₀ = 0."""
        return self.action_low.new_zeros(batch, self.state_size)

    def sample_exogenous(
        self, batch: int, steps: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """n_t ~ N(0, 1), shape (B, T, 1)."""
        low = self.action_low
        return torch.randn(batch, steps, 1, generator=generator, dtype=low.dtype, device=low.device)


class ReactionDiffusionObserverEnv(TwinEnv):
    """Gymnasium environment ``ReactionDiffusionObserver-v0``.

    Observation y_t = (b_t, ξ_t[25]) ∈ [0, 1]², action ξ̂_t ∈ [0, 1]⁵¹, reward
    −mean((ξ̂_t − ξ_t)²), 2000-step episodes (the paper's test horizon).

    Reset options: by default the paper's training start ξ₀ = 0, b₀ = 0;
    ``{"start": "test"}`` gives its test start ξ₀ = 1, b₀ = 0.5; ``{"start": "random"}`` draws
    a flat profile ξ₀ = c and b₀ independently from U[0, 1]; ``{"state": (ξ₀, b₀)}`` with
    entries in [0, 1]. Keyword arguments are those of `ReactionDiffusionTwin` plus
    ``horizon``.
    """

    twin_class = ReactionDiffusionTwin
    default_horizon = 2000
    twin: ReactionDiffusionTwin

    def _observation_bounds(self) -> tuple[Any, Any]:
        return np.zeros(2), np.ones(2)

    def _sample_initial_state(self, options: dict[str, Any]) -> np.ndarray:
        start = options.get("start", "train")
        sites = self.twin.sites
        if start == "train":
            return np.zeros(sites + 1)
        if start == "test":
            return np.concatenate([np.ones(sites), [0.5]])
        if start == "random":
            level, boundary = self.np_random.uniform(0.0, 1.0, size=2)
            return np.concatenate([np.full(sites, level), [boundary]])
        raise ValueError(f"options['start'] must be 'train', 'test' or 'random', got {start!r}")

    def _check_state(self, state: np.ndarray) -> None:
        # The maximum principle keeps ξ in [0, 1] only if it starts there.
        if np.any(state < 0) or np.any(state > 1):
            raise ValueError("options['state'] = (ξ₀, b₀) must lie in [0, 1]")

    def _draw_exogenous(self) -> np.ndarray:
        return np.array([self.np_random.standard_normal()])
