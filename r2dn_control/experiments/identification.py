r"""Shared run of the system-identification experiments (``f16``, ``bouc-wen``).

Both go through the public `r2dn_control.sysid` workflow (docs/sysid.md): the measured
records are normalised per channel (`Normalization`), a contracting
R2DN or REN is fitted by truncated BPTT with the state carried across segments
(`fit`, ``val=False``: a fixed number of epochs, the last weights kept),
and the identified model is simulated on the test records from the zero state and scored after
a washout (`evaluate`, physical units):

* per channel $\mathrm{RMSE}_c = \sqrt{\mathrm{mean}_t(\hat y_{t,c} - y_{t,c})^2}$ and
  $\mathrm{NRMSE}_c = \mathrm{RMSE}_c / \mathrm{std}_t(y_{t,c})$; the test metric is the
  mean of the NRMSE over channels.

Certificates (docs/theory.md §4 and §7): contraction and the incremental ℓ₂ gain γ of the
normalised model, and the same two for the model in physical units
(`r2dn_control.certify.in_physical_units`: inputs scaled by 1/σ_u, outputs by σ_y). The
contraction rate does not depend on the units; γ does (γ_phys ≤ γ̃ · max σ_y / min σ_u).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import certify
from ..nn import ContractingR2DN, ContractingREN, RecurrentModel
from .common import (
    EpochTimer,
    ExperimentError,
    certificate_method,
    parameter_count,
    pyplot,
    save_checkpoint,
    save_figure,
    write_run,
)


@dataclass(frozen=True)
class IdentificationConfig:
    """Model and training fields shared by the identification experiments.

    ``schedule``/``milestones``/``decay`` as in `r2dn_control.sysid.fit` (``"step"``: the
    learning rate ×``decay`` at each milestone epoch). ``contraction_rate`` None keeps the
    constructors' ᾱ = 1. ``max_samples`` (optional) keeps only the first samples of every
    training and test record (the quick and test presets).
    """

    state_size: int = 75
    r2dn_features: int = 75
    r2dn_hidden: tuple[int, ...] = (87, 87, 87)
    ren_features: int = 150
    activation: str = "relu"
    init: str = "long_memory"
    contraction_rate: float | None = None
    epochs: int = 70
    segment: int = 256
    lr: float = 1e-3
    schedule: str = "step"
    milestones: tuple[int, ...] = (20, 40, 60)
    decay: float = 0.1
    clip_value: float = 10.0
    loss: str = "paper"
    washout: int = 100
    max_samples: int | None = None
    plot_samples: int = 1000

    def _check(self) -> None:
        for name in ("state_size", "r2dn_features", "ren_features", "epochs", "segment",
                     "plot_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.washout, bool) or not isinstance(self.washout, int) \
                or self.washout < 0:
            raise ValueError(f"washout must be a non-negative int, got {self.washout!r}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int)
                                             or self.max_samples <= self.washout):
            raise ValueError(f"max_samples must be None or an int > washout ({self.washout}), "
                             f"got {self.max_samples!r}")


def make_model(config: IdentificationConfig, family: str, nu: int, ny: int) -> RecurrentModel:
    """A contracting R2DN (LBDN hidden widths ``r2dn_hidden``) or REN from nu inputs to ny outputs."""
    common: dict[str, Any] = dict(activation=config.activation, init=config.init)
    if config.contraction_rate is not None:
        common["contraction_rate"] = config.contraction_rate
    if family == "r2dn":
        return ContractingR2DN(nu, config.state_size, config.r2dn_features, ny,
                               hidden=config.r2dn_hidden, **common)
    if family == "ren":
        return ContractingREN(nu, config.state_size, config.ren_features, ny, **common)
    raise ValueError(f"model family must be 'r2dn' or 'ren', got {family!r}")


def truncate(data, samples: int | None):
    """The first ``samples`` of every experiment of a SequenceData (all of it for None)."""
    from ..sysid import SequenceData

    if samples is None:
        return data
    return SequenceData([u[:samples] for u in data.u], [y[:samples] for y in data.y],
                        dt=data.dt, names=data.names)


def certify_identified(model: RecurrentModel, u_std, y_std) -> dict[str, Any]:
    """Contraction and incremental ℓ₂ gain of the normalised and the physical-unit model.

    The physical-unit model keeps the metric and multiplier the parameterization implies
    (only B₂, D₁₂ and the output map are rescaled, none of which enter the contraction LMI),
    so its implied certificate is re-validated in float64 at the model's own rate ᾱ.
    """
    from dataclasses import replace

    method = certificate_method(model)
    physical = replace(certify.as_target(certify.in_physical_units(model, u_std, y_std)),
                       rate=float(model.contraction_rate), name=f"{type(model).__name__} "
                       "(physical units)")
    return {
        "contraction (normalised)": certify.contraction(model, method=method),
        "contraction (physical)": certify.contraction(physical, method=method),
        "l2 gain γ (normalised)": certify.lipschitz(model, method=method),
        "l2 gain γ (physical)": certify.lipschitz(physical, method=method),
    }


def run_identification(config: IdentificationConfig, family: str, seed: int, run_dir: Path,
                       device: torch.device, *, train, test, normalization, preset: str,
                       experiment: str, progress: bool, title: str, output_names: list[str],
                       output_unit: str) -> dict[str, Any]:
    """Fit, evaluate, certify and write the run folder (see the module docstring)."""
    from .. import sysid

    train, test = truncate(train, config.max_samples), truncate(test, config.max_samples)
    torch.manual_seed(seed)
    model = make_model(config, family, train.nu, train.ny).to(device)
    res = sysid.fit(model, train, val=False, epochs=config.epochs, segment=config.segment,
                    lr=config.lr, schedule=config.schedule, milestones=config.milestones,
                    decay=config.decay, clip_value=config.clip_value, loss=config.loss,
                    normalize=normalization, x0="zero", early_stopping=None,
                    progress=progress, seed=seed)
    report = sysid.evaluate(res.predictor, test, washout=config.washout)
    norm = res.normalization
    if norm is None:
        raise ExperimentError(f"{experiment}: sysid.fit returned no normalization, which the "
                              "physical-unit certificates and the checkpoint need")
    certificates = certify_identified(model, norm.u_std, norm.y_std)
    save_checkpoint(model, run_dir / "model.pt", task=f"{experiment}: {title}",
                    normalization=norm.as_metadata(), x0="zero", washout=config.washout,
                    test_nrmse=report.nrmse, test_rmse=report.rmse)
    plot_simulation(test, report, run_dir / "simulated.png", family, config, title,
                    output_names, output_unit)
    metrics = {
        "test_metric": {"name": "test NRMSE", "value": report.nrmse, "lower_is_better": True},
        "test_rmse": report.rmse,
        "test_rmse_unit": output_unit,
        "test_nrmse_per_channel": report.per_channel["nrmse"].tolist(),
        "test_rmse_per_channel": report.per_channel["rmse"].tolist(),
        "washout": config.washout,
        "final_train_loss": res.history[-1]["train_loss"],
        "epoch_time": EpochTimer([row["seconds"] for row in res.history]).summary(),
        "parameters": parameter_count(model),
        "normalization": norm.as_metadata(),
        "plot": "simulated.png",
    }
    curves = {"training loss (per epoch, normalised)": res.train_losses}
    return write_run(run_dir, experiment=experiment, family=family, seed=seed, preset=preset,
                     device=device, config=config, metrics=metrics, curves=curves,
                     certificates=certificates)


def plot_simulation(test, report, path: Path, family: str, config: IdentificationConfig,
                    title: str, output_names: list[str], output_unit: str) -> None:
    """Measured vs simulated output of the first test record (each channel) and the error."""
    plt = pyplot()
    y, y_hat = test.y[0], report.y_hat[0]
    start = config.washout
    stop = min(y.shape[0], start + config.plot_samples)
    dt = test.dt or 1.0
    t = np.arange(start, stop) * dt
    channels = y.shape[1]
    fig, axes = plt.subplots(channels, 1, figsize=(8, 2.4 * channels + 0.6), sharex=True,
                             squeeze=False)
    for c, ax in enumerate(axes[:, 0]):
        ax.plot(t, y[start:stop, c], color="k", lw=1.0, label="measured")
        ax.plot(t, y_hat[start:stop, c], "--", color="tab:orange", lw=1.0,
                label=f"simulated ({family.upper()}, from x₀ = 0)")
        ax.plot(t, y_hat[start:stop, c] - y[start:stop, c], color="tab:red", lw=0.6,
                alpha=0.7, label="error")
        ax.set_ylabel(f"{output_names[c]} [{output_unit}]")
        ax.text(0.99, 0.96, f"channel NRMSE {report.per_channel['nrmse'][c]:.3g}",
                transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("time [s]" if test.dt else "sample")
    name = test.names[0]
    fig.suptitle(f"{title}: simulated vs measured, {name} (test), samples {start}–{stop}; "
                 f"test NRMSE {report.nrmse:.3g}", fontsize=10)
    save_figure(fig, path)
