r"""Training loop for system identification: truncated BPTT, validation, checkpoints, resume.

`fit` minimises the simulation error of a recurrent model on normalised data:

* **Truncated BPTT with the state carried across segments** (default, the R2DN paper's F-16
  recipe): every experiment is cut into contiguous segments of ``segment`` samples; segment k of
  all experiments is one optimizer step; the final state of segment k (detached) is the initial
  state of segment k + 1; each epoch restarts from the initial-state estimate. With
  ``segment >= T`` this is full BPTT.
* **Shuffled windows** (``shuffle=True``): all full windows of ``segment`` samples, in random
  mini-batches, each from the estimated (or zero) state; with ``x0="zero"`` the first
  ``washout`` samples of each window are not scored.

Loss (per step, normalised units): ``loss="mean"`` (default) is the mean of (ŷ − y)² over the
batch, time and output channels; ``loss="paper"`` is the paper's
$\mathrm{mean}_t \sum_{batch, outputs} (\hat y - y)^2$.

Validation runs after each epoch and scores the NRMSE (see `.evaluate`) of the whole model
(normalisation and x₀ estimate included): with ``val=None`` on the held-out last ``val_fraction``
(default 20 %) of every training experiment, simulated from the start of the experiment so its
state is known; with a `SequenceData` on its experiments after ``washout`` samples; with
``val=False`` not at all (the last epoch's weights are kept). The best-validation weights are
restored at the end, and training stops early after ``early_stopping`` epochs without
improvement.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import pathlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn import ContractingR2DN, GeneralR2DN, LipschitzR2DN, PassiveR2DN
from ..nn.base import RecurrentModel
from ..train.guard import check_finite, check_on_nonfinite, guarded_step
from .baselines import RecurrentBaseline
from .checkpointing import CHECKPOINT, atomic_write, load_checkpoint, save_checkpoint
from .data import Normalization, SequenceData, segments, stacked_windows
from .estimators import X0_KINDS, LearnedInitialStates, StateEncoder
from .evaluate import scores
from .predictor import Predictor

SCHEDULES = ("auto", "constant", "step", "plateau", "cosine")
LOSSES = ("mean", "paper")
HISTORY_FIELDS = ("epoch", "train_loss", "val_nrmse", "val_rmse", "lr", "seconds", "steps",
                  "skipped")


@dataclass
class FitResult:
    """What `fit` produced.

    Attributes
    ----------
    predictor : Predictor
        Normalisation + model (+ initial-state estimator), predicting in physical units; holds
        the best-validation weights (the last epoch's with ``val=False``).
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``train_loss`` (mean step loss, normalised units),
        ``val_nrmse`` and ``val_rmse`` (physical units; NaN without validation), ``lr``,
        ``seconds`` (training time of the epoch, validation excluded), ``steps``, ``skipped``.
    best_epoch : int
        Epoch whose weights the predictor holds.
    stopped : str
        Why training ended: ``"epochs"``, ``"early_stopping"`` or ``"seconds"``.
    normalization : Normalization
    gamma, gamma_physical : float or None
        For Lipschitz models: the certified bound γ of the normalised model and the simple
        physical-unit bound ``γ · max(y_std) / min(u_std)``.
    out_dir : pathlib.Path or None
    """

    predictor: Predictor
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "epochs"
    normalization: Normalization | None = None
    gamma: float | None = None
    gamma_physical: float | None = None
    out_dir: pathlib.Path | None = None

    @property
    def model(self) -> nn.Module:
        return self.predictor.model

    @property
    def train_losses(self) -> list[float]:
        return [row["train_loss"] for row in self.history]


def _check_model(model: nn.Module, data: SequenceData) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "state_size"):
        raise TypeError("model must be a recurrent nn.Module with input_size, output_size and "
                        f"state_size (an R2DN/REN or sysid.RecurrentBaseline), got "
                        f"{type(model).__name__}")
    if (model.input_size, model.output_size) != (data.nu, data.ny):
        raise ValueError(f"model has (input_size, output_size) = "
                         f"({model.input_size}, {model.output_size}) but the data have "
                         f"(nu, ny) = ({data.nu}, {data.ny})")


def state_size(model: nn.Module) -> int:
    """``model.state_size`` (R2DN/REN or `RecurrentBaseline`) as an int."""
    return int(cast(int, model.state_size))


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def current_gamma(model: nn.Module) -> float | None:
    """The certified γ of a Lipschitz model (learned bound if it learns γ), else None."""
    if getattr(model, "learns_gamma", False):
        bound = cast(Any, model).gamma_bound()
        return None if bound is None else float(bound.detach())
    gamma = getattr(model, "gamma", None)
    return float(gamma) if isinstance(gamma, (int, float)) else None


def resolve_schedule(schedule: str, seconds: float | None) -> str:
    """``schedule`` itself, or for ``"auto"``: ``"cosine"`` with a time budget, else
    ``"plateau"``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "auto":
        return "plateau" if seconds is None else "cosine"
    return schedule


def cosine_factor(progress: float) -> float:
    """``½(1 + cos(π p))`` for the progress p clipped to [0, 1]: 1 at the start, 0 at the end."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class _Schedule:
    """Learning-rate schedule: constant, step decay at ``milestones``, plateau (per epoch), or
    cosine annealing over the run (per step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, lr: float,
                 milestones: tuple[int, ...], decay: float, patience: int, min_lr: float,
                 seconds: float | None = None, total_steps: int | None = None) -> None:
        if kind not in SCHEDULES or kind == "auto":
            raise ValueError(f"schedule must be one of {SCHEDULES[1:]}, got {kind!r}")
        self.optimizer, self.kind, self.lr = optimizer, kind, lr
        self.seconds, self.total_steps = seconds, total_steps
        self.milestones, self.decay, self.min_lr = tuple(milestones), decay, min_lr
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=decay, patience=patience, min_lr=min_lr) if kind == "plateau"
            else None)

    def start_epoch(self, epoch: int) -> None:
        """Set the rate for 0-based ``epoch`` (step decay: ×decay at every milestone passed)."""
        if self.kind == "step":
            passed = sum(epoch >= m for m in self.milestones)
            for group in self.optimizer.param_groups:
                group["lr"] = max(self.lr * group.get("scale", 1.0) * self.decay**passed,
                                  self.min_lr)

    def before_step(self, elapsed: float, step: int) -> None:
        """Cosine: set every group's rate for progress p = max(elapsed / seconds, step /
        total_steps) (whichever limits the run), from ``lr · scale`` down to ``min_lr``."""
        if self.kind != "cosine":
            return
        progress = 0.0
        if self.seconds is not None:
            progress = elapsed / self.seconds
        if self.total_steps is not None:
            progress = max(progress, step / self.total_steps)
        factor = cosine_factor(progress)
        for group in self.optimizer.param_groups:
            top = self.lr * group.get("scale", 1.0)
            group["lr"] = self.min_lr + (top - self.min_lr) * factor if top > self.min_lr else top

    def end_epoch(self, metric: float) -> None:
        if self.plateau is not None and math.isfinite(metric):
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.plateau is None else self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None:
            self.plateau.load_state_dict(state)


