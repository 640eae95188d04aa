r"""Training loops: analytic policy gradients for Youla controllers, one-step observer fitting.

**Analytic policy gradients** (docs/experiments.md, youla). The plant and the controller are both
differentiable torch code, so the gradient of a closed-loop cost

$$
J(\theta) = \frac{1}{BT}\sum_{b,t} c(z_t^b, u_t^b, \tilde u_t^b)
$$

is obtained by backpropagation through the simulation. Long horizons are cut into segments
(truncated BPTT): each segment is one optimizer step, the state is carried to the next segment
with its graph cut, and every epoch restarts from zero state with fresh disturbances.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..train.guard import check_finite, check_on_nonfinite, guarded_step
from .observer import Observer
from .youla import ClosedLoopTrajectory, YoulaController, simulate_closed_loop

Cost = Callable[[ClosedLoopTrajectory], Tensor]


def step_disturbances(batch: int, steps: int, size: int = 1, *, hold: int = 50,
                      amplitude: float = 10.0, generator: torch.Generator | None = None,
                      dtype: torch.dtype | None = None, device: torch.device | str | None = None
                      ) -> Tensor:
    """Piecewise-constant disturbances ``w ~ U[−a, a]`` held for ``hold`` steps (§3).

    Returns a tensor of shape (batch, steps, size).
    """
    blocks = -(-steps // hold)
    levels = torch.rand(batch, blocks, size, generator=generator, dtype=dtype, device=device)
    levels = amplitude * (2 * levels - 1)
    return levels.repeat_interleave(hold, dim=1)[:, :steps]


@dataclass
class PolicyGradientHistory:
    """Costs logged by `train_policy_gradient`.

    ``train`` has one value per optimizer step (segment); ``test`` one value before every
    epoch and one at the end (when a test disturbance is given); ``epoch_seconds`` the wall
    time of each epoch's training (drawing disturbances, rollouts, steps; not the test cost).
    """

    train: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def _evaluate(plant, controller: YoulaController, disturbance: Tensor, cost: Cost) -> float:
    with torch.no_grad():
        return float(cost(simulate_closed_loop(plant, controller, disturbance, noise=False)))


def train_policy_gradient(
    controller: YoulaController,
    plant,
    disturbances: Callable[[int], Tensor] | Tensor,
    cost: Cost,
    *,
    epochs: int = 80,
    segment: int = 200,
    lr: float = 5e-3,
    lr_decay_epochs: int | None = 60,
    grad_clip: float | None = 10.0,
    test_disturbance: Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    on_nonfinite: str = "raise",
) -> PolicyGradientHistory:
    """Train the controller's Q by backpropagating ``cost`` through the closed loop.

    Parameters
    ----------
    controller : YoulaController
        Its parameters (those of Q) are trained.
    plant : LTIPlant
        Differentiable simulator of the plant.
    disturbances : callable or Tensor
        ``disturbances(epoch)`` returns the epoch's disturbance batch (batch, horizon, nw),
        or a fixed tensor reused every epoch.
    cost : callable
        ``cost(trajectory) → scalar``, e.g. ``(traj.outputs[..., 0].abs()
        + 1e-4 * traj.u_tilde.pow(2).sum(-1)).mean()`` for §3.
    epochs : int
        Each epoch restarts plant and controller from zero state.
    segment : int
        Truncated-BPTT length: one optimizer step per segment, state carried over.
    lr, lr_decay_epochs : float, int or None
        Adam learning rate, multiplied by 0.1 after ``lr_decay_epochs`` epochs (§3: 60).
    grad_clip : float or None
        Element-wise gradient clipping to ±grad_clip (optax.clip in §3).
    test_disturbance : Tensor, optional
        Fixed set on which the cost is logged before every epoch and at the end.
    optimizer : torch.optim.Optimizer, optional
        Replaces the default Adam (then ``lr``/``lr_decay_epochs`` only set the schedule).
    progress : bool
        Show a tqdm progress bar.
    on_nonfinite : {"raise", "skip"}
        A NaN/inf cost or gradient raises ``NonFiniteError`` (parameters untouched) or skips
        that segment's step; non-finite disturbances raise ``ValueError``.

    Returns
    -------
    PolicyGradientHistory
    """
    if segment < 1 or epochs < 0:
        raise ValueError(f"segment must be ≥ 1 and epochs ≥ 0, got {segment}, {epochs}")
    check_on_nonfinite(on_nonfinite)
    params = [p for p in controller.parameters() if p.requires_grad]
    optimizer = optimizer or torch.optim.Adam(params, lr=lr)
    scheduler = None
    if lr_decay_epochs is not None:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_epochs, gamma=0.1)
    history = PolicyGradientHistory()
    bar = tqdm(range(epochs), desc="policy gradient", disable=not progress)
    for epoch in bar:
        if test_disturbance is not None:
            history.test.append(_evaluate(plant, controller, test_disturbance, cost))
        epoch_start = time.perf_counter()
        w = disturbances(epoch) if callable(disturbances) else disturbances
        w = w.to(dtype=plant.A.dtype, device=plant.A.device)
        check_finite(f"the disturbances of epoch {epoch}", w)
        state = None
        for offset in range(0, w.shape[1], segment):
            traj = simulate_closed_loop(plant, controller, w[:, offset:offset + segment],
                                        state=state)
            loss = cost(traj)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            guarded_step(optimizer, loss, params, on_nonfinite=on_nonfinite, clip_value=grad_clip,
                         context=f"policy gradient, epoch {epoch}, step {offset}")
            state = traj.final.detach()  # truncated BPTT: keep the state, cut the graph
            history.train.append(float(loss.detach()))
        if scheduler is not None:
            scheduler.step()
        history.epoch_seconds.append(time.perf_counter() - epoch_start)
        bar.set_postfix(cost=history.train[-1] if history.train else float("nan"))
    if test_disturbance is not None:
        history.test.append(_evaluate(plant, controller, test_disturbance, cost))
    return history


def plateau_schedule(optimizer: torch.optim.Optimizer, patience: int, factor: float = 0.1
                     ) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Divide the learning rate by 1/``factor`` after ``patience`` epochs without improvement.

    An epoch improves when its loss is below (1 − 10⁻⁴)·best. The rate is divided at the end
    of the ``patience``-th consecutive epoch that does not improve, and the count restarts
    (the convention of the paper's code, optax ``reduce_on_plateau``). torch's
    ``ReduceLROnPlateau(patience=p)`` waits for p + 1 such epochs, so it is built with
    ``patience − 1`` (and ``eps = 0``: every division is applied, however small the rate).

    Raises
    ------
    ValueError
        ``patience`` is not a positive int.
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience must be a positive int (epochs), got {patience!r}")
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor,
                                                      patience=patience - 1, threshold=1e-4,
                                                      eps=0.0)


def fit_observer(
    observer: Observer,
    x: Tensor,
    x_next: Tensor,
    y: Tensor,
    u: Tensor | None = None,
    *,
    epochs: int = 200,
    batches: int = 200,
    lr: float = 2e-3,
    patience: int = 10,
    seed: int = 0,
    progress: bool = True,
    epoch_seconds: list[float] | None = None,
    on_nonfinite: str = "raise",
) -> list[float]:
    """Fit an observer with the one-step correctness loss (docs/experiments.md, observer).

    The N training pairs are split into ``batches`` contiguous chunks whose order is shuffled
    once (as in §2); each chunk is one Adam step. The learning rate is divided by 10 when the
    mean epoch loss has not improved for ``patience`` epochs.

    Parameters
    ----------
    observer : Observer
    x, x_next, y, u : Tensor
        Row batches (N, ·) of true states, next states, measurements and known inputs;
        must be finite (``ValueError`` otherwise).
    on_nonfinite : {"raise", "skip"}
        A NaN/inf loss or gradient raises ``NonFiniteError`` or skips that chunk's step.
    epoch_seconds : list, optional
        If given, the wall time of each epoch is appended to it.

    Returns
    -------
    list of float
        Mean loss per epoch.
    """
    n = x.shape[0]
    if not all(t.shape[0] == n for t in (x_next, y) + (() if u is None else (u,))):
        raise ValueError("x, x_next, y (and u) must have the same number of rows")
    check_on_nonfinite(on_nonfinite)
    for name, value in (("x", x), ("x_next", x_next), ("y", y), ("u", u)):
        if value is not None:
            check_finite(name, value)
    batches = max(1, min(batches, n))
    order = torch.randperm(batches, generator=torch.Generator().manual_seed(seed)).tolist()
    chunks = torch.arange(n).tensor_split(batches)
    optimizer = torch.optim.Adam(observer.parameters(), lr=lr)
    plateau = plateau_schedule(optimizer, patience)
    losses: list[float] = []
    bar = tqdm(range(epochs), desc="observer", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        total = 0.0
        for k in order:
            idx = chunks[k].to(x.device)
            loss = observer.loss(x[idx], x_next[idx], y[idx], None if u is None else u[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            guarded_step(optimizer, loss, observer.parameters(), on_nonfinite=on_nonfinite,
                         context=f"observer, epoch {len(losses)}, chunk {k}")
            total += float(loss.detach())
        losses.append(total / batches)
        plateau.step(losses[-1])
        if epoch_seconds is not None:
            epoch_seconds.append(time.perf_counter() - start)
        bar.set_postfix(loss=losses[-1])
    return losses
