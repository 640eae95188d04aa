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
# # Quickstart: a Lipschitz R2DN, trained and certified
#
# We identify a forced Duffing oscillator with a `LipschitzR2DN` whose incremental ℓ₂ gain
# is at most γ = 5 **for every value of its weights** (docs/theory.md §3), then
#
# 1. re-prove the bound with an LMI in float64 (`r2dn_control.certify`),
# 2. check the incremental inequality on pairs of simulated trajectories, and
# 3. watch two trajectories from different initial states merge (contraction).
#
# Set `QUICK=1` for a sub-minute run (what CI does).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from r2dn_control import certify
from r2dn_control.data import DuffingOscillator, multisine
from r2dn_control.nn import LipschitzR2DN
from r2dn_control.train import fit_sequences, nrmse

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")  # a folder: also save every figure as PNG there
torch.manual_seed(0)
torch.set_num_threads(1)  # the matrices are tiny: one thread is fastest


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"quickstart_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


# %% [markdown]
# ## Data
#
# Random-phase multisine forces drive the oscillator q̈ = −0.3q̇ − q − 0.5q³ + u (sampled at
# 0.1 s); we measure the position with a little noise.

# %%
g = torch.Generator().manual_seed(0)
plant = DuffingOscillator()
dtype = torch.float64  # so that the checks below are not polluted by float32 round-off
u_train = multisine(16, 200, generator=g, dtype=dtype)
u_test = multisine(4, 200, generator=g, dtype=dtype)
y_train = plant.simulate(u_train, noise_std=0.01, generator=g)
y_test = plant.simulate(u_test)
print("train", tuple(u_train.shape), "test", tuple(u_test.shape))

# %% [markdown]
# ## Model and training
#
# Plain Adam on the mean squared error. There is no projection and no penalty: the
# optimiser moves free parameters, and the model's matrices are computed from them so that
# the stability LMI holds by construction.

# %%
gamma = 5.0
model = LipschitzR2DN(input_size=1, state_size=8, features=16, output_size=1,
                      hidden=(32, 32), gamma=gamma, dtype=dtype)
fit = fit_sequences(model, u_train, y_train, max_steps=80 if QUICK else 1500, lr=1e-2,
                    progress=False)
with torch.no_grad():
    y_hat = model(u_test)[0]
print(f"{fit.steps} steps in {fit.seconds:.1f} s, "
      f"test NRMSE {nrmse(y_hat, y_test, washout=50):.3f}")

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 2]})
ax0.semilogy(fit.losses)
ax0.set(xlabel="Adam step", ylabel="training MSE", title="training")
t = np.arange(u_test.shape[1]) * plant.dt
ax1.plot(t, y_test[0, :, 0], "k", lw=2, label="oscillator")
ax1.plot(t, y_hat[0, :, 0], "C1--", lw=1.5, label="R2DN")
ax1.axvspan(0, 50 * plant.dt, color="0.9", label="washout")
ax1.set(xlabel="time [s]", ylabel="position q", title="test sequence")
ax1.legend(loc="lower left", ncol=3, fontsize=8)
fig.tight_layout()
show(fig, "fit")

# %% [markdown]
# ## The certificate
#
# `method="implied"` re-validates the certificate that the parameterization itself provides
# (𝒫 = EᵀP⁻¹E, λ = 1, at γ = 5); the default searches for the smallest γ that an LMI proves
# (the KYP/Riccati route for R2DN, docs/theory.md §4.4). The lower bound is the largest
# incremental gain that gradient ascent over pairs of inputs found, so
# lower bound ≤ true gain ≤ certified bound.

# %%
implied = certify.lipschitz(model, method="implied")
tight = certify.lipschitz(model)
low = certify.lipschitz_lower_bound(model, steps=40, iters=20 if QUICK else 60)
rate = certify.contraction(model)
print(implied)
print(tight)
print(rate)
print(f"empirical gain ≥ {low:.3f},  certified gain ≤ {tight.bound:.3f},  prescribed γ = {gamma}")

# %% [markdown]
# ## The bound on trajectories
#
# For random pairs of inputs *and* initial states, the left side ‖Δy‖₂ must lie below
# γ‖Δu‖₂ + (γΔx₀ᵀ𝒫Δx₀)^½ with the metric 𝒫 from the parameterization (docs/theory.md §0.2).

# %%
pairs = 64
u_a = multisine(pairs, 200, generator=g, dtype=dtype)
u_b = u_a + 0.3 * torch.rand(pairs, 1, 1, generator=g, dtype=dtype) * torch.randn(
    pairs, 200, 1, generator=g, dtype=dtype)
x_a = torch.randn(pairs, 8, generator=g, dtype=dtype)
x_b = x_a + 0.5 * torch.randn(pairs, 8, generator=g, dtype=dtype)
P = model.explicit(torch.float64).metric
with torch.no_grad():
    y_a, _ = model(u_a, x0=x_a)
    y_b, _ = model(u_b, x0=x_b)
dx0 = x_a - x_b
lhs = (y_a - y_b).flatten(1).norm(dim=1)
transient = (gamma * torch.einsum("bi,ij,bj->b", dx0, P, dx0)).sqrt()
rhs = gamma * (u_a - u_b).flatten(1).norm(dim=1) + transient
print(f"largest ratio lhs/rhs over {pairs} pairs: {(lhs / rhs).max():.3f} (must be ≤ 1)")

fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.loglog(rhs, lhs, "o", ms=4, label="pairs of trajectories")
low_end, top = float(lhs.min()) * 0.5, float(rhs.max()) * 1.5
ax.plot([low_end, top], [low_end, top], "k--", lw=1, label="the bound (equality)")
ax.set(xlabel=r"$\gamma\|\Delta u\|_2 + \sqrt{\gamma\,\Delta x_0^\top\mathcal{P}\Delta x_0}$",
       ylabel=r"$\|\Delta y\|_2$", title="every pair lies below the line",
       xlim=(low_end, top), ylim=(low_end, top))
ax.legend()
show(fig, "bound")

# %% [markdown]
# ## Contraction: the initial state is forgotten
#
# Same input, two initial states. The distance in the certificate's metric 𝒫 shrinks at
# least as fast as ᾱᵗ, with ᾱ the certified contraction rate.

# %%
u = multisine(1, 200, generator=g, dtype=dtype)
states = []
with torch.no_grad():
    for x0 in (torch.zeros(1, 8, dtype=dtype), 3 * torch.randn(1, 8, generator=g, dtype=dtype)):
        x, xs = x0, []
        for k in range(u.shape[1]):
            xs.append(x)
            _, x = model.step(x, u[:, k])
        states.append(torch.cat(xs))
dx = states[0] - states[1]
Pc = torch.as_tensor(rate.P, dtype=dtype)
dist = torch.einsum("ti,ij,tj->t", dx, Pc, dx).sqrt()
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.semilogy(t, dist, label=r"$\|\Delta x_t\|_\mathcal{P}$")
envelope = float(dist[0]) * rate.bound ** np.arange(len(t))
ax.semilogy(t, envelope, "k--",
            label=rf"$\bar\alpha^k\,\|\Delta x_0\|_\mathcal{{P}}$, $\bar\alpha$ = {rate.bound:.4f}")
ax.set(xlabel="time [s]", title="two initial states, one input")
ax.legend()
show(fig, "contraction")