def _tensors(data: SequenceData, dtype: torch.dtype, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    return [(torch.as_tensor(u, dtype=dtype, device=device),
             torch.as_tensor(y, dtype=dtype, device=device)) for u, y in zip(data.u, data.y)]


def _initial_states(estimator: nn.Module | None, kind: str, experiments: list[tuple[Tensor, Tensor]],
                    indices: list[int], state_size: int, like: Tensor) -> Tensor | None:
    """x̂₀ (len(indices), nx) of the given experiments, None for zero."""
    if kind == "zero" or estimator is None:
        return None
    if kind == "learn":
        return estimator(indices)
    return torch.cat([estimator(experiments[i][0][None], experiments[i][1][None])
                      for i in indices], 0)


def _step_loss(kind: str, y_hat: Tensor, y: Tensor, skip: int, count: int, length: int) -> Tensor:
    """Squared error of one step: ``/count`` (``"mean"``) or ``/length`` (``"paper"``)."""
    sq = ((y_hat[:, skip:] - y[:, skip:]) ** 2).sum()
    return sq / count if kind == "mean" else sq / length


def tbptt_losses(model: nn.Module, experiments: list[tuple[Tensor, Tensor]], segment: int,
                 init: Tensor | None, loss: str = "mean") -> Iterator[Tensor]:
    r"""Truncated BPTT with the state carried across segments: yield one loss per segment.

    Segment k covers samples ``[k·segment, (k+1)·segment)`` of every experiment still that long
    (experiments of different lengths are grouped by window length within a step). Its initial
    state is ``init`` (or zero) for k = 0 and the *detached* final state of segment k − 1
    otherwise, so gradients stop at segment boundaries while the simulation is exact: the sum
    over segments of (loss × count) equals the full-sequence squared error. With
    ``segment >= T`` the single loss is the full-BPTT loss.

    The caller must call ``backward`` on each yielded loss before asking for the next.
    """
    n = len(experiments)
    lengths = [u.shape[0] for u, _ in experiments]
    ny = experiments[0][1].shape[1]
    states: dict[int, Tensor] = {}
    for k, _ in enumerate(segments(max(lengths), segment)):
        s = k * segment
        groups: dict[int, list[int]] = {}
        for i in range(n):
            if s < lengths[i]:
                groups.setdefault(min(s + segment, lengths[i]) - s, []).append(i)
        count = sum(len(idx) * length * ny for length, idx in groups.items())
        longest = max(groups)
        total = experiments[0][0].new_zeros(())
        for length, idx in groups.items():
            u = torch.stack([experiments[i][0][s:s + length] for i in idx])
            y = torch.stack([experiments[i][1][s:s + length] for i in idx])
            if k == 0:
                xs = None if init is None else init[idx]
            else:
                xs = torch.stack([states[i] for i in idx])
            y_hat, x_t = model(u, xs)
            total = total + _step_loss(loss, y_hat, y, 0, count, longest)
            for j, i in enumerate(idx):
                states[i] = x_t[j].detach()
        yield total


def _simulate(model: nn.Module, u: Tensor, x0: Tensor | None) -> Tensor:
    frozen = getattr(model, "frozen", None)
    if frozen is not None:
        with frozen():
            return model(u, x0)[0]
    return model(u, x0)[0]


@torch.no_grad()
def _validate(model: nn.Module, estimator: nn.Module | None, kind: str, mode: str,
              full: list[tuple[Tensor, Tensor]], starts: list[int], norm: Normalization,
              washout: int) -> tuple[float, float]:
    """(NRMSE, RMSE) in physical units. ``mode="tail"``: score samples ≥ ``starts[i]`` of the
    full training experiments simulated from their initial-state estimate; ``"given"``: new
    experiments, scored after ``washout`` samples (the encoder reads the first ``washout``).
    """
    y_hat, y_meas = [], []
    for i, (u, y) in enumerate(full):
        if mode == "tail":
            x0 = _initial_states(estimator, kind, full, [i], state_size(model), u)
        else:
            x0 = (estimator(u[None], y[None]) if kind == "encoder" and estimator is not None
                  else None)
        pred = _simulate(model, u[None], x0)[0]
        cut = starts[i]
        y_hat.append(norm.denormalize_y(pred[cut:].double().cpu().numpy()))
        y_meas.append(norm.denormalize_y(y[cut:].double().cpu().numpy()))
    s = scores(y_hat, y_meas, 0)
    return float(np.mean(s["nrmse"])), float(np.sqrt(np.mean(s["rmse"] ** 2)))


def _write_history(out_dir: pathlib.Path, history: list[dict[str, float]]) -> None:
    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(history)

    atomic_write(out_dir / "history.csv", write_csv)

    def write_json(tmp: str) -> None:
        pathlib.Path(tmp).write_text(json.dumps(history, indent=1))

    atomic_write(out_dir / "history.json", write_json)


def _prepare_kernels(model: nn.Module) -> None:
    """Build/load the C++ kernels before training (the build announces itself), so the first
    timed epoch does not silently include a compilation."""
    if isinstance(model, RecurrentModel) and model.device.type == "cpu":
        from ..nn import cpp

        cpp.available()


def fit(model: nn.Module, train: SequenceData, val: SequenceData | None | bool = None, *,
        epochs: int | None = None, segment: int = 256, lr: float | str = "auto",
        washout: int = 100,
        x0: str = "zero", normalize: bool | Normalization = True,
        out_dir: str | pathlib.Path | None = None, resume: bool = False,
        seconds: float | None = None, progress: bool = True, shuffle: bool = False,
        batch_size: int = 32, schedule: str = "auto", milestones: tuple[int, ...] = (20, 40, 60),
        decay: float = 0.1, plateau_patience: int | str = "auto", min_lr: float = 1e-6,
        early_stopping: int | str | None = "auto", clip_value: float | None = 10.0,
        clip_norm: float | None = None, on_nonfinite: str = "raise", loss: str = "mean",
        gamma_penalty: float = 0.0, val_fraction: float = 0.2, seed: int = 0,
        encoder_hidden: int = 64, x0_lr_scale: float = 10.0) -> FitResult:
    r"""Identify ``model`` from measured data; returns a `FitResult`.

    Parameters
    ----------
    model : nn.Module
        Any R2DN/REN family, or a `RecurrentBaseline` (GRU/LSTM).
        Trained in place, in its own dtype and on its own device.
    train : SequenceData
        Training experiments (physical units).
    val : SequenceData, None or False
        Validation data; ``None`` holds out the last ``val_fraction`` (20 %) of every training
        experiment; ``False`` trains on everything without validation.
    epochs : int, optional
        Maximum number of passes over the training data. None (default): `DEFAULT_EPOCHS` (100)
        without a time budget; with ``seconds`` no epoch limit (the budget and early stopping
        end training), so a fast model is not capped at 100 short epochs of a short record.
    segment : int
        TBPTT segment (or window) length in samples.
    lr : float or "auto"
        Adam's initial learning rate. ``"auto"`` (default): `auto_lr` of the model, 1e-2 for an
        R2DN family and for a GRU/LSTM `RecurrentBaseline`, 1e-3 (the papers') otherwise
        (docs/sysid.md, "Defaults that generalise", has the measurements).
    washout : int
        Samples not scored in validation (and, for shuffled windows from the zero state, in the
        loss); with ``x0="encoder"`` also the encoder's input window.
    x0 : {"zero", "learn", "encoder"}
        Initial-state estimate (see `.estimators`).
    normalize : bool or Normalization
        ``True``: per-channel mean/std of the training data (training part only when val=None);
        ``False``: none; or a given `Normalization` (e.g. the F-16 paper's).
    out_dir : path, optional
        Where to write ``checkpoint.pt`` (every epoch, atomically), ``history.csv/json``,
        ``loss.png``, ``model.pt`` (with the ``normalization`` metadata) and ``log.txt``.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if it exists (model, estimator, optimizer,
        schedule, RNG states, history): a killed run loses at most the epoch in progress.
    seconds : float, optional
        Wall-clock training budget; checked after every step.
    progress : bool
        tqdm progress bar.
    shuffle, batch_size
        Shuffled-window training instead of carried-state TBPTT, and its mini-batch size.
    schedule : {"auto", "plateau", "cosine", "step", "constant"}
        Reduce-on-plateau (×``decay`` after ``plateau_patience`` epochs without improvement of
        the validation NRMSE, or of the training loss without validation), cosine annealing
        from ``lr`` to ``min_lr`` over the run (per step; progress = the larger of the time
        spent / ``seconds`` and the steps taken / (``epochs`` × steps per epoch)), step decay
        (×``decay`` at each epoch in ``milestones``, the paper's 20/40/60), or constant.
        ``"auto"`` (default): ``"cosine"`` with a time budget ``seconds``, else ``"plateau"``.
    plateau_patience : int or "auto"
        Epochs without improvement before the plateau schedule decays. ``"auto"``: as many
        epochs as make `PLATEAU_STEPS` optimizer steps, at least 5 (`auto_patience`).
    early_stopping : int, "auto" or None
        Stop after this many epochs without a better validation NRMSE (None: never).
        ``"auto"``: as many epochs as make `EARLY_STOPPING_STEPS` steps, at least 20.
    clip_value, clip_norm : float, optional
        Element-wise (the paper's ±10) and global-norm gradient clipping.
    on_nonfinite : {"raise", "skip"}
        A NaN/inf loss or gradient raises (parameters unchanged) or skips the step with a warning.
    loss : {"mean", "paper"}
        See the module docstring.
    gamma_penalty : float
        For models with ``learns_gamma``: adds ``gamma_penalty · model.gamma_bound()`` to the loss.
    val_fraction : float
        Share of each training experiment held out when ``val=None``.
    seed : int
        Seeds the window shuffling (its generator state is checkpointed).
    encoder_hidden : int
        Hidden width of the ``x0="encoder"`` network.
    x0_lr_scale : float
        With ``x0="learn"`` the learned states' learning rate is ``x0_lr_scale · lr``: each
        state gets one gradient per epoch, and states are O(1–10) in normalised units.
    """
    _check_data(model, train, val)
    lr = auto_lr(model, lr)
    epochs = resolve_epochs(epochs, seconds)
    _check_options(epochs=epochs, segment=segment, batch_size=batch_size, washout=washout, x0=x0,
                   loss=loss, seconds=seconds, on_nonfinite=on_nonfinite, resume=resume,
                   out_dir=out_dir, shuffle=shuffle, train=train)
    out = None if out_dir is None else pathlib.Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    _prepare_kernels(model)
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    data = _prepare_data(train, val, normalize, val_fraction, washout, dtype, device)
    estimator = _make_estimator(x0, train, state_size(model), washout, encoder_hidden,
                                dtype, device)
    optimizer = _make_optimizer(model, estimator, lr, x0, x0_lr_scale)
    generator = torch.Generator().manual_seed(seed)
    windows = (stacked_windows(norm_head(data), segment, dtype, device) if shuffle else None)
    steps = steps_per_epoch(data.head.lengths, segment, windows, batch_size)
    schedule = resolve_schedule(schedule, seconds)
    sched = _Schedule(optimizer, schedule, lr, milestones, decay,
                      auto_patience(plateau_patience, steps, 5, PLATEAU_STEPS), min_lr,
                      seconds=seconds,
                      total_steps=None if epochs == UNLIMITED_EPOCHS else epochs * steps)
    stop_after = (None if early_stopping is None
                  else auto_patience(early_stopping, steps, 20, EARLY_STOPPING_STEPS))
    if shuffle and x0 == "zero" and washout >= segment:
        raise ValueError(f"shuffled windows from the zero state skip washout={washout} samples of "
                         f"each window: segment={segment} must be longer")
    run = _Run(model=model, estimator=estimator, optimizer=optimizer, sched=sched,
               generator=generator, data=data, windows=windows, x0=x0, loss=loss,
               segment=segment, batch_size=batch_size, washout=washout, ny=train.ny,
               seconds=seconds, clip_value=clip_value, clip_norm=clip_norm,
               on_nonfinite=on_nonfinite, gamma_penalty=gamma_penalty,
               early_stopping=stop_after, out=out)
    if resume and run.checkpoint_path is not None and run.checkpoint_path.exists():
        run.restore(load_checkpoint(run.checkpoint_path), epochs)
    run.log(f"fit: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} "
            f"parameters, epochs={epochs}, segment={segment}, lr={lr}, schedule={schedule}, "
            f"x0={x0}, val={data.val_mode}, loss={loss}, resume from epoch {run.start_epoch}")
    run.train(epochs, progress)
    return _finish(run, x0, washout)


#: Epoch limit of ``fit(epochs=None)`` without a time budget (with ``seconds``: `UNLIMITED_EPOCHS`).
DEFAULT_EPOCHS = 100
UNLIMITED_EPOCHS = 10**9
#: ``fit(lr="auto")`` per model kind (docs/sysid.md, "Defaults that generalise"): the R2DN opens
#: its nonlinear channel only by training (its long-memory init starts with B̂₁ = C₁ = 0) and
#: needed 1e-2 to leave the linear level within minutes; with the cosine schedule of a time
#: budget the GRU baseline was best at 1e-2 as well (3e-3 and 1e-3 worse on Bouc–Wen and
#: Duffing). Models of no measured kind (REN, custom modules) keep the papers' 1e-3.
AUTO_LR = {"r2dn": 1e-2, "baseline": 1e-2, "other": 1e-3}
R2DN_FAMILIES = (ContractingR2DN, GeneralR2DN, LipschitzR2DN, PassiveR2DN)


def auto_lr(model: nn.Module, lr: float | str) -> float:
    """``lr`` itself (checked: a positive number), or for ``"auto"`` the `AUTO_LR` of the
    model's kind."""
    if lr != "auto":
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"lr must be a positive number or 'auto', got {lr!r}")
        return lr
    if isinstance(model, R2DN_FAMILIES):
        return AUTO_LR["r2dn"]
    if isinstance(model, RecurrentBaseline):
        return AUTO_LR["baseline"]
    return AUTO_LR["other"]


