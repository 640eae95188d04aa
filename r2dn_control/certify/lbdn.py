r"""Certificates for Lipschitz-bounded deep networks (docs/theory.md §1, §4 "LBDN certificate").

* Sandwich certificate: every layer's Cayley factors satisfy ``ÃᵀÃ + BBᵀ = I`` and ψ > 0, so
  each layer is 1-Lipschitz and the network is γ-Lipschitz (exact, milliseconds).
* Per-layer LipSDP for arbitrary weights: for ``h ↦ W₁σ(W₀h + b)`` with σ slope-restricted in
  [0, 1], ``min ρ² s.t. [[ρ²I, −W₀ᵀT], [−TW₀, 2T − W₁ᵀW₁]] ⪰ 0, T diagonal ⪰ 0``; the product
  of the per-layer ρ bounds the network's Lipschitz constant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import cvxpy as cp
import numpy as np
import torch

from ..nn.lbdn import LBDN
from .result import CERTIFIED, INCONCLUSIVE, CertificateResult
from .sdp import choose_solvers

CAYLEY_TOL = 1e-10


def sandwich_certificate(net: LBDN) -> CertificateResult:
    """γ-Lipschitz certificate of an LBDN from the orthogonality of each layer (float64)."""
    start = time.perf_counter()
    worst, psi_min = 0.0, math.inf
    with torch.no_grad():
        for layer in net.sandwich_layers:
            a_t, b = (f.cpu().numpy() for f in layer.cayley_factors(torch.float64))
            n = a_t.shape[1]
            worst = max(worst, float(np.abs(a_t.T @ a_t + b @ b.T - np.eye(n)).max()))
            psi = layer.psi(torch.float64)
            if psi is not None:
                psi_min = min(psi_min, float(psi.min()))
        gamma = float(net.gamma.detach().double())
    ok = worst <= CAYLEY_TOL and psi_min > 0
    return CertificateResult(
        "lipschitz", CERTIFIED if ok else INCONCLUSIVE, bound=gamma if ok else None,
        margin=-worst, solver="sandwich", seconds=time.perf_counter() - start,
        message=f"every layer satisfies ÃᵀÃ + BBᵀ = I (max residual {worst:.1e})" if ok else
        f"Cayley residual {worst:.2e} above {CAYLEY_TOL:.0e}: the sandwich argument does not apply",
        details={"cayley_residual": worst, "psi_min": psi_min})


def lipsdp_layer(w0: np.ndarray, w1: np.ndarray, solver: str | None = None
                 ) -> tuple[float | None, str]:
    """Certified Lipschitz bound ρ of ``h ↦ W₁σ(W₀h + b)`` (column convention), or None.

    The candidate (ρ², T) from the solver is re-validated in float64 before it counts.
    """
    n_in, n_hid = w0.shape[1], w0.shape[0]
    rho2 = cp.Variable(nonneg=True)
    t = cp.Variable(n_hid, nonneg=True)
    tm = cp.diag(t)
    lmi = cp.bmat([[rho2 * np.eye(n_in), -w0.T @ tm], [-tm @ w0, 2 * tm - w1.T @ w1]])
    prob = cp.Problem(cp.Minimize(rho2), [0.5 * (lmi + lmi.T) >> 0])
    for name in choose_solvers(n_in + n_hid, solver):
        try:
            prob.solve(solver=name)
        except cp.error.SolverError:
            continue
        if prob.status != cp.OPTIMAL or rho2.value is None:
            continue
        tv = np.maximum(np.asarray(t.value).ravel(), 0.0)
        # Re-validate at a slightly inflated ρ² (the solver's point is on the boundary).
        for inflate in (1 + 1e-7, 1 + 1e-5, 1 + 1e-3):
            r2 = float(rho2.value) * inflate + 1e-12
            m = np.block([[r2 * np.eye(n_in), -w0.T * tv], [-(tv[:, None] * w0),
                                                             2 * np.diag(tv) - w1.T @ w1]])
            if np.linalg.eigvalsh(0.5 * (m + m.T))[0] >= 0:
                return math.sqrt(r2), name
        return None, name
    return None, "none"


def lipsdp_bound(layers: Sequence[tuple[np.ndarray, np.ndarray]], solver: str | None = None,
                 gain: float = 1.0) -> CertificateResult:
    """``gain · ∏ ρ_k`` over per-layer LipSDP checks of ``(W₀, W₁)`` pairs (column convention)."""
    start = time.perf_counter()
    bound, used = gain, "none"
    for w0, w1 in layers:
        rho, used = lipsdp_layer(np.asarray(w0, float), np.asarray(w1, float), solver)
        if rho is None:
            return CertificateResult("lipschitz", INCONCLUSIVE, solver=used,
                                     seconds=time.perf_counter() - start,
                                     message="a per-layer LipSDP failed or did not re-validate")
        bound *= rho
    return CertificateResult("lipschitz", CERTIFIED, bound=bound, solver=used,
                             seconds=time.perf_counter() - start,
                             message="product of per-layer LipSDP bounds (re-validated)")


def lbdn_layers(net: LBDN) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """The (W₀, W₁) pairs of an LBDN's hidden layers and the gain of the linear remainder."""
    pairs, gain = [], float(net.gamma.detach().double())  # √γ at the input and at the output
    with torch.no_grad():
        for layer in net.sandwich_layers:
            pre_t, _, post_t = layer.folded(torch.float64)
            pre = pre_t.cpu().numpy()
            if post_t is None:
                gain *= float(np.linalg.norm(pre, 2))  # linear output layer h⁺ = Bh + b
            else:
                pairs.append((pre.T, post_t.cpu().numpy().T))
    return pairs, gain


def mlp_layers(weights: Sequence[np.ndarray]) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Pairs for an arbitrary MLP ``x ↦ W_L σ(… σ(W₀x + b₀) …)`` (column convention)."""
    ws = [np.asarray(w, float) for w in weights]
    if len(ws) < 2:
        return [], float(np.linalg.norm(ws[0], 2)) if ws else 1.0
    pairs = [(w, np.eye(w.shape[0])) for w in ws[:-2]]
    pairs.append((ws[-2], ws[-1]))
    return pairs, 1.0


def lipschitz(net: LBDN | Sequence[np.ndarray], method: str = "sandwich",
              solver: str | None = None) -> CertificateResult:
    """Lipschitz certificate of an LBDN (``"sandwich"`` or ``"lipsdp"``) or of a weight list."""
    if isinstance(net, LBDN) and method == "sandwich":
        return sandwich_certificate(net)
    if isinstance(net, LBDN):
        pairs, gain = lbdn_layers(net)
    else:
        pairs, gain = mlp_layers(net)
    result = lipsdp_bound(pairs, solver, gain)
    if result.status == CERTIFIED and not pairs:
        result.message = "linear map: spectral norm"
    return result
