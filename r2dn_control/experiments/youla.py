r"""Learned feedback through the Youla parameterization: Youla-R2DN vs Youla-REN.

**Paper plant** (``plant="paper"``; docs/control.md §3). With
$T(q) = 0.3/(q^2 - 2\rho\cos\varphi\,q + \rho^2)$, ρ = 0.8, φ = 0.2π, the generalized
plant has inputs (w, u) and outputs (z, y), both equal to T(w + u). It is stable, so the base
controller is K = L = 0 and the closed loop is exactly $[z;\tilde y] = [T\ T; T\ 0][w;\tilde u]$.
The control ũ = Q(ỹ) is saturated at ±5; w is piecewise constant (held 50 steps, levels
~ U[−10, 10]); the cost is $\mathrm{mean}_{t,b}(|z| + 10^{-4}\tilde u^2)$. Q is trained by
analytic policy gradients (backpropagation through the simulated closed loop, 4 truncated-BPTT
segments of 200 steps per 800-step epoch, Adam 5e-3 ×0.1 after 60 of 80 epochs, clip ±10).

**Odd Q** (``q_biases=False``, our change to the paper's setup): Q's biases (bx, bv, by and
the LBDN's) are fixed at zero. The plant is linear and the saturation, the cost, the
disturbance distribution and tanh are symmetric, so the best Q is odd (ũ(−ỹ) = −ũ(ỹ)); a Q
with zero biases is odd by construction, so zero disturbance gives zero control. With trained
biases (``q_biases=True``, the paper's model) short runs pick up the sampling asymmetry of the
batches: the quick R2DN held z ≈ −0.6 under zero disturbance (Q(0) ≈ −0.67 at steady state,
from biases of ≈ 0.07 amplified by Q's near-unit-pole DC gain).

**Unstable plant** (``plant="unstable"``): the same structure with
$T_u(q) = 0.3/((q - 1.05)(q - 0.5))$ (a pole outside the unit circle) and the base
controller designed by LQR (K = dlqr(A, B, I, 1)) and a Kalman predictor
(L = dlqe(A, I, C, I, 1)). Every contracting Q keeps the unsaturated nominal loop stable
(docs/theory.md §5): ỹ does not depend on ũ. The levels are ~ U[−2, 2] so that the saturated
actuator (±5) can still hold the unstable plant. The baseline is the base controller alone
(ũ = 0); open loop the plant diverges.

The closed-loop certificate is computed by `r2dn_control.certify.ClosedLoop`: Q in
feedback with the nominal Youla system (input ũ, output ỹ) is contracting, with the rate
printed (KYP for an R2DN Q; for a REN Q the cascade route, docs/theory.md §4.7, and for a small
loop the SDP after it). The characteristic plot shows z for the baseline and for Youla-Q on steps of
amplitude 0, 4/3, …, 8 (50 steps on, 50 off) and ũ against its ±5 limit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import control
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import certify
from ..certify.api import kyp_applies
from ..control import (
    ClosedLoopTrajectory,
    YoulaController,
    simulate_closed_loop,
    step_disturbances,
    train_policy_gradient,
)
from ..control.design import spectral_radius
from ..nn import ContractingR2DN, ContractingREN, RecurrentModel
from ..systems import LTIPlant
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

DESCRIPTION = "Youla-parameterized feedback on a linear plant (analytic policy gradients)"
PLANTS = ("paper", "unstable")
# Largest REN closed loop (Q states + features + plant/estimate states) whose SDP is attempted
# (after the cascade route; above it the cascade route alone runs).
CLOSED_LOOP_SDP_SIZE = 90


@dataclass(frozen=True)
class YoulaConfig:
    """Configuration of one Youla run (defaults: the paper's, experiments §3)."""

    plant: str = "paper"
    state_size: int = 10
    r2dn_features: int = 100
    r2dn_hidden: tuple[int, ...] = (140, 140, 140, 140)
    ren_features: int = 400
    activation: str = "tanh"
    init: str = "long_memory"
    epochs: int = 80
    batch: int = 64
    horizon: int = 800
    segment: int = 200
    lr: float = 5e-3
    lr_decay_epochs: int = 60
    grad_clip: float = 10.0
    test_batch: int = 64
    test_seed: int = 0
    amplitude: float = 10.0
    hold: int = 50
    input_limit: float = 5.0
    control_weight: float = 1e-4
    certify_gamma: bool = True
    q_biases: bool = False

    def __post_init__(self) -> None:
        if self.plant not in PLANTS:
            raise ValueError(f"plant must be one of {PLANTS}, got {self.plant!r}")
        check_positive_ints(self, ("state_size", "epochs", "batch", "horizon", "segment", "test_batch",
                                   "hold"))


_QUICK: dict[str, Any] = dict(state_size=6, r2dn_features=16, r2dn_hidden=(24, 24), ren_features=40,
                              epochs=6, batch=32, horizon=240, segment=80, lr=1e-2, lr_decay_epochs=5,
                              test_batch=32)
_TEST: dict[str, Any] = dict(state_size=3, r2dn_features=4, r2dn_hidden=(4,), ren_features=4, epochs=2,
                             batch=4, horizon=40, segment=20, test_batch=4, lr_decay_epochs=1)
PRESETS = {"full": YoulaConfig(), "quick": YoulaConfig(**_QUICK), "test": YoulaConfig(**_TEST)}
UNSTABLE_PRESETS = {k: replace(v, plant="unstable", amplitude=2.0) for k, v in PRESETS.items()}


# ---------------------------------------------------------------------------- plant and design
def paper_transfer() -> control.StateSpace:
    """T(q) = 0.3 / (q² − 2ρ cos φ q + ρ²), ρ = 0.8, φ = 0.2π, Ts = 1."""
    rho, phi = 0.8, 0.2 * np.pi
    return control.ss(control.tf([0.3], [1.0, -2 * rho * np.cos(phi), rho**2], 1))


def unstable_transfer() -> control.StateSpace:
    """T_u(q) = 0.3 / ((q − 1.05)(q − 0.5)): one pole outside the unit circle."""
    return control.ss(control.tf([0.3], np.poly([1.05, 0.5]), 1))


def generalized_plant(transfer: control.StateSpace) -> control.StateSpace:
    """Inputs (w, u), outputs (z, y), both T(w + u)."""
    return control.ss(transfer.A, np.hstack([transfer.B, transfer.B]),
                      np.vstack([transfer.C, transfer.C]), np.zeros((2, 2)), 1)


def make_q(config: YoulaConfig, family: str, *, zero_output: bool = False
           ) -> ContractingR2DN | ContractingREN:
    """The Youla parameter Q: ỹ ↦ ũ, a contracting R2DN or REN (biases fixed at zero unless
    ``config.q_biases``: see the module docstring)."""
    common: dict[str, Any] = dict(activation=config.activation, init=config.init,
                                  init_output_zero=zero_output)
    q: ContractingR2DN | ContractingREN
    if family == "r2dn":
        q = ContractingR2DN(1, config.state_size, config.r2dn_features, 1,
                            hidden=config.r2dn_hidden, **common)
    elif family == "ren":
        q = ContractingREN(1, config.state_size, config.ren_features, 1, **common)
    else:
        raise ValueError(f"model family must be 'r2dn' or 'ren', got {family!r}")
    if not config.q_biases:
        for param in bias_parameters(q):
            param.detach().zero_()
            param.requires_grad_(False)
    return q


def bias_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The bias parameters of an R2DN or REN: ``bx``, ``bv``, ``by`` and the LBDN layers'."""
    return [p for name, p in model.named_parameters()
            if name.rsplit(".", 1)[-1] in ("bx", "bv", "by", "bias")]


def build_loop(config: YoulaConfig, q: RecurrentModel, device: torch.device
               ) -> tuple[YoulaController, LTIPlant]:
    """The Youla controller around ``q`` and the simulated plant for ``config.plant``."""
    if config.plant == "paper":
        sys = generalized_plant(paper_transfer())
        gains: dict[str, Any] = dict(K=np.zeros((1, 2)), L=np.zeros((2, 1)))
    else:
        sys = generalized_plant(unstable_transfer())
        gains = dict(K="lqr", L="kalman")
    controller = YoulaController(sys, q, control_inputs=[1], measurements=[1],
                                 input_limit=config.input_limit, **gains).to(device)
    plant = LTIPlant.from_control(sys, input_limit=[np.inf, config.input_limit],
                                  dtype=q.dtype).to(device)
    return controller, plant


def stage_cost(config: YoulaConfig):
    """``mean_{t,b}(|z|₁ + control_weight ‖ũ‖²)`` (ũ as applied, i.e. saturated)."""
    limit = config.input_limit
    weight = config.control_weight

    def cost(traj: ClosedLoopTrajectory) -> torch.Tensor:
        u_tilde = traj.u_tilde.clamp(-limit, limit)
        return (traj.outputs[..., 0].abs() + weight * u_tilde.pow(2).sum(-1)).mean()

    return cost


def staircase(levels: int = 7, top: float = 8.0, hold: int = 50) -> torch.Tensor:
    """Steps of amplitude linspace(0, top, levels), each ``hold`` steps on then off; (1, T, 1)."""
    blocks = []
    for a in np.linspace(0.0, top, levels):
        blocks += [np.full(hold, a), np.zeros(hold)]
    return torch.as_tensor(np.concatenate(blocks), dtype=torch.float32)[None, :, None]


# ---------------------------------------------------------------------------- run
def run(config: YoulaConfig, family: str, seed: int, run_dir: Path, device: torch.device,
        *, preset: str = "custom", experiment: str = "youla", progress: bool = True
        ) -> dict[str, Any]:
    """Train Youla-Q, evaluate, certify and write the run folder; returns metrics.json."""
    torch.manual_seed(seed)
    q = make_q(config, family).to(device)
    controller, plant = build_loop(config, q, device)
    cost = stage_cost(config)
    dtype = q.dtype
    test_w = step_disturbances(config.test_batch, config.horizon, hold=config.hold,
                               amplitude=config.amplitude,
                               generator=torch.Generator().manual_seed(config.test_seed)
                               ).to(dtype=dtype, device=device)
    train_gen = torch.Generator().manual_seed(10_000 + seed)

    def disturbances(epoch: int) -> torch.Tensor:
        return step_disturbances(config.batch, config.horizon, hold=config.hold,
                                 amplitude=config.amplitude, generator=train_gen)

    baseline_q = make_q(config, family, zero_output=True).to(device)
    baseline, _ = build_loop(config, baseline_q, device)
    with torch.no_grad():
        baseline_cost = float(cost(simulate_closed_loop(plant, baseline, test_w, noise=False)))

    history = train_policy_gradient(
        controller, plant, disturbances, cost, epochs=config.epochs, segment=config.segment,
        lr=config.lr, lr_decay_epochs=config.lr_decay_epochs, grad_clip=config.grad_clip,
        test_disturbance=test_w, progress=progress)
    timer = EpochTimer(history.epoch_seconds)

    certificates = certify_q(config, controller, progress=progress)
    save_checkpoint(q, run_dir / "model.pt", task=f"{experiment}: Youla parameter Q",
                    test_cost=history.test[-1], plant=config.plant)
    plot_steps(config, controller, baseline, plant, run_dir / "steps.png", family)
    metrics = {
        "test_metric": {"name": "test cost", "value": history.test[-1], "lower_is_better": True},
        "initial_test_cost": history.test[0],
        "baseline_cost": baseline_cost,
        "baseline": "open loop (ũ = 0)" if config.plant == "paper"
        else "base LQR/Kalman controller (ũ = 0)",
        "epoch_time": timer.summary(),
        "parameters": parameter_count(q),
        "plot": "steps.png",
    }
    curves = {"test cost (per epoch)": history.test,
              "train cost (per optimizer step)": history.train}
    return write_run(run_dir, experiment=experiment, family=family, seed=seed, preset=preset,
                     device=device, config=config, metrics=metrics, curves=curves,
                     certificates=certificates)


def certify_q(config: YoulaConfig, controller: YoulaController, progress: bool = True
              ) -> dict[str, Any]:
    """Q's contraction rate (and γ), and the contraction of Q in feedback with the Youla system.

    The closed loop (Q with the nominal system ũ → ỹ, states of Q, plant and estimate) can
    contract no faster than Q itself or the base loop (spectral radius ρ of its state matrix),
    so its rate is checked at ``r + 0.1 (1 − r)``, ``r = max(Q's certified rate, ρ)``: one
    float64-validated LMI instead of a bisection. For an R2DN (one scalar multiplier for the
    network, D₁₁ = 0: `certify.api.kyp_applies` of the loop) that LMI is decided by Riccati
    equations of the loop's state size (KYP, docs/theory.md §4), at any number of features.
    For a REN (a diagonal multiplier) ``method="auto"`` tries the cascade route first (the
    loop is upstream error → Q → downstream estimate, certified from Q's own certificate by
    a block-diagonal metric, docs/theory.md §4.7) and the dense SDP of size states +
    features after it; beyond `CLOSED_LOOP_SDP_SIZE` only the cascade route runs (the SDP
    would take minutes to hours). A loop that is no cascade there is "inconclusive".
    """
    q = controller.Q
    method = certificate_method(q)
    bar = tqdm(total=3 if config.certify_gamma else 2, desc="certify", disable=not progress,
               leave=False)
    results = {"Q contraction": certify.contraction(q, method=method)}
    bar.update()
    nominal = controller.base.youla_system()
    floor = max(results["Q contraction"].bound or 1.0, spectral_radius(nominal.A))
    rate = min(1.0, floor + 0.1 * (1.0 - floor))
    size = q.state_size + q.features + nominal.nstates
    loop = certify.ClosedLoop(q, nominal[: q.input_size, :]).to_target()
    if kyp_applies(loop) or size <= CLOSED_LOOP_SDP_SIZE:
        with warnings.catch_warnings():  # cvxpy's "may be inaccurate": the float64
            warnings.simplefilter("ignore", UserWarning)  # re-validation decides the status
            results["closed-loop contraction"] = certify.contraction(loop, rate=rate)
    elif loop.cascade is not None:
        results["closed-loop contraction"] = certify.contraction(loop, rate=rate,
                                                                 method="cascade")
    else:
        results["closed-loop contraction"] = certify.CertificateResult(
            "contraction", certify.INCONCLUSIVE, requested=rate,
            message=f"not attempted: the loop is not a cascade and its SDP has size {size} > "
                    f"{CLOSED_LOOP_SDP_SIZE} (minutes to hours of solver time)")
    bar.update()
    if config.certify_gamma:
        results["Q incremental l2 gain"] = certify.lipschitz(q, method=method)
        bar.update()
    bar.close()
    return results


def plot_steps(config: YoulaConfig, controller: YoulaController, baseline: YoulaController,
               plant: LTIPlant, path: Path, family: str) -> None:
    """z for the baseline and for Youla-Q on step disturbances; ũ against its ±limit."""
    device = plant.A.device
    w = staircase(hold=config.hold).to(dtype=plant.A.dtype, device=device)
    with torch.no_grad():
        ours = simulate_closed_loop(plant, controller, w, noise=False)
        base = simulate_closed_loop(plant, baseline, w, noise=False)
    t = np.arange(w.shape[1])
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].step(t, w[0, :, 0].cpu().numpy(), where="post", color="k")
    axes[0].set_ylabel("disturbance w")
    base_label = "open loop (ũ = 0)" if config.plant == "paper" else "base controller (ũ = 0)"
    axes[1].plot(t, base.outputs[0, :, 0].cpu().numpy(), "--", color="tab:gray",
                 label=base_label)
    axes[1].plot(t, ours.outputs[0, :, 0].cpu().numpy(), color="tab:blue",
                 label=f"Youla-{family.upper()}")
    axes[1].set_ylabel("performance output z")
    axes[1].legend(loc="upper left")
    limit = config.input_limit
    axes[2].plot(t, ours.u_tilde[0, :, 0].clamp(-limit, limit).cpu().numpy(), color="tab:blue",
                 label="ũ = Q(ỹ) (saturated)")
    for sign in (1, -1):
        axes[2].axhline(sign * limit, color="tab:red", ls=":",
                        label=f"limit ±{limit:g}" if sign > 0 else None)
    axes[2].set_ylabel("Youla input ũ")
    axes[2].set_xlabel("time step (Ts = 1)")
    axes[2].legend(loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Youla-{family.upper()} on the {config.plant} plant: steps of 0…8, "
                 f"{config.hold} on / {config.hold} off")
    save_figure(fig, path)
