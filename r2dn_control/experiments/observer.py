r"""Contracting observer of a reaction–diffusion PDE: R2DN vs REN (docs/control.md §4).

The PDE $\partial_t\xi = \partial_z^2\xi + \tfrac12\xi(1-\xi)(\xi-\tfrac12)$ on
z ∈ [0, 10] with boundary ξ(0) = ξ(10) = b(t) is simulated by
`r2dn_control.envs.reaction_diffusion.ReactionDiffusionTwin` (51 sites, 4 explicit
Euler sub-steps per sample). The boundary is a clipped random walk
$b_{t+1} = \mathrm{clip}(b_t + 0.05 n_t, 0, 1)$ and the measurement is
$y_t = (b_t, \xi_t(z = 5))$.

The observer $\hat\xi_{t+1} = f_\theta(\hat\xi_t, y_t)$ is a contracting model with
identity output (`r2dn_control.control.Observer`), fitted on the one-step correctness
loss $\lVert\xi_{t+1} - f_\theta(\xi_t, y_t)\rVert^2$ (true state teacher-forced) over one
long trajectory from ξ₀ = 0, b₀ = 0, cut into contiguous mini-batches shuffled once. It is
tested on a new trajectory from ξ₀ = 1, b₀ = 0.5, starting from the wrong estimate
$\hat\xi_0 = 0$: contraction makes the estimate converge. Test metric:
$\mathrm{NRMSE} = \sqrt{\mathrm{mean}(\xi-\hat\xi)^2 / \mathrm{mean}\,\xi^2}$ over all
steps and sites, no washout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import certify
from ..control import Observer, fit_observer
from ..envs.reaction_diffusion import ReactionDiffusionTwin
from ..nn import ContractingR2DN, ContractingREN
from .common import (
    EpochTimer,
    certificate_method,
    check_positive_ints,
    parameter_count,
    pyplot,
    save_checkpoint,
    save_figure,
    write_run,
)

DESCRIPTION = "observer of a reaction-diffusion PDE from boundary and mid-point measurements"


@dataclass(frozen=True)
class ObserverConfig:
    """Configuration of one observer run (defaults: the paper's, experiments §2)."""

    sites: int = 51
    train_steps: int = 100_000
    test_steps: int = 2_001
    batches: int = 200
    epochs: int = 200
    lr: float = 2e-3
    patience: int = 10
    r2dn_features: int = 50
    r2dn_hidden: tuple[int, ...] = (96, 96, 96, 96)
    ren_features: int = 200
    activation: str = "relu"
    init: str = "long_memory"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("sites", "train_steps", "test_steps", "batches", "epochs"))
        if self.sites < 3:
            raise ValueError(f"sites must be >= 3, got {self.sites}")


PRESETS = {
    "full": ObserverConfig(),
    "quick": ObserverConfig(train_steps=20_000, batches=40, epochs=20, lr=5e-3,
                            r2dn_features=16, r2dn_hidden=(48, 48), ren_features=32),
    "test": ObserverConfig(sites=11, train_steps=400, test_steps=100, batches=4, epochs=2,
                           r2dn_features=4, r2dn_hidden=(8,), ren_features=4),
}


