"""A small, honest training loop for sequence-to-sequence identification.

Minimises the mean squared simulation error ``mean((model(u) - y)²)`` with Adam, on whole
sequences, for a fixed number of steps or a wall-clock budget, with a tqdm progress bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..nn.base import RecurrentModel


@dataclass
class FitResult:
    """What :func:`fit_sequences` did: losses per step, steps taken and seconds spent."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def fit_sequences(model: RecurrentModel, u: Tensor, y: Tensor, *, max_steps: int = 1000,
                  seconds: float | None = None, lr: float = 1e-2, progress: bool = True
                  ) -> FitResult:
    """Fit ``model`` so that ``model(u)[0] ≈ y``.

    Parameters
    ----------
    model : RecurrentModel
    u, y : Tensor
        Inputs (batch, time, nu) and targets (batch, time, ny).
    max_steps : int
        Maximum number of Adam steps.
    seconds : float, optional
        Stop after this much wall-clock time.
    lr : float
        Adam learning rate.
    progress : bool
        Show a tqdm progress bar.
    """
    if y.shape[:2] != u.shape[:2] or y.shape[-1] != model.output_size:
        raise ValueError(
            f"y must have shape {(*u.shape[:2], model.output_size)}, got {tuple(y.shape)}"
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = FitResult()
    start = time.perf_counter()
    # With a time budget the step count is unknown: show a counter, not a misleading total.
    bar = tqdm(total=None if seconds is not None else max_steps, disable=not progress,
               desc="fit", unit="step", leave=False)
    for _ in range(max_steps):
        prediction, _ = model(u)
        loss = torch.mean((prediction - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        result.losses.append(loss.item())
        result.steps += 1
        bar.update()
        bar.set_postfix(loss=f"{result.losses[-1]:.4g}", refresh=False)
        if seconds is not None and time.perf_counter() - start > seconds:
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    return result
