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
# # System identification: the F-16 ground vibration test with a contracting R2DN
#
# We identify a recurrent model from measured input–output records with `r2dn_control.sysid`
# (docs/sysid.md; theory: docs/theory.md §7):
#
# 1. load the records and fit the per-channel **normalisation** on the training data only,
# 2. `sysid.fit` a contracting R2DN with **validation** on held-out data and an
#    **initial-state encoder** (the records start from unknown states),
# 3. **evaluate** it (NRMSE in physical units) and plot simulated against measured outputs,
# 4. train a **GRU of equal size under the same budget** for comparison, and
# 5. certify the model's incremental ℓ₂ gain γ in **normalised and physical units**.
#
# Data: the F-16 benchmark files are not shipped. Set `R2DN_F16_DIR` to the folder holding
# `F16Data_FullMSine_Level*.csv` (the Makefile's `notebooks` target does this when the data
# is present); without it this notebook uses the simulated Bouc–Wen hysteretic oscillator
# (`sysid.bouc_wen_data`) instead. `QUICK=1` (what CI runs) uses short pieces of the records,
# a small model and a few epochs: the numbers show the workflow, not what the models can reach.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from r2dn_control import certify, sysid

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")  # a folder: also save every figure as PNG there
torch.manual_seed(0)
torch.set_num_threads(1)


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"sysid_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


def crop(data, samples):
    """The first `samples` samples of every experiment (a short piece for a quick run)."""
    return sysid.SequenceData([u[:samples] for u in data.u], [y[:samples] for y in data.y],
                              dt=data.dt, names=data.names)


# %% [markdown]
# ## Data and normalisation

# %%
F16_DIR = os.environ.get("R2DN_F16_DIR")
if F16_DIR and os.path.isdir(F16_DIR):
    bench = sysid.load_f16(F16_DIR)
    samples = 2048 if QUICK else 16384
    train, test = crop(bench.train, samples), crop(bench.test, samples)
    source = "F-16 GVT"
    u_names, y_names = ["force [N]", "voltage [V]"], [f"acc. {i} [m/s²]" for i in (1, 2, 3)]
else:
    print("R2DN_F16_DIR is not set (or not a folder): using the simulated Bouc–Wen benchmark")
    samples = 2048 if QUICK else 8192
    train = sysid.bouc_wen_data(experiments=2, periods=1, samples_per_period=samples, seed=0)
    test = sysid.bouc_wen_data(experiments=1, periods=1, samples_per_period=samples, seed=1)
    source = "Bouc–Wen (simulated)"
    u_names, y_names = ["force [N]"], ["displacement [m]"]
print(source, "| train:", train, "| test:", test)

norm = sysid.Normalization.fit(train)  # training data only; fit() does the same by default
print("u mean", np.round(norm.u_mean, 4), "std", np.round(norm.u_std, 4))
print("y mean", np.round(norm.y_mean, 4), "std", np.round(norm.y_std, 4))
normalized = norm.apply(train)
print("normalised training data: u std", np.round(np.concatenate(normalized.u).std(0), 3),
      "y std", np.round(np.concatenate(normalized.y).std(0), 3))

# %% [markdown]
# ## Fit with validation and initial-state estimation
#
# `sysid.default_model(train)` is a contracting R2DN (`long_memory` initialisation, contraction
# rate ᾱ estimated from the training data, about 6.6k parameters for one input and output).
# `val=None` holds out the last 20 % of every training record and scores it each epoch; the
# best-validation weights are kept. `x0="encoder"`
# learns a small network that maps the first `washout` measured samples to the initial state.
# The model is contracting for every value of its weights (docs/theory.md §3); the encoder
# carries no guarantee, it only chooses the initial state that the guarantee starts from
# (docs/theory.md §5).

# %%
budget = dict(epochs=10 if QUICK else 60, seconds=12 if QUICK else 600, segment=256,
              washout=100, x0="encoder", progress=False)  # lr="auto": 1e-2
model = sysid.default_model(train, seed=0)
res = sysid.fit(model, train, val=None, **budget)
print(f"{type(model).__name__}: {sysid.parameter_count(model)} parameters (+ encoder), "
      f"{len(res.history)} epochs ({res.stopped}), best epoch {res.best_epoch}")