def simulate(twin: ReactionDiffusionTwin, steps: int, start: str, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """States ξ₀…ξ_T (T+1, sites) and measurements y₀…y_{T−1} (T, 2) of one trajectory.

    ``start="train"``: ξ₀ = 0, b₀ = 0; ``"test"``: ξ₀ = 1, b₀ = 0.5.
    """
    state = twin.sample_initial_state(1)
    if start == "test":
        state = torch.cat([torch.ones(1, twin.sites), torch.full((1, 1), 0.5)], 1).to(state)
    noise = twin.sample_exogenous(1, steps, generator=generator)
    fields, measurements = [state[:, : twin.sites]], []
    action = state.new_zeros(1, twin.sites)
    with torch.no_grad():
        for t in range(steps):
            measurements.append(twin.observe(state))
            state = twin.step(state, action, noise[:, t])
            fields.append(state[:, : twin.sites])
    return torch.cat(fields), torch.cat(measurements)


def make_observer(config: ObserverConfig, family: str) -> Observer:
    """A contracting R2DN or REN with input y (2), state and output ξ̂ (sites)."""
    common = dict(activation=config.activation, init=config.init, identity_output=True)
    n = config.sites
    model: ContractingR2DN | ContractingREN
    if family == "r2dn":
        model = ContractingR2DN(2, n, config.r2dn_features, n, hidden=config.r2dn_hidden,
                                **common)
    elif family == "ren":
        model = ContractingREN(2, n, config.ren_features, n, **common)
    else:
        raise ValueError(f"model family must be 'r2dn' or 'ren', got {family!r}")
    return Observer(model)


def nrmse(truth: torch.Tensor, estimate: torch.Tensor) -> float:
    """sqrt(mean((x − x̂)²) / mean(x²)) over every step and site."""
    return float(torch.sqrt((truth - estimate).pow(2).mean() / truth.pow(2).mean()))


def run(config: ObserverConfig, family: str, seed: int, run_dir: Path, device: torch.device,
        *, preset: str = "custom", experiment: str = "observer", progress: bool = True
        ) -> dict[str, Any]:
    """Simulate, fit, test, certify and write the run folder; returns metrics.json."""
    torch.manual_seed(seed)
    twin = ReactionDiffusionTwin(sites=config.sites)
    fields, y = simulate(twin, config.train_steps, "train", torch.Generator().manual_seed(seed))
    test_fields, test_y = simulate(twin, config.test_steps, "test",
                                   torch.Generator().manual_seed(seed))
    observer = make_observer(config, family).to(device)
    dtype = observer.model.dtype
    x, x_next, y = (t.to(device=device, dtype=dtype) for t in (fields[:-1], fields[1:], y))
    seconds: list[float] = []
    losses = fit_observer(observer, x, x_next, y, epochs=config.epochs, batches=config.batches,
                          lr=config.lr, patience=config.patience, seed=seed, progress=progress,
                          epoch_seconds=seconds)
    with torch.no_grad():
        estimate, _ = observer(test_y[None].to(device=device, dtype=dtype),
                               x0=torch.zeros(1, config.sites, device=device, dtype=dtype))
    estimate = estimate[0].cpu().to(torch.float64)
    truth = test_fields[:-1].to(torch.float64)
    score = nrmse(truth, estimate)
    method = certificate_method(observer.model)
    certificates = {"observer contraction": certify.contraction(observer.model, method=method)}
    save_checkpoint(observer.model, run_dir / "model.pt",
                    task=f"{experiment}: reaction-diffusion observer", test_nrmse=score)
    plot_estimate(truth, estimate, twin, run_dir / "estimate.png", family, score)
    metrics = {
        "test_metric": {"name": "test NRMSE", "value": score, "lower_is_better": True},
        "final_train_loss": losses[-1],
        "epoch_time": EpochTimer(seconds).summary(),
        "parameters": parameter_count(observer),
        "plot": "estimate.png",
    }
    return write_run(run_dir, experiment=experiment, family=family, seed=seed, preset=preset,
                     device=device, config=config, metrics=metrics,
                     curves={"training loss (per epoch)": losses}, certificates=certificates)


def plot_estimate(truth: torch.Tensor, estimate: torch.Tensor, twin: ReactionDiffusionTwin,
                  path: Path, family: str, score: float) -> None:
    """Truth, estimate and error over space and time, plus the mid-point trace."""
    plt = pyplot()
    steps = truth.shape[0]
    extent = (0, steps * twin.dt * twin.sub_steps, 0, twin.dx * (twin.sites - 1))
    fig, grid = plt.subplots(4, 2, figsize=(8, 9), gridspec_kw={"width_ratios": (40, 1)})
    axes, bars = grid[:, 0], grid[:, 1]
    panels = ((truth, "true state ξ(z, t)", "viridis", (0, 1)),
              (estimate, f"{family.upper()} estimate ξ̂(z, t) from ξ̂₀ = 0", "viridis", (0, 1)),
              ((estimate - truth).abs(), "estimation error |ξ̂ − ξ|", "magma", None))
    for ax, bar, (data, title, cmap, lim) in zip(axes, bars, panels):
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        image = ax.imshow(data.T.numpy(), aspect="auto", origin="lower", extent=extent,
                          cmap=cmap, **kw)
        ax.set_title(title)
        ax.set_ylabel("position z")
        fig.colorbar(image, cax=bar)
        ax.set_xticklabels([])
    t = np.arange(steps) * twin.dt * twin.sub_steps
    site = twin.sites // 4
    axes[3].plot(t, truth[:, site].numpy(), color="k", label=f"true ξ(z = {site * twin.dx:g})")
    axes[3].plot(t, estimate[:, site].numpy(), "--", color="tab:orange", label="estimate")
    axes[3].set_ylabel("ξ at one unmeasured site")
    axes[3].set_xlabel("time t")
    axes[3].legend(loc="upper right")
    axes[3].grid(alpha=0.3)
    axes[3].set_xlim(extent[0], extent[1])
    bars[3].axis("off")
    fig.suptitle(f"Reaction-diffusion observer ({family.upper()}): test NRMSE {score:.3g}")
    save_figure(fig, path)