def resolve_epochs(epochs: int | None, seconds: float | None) -> int:
    """``epochs`` itself, or for None `DEFAULT_EPOCHS` (no time budget) / `UNLIMITED_EPOCHS`."""
    if epochs is not None:
        return epochs
    return DEFAULT_EPOCHS if seconds is None else UNLIMITED_EPOCHS


#: Optimizer steps without improvement before the ``"auto"`` plateau schedule decays, and before
#: ``"auto"`` early stopping: 5 and 20 epochs of the F-16 paper recipe (288 steps per epoch).
#: Counted in steps because an epoch of a short record is a few steps (Bouc–Wen 26, a
#: 1,024-sample record 4): a patience of 5 *epochs* decayed the rate 1000-fold while the R2DN
#: sat at the linear model's error before learning its nonlinearity (docs/sysid.md).
PLATEAU_STEPS = 1440
EARLY_STOPPING_STEPS = 5760


def steps_per_epoch(lengths: list[int], segment: int, windows: tuple[Tensor, Tensor] | None,
                    batch_size: int) -> int:
    """Optimizer steps in one epoch: segments of the longest experiment (carried-state TBPTT),
    or mini-batches of the shuffled ``windows``."""
    if windows is not None:
        return max(1, math.ceil(windows[0].shape[0] / batch_size))
    return max(1, math.ceil(max(lengths) / segment))


