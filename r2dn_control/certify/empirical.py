r"""Empirical lower bounds by gradient-based adversarial search (torch, float64).

* Gain: maximize ``‖y(u₁, x₀) − y(u₂, x₀)‖₂ / ‖u₁ − u₂‖₂`` over input pairs with the same
  initial state (Δx₀ = 0 removes the transient term), so every value found is a lower bound on
  the true incremental ℓ₂ gain, hence ≤ any certified γ.
* Contraction: maximize ``(‖Δx_T‖_𝒫 / ‖Δx₀‖_𝒫)^{1/T}`` over pairs of initial states under the
  same input. In the metric 𝒫 of a certificate at rate ᾱ this is ≤ ᾱ (a theorem); it tends to
  the true rate as T grows, whatever the metric.
"""

from __future__ import annotations

import torch

from .target import Target, as_target


def _adam(loss_fn, params, iters: int, lr: float) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(iters):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()


def lipschitz_lower_bound(system: object, steps: int = 20, batch: int = 8, iters: int = 60,
                          lr: float = 0.05, seed: int = 0) -> float | None:
    """Largest incremental gain found (None if the system has no simulator)."""
    target = system if isinstance(system, Target) else as_target(system)
    simulate = target.simulate
    if simulate is None:
        return None
    nu, nx, _, _ = target.sizes
    g = torch.Generator().manual_seed(seed)
    u1 = torch.randn(batch, steps, nu, generator=g, dtype=torch.float64).requires_grad_()
    du = torch.randn(batch, steps, nu, generator=g, dtype=torch.float64).requires_grad_()
    x0 = torch.randn(batch, nx, generator=g, dtype=torch.float64).requires_grad_()

    def ratios() -> torch.Tensor:
        y1, _ = simulate(u1, x0)
        y2, _ = simulate(u1 + du, x0)
        num = (y1 - y2).pow(2).sum((1, 2))
        den = du.pow(2).sum((1, 2)).clamp_min(1e-300)
        return torch.sqrt(num / den)

    _adam(lambda: -ratios().sum(), [u1, du, x0], iters, lr)
    with torch.no_grad():
        return float(ratios().max())


def contraction_lower_bound(system: object, metric=None, steps: int = 20, batch: int = 8,
                            iters: int = 60, lr: float = 0.05, seed: int = 0) -> float | None:
    """Slowest per-step contraction factor found, in ``metric`` (identity if None)."""
    target = system if isinstance(system, Target) else as_target(system)
    simulate = target.simulate
    if simulate is None:
        return None
    nu, nx, _, _ = target.sizes
    p = torch.eye(nx, dtype=torch.float64) if metric is None else torch.as_tensor(
        metric, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, steps, nu, generator=g, dtype=torch.float64).requires_grad_()
    xa = torch.randn(batch, nx, generator=g, dtype=torch.float64).requires_grad_()
    dx = 1e-3 * torch.randn(batch, nx, generator=g, dtype=torch.float64)
    dx.requires_grad_()

    def pnorm(d: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,ij,bj->b", d, p, d).clamp_min(1e-300).sqrt()

    def rates() -> torch.Tensor:
        _, s1 = simulate(u, xa)
        _, s2 = simulate(u, xa + dx)
        return (pnorm(s1[:, -1] - s2[:, -1]) / pnorm(dx)) ** (1.0 / steps)

    _adam(lambda: -torch.log(rates()).sum(), [u, xa, dx], iters, lr)
    with torch.no_grad():
        return float(rates().max())
