# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Youla control with a certificate
#
# The plant is the lightly damped second-order system T(q) = 0.3 / (q² − 1.6cos(0.2π)q + 0.64).
# A piecewise-constant disturbance w enters at the plant input; we want a controller that
# keeps the output z = T(w + u) small, with |u| ≤ 5.
#
# The controller is an observer-based base controller plus a learned **Youla parameter** Q,
# a contracting R2DN driven by the innovation ỹ = y − ŷ. Because ỹ does not depend on Q's
# output, *every* contracting Q gives a stable closed loop with this linear plant: training
# changes performance, never stability (docs/theory.md §5.1). We train Q with analytic policy
# gradients through the differentiable plant and then certify the loop Q sees.
#
# Set `QUICK=1` for a sub-minute run.

# %%
import os

import control
import matplotlib.pyplot as plt
import numpy as np
import torch

from r2dn_control import certify
from r2dn_control.control import (
    YoulaController,
    simulate_closed_loop,
    step_disturbances,
    train_policy_gradient,
)
from r2dn_control.nn import ContractingR2DN
from r2dn_control.systems import LTIPlant

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")
torch.manual_seed(0)
torch.set_num_threads(1)


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"youla_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


# %% [markdown]
# ## The generalized plant
#
# Inputs (w, u), outputs (z, y), both equal to T(w + u). The plant is stable, so the base
# controller can be the trivial one (K = 0, L = 0): then ỹ = y − ŷ = T w, the disturbance's
# effect alone.

# %%
T = control.ss(control.tf([0.3], [1, -2 * 0.8 * np.cos(0.2 * np.pi), 0.64], 1))
P = control.ss(T.A, np.hstack([T.B, T.B]), np.vstack([T.C, T.C]), np.zeros((2, 2)), 1)

dtype = torch.float64
Q = ContractingR2DN(1, 4 if QUICK else 10, 8 if QUICK else 32, 1, hidden=(16,) if QUICK else (64, 64),
                    init="long_memory", init_output_zero=True, dtype=dtype)
controller = YoulaController(P, Q, K=np.zeros((1, 2)), L=np.zeros((2, 1)),
                             control_inputs=["u[1]"], measurements=["y[1]"], input_limit=5.0)
plant = LTIPlant.from_control(P, input_limit=[np.inf, 5.0], dtype=dtype)  # only u saturates


def cost(traj):
    """Mean |z| plus a small penalty on the Youla output."""
    return (traj.outputs[..., 0].abs() + 1e-4 * traj.u_tilde.pow(2).sum(-1)).mean()


# %% [markdown]
# ## Training by backpropagation through the closed loop

# %%
gen = torch.Generator().manual_seed(0)
horizon = 200 if QUICK else 800
test_w = step_disturbances(32, horizon, generator=gen, dtype=dtype)
with torch.no_grad():
    open_loop = simulate_closed_loop(plant, controller, test_w, noise=False)  # Q = 0 at init
batch = 16 if QUICK else 64
history = train_policy_gradient(
    controller, plant, lambda epoch: step_disturbances(batch, horizon, generator=gen, dtype=dtype),
    cost, epochs=8 if QUICK else 80, segment=50 if QUICK else 200, lr=2e-2 if QUICK else 5e-3,
    lr_decay_epochs=None if QUICK else 60, test_disturbance=test_w, progress=False)
print(f"test cost {history.test[0]:.3f} (no control) -> {history.test[-1]:.3f}")

# %%
with torch.no_grad():
    closed = simulate_closed_loop(plant, controller, test_w, noise=False)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1, 1.6, 1.6]})
axes[0].plot(history.test, "o-")
axes[0].set(xlabel="epoch", ylabel="test cost  mean |z|", title="training")
k = np.arange(horizon)
axes[1].plot(k, open_loop.outputs[0, :, 0], "0.6", label="no control")
axes[1].plot(k, closed.outputs[0, :, 0], "C0", label="Youla-R2DN")
axes[1].set(xlabel="sample", ylabel="z", title="performance output")
axes[1].legend(fontsize=8)
axes[2].step(k, test_w[0, :, 0], "0.6", where="post", label="disturbance w")
axes[2].step(k, closed.inputs[0, :, 0], "C1", where="post", label="control u")
axes[2].axhline(5, color="k", lw=0.6, ls=":")
axes[2].axhline(-5, color="k", lw=0.6, ls=":")
axes[2].set(xlabel="sample", title="input (limit ±5)")
axes[2].legend(fontsize=8)
fig.tight_layout()
show(fig, "control")

# %% [markdown]
# ## The certificate
#
# `controller.base.youla_system()` is the loop Q actually sees: the nominal plant with the
# base controller, from ũ to (ỹ, u). Its ũ → ỹ block is exactly zero, so the loop is a
# *cascade*: the stable linear part produces ỹ, Q maps ỹ to ũ, and ũ drives the plant state
# without feeding back into ỹ. A cascade of contracting systems is contracting (at the slower
# of the two rates, up to a change of metric), so two certificates suffice:
#
# 1. the linear part (plant + base controller) is contracting, certified as an LTI system;
# 2. Q is contracting, re-proved in float64 (docs/theory.md §4.1, §4.4).
#
# With the full run we also prove it in one piece: `certify.ClosedLoop` interconnects Q with
# the ũ → ỹ channel and solves the contraction LMI of the whole loop (an SDP, slower).

# %%
seen = controller.base.youla_system()
channel = control.ss(seen.A, seen.B, seen.C[:1], seen.D[:1], seen.dt)   # ũ → ỹ
response = control.frequency_response(channel, np.linspace(0.01, np.pi, 64))
print(f"peak |ũ → ỹ| over frequency: {np.abs(response.magnitude).max():.1e} (the Youla property)")
lti_rate = certify.contraction(seen)
q_rate = certify.contraction(Q)
print(lti_rate)
print(q_rate)
rates = {"plant + base\ncontroller": lti_rate.bound, "Q": q_rate.bound}
if not QUICK:
    loop_rate = certify.contraction(certify.ClosedLoop(Q, channel), method="sdp")
    print(loop_rate)
    rates["whole loop\n(one SDP)"] = loop_rate.bound

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.bar(list(rates), list(rates.values()), color=["0.6", "C0", "C2"][: len(rates)])
ax.set_ylim(min(rates.values()) - 0.05, 1.0)
ax.axhline(1.0, color="k", lw=0.8)
ax.set(ylabel="certified contraction rate ᾱ", title="every rate < 1: the loop is stable")
for i, r in enumerate(rates.values()):
    ax.text(i, r + 0.003, f"{r:.4f}", ha="center", fontsize=9)
show(fig, "certificate")