def auto_patience(value: int | str, steps: int, minimum: int, target_steps: int) -> int:
    """An epoch count: ``value`` itself, or for ``"auto"`` the epochs that make ``target_steps``
    optimizer steps of ``steps`` each, at least ``minimum``."""
    if value == "auto":
        return max(minimum, math.ceil(target_steps / steps))
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"patience must be a positive int or 'auto', got {value!r}")
    return value


def _check_data(model: nn.Module, train: SequenceData, val: SequenceData | None | bool) -> None:
    """Types and sizes of the model and data, and finite data (`fit`'s first checks)."""
    if not isinstance(train, SequenceData):
        raise TypeError(f"train must be a SequenceData, got {type(train).__name__}")
    if not (val is None or val is False or isinstance(val, SequenceData)):
        raise TypeError(f"val must be a SequenceData, None or False, got {val!r}")
    _check_model(model, train)
    if isinstance(val, SequenceData):
        _check_model(model, val)
    for label, data in (("train", train), ("val", val)):
        if isinstance(data, SequenceData):  # again: arrays may have changed since construction
            for i, (u_i, y_i) in enumerate(zip(data.u, data.y)):
                check_finite(f"{label}.u[{i}]", u_i)
                check_finite(f"{label}.y[{i}]", y_i)


def _check_options(*, epochs: int, segment: int, batch_size: int, washout: int, x0: str,
                   loss: str, seconds: float | None, on_nonfinite: str, resume: bool,
                   out_dir: str | pathlib.Path | None, shuffle: bool,
                   train: SequenceData) -> None:
    """`fit`'s scalar options; a bad one is a ``ValueError`` naming it and its value."""
    for name, value in (("epochs", epochs), ("segment", segment), ("batch_size", batch_size)):
        _positive_int(name, value)
    if not isinstance(washout, int) or isinstance(washout, bool) or washout < 0:
        raise ValueError(f"washout must be a non-negative int, got {washout!r}")
    if x0 not in X0_KINDS:
        raise ValueError(f"x0 must be one of {X0_KINDS}, got {x0!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
        raise ValueError(f"seconds must be a positive number or None, got {seconds!r}")
    check_on_nonfinite(on_nonfinite)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    _check_x0_options(x0, washout, shuffle, train)


def _check_x0_options(x0: str, washout: int, shuffle: bool, train: SequenceData) -> None:
    """The initial-state estimate's requirements on ``shuffle`` and ``washout``."""
    if shuffle and x0 == "learn":
        raise ValueError("x0='learn' learns one state per experiment start; it needs the carried-"
                         "state TBPTT (shuffle=False)")
    if x0 == "encoder" and washout < 1:
        raise ValueError("x0='encoder' reads the first washout samples: washout must be >= 1")
    if x0 == "encoder" and min(train.lengths) < washout:
        raise ValueError(f"x0='encoder' needs every experiment to have >= washout={washout} "
                         f"samples, got lengths {train.lengths}")


Experiments = list[tuple[Tensor, Tensor]]


@dataclass
class _Data:
    """The normalised tensors of one `fit` call.

    Attributes
    ----------
    norm : Normalization
        Fitted on ``head`` (or given).
    head : SequenceData
        The training part (physical units): all of ``train``, or its first 1 − val_fraction.
    experiments : list of (u, y)
        ``head`` normalised, as tensors.
    val_mode : {"tail", "given", "none"}
        See `_validate`.
    val_full, val_starts
        Normalised validation experiments and the first scored sample of each.
    """

    norm: Normalization
    head: SequenceData
    experiments: Experiments
    val_mode: str
    val_full: Experiments
    val_starts: list[int]


def norm_head(data: _Data) -> SequenceData:
    """The training part of ``data``, normalised (for the shuffled windows)."""
    return data.norm.apply(data.head)


def _normalization(normalize: bool | Normalization, train: SequenceData,
                   head: SequenceData) -> Normalization:
    """``normalize`` resolved: a given `Normalization`, fitted on ``head``, or the identity."""
    if isinstance(normalize, Normalization):
        normalize.check(train.nu, train.ny)
        return normalize
    if normalize is True:
        return Normalization.fit(head)
    if normalize is False:
        return Normalization.identity(train.nu, train.ny)
    raise TypeError(f"normalize must be True, False or a Normalization, got {normalize!r}")


def _prepare_data(train: SequenceData, val: SequenceData | None | bool,
                  normalize: bool | Normalization, val_fraction: float, washout: int,
                  dtype: torch.dtype, device: torch.device) -> _Data:
    """Split off the validation tail (``val=None``), fit the normalisation on the training part
    only, and convert to tensors."""
    if val is None:
        head, _ = train.split(val_fraction)
    else:
        head = train
    norm = _normalization(normalize, train, head)
    experiments = _tensors(norm.apply(head), dtype, device)
    if val is None:
        return _Data(norm, head, experiments, "tail", _tensors(norm.apply(train), dtype, device),
                     head.lengths)
    if isinstance(val, SequenceData):
        if min(val.lengths) <= washout:
            raise ValueError(f"validation experiments must be longer than washout={washout}, got "
                             f"lengths {val.lengths}")
        return _Data(norm, head, experiments, "given", _tensors(norm.apply(val), dtype, device),
                     [washout] * len(val))
    return _Data(norm, head, experiments, "none", [], [])


def _make_estimator(x0: str, train: SequenceData, state_size: int, washout: int,
                    encoder_hidden: int, dtype: torch.dtype,
                    device: torch.device) -> nn.Module | None:
    """The initial-state estimator of ``x0`` (None for ``"zero"``)."""
    if x0 == "learn":
        return LearnedInitialStates(len(train), state_size, dtype=dtype, device=device)
    if x0 == "encoder":
        return StateEncoder(train.nu, train.ny, state_size, washout, hidden=encoder_hidden,
                            dtype=dtype, device=device)
    return None


def _make_optimizer(model: nn.Module, estimator: nn.Module | None, lr: float, x0: str,
                    x0_lr_scale: float) -> torch.optim.Optimizer:
    """Adam with the model's group at ``lr`` and the estimator's at ``lr`` (``x0_lr_scale · lr``
    for learned states); each group's ``scale`` is what the step schedule multiplies."""
    groups: list[dict[str, Any]] = [{"params": list(model.parameters()), "lr": lr, "scale": 1.0}]
    if estimator is not None:
        scale = float(x0_lr_scale) if x0 == "learn" else 1.0
        groups.append({"params": list(estimator.parameters()), "lr": lr * scale,
                       "scale": scale})
    return torch.optim.Adam(groups, lr=lr)


@dataclass
class _Run:
    """The state of one `fit` call: what trains, how, and its progress (history, best weights).

    Methods train one epoch (carried-state TBPTT or shuffled windows), validate, record the
    epoch (early stopping, best-weights snapshot), checkpoint and restore.
    """

    model: nn.Module
    estimator: nn.Module | None
    optimizer: torch.optim.Optimizer
    sched: _Schedule
    generator: torch.Generator
    data: _Data
    windows: tuple[Tensor, Tensor] | None
    x0: str
    loss: str
    segment: int
    batch_size: int
    washout: int
    ny: int
    seconds: float | None
    clip_value: float | None
    clip_norm: float | None
    on_nonfinite: str
    gamma_penalty: float
    early_stopping: int | None
    out: pathlib.Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    since_best: int = 0
    best_state: dict[str, Any] | None = None
    start_epoch: int = 0
    stopped: str = "epochs"
    out_of_time: bool = False
    t_start: float = 0.0
    steps_done: int = 0

    @property
    def checkpoint_path(self) -> pathlib.Path | None:
        return None if self.out is None else self.out / CHECKPOINT

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters()) + ([] if self.estimator is None
                                                else list(self.estimator.parameters()))

    def log(self, line: str) -> None:
        """Append ``line`` to ``out/log.txt`` (if there is an ``out``)."""
        if self.out is not None:
            with open(self.out / "log.txt", "a") as handle:
                handle.write(line + "\n")

    def snapshot(self) -> dict[str, Any]:
        """Copies of the model's and estimator's weights."""
        return {"model": copy.deepcopy(self.model.state_dict()),
                "estimator": (None if self.estimator is None
                              else copy.deepcopy(self.estimator.state_dict()))}

    def restore(self, blob: dict[str, Any], epochs: int) -> None:
        """Continue from a checkpoint written by `save` (``resume=True``)."""
        self.model.load_state_dict(blob["model"])
        if self.estimator is not None:
            self.estimator.load_state_dict(blob["estimator"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["schedule"])
        torch.set_rng_state(blob["torch_rng"])
        self.generator.set_state(blob["generator"])
        self.history = list(blob["history"])
        self.best_val, self.best_epoch = blob["best_val"], blob["best_epoch"]
        self.since_best, self.best_state = blob["since_best"], blob["best_state"]
        self.start_epoch = len(self.history)
        self.steps_done = int(sum(row["steps"] + row["skipped"] for row in self.history))
        self.stopped = blob.get("stopped", "epochs")
        if blob.get("finished"):
            self.start_epoch = epochs

    def take_step(self, total: Tensor, context: str) -> bool:
        """Backward and a guarded optimizer step (with the learned-γ penalty); False if skipped."""
        if getattr(self.model, "learns_gamma", False) and self.gamma_penalty > 0:
            bound = cast(Any, self.model).gamma_bound()
            if bound is not None:
                total = total + self.gamma_penalty * bound
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        return guarded_step(self.optimizer, total, self.parameters,
                            on_nonfinite=self.on_nonfinite, clip_value=self.clip_value,
                            clip_norm=self.clip_norm, context=context)

    def step_and_check_time(self, total: Tensor, context: str, losses: list[float],
                            skipped: list[int]) -> bool:
        """Take (or skip) one step; True when the time budget is spent."""
        self.sched.before_step(time.perf_counter() - self.t_start, self.steps_done)
        self.steps_done += 1
        if self.take_step(total, context):
            losses.append(float(total.detach()))
        else:
            skipped[0] += 1
        self.out_of_time = (self.seconds is not None
                            and time.perf_counter() - self.t_start > self.seconds)
        return self.out_of_time

    def tbptt_epoch(self, epoch: int, losses: list[float], skipped: list[int]) -> None:
        """One pass of carried-state TBPTT from the initial-state estimates."""
        experiments = self.data.experiments
        init = _initial_states(self.estimator, self.x0, experiments,
                               list(range(len(experiments))), state_size(self.model),
                               experiments[0][0])
        for k, total in enumerate(tbptt_losses(self.model, experiments, self.segment, init,
                                               self.loss)):
            if self.step_and_check_time(total, f"epoch {epoch + 1}, segment {k + 1}", losses,
                                        skipped):
                break

    def shuffled_epoch(self, epoch: int, losses: list[float], skipped: list[int]) -> None:
        """One pass over the windows in random mini-batches."""
        assert self.windows is not None
        u_w, y_w = self.windows
        order = torch.randperm(u_w.shape[0], generator=self.generator).to(u_w.device)
        skip = self.washout if self.x0 == "zero" else 0
        for b, first in enumerate(range(0, u_w.shape[0], self.batch_size)):
            idx = order[first:first + self.batch_size]
            u, y = u_w[idx], y_w[idx]
            xs = self.estimator(u, y) if self.x0 == "encoder" and self.estimator else None
            y_hat, _ = self.model(u, xs)
            count = len(idx) * (self.segment - skip) * self.ny
            total = _step_loss(self.loss, y_hat, y, skip, count, self.segment - skip)
            if self.step_and_check_time(total, f"epoch {epoch + 1}, batch {b + 1}", losses,
                                        skipped):
                break

    def validate(self) -> tuple[float, float]:
        """(NRMSE, RMSE) of the current weights; NaN without validation."""
        if self.data.val_mode == "none":
            return math.nan, math.nan
        return _validate(self.model, self.estimator, self.x0, self.data.val_mode,
                         self.data.val_full, self.data.val_starts, self.data.norm, self.washout)

    def record(self, row: dict[str, float]) -> bool:
        """Append the epoch's row, step the plateau schedule, track the best weights and early
        stopping; True when training is finished."""
        self.history.append(row)
        validating = self.data.val_mode != "none"
        self.sched.end_epoch(row["val_nrmse"] if validating else row["train_loss"])
        if not validating or row["val_nrmse"] < self.best_val:
            self.best_val = row["val_nrmse"] if validating else math.inf
            self.best_epoch, self.since_best = int(row["epoch"]), 0
            self.best_state = self.snapshot() if validating else None
        else:
            self.since_best += 1
        if self.out_of_time:
            self.stopped = "seconds"
        elif (self.early_stopping is not None and validating
              and self.since_best >= self.early_stopping):
            self.stopped = "early_stopping"
        return self.stopped != "epochs"

    def save(self, finished: bool) -> None:
        """Checkpoint (atomically) and write the history files."""
        if self.out is None or self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "model": self.model.state_dict(),
            "estimator": None if self.estimator is None else self.estimator.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "generator": self.generator.get_state(),
            "history": self.history, "best_val": self.best_val, "best_epoch": self.best_epoch,
            "since_best": self.since_best, "best_state": self.best_state, "finished": finished,
            "stopped": self.stopped,
        })
        _write_history(self.out, self.history)

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch and validate; the epoch's history row."""
        self.sched.start_epoch(epoch)
        self.model.train()
        t0 = time.perf_counter()
        losses: list[float] = []
        skipped = [0]
        if self.windows is None:
            self.tbptt_epoch(epoch, losses, skipped)
        else:
            self.shuffled_epoch(epoch, losses, skipped)
        epoch_seconds = time.perf_counter() - t0
        self.model.eval()
        val_nrmse, val_rmse = self.validate()
        return {"epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else math.nan,
                "val_nrmse": val_nrmse, "val_rmse": val_rmse,
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": epoch_seconds,
                "steps": len(losses), "skipped": skipped[0]}

    def train(self, epochs: int, progress: bool) -> None:
        """Epochs ``start_epoch … epochs − 1`` (or until the budget or early stopping ends them),
        then restore the best-validation weights."""
        self.t_start = time.perf_counter()
        total = None if epochs == UNLIMITED_EPOCHS else epochs
        bar = tqdm(total=total, initial=min(self.start_epoch, epochs), disable=not progress,
                   desc="sysid.fit", unit="epoch")
        for epoch in range(self.start_epoch, epochs):
            row = self.epoch(epoch)
            finished = self.record(row) or epoch + 1 == epochs
            self.log(json.dumps(row))
            bar.update()
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_nrmse']:.4g}",
                            refresh=False)
            self.save(finished)
            if finished:
                break
        bar.close()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state["model"])
            if self.estimator is not None and self.best_state["estimator"] is not None:
                self.estimator.load_state_dict(self.best_state["estimator"])