for row in res.history:
    print(f"  epoch {row['epoch']:2d}  train loss {row['train_loss']:.4f}  "
          f"val NRMSE {row['val_nrmse']:.3f}  ({row['seconds']:.1f} s)")

# %% [markdown]
# ## Evaluate on the test records
#
# `evaluate` simulates every test record from the encoder's initial state (computed from its
# first `washout` samples) and scores the rest, in physical units: NRMSE per channel is
# RMSE / std of the measured channel (predicting the mean scores 1).

# %%
report = sysid.evaluate(res.predictor, test, washout=100)
print("R2DN:", report)
print("NRMSE per channel:", np.round(report.per_channel["nrmse"], 3))

# %%
k = 0  # the first test record
T = len(test.y[k])
t = np.arange(T) * test.dt
shown = slice(0, min(T, 1200))
fig, axes = plt.subplots(test.ny, 1, figsize=(10, 1.2 + 2.0 * test.ny), sharex=True, squeeze=False)
for c, ax in enumerate(axes[:, 0]):
    ax.plot(t[shown], test.y[k][shown, c], "k", lw=1.2, label="measured")
    ax.plot(t[shown], report.y_hat[k][shown, c], "C1--", lw=1.0, label="R2DN simulation")
    ax.axvspan(0, 100 * test.dt, color="0.9", label="washout (encoder input)")
    ax.set_ylabel(y_names[c])
axes[0, 0].legend(loc="upper right", ncol=3, fontsize=8)
axes[0, 0].set_title(f"{source}: test record {test.names[k]!r}, first {shown.stop} samples")
axes[-1, 0].set_xlabel("time [s]")
fig.tight_layout()
show(fig, "simulation")

# %% [markdown]
# ## A GRU of the same size, same budget
#
# `default_model(train, kind="gru")` is an unconstrained GRU with (about) the R2DN's parameter count.
# Same data, epochs, time limit, encoder and `lr="auto"` (1e-2, the GRU's better rate too).
# It has no stability guarantee.

# %%
gru = sysid.default_model(train, kind="gru", seed=0)
res_gru = sysid.fit(gru, train, val=None, **budget)
report_gru = sysid.evaluate(res_gru.predictor, test, washout=100)
print(f"GRU: {sysid.parameter_count(gru)} parameters, {len(res_gru.history)} epochs")
print(f"test NRMSE  R2DN {report.nrmse:.3f}   GRU {report_gru.nrmse:.3f}")

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot([r["epoch"] for r in res.history], [r["val_nrmse"] for r in res.history], "o-",
        label="R2DN")
ax.plot([r["epoch"] for r in res_gru.history], [r["val_nrmse"] for r in res_gru.history], "s-",
        label="GRU")
ax.set(xlabel="epoch", ylabel="validation NRMSE", title="held-out last 20 % of each record")
ax.xaxis.get_major_locator().set_params(integer=True)
ax.legend()
fig.tight_layout()
show(fig, "validation")

# %% [markdown]
# ## Certified incremental gain, normalised and physical
#
# The LMI certificate (KYP route, docs/theory.md §4) bounds the incremental gain γ̃ of the
# model as trained, from normalised inputs to normalised outputs. In physical units the model
# is `y = σ_y ⊙ f((u − μ_u) / σ_u) + μ_y`; `certify.in_physical_units` folds the scalings into
# its matrices (contraction is unchanged, γ is not) so the same certificate runs on the
# physical model. The simple bound γ̃ · max σ_y / min σ_u uses the scalings alone
# (docs/theory.md §7): with one input and one output it is the exact rescaling of γ̃ (the two
# numbers then differ only by the solver's tolerance); with several channels of different
# scales the LMI on the folded model is usually tighter.

# %%
rate = certify.contraction(res.model)
gamma_n = certify.lipschitz(res.model)
physical = certify.in_physical_units(res.model, norm.u_std, norm.y_std)
gamma_p = certify.lipschitz(physical)
print(rate)
print("normalised:", gamma_n)
print("physical:  ", gamma_p)
if gamma_n.bound is not None:
    simple = gamma_n.bound * norm.y_std.max() / norm.u_std.min()
    print(f"γ̃ = {gamma_n.bound:.4g} (normalised), γ = {gamma_p.bound:.4g} (physical units: "
          f"{', '.join(y_names)} per {', '.join(u_names)}; LMI), simple bound {simple:.4g}")
