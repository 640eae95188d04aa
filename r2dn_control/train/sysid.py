"""A small, honest training loop for sequence-to-sequence identification.

Minimises the mean squared simulation error ``mean((model(u) - y)²)`` with Adam, on whole
sequences, for a fixed number of steps or a wall-clock budget, with a tqdm progress bar.

The loop is split into two reusable pieces so that the data-parallel trainer
(`r2dn_control.train.distributed`) runs exactly the same arithmetic:

* `squared_error_step`: one forward, backward and optimizer step;
* `run_steps`: the step/time budget, the loss log and the progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn.base import RecurrentModel
from .guard import check_finite, check_on_nonfinite, guarded_step


@dataclass
class FitResult:
    """What `fit_sequences` did: losses per step, steps taken and seconds spent."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def check_targets(model: nn.Module, u: Tensor, y: Tensor) -> None:
    """Raise ``ValueError`` unless ``y`` has shape (batch, time, ny) like ``u``.

    ``ny`` is ``model.output_size`` when the model has one (every `RecurrentModel`).
    """
    ny = getattr(model, "output_size", y.shape[-1])
    if y.shape[:2] != u.shape[:2] or y.shape[-1] != ny:
        raise ValueError(f"y must have shape {(*u.shape[:2], ny)}, got {tuple(y.shape)}")


def squared_error_step(model: nn.Module, optimizer: torch.optim.Optimizer, u: Tensor, y: Tensor,
                       *, normaliser: float | None = None, on_nonfinite: str = "raise",
                       context: str = "fit_sequences") -> Tensor:
    """One guarded optimizer step on the squared simulation error; returns the (detached) loss.

    The step goes through `guarded_step`: a NaN/inf loss or
    gradient raises `NonFiniteError` (``on_nonfinite="raise"``)
    or skips the step (``"skip"``), leaving the parameters untouched either way.

    Parameters
    ----------
    model : nn.Module
        Called as ``model(u)`` and returning ``(prediction, final_state)``; may be wrapped in
        ``DistributedDataParallel``.
    optimizer : torch.optim.Optimizer
    u, y : Tensor
        Inputs (batch, time, nu) and targets (batch, time, ny).
    normaliser : float, optional
        The loss is ``sum((prediction - y)²) / normaliser``; default: the mean over ``y``.
        Data-parallel training passes ``numel(full batch) / world_size`` so that the average
        of the ranks' gradients is the gradient of the full-batch mean, whatever the shards'
        sizes.
    on_nonfinite : {"raise", "skip"}
        What a non-finite loss or gradient does.
    context : str
        Named in the non-finite error.
    """
    prediction, _ = model(u)
    if normaliser is None:
        loss = torch.mean((prediction - y) ** 2)
    else:
        loss = torch.sum((prediction - y) ** 2) / normaliser
    optimizer.zero_grad()
    loss.backward()
    guarded_step(optimizer, loss, model.parameters(), on_nonfinite=on_nonfinite, context=context)
    return loss.detach()


def run_steps(step: Callable[[], float], *, max_steps: int, seconds: float | None = None,
              progress: bool = True, agree: Callable[[bool], bool] | None = None,
              desc: str = "fit") -> FitResult:
    """Call ``step()`` (one optimizer step, returning the loss) until a budget is spent.

    Parameters
    ----------
    step : callable
        Takes no argument, performs one step and returns its loss as a float.
    max_steps : int
        Maximum number of steps.
    seconds : float, optional
        Stop after this much wall-clock time.
    progress : bool
        Show a tqdm progress bar.
    agree : callable, optional
        Maps this process's "out of time" flag to the decision every process takes; data-
        parallel training must stop all ranks at the same step, or the next collective hangs.
        Only consulted when ``seconds`` is given.
    desc : str
        Progress-bar label.
    """
    result = FitResult()
    start = time.perf_counter()
    # With a time budget the step count is unknown: show a counter, not a misleading total.
    bar = tqdm(total=None if seconds is not None else max_steps, disable=not progress,
               desc=desc, unit="step", leave=False)
    for _ in range(max_steps):
        result.losses.append(step())
        result.steps += 1
        bar.update()
        bar.set_postfix(loss=f"{result.losses[-1]:.4g}", refresh=False)
        if seconds is not None:
            out_of_time = time.perf_counter() - start > seconds
            if agree(out_of_time) if agree is not None else out_of_time:
                break
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def fit_sequences(model: RecurrentModel, u: Tensor, y: Tensor, *, max_steps: int = 1000,
                  seconds: float | None = None, lr: float = 1e-2, progress: bool = True,
                  on_nonfinite: str = "raise") -> FitResult:
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
    on_nonfinite : {"raise", "skip"}
        A NaN/inf loss or gradient raises ``NonFiniteError`` or skips that step (the
        parameters are never updated with it). Non-finite ``u`` or ``y`` raise ``ValueError``
        before training starts.

    See Also
    --------
    r2dn_control.train.distributed.fit_sequences_distributed : the same loop, data-parallel.
    """
    check_targets(model, u, y)
    check_on_nonfinite(on_nonfinite)
    check_finite("u", u)
    check_finite("y", y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return run_steps(
        lambda: squared_error_step(model, opt, u, y, on_nonfinite=on_nonfinite).item(),
        max_steps=max_steps, seconds=seconds, progress=progress)
