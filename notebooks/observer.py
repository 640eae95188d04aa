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
# # A contracting observer for a box in fluid
#
# A box on a spring, damped by quadratic drag, q̈ = −5q − 0.5q̇|q̇|, sampled every 0.01 s; we
# measure only its position q and want the velocity q̇ as well.
#
# An observer is a model x̂⁺ = f_θ(x̂, y) whose state is the estimate. We take f_θ to be a
# **contracting** R2DN with identity output and train it on the one-step *correctness* loss
# ‖x_{t+1} − f_θ(x_t, y_t)‖² with the true state fed in. Small loss makes the true state
# (nearly) a trajectory of the observer; contraction makes every other trajectory of the
# observer, started from any wrong guess, converge to it (docs/theory.md §0.1, §3.2).
#
# Set `QUICK=1` for a sub-minute run.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from r2dn_control import certify
from r2dn_control.control import Observer, fit_observer
from r2dn_control.nn import ContractingR2DN

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")
torch.manual_seed(0)
torch.set_num_threads(1)


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"observer_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


DT = 0.01


def box(x):
    """One explicit Euler step of q̈ = −5q − 0.5q̇|q̇| for rows x = (q, q̇)."""
    q, v = x[..., 0], x[..., 1]
    return torch.stack([q + DT * v, v + DT * (-5 * q - 0.5 * v * v.abs())], -1)


def trajectories(x0, steps):
    xs = [x0]
    for _ in range(steps):
        xs.append(box(xs[-1]))
    return torch.stack(xs, 1)  # (batch, steps + 1, 2)


# %% [markdown]
# ## Training data: pairs (x_t, x_{t+1}) and the measurement y_t = q_t

# %%
gen = torch.Generator().manual_seed(0)
data = trajectories(torch.rand(100, 2, generator=gen) - 0.5, 100)
x, x_next = data[:, :-1].reshape(-1, 2), data[:, 1:].reshape(-1, 2)
y = x[:, :1]
print(f"{x.shape[0]} training pairs")

model = ContractingR2DN(1, 2, 16, 2, hidden=(16, 16), identity_output=True, init="long_memory")
untrained = ContractingR2DN(1, 2, 16, 2, hidden=(16, 16), identity_output=True, init="long_memory")
observer = Observer(model)
losses = fit_observer(observer, x, x_next, y, epochs=15 if QUICK else 40, batches=20, lr=5e-3,
                      progress=False)
print(f"correctness loss {losses[0]:.2e} -> {losses[-1]:.2e}")
print(certify.contraction(model))

# %% [markdown]
# ## Estimates from wrong initial guesses
#
# Eight test trajectories; the observer starts from random wrong estimates and sees only q.

# %%
test = trajectories(0.4 * torch.rand(8, 2, generator=gen) - 0.2, 1500)
wrong = 0.3 * torch.randn(8, 2, generator=gen)
with torch.no_grad():
    estimate, _ = observer(test[:, :-1, :1], x0=wrong)
    baseline, _ = Observer(untrained)(test[:, :-1, :1], x0=wrong)
truth = test[:, :-1]
t = np.arange(truth.shape[1]) * DT

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for i, (ax, label) in enumerate(zip(axes, ["position q", "velocity q̇ (not measured)"])):
    for k in range(3):
        ax.plot(t, truth[k, :, i], color=f"C{k}", lw=2, alpha=0.5)
        ax.plot(t, estimate[k, :, i], "--", color=f"C{k}", lw=1.2)
    ax.set(xlabel="time [s]", ylabel=label)
axes[0].set_title("solid: true state, dashed: estimate")
axes[1].set_title("the unmeasured velocity is recovered")
fig.tight_layout()
show(fig, "estimates")

# %%
error = (estimate - truth).norm(dim=-1)
base_error = (baseline - truth).norm(dim=-1)
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.semilogy(t, base_error.mean(0), "0.6", label="untrained contracting model")
ax.semilogy(t, error.mean(0), "C0", label="trained observer")
ax.fill_between(t, error.min(0).values, error.max(0).values, color="C0", alpha=0.2)
ax.set(xlabel="time [s]", ylabel=r"$\|\hat x_t - x_t\|$",
       title="estimation error (mean and range over 8 runs)")
ax.legend()
show(fig, "error")
print(f"mean error: start {error[:, 0].mean():.3f}, last second {error[:, -100:].mean():.4f} "
      f"(untrained {base_error[:, -100:].mean():.3f})")
