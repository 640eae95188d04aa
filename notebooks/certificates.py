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
# # Certificates of a model you bring
#
# `r2dn_control.certify` is not limited to this library's models. It proves contraction and
# incremental ℓ₂ gains of anything that can be written as an LTI system in feedback with a
# slope-restricted or 1-Lipschitz nonlinearity (docs/theory.md §4):
#
# - an ordinary `torch.nn.RNN` (tanh), written as raw blocks,
# - a discrete `control.StateSpace`,
# - a REN or R2DN (which also carry the certificate their parameterization implies).
#
# Every answer is `certified` (an LMI passed a float64 re-check), `not certified` or
# `inconclusive`, and an adversarial search over pairs of trajectories gives a lower bound, so
# a report reads *lower bound ≤ true value ≤ certified bound*.
#
# Set `QUICK=1` for a sub-minute run.

# %%
import os

import control
import matplotlib.pyplot as plt
import numpy as np
import torch

from r2dn_control import certify
from r2dn_control.certify import StateSpaceBlocks, Target
from r2dn_control.nn import LipschitzREN

QUICK = os.environ.get("QUICK", "0") not in ("", "0")
FIGURES = os.environ.get("SAVE_FIGURES")
torch.manual_seed(0)
torch.set_num_threads(1)
ITERS = 20 if QUICK else 60  # gradient-ascent iterations of the lower-bound searches


def show(fig, name):
    """Display a figure (and save it when SAVE_FIGURES is set)."""
    if FIGURES:
        os.makedirs(FIGURES, exist_ok=True)
        fig.savefig(os.path.join(FIGURES, f"certificates_{name}.png"), dpi=110, bbox_inches="tight")
    plt.show()


# %% [markdown]
# ## 1. An ordinary RNN
#
# `torch.nn.RNN` computes h⁺ = tanh(W_hh h + W_ih u + b); add a linear read-out y = C h. In the
# certificate's form (docs/theory.md §2.1, §4) the state is x = h, the nonlinearity input is
# v = W_hh x + W_ih u + b, and x⁺ = w = tanh(v): A = 0, B₁ = I, B₂ = 0, C₁ = W_hh, D₁₂ = W_ih,
# C₂ = C. tanh has slope in [0, 1], so the diagonal multiplier applies (`"slope"`).


# %%
def rnn_target(rnn: torch.nn.RNN, readout: torch.nn.Linear, name: str) -> Target:
    """The certify target of a one-layer tanh RNN with a linear read-out."""
    w_hh = rnn.weight_hh_l0.detach().double().numpy()
    w_ih = rnn.weight_ih_l0.detach().double().numpy()
    c = readout.weight.detach().double().numpy()
    n, m, p = w_hh.shape[0], w_ih.shape[1], c.shape[0]
    blocks = StateSpaceBlocks(A=np.zeros((n, n)), B1=np.eye(n), B2=np.zeros((n, m)), C1=w_hh,
                              C2=c, D11=np.zeros((n, n)), D12=w_ih, D21=np.zeros((p, n)),
                              D22=np.zeros((p, m)))
    return Target.from_blocks(blocks, "slope", torch.tanh, name=name)


results = {}
for scale in (0.5, 1.5):
    rnn, readout = torch.nn.RNN(2, 6, batch_first=True), torch.nn.Linear(6, 1)
    with torch.no_grad():  # recurrent weight with spectral norm `scale`
        rnn.weight_hh_l0.mul_(scale / torch.linalg.matrix_norm(rnn.weight_hh_l0, 2))
    target = rnn_target(rnn, readout, f"RNN ‖W_hh‖={scale}")
    rate = certify.contraction(target)
    gain = certify.lipschitz(target)
    low = certify.lipschitz_lower_bound(target, steps=30, iters=ITERS)
    print(target.name, "\n ", rate, "\n ", gain, f"\n  lower bound on the gain: {low:.3f}")
    results[target.name] = (low, gain)

# %% [markdown]
# The small-weight RNN is certified. With ‖W_hh‖ = 1.5 the LMI may or may not be feasible:
# "not certified" is *not* a proof of instability, only the absence of a certificate of this
# form; the lower bound is the evidence on the other side.
#
# ## 2. A linear system from python-control
#
# For an LTI system the incremental gain is the H∞ norm. A diagonal system with poles 0.5 and
# 0.8 and unit gains has H∞ norm 1/(1 − 0.5) + 1/(1 − 0.8) = 7, reached at z = 1.

# %%
lti = control.ss(np.diag([0.5, 0.8]), np.ones((2, 1)), np.ones((1, 2)), 0, dt=1)
gain = certify.lipschitz(lti)
print(gain)
print(certify.contraction(lti))
results["LTI (H∞ = 7)"] = (certify.lipschitz_lower_bound(lti, steps=60, iters=ITERS), gain)

# %% [markdown]
# ## 3. A REN: three tiers
#
# A `LipschitzREN(gamma=2)` carries its own certificate (`"implied"`); the SDP (`"sdp"`,
# Clarabel) finds the smallest γ the LMI can prove for it, after the conditioning steps of
# docs/theory.md §4.5. The KYP route needs D₁₁ = 0 and a scalar multiplier, so it applies to
# R2DN but not to a REN.

# %%
ren = LipschitzREN(1, 3, 4, 1, gamma=2.0, dtype=torch.float64)
tiers = {m: certify.lipschitz(ren, method=m) for m in ("implied", "sdp")}
for m, r in tiers.items():
    print(f"{m:8s}", r)
results["LipschitzREN γ=2"] = (certify.lipschitz_lower_bound(ren, steps=30, iters=ITERS), tiers["sdp"])
print(tiers["sdp"].to_json(include_matrices=False)[:300], "...")

# %% [markdown]
# ## Summary: what was proved, and what was found
#
# Each bar spans the empirical lower bound (found by gradient ascent) to the certified upper
# bound; the true incremental gain lies in between. A missing bar end means no certificate.

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.2))
names = list(results)
for i, name in enumerate(names):
    low, res = results[name]
    if res.certified:
        ax.plot([low, res.bound], [i, i], color="C0", lw=6, solid_capstyle="butt", alpha=0.5)
        ax.plot(res.bound, i, "C0|", ms=18, mew=2)
        ax.text(res.bound, i + 0.25, f" ≤ {res.bound:.3g}", va="bottom", fontsize=9)
    else:
        ax.text(low, i + 0.25, f"  {res.status}", va="bottom", fontsize=9, color="C3")
    ax.plot(low, i, "ko")
ax.set_yticks(range(len(names)), names)
ax.set_xscale("log")
ax.set_ylim(-0.6, len(names) - 0.2)
ax.set_xlim(right=2 * max(r.bound for _, r in results.values() if r.certified))
ax.set(xlabel="incremental ℓ₂ gain  (● lower bound, | certified bound)")
fig.tight_layout()
show(fig, "summary")
