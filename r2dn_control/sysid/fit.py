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
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn.base import RecurrentModel
from ..train.guard import check_finite, check_on_nonfinite, guarded_step
from .checkpointing import CHECKPOINT, atomic_write, load_checkpoint, save_checkpoint
from .data import Normalization, SequenceData, segments, stacked_windows
from .estimators import X0_KINDS, LearnedInitialStates, StateEncoder
from .evaluate import scores
from .predictor import Predictor

SCHEDULES = ("constant", "step", "plateau")
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


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def current_gamma(model: nn.Module) -> float | None:
    """The certified γ of a Lipschitz model (learned bound if it learns γ), else None."""
    if getattr(model, "learns_gamma", False):
        bound = model.gamma_bound()
        return None if bound is None else float(bound.detach())
    gamma = getattr(model, "gamma", None)
    return float(gamma) if isinstance(gamma, (int, float)) else None


class _Schedule:
    """Learning-rate schedule per epoch: constant, step decay at ``milestones``, or plateau."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, lr: float,
                 milestones: tuple[int, ...], decay: float, patience: int, min_lr: float) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        self.optimizer, self.kind, self.lr = optimizer, kind, lr
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
    states: list[Tensor | None] = [None] * n
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
            x0 = _initial_states(estimator, kind, full, [i], model.state_size, u)
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
    atomic_write(out_dir / "history.json",
                 lambda tmp: pathlib.Path(tmp).write_text(json.dumps(history, indent=1)))


def _prepare_kernels(model: nn.Module) -> None:
    """Build/load the C++ kernels before training (the build announces itself), so the first
    timed epoch does not silently include a compilation."""
    if isinstance(model, RecurrentModel) and model.device.type == "cpu":
        from ..nn import cpp

        cpp.available()


def fit(model: nn.Module, train: SequenceData, val: SequenceData | None | bool = None, *,
        epochs: int = 100, segment: int = 256, lr: float = 1e-3, washout: int = 100,
        x0: str = "zero", normalize: bool | Normalization = True,
        out_dir: str | pathlib.Path | None = None, resume: bool = False,
        seconds: float | None = None, progress: bool = True, shuffle: bool = False,
        batch_size: int = 32, schedule: str = "plateau", milestones: tuple[int, ...] = (20, 40, 60),
        decay: float = 0.1, plateau_patience: int = 5, min_lr: float = 1e-6,
        early_stopping: int | None = 20, clip_value: float | None = 10.0,
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
    epochs : int
        Maximum number of passes over the training data.
    segment : int
        TBPTT segment (or window) length in samples.
    lr : float
        Adam's initial learning rate.
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
    schedule : {"plateau", "step", "constant"}
        Reduce-on-plateau (×``decay`` after ``plateau_patience`` epochs without improvement of
        the validation NRMSE, or of the training loss without validation), step decay (×``decay``
        at each epoch in ``milestones``, the paper's 20/40/60), or constant.
    early_stopping : int, optional
        Stop after this many epochs without a better validation NRMSE (None: never).
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
    epochs = _positive_int("epochs", epochs)
    segment = _positive_int("segment", segment)
    batch_size = _positive_int("batch_size", batch_size)
    if not isinstance(washout, int) or isinstance(washout, bool) or washout < 0:
        raise ValueError(f"washout must be a non-negative int, got {washout!r}")
    if x0 not in X0_KINDS:
        raise ValueError(f"x0 must be one of {X0_KINDS}, got {x0!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
        raise ValueError(f"seconds must be a positive number or None, got {seconds!r}")
    check_on_nonfinite(on_nonfinite)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    if shuffle and x0 == "learn":
        raise ValueError("x0='learn' learns one state per experiment start; it needs the carried-"
                         "state TBPTT (shuffle=False)")
    if x0 == "encoder" and washout < 1:
        raise ValueError("x0='encoder' reads the first washout samples: washout must be >= 1")
    if x0 == "encoder" and min(train.lengths) < washout:
        raise ValueError(f"x0='encoder' needs every experiment to have >= washout={washout} "
                         f"samples, got lengths {train.lengths}")

    out = None if out_dir is None else pathlib.Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    _prepare_kernels(model)
    param = next(model.parameters())
    dtype, device = param.dtype, param.device

    # --- data: split, normalisation fitted on training data only, tensors
    if val is None:
        head, _ = train.split(val_fraction)
        val_mode = "tail"
    else:
        head, val_mode = train, ("none" if val is False else "given")
    if isinstance(normalize, Normalization):
        norm = normalize
        norm.check(train.nu, train.ny)
    elif normalize is True:
        norm = Normalization.fit(head)
    elif normalize is False:
        norm = Normalization.identity(train.nu, train.ny)
    else:
        raise TypeError(f"normalize must be True, False or a Normalization, got {normalize!r}")
    experiments = _tensors(norm.apply(head), dtype, device)
    if val_mode == "tail":
        val_full = _tensors(norm.apply(train), dtype, device)
        val_starts = head.lengths
    elif val_mode == "given":
        val_full = _tensors(norm.apply(val), dtype, device)
        val_starts = [washout] * len(val)
        if min(val.lengths) <= washout:
            raise ValueError(f"validation experiments must be longer than washout={washout}, got "
                             f"lengths {val.lengths}")
    else:
        val_full, val_starts = [], []

    # --- estimator, optimiser, schedule
    estimator: nn.Module | None = None
    if x0 == "learn":
        estimator = LearnedInitialStates(len(train), model.state_size, dtype=dtype, device=device)
    elif x0 == "encoder":
        estimator = StateEncoder(train.nu, train.ny, model.state_size, washout,
                                 hidden=encoder_hidden, dtype=dtype, device=device)
    parameters = list(model.parameters()) + ([] if estimator is None
                                             else list(estimator.parameters()))
    groups = [{"params": list(model.parameters()), "lr": lr, "scale": 1.0}]
    if estimator is not None:
        scale = float(x0_lr_scale) if x0 == "learn" else 1.0
        groups.append({"params": list(estimator.parameters()), "lr": lr * scale,
                       "scale": scale})
    optimizer = torch.optim.Adam(groups, lr=lr)
    sched = _Schedule(optimizer, schedule, lr, milestones, decay, plateau_patience, min_lr)
    generator = torch.Generator().manual_seed(seed)
    windows = (stacked_windows(norm.apply(head), segment, dtype, device) if shuffle else None)
    if shuffle and x0 == "zero" and washout >= segment:
        raise ValueError(f"shuffled windows from the zero state skip washout={washout} samples of "
                         f"each window: segment={segment} must be longer")
    learns_gamma = bool(getattr(model, "learns_gamma", False))

    history: list[dict[str, float]] = []
    best_val, best_epoch, since_best = math.inf, 0, 0
    best_state: dict[str, Any] | None = None
    start_epoch = 0
    stopped = "epochs"

    def snapshot() -> dict[str, Any]:
        return {"model": copy.deepcopy(model.state_dict()),
                "estimator": None if estimator is None else copy.deepcopy(estimator.state_dict())}

    ckpt_path = None if out is None else out / CHECKPOINT
    if resume and ckpt_path is not None and ckpt_path.exists():
        blob = load_checkpoint(ckpt_path)
        model.load_state_dict(blob["model"])
        if estimator is not None:
            estimator.load_state_dict(blob["estimator"])
        optimizer.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["schedule"])
        torch.set_rng_state(blob["torch_rng"])
        generator.set_state(blob["generator"])
        history = list(blob["history"])
        best_val, best_epoch, since_best = blob["best_val"], blob["best_epoch"], blob["since_best"]
        best_state = blob["best_state"]
        start_epoch = len(history)
        stopped = blob.get("stopped", "epochs")
        if blob.get("finished"):
            start_epoch = epochs

    def log(line: str) -> None:
        if out is not None:
            with open(out / "log.txt", "a") as handle:
                handle.write(line + "\n")

    log(f"fit: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters, "
        f"epochs={epochs}, segment={segment}, lr={lr}, schedule={schedule}, x0={x0}, "
        f"val={val_mode}, loss={loss}, resume from epoch {start_epoch}")

    def take_step(total: Tensor, context: str) -> bool:
        if learns_gamma and gamma_penalty > 0:
            bound = model.gamma_bound()
            if bound is not None:
                total = total + gamma_penalty * bound
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        return guarded_step(optimizer, total, parameters, on_nonfinite=on_nonfinite,
                            clip_value=clip_value, clip_norm=clip_norm, context=context)

    t_start = time.perf_counter()
    bar = tqdm(total=epochs, initial=min(start_epoch, epochs), disable=not progress,
               desc="sysid.fit", unit="epoch")
    out_of_time = False
    for epoch in range(start_epoch, epochs):
        sched.start_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        step_losses: list[float] = []
        skipped = 0

        def step_and_check_time(total: Tensor, context: str) -> bool:
            """Take (or skip) one step; True when the time budget is spent."""
            nonlocal skipped, out_of_time
            if take_step(total, context):
                step_losses.append(float(total.detach()))  # noqa: B023 (called in-loop)
            else:
                skipped += 1
            out_of_time = seconds is not None and time.perf_counter() - t_start > seconds
            return out_of_time

        if not shuffle:
            init = _initial_states(estimator, x0, experiments, list(range(len(experiments))),
                                   model.state_size, experiments[0][0])
            for k, total in enumerate(tbptt_losses(model, experiments, segment, init, loss)):
                if step_and_check_time(total, f"epoch {epoch + 1}, segment {k + 1}"):
                    break
        else:
            u_w, y_w = windows
            order = torch.randperm(u_w.shape[0], generator=generator).to(device)
            skip = washout if x0 == "zero" else 0
            for b, first in enumerate(range(0, u_w.shape[0], batch_size)):
                idx = order[first:first + batch_size]
                u, y = u_w[idx], y_w[idx]
                xs = estimator(u, y) if x0 == "encoder" else None
                y_hat, _ = model(u, xs)
                count = len(idx) * (segment - skip) * train.ny
                total = _step_loss(loss, y_hat, y, skip, count, segment - skip)
                if step_and_check_time(total, f"epoch {epoch + 1}, batch {b + 1}"):
                    break
        epoch_seconds = time.perf_counter() - t0
        model.eval()
        if val_mode != "none":
            val_nrmse, val_rmse = _validate(model, estimator, x0, val_mode, val_full, val_starts,
                                            norm, washout)
        else:
            val_nrmse = val_rmse = math.nan
        train_loss = float(np.mean(step_losses)) if step_losses else math.nan
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_nrmse": val_nrmse,
               "val_rmse": val_rmse, "lr": optimizer.param_groups[0]["lr"],
               "seconds": epoch_seconds, "steps": len(step_losses), "skipped": skipped}
        history.append(row)
        sched.end_epoch(val_nrmse if val_mode != "none" else train_loss)
        if val_mode == "none" or val_nrmse < best_val:
            best_val = val_nrmse if val_mode != "none" else math.inf
            best_epoch, since_best = epoch + 1, 0
            best_state = snapshot() if val_mode != "none" else None
        else:
            since_best += 1
        if out_of_time:
            stopped = "seconds"
        elif early_stopping is not None and val_mode != "none" and since_best >= early_stopping:
            stopped = "early_stopping"
        finished = stopped != "epochs" or epoch + 1 == epochs
        log(json.dumps(row))
        bar.update()
        bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_nrmse:.4g}", refresh=False)
        if out is not None:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(),
                "estimator": None if estimator is None else estimator.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "generator": generator.get_state(),
                "history": history, "best_val": best_val, "best_epoch": best_epoch,
                "since_best": since_best, "best_state": best_state, "finished": finished,
                "stopped": stopped,
            })
            _write_history(out, history)
        if finished:
            break
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state["model"])
        if estimator is not None and best_state["estimator"] is not None:
            estimator.load_state_dict(best_state["estimator"])
    if not history:
        warnings.warn("fit ran no epoch (resumed a finished run?)", RuntimeWarning, stacklevel=2)
    model.eval()
    predictor = Predictor(model, norm, estimator)
    gamma = current_gamma(model)
    result = FitResult(predictor=predictor, history=history, best_epoch=best_epoch,
                       stopped=stopped, normalization=norm, gamma=gamma,
                       gamma_physical=None if gamma is None else norm.physical_gamma(gamma),
                       out_dir=out)
    if out is not None:
        _save_outputs(result, x0, washout)
    return result


def _save_outputs(result: FitResult, x0: str, washout: int) -> None:
    from .plots import plot_history

    out = result.out_dir
    assert out is not None
    model = result.predictor.model
    meta = {"normalization": result.normalization.as_metadata(), "x0": x0, "washout": washout,
            "best_epoch": result.best_epoch, "task": "sysid.fit"}
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