def _finish(run: _Run, x0: str, washout: int) -> FitResult:
    """The `FitResult` of a finished run (and its output files)."""
    if not run.history:
        warnings.warn("fit ran no epoch (resumed a finished run?)", RuntimeWarning, stacklevel=3)
    model = run.model
    model.eval()
    predictor = Predictor(model, run.data.norm, run.estimator)
    gamma = current_gamma(model)
    result = FitResult(predictor=predictor, history=run.history, best_epoch=run.best_epoch,
                       stopped=run.stopped, normalization=run.data.norm, gamma=gamma,
                       gamma_physical=None if gamma is None else run.data.norm.physical_gamma(gamma),
                       out_dir=run.out)
    if run.out is not None:
        _save_outputs(result, x0, washout)
    return result


def _save_outputs(result: FitResult, x0: str, washout: int) -> None:
    from .plots import plot_history

    out = result.out_dir
    assert out is not None
    model = result.predictor.model
    if result.normalization is None:
        raise ValueError("a FitResult to save needs its normalization")
    meta: dict[str, Any] = {"normalization": result.normalization.as_metadata(), "x0": x0,
                            "washout": washout, "best_epoch": result.best_epoch,
                            "task": "sysid.fit"}
    if result.gamma is not None:
        meta.update(gamma_normalized=result.gamma, gamma_physical_bound=result.gamma_physical)
    if isinstance(model, RecurrentModel):
        from ..nn.checkpoint import save_model

        atomic_write(out / "model.pt", lambda tmp: save_model(model, tmp, **meta))
    else:
        atomic_write(out / "model.pt", lambda tmp: torch.save(
            {"kwargs": model.init_kwargs, "state_dict": model.state_dict(), "metadata": meta},
            tmp))
    estimator = result.predictor.estimator
    if estimator is not None:
        atomic_write(out / "estimator.pt",
                     lambda tmp: torch.save({"kind": x0, "state_dict": estimator.state_dict()},
                                            tmp))
    plot_history(result.history, out / "loss.png")
