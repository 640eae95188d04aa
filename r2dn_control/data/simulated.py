r"""Simulated nonlinear systems that make small, reproducible identification problems.

`DuffingOscillator` is the forced Duffing oscillator

$$
\ddot q + c\,\dot q + k\,q + k_3\,q^3 = u, \qquad y = q,
$$

integrated with the semi-implicit Euler method at step ``dt`` (velocity first, then
position), which is stable for the default parameters and cheap in batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..nn import _checks


def multisine(batch: int, steps: int, channels: int = 1, *, harmonics: int = 32,
              amplitude: float = 1.0, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Random-phase multisine inputs, shape (batch, steps, channels).

    $u_t = a \sum_{k=1}^{K} \cos(2\pi k t / T + \varphi_k) / \sqrt{K/2}$ with uniform
    random phases, so the RMS value is ``amplitude``.
    """
    _checks.positive_int("batch", batch)
    _checks.positive_int("steps", steps)
    _checks.positive_int("channels", channels)
    _checks.positive_int("harmonics", harmonics)
    t = torch.arange(steps, dtype=torch.float64)
    k = torch.arange(1, harmonics + 1, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(batch, channels, harmonics, generator=generator,
                                      dtype=torch.float64)
    angles = 2 * math.pi * t[:, None] * k[None, :] / steps  # (steps, K)
    u = torch.cos(angles[None, None] + phases[:, :, None, :]).sum(-1)  # (batch, ch, steps)
    return (amplitude * u / math.sqrt(harmonics / 2)).transpose(1, 2).to(dtype)


@dataclass(frozen=True)
class DuffingOscillator:
    """Forced Duffing oscillator (see module docstring)."""

    damping: float = 0.3
    stiffness: float = 1.0
    cubic_stiffness: float = 0.5
    dt: float = 0.1

    def simulate(self, u: Tensor, noise_std: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Outputs ``y`` (batch, steps, 1) for forces ``u`` (batch, steps, 1), from rest."""
        if u.dim() != 3 or u.shape[-1] != 1:
            raise ValueError(f"u must have shape (batch, steps, 1), got {tuple(u.shape)}")
        q = u.new_zeros(u.shape[0])
        dq = u.new_zeros(u.shape[0])
        outputs = []
        for t in range(u.shape[1]):
            outputs.append(q)
            accel = u[:, t, 0] - self.damping * dq - self.stiffness * q - self.cubic_stiffness * q**3
            dq = dq + self.dt * accel
            q = q + self.dt * dq
        y = torch.stack(outputs, 1)[..., None]
        if noise_std > 0:
            y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        return y
