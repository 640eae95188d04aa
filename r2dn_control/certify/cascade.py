r"""Cascades: a contracting model fed by, and feeding, LTI parts that do not feed back.

A closed loop (docs/theory.md §4.7) is a **cascade** when, in orthogonal coordinates
``z = T x = (x_m, s₁, s₃)`` of its state, the model's state x_m (the *core*, with the
nonlinearity w = φ(v)) is driven by an autonomous *upstream* part s₁ and drives a
*downstream* part s₃ that never comes back:

$$
s_1^+ = A_{11}s_1,\qquad
x_m^+ = A_m x_m + A_{m1}s_1 + B_m w,\qquad
v = C_m x_m + C_{1}s_1 + D_{11}w,\qquad
s_3^+ = A_{3m}x_m + A_{31}s_1 + A_{33}s_3 + B_3 w .
$$

`ClosedLoop` finds this structure from the plant alone: the plant's transfer from its input
to its output is zero (D_p = 0 and C_pA_p^kB_p = 0, the Youla property of the nominal system
ũ → ỹ) exactly when range(B_p) lies in the unobservable subspace 𝒱 of (C_p, A_p). Then s₃ is
the plant state's component in 𝒱 (A_p-invariant, in ker C_p: the model never sees it) and s₁
its component orthogonal to 𝒱 (autonomous: A_p𝒱 ⊆ 𝒱 and B_p maps into 𝒱). For a Youla loop
s₁ is the estimation error e = x − x̂ (rate ρ(A − LC)) and s₃ the estimate x̂ (rate
ρ(A − BK)).

**The certificate.** With the core's own certificate (𝒫_m, Λ) at the rate ᾱ (LMI (4a) of the
model, N_m ≻ 0) and Stein solutions ᾱ²P₁ − A₁₁ᵀP₁A₁₁ = I, ᾱ²P₃ − A₃₃ᵀP₃A₃₃ = I (ᾱ above
both spectral radii), the block-diagonal metric

$$
\tilde{\mathcal P} = \operatorname{blkdiag}(\mathcal P_m,\ k_1P_1,\ k_3P_3),\qquad
\mathcal P = T^\top\tilde{\mathcal P}T ,
$$

with the core's multiplier satisfies the loop's LMI (4a) at ᾱ for k₃ small and k₁ large.
The loop's M is linear in the scalars, M = M_m + k₁M₁ + k₃M₃ (`cascade_parts`). On
(x_m, w, s₃), M_m is N_m bordered by zeros and M₃ = [[X_cc, X_c3], [X_3c, I]], so this block
is positive definite iff N_m − k₃W ≻ 0, W = X_c3X_3c − X_cc ⪰ 0: k₃ = θ/λ_max(N_m⁻¹W)
(θ < 1). With that k₃, the whole M is positive definite iff (Schur complement on s₁, where
M₁ = I) k₁ > λ_max(C^⊤R⁻¹C − D₁), R the (x_m, w, s₃) block, C its coupling to s₁ and D₁
the s₁ block of M_m + k₃M₃: k₁ is that bound times a factor > 1. Both scalars are closed
forms; nothing is solved over the whole loop. The candidate is then proved (or refused) by the
strict float64 check `lmi.validate` on the loop's own blocks, in its own coordinates: the
structure only builds the candidate, it is never assumed by the proof.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .lmi import StateSpaceBlocks, dissipation_matrix, transform_state
from .target import Target

#: Relative tolerance of the structure tests (rank of the unobservable subspace, zero transfer).
STRUCTURE_RTOL = 1e-9
#: (θ, factor) pairs tried for (k₃ = θ·k₃,max, k₁ = factor·k₁,min), first to last. The ratio
#: k₁/k₃ (the metric's conditioning) is smallest near θ = ½ and a factor near 1; a larger
#: factor buys margin on s₁, a θ off ½ on one of the other blocks.
SCALINGS = ((0.5, 2.0), (0.5, 1.25), (0.25, 4.0), (0.75, 1.5))


@dataclass(frozen=True)
class Cascade:
    """The cascade structure of a target's state (see the module docstring).

    Attributes
    ----------
    transform : ndarray (n, n)
        Orthogonal T with z = T x ordered (core, upstream, downstream).
    core_size, upstream_size : int
        Sizes of x_m and s₁ (the downstream part s₃ is the rest).
    core : Target
        The core system alone (input/outputs as in the model), with its own certificate
        (implied metric, or whatever `certify.contraction` finds for it).
    transfer : float
        The relative size of the plant's input-to-output Markov parameters that was accepted
        as zero (a diagnostic).
    """

    transform: np.ndarray
    core_size: int
    upstream_size: int
    core: Target
    transfer: float = 0.0

    def __post_init__(self) -> None:
        t = np.asarray(self.transform, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] != t.shape[1]:
            raise ValueError(f"transform must be a square matrix, got shape {t.shape}")
        n = t.shape[0]
        if not np.all(np.isfinite(t)) or not np.allclose(t @ t.T, np.eye(n), atol=1e-10):
            raise ValueError("transform must be a finite orthogonal matrix (T Tᵀ = I)")
        for name in ("core_size", "upstream_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.core_size + self.upstream_size > n:
            raise ValueError(f"core_size + upstream_size = {self.core_size + self.upstream_size}"
                             f" exceeds the state size {n}")
        if not isinstance(self.core, Target) or self.core.sizes[1] != self.core_size:
            raise ValueError(f"core must be a Target with {self.core_size} states, got "
                             f"{getattr(self.core, 'sizes', type(self.core).__name__)}")

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """State index ranges of (core, upstream, downstream) in z = T x."""
        a, b = self.core_size, self.core_size + self.upstream_size
        return slice(0, a), slice(a, b), slice(b, self.transform.shape[0])


def _null_space(m: np.ndarray, tol: float) -> np.ndarray:
    """Orthonormal basis of {x : ‖m x‖ ≤ tol‖x‖} (right singular vectors)."""
    n = m.shape[1]
    if m.shape[0] == 0:
        return np.eye(n)
    _, s, vt = np.linalg.svd(m)
    rank = int(np.sum(s > tol))
    return vt[rank:].T


def unobservable_subspace(a: np.ndarray, c: np.ndarray, rtol: float = STRUCTURE_RTOL
                          ) -> np.ndarray:
    r"""Orthonormal basis V of the unobservable subspace of (C, A): the largest A-invariant
    subspace in ker C.

    Computed without powers of A: V₀ = ker C, then V_{k+1} = {x ∈ V_k : Ax ∈ V_k} (the null
    space of (I − V_kV_kᵀ)AV_k, mapped back) until the dimension stops falling (≤ n steps).
    Singular values below ``rtol·max(1, ‖[A; C]‖₂)`` count as zero.
    """
    n = a.shape[0]
    tol = rtol * max(1.0, float(np.linalg.norm(np.vstack([a, c]), 2)) if n else 1.0)
    v = _null_space(c, tol)
    while v.shape[1]:
        leave = a @ v - v @ (v.T @ a @ v)
        keep = _null_space(leave, tol)
        if keep.shape[1] == v.shape[1]:
            break
        v = v @ keep  # a product of orthonormal bases: orthonormal
    return v


def plant_split(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray,
                rtol: float = STRUCTURE_RTOL) -> tuple[np.ndarray, np.ndarray, float] | None:
    r"""(U₁, U₃, transfer) when the plant's input-to-output transfer is zero, else None.

    U₃ is an orthonormal basis of the unobservable subspace 𝒱 of (C, A) and U₁ of its
    orthogonal complement. The transfer is zero iff D = 0 and range(B) ⊆ 𝒱; ``transfer`` is
    max(‖D‖, ‖(I − U₃U₃ᵀ)B‖)/max(1, ‖B‖, ‖C‖), accepted when ≤ ``rtol``.
    """
    a, b, c, d = (np.asarray(m, dtype=np.float64) for m in (a, b, c, d))
    n = a.shape[0]
    if n == 0:
        return None
    u3 = unobservable_subspace(a, c, rtol)
    scale = max(1.0, float(np.linalg.norm(b, 2)), float(np.linalg.norm(c, 2)))
    leak = b - u3 @ (u3.T @ b)
    transfer = max(float(np.linalg.norm(d, 2)) if d.size else 0.0,
                   float(np.linalg.norm(leak, 2)) if leak.size else 0.0) / scale
    if not transfer <= rtol:
        return None
    # Householder QR of [U₃ I]: its first columns span U₃, the others complete the basis.
    full, _ = np.linalg.qr(np.hstack([u3, np.eye(n)]))
    return full[:, u3.shape[1]:n], u3, transfer


def stein(a: np.ndarray, rate: float) -> np.ndarray:
    r"""P with ᾱ²P − AᵀPA = I (needs ρ(A) < ᾱ): the metric of an LTI part at rate ᾱ."""
    n = a.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    with warnings.catch_warnings():  # ρ(A) near ᾱ: ill-conditioned, and the float64
        warnings.simplefilter("ignore", sla.LinAlgWarning)  # check of the loop decides
        p = sla.solve_discrete_lyapunov(a.T / rate, np.eye(n) / rate**2)
    return 0.5 * (p + p.T)


def _radius(a: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(a)).max()) if a.size else 0.0


@dataclass(frozen=True)
class CascadeParts:
    """The loop's LMI split as M = M_m + k₁M₁ + k₃M₃ in the coordinates z (module docstring).

    ``index`` holds the rows of ξ = (z, w) of the core (x_m and w), the upstream and the
    downstream part; ``p_up``, ``p_down`` the Stein metrics P₁, P₃.
    """

    core: np.ndarray
    up: np.ndarray
    down: np.ndarray
    p_up: np.ndarray
    p_down: np.ndarray
    index: tuple[np.ndarray, np.ndarray, np.ndarray]
    radii: tuple[float, float]


def part_radii(ss: StateSpaceBlocks, cascade: Cascade) -> tuple[float, float]:
    """ρ(A₁₁), ρ(A₃₃) of the upstream and downstream parts (z coordinates)."""
    zs = transform_state(ss, cascade.transform)
    _, up, down = cascade.slices
    return _radius(zs.A[up, up]), _radius(zs.A[down, down])


def cascade_parts(ss: StateSpaceBlocks, cascade: Cascade, core_metric: np.ndarray,
                  core_multiplier: np.ndarray | float | None, rate: float) -> CascadeParts:
    """M_m, M₁, M₃ of the module docstring (float64, via `lmi.dissipation_matrix`)."""
    zs = transform_state(ss, cascade.transform)
    n = zs.A.shape[0]
    nv = zs.C1.shape[0]
    core, up, down = cascade.slices
    p_up, p_down = stein(zs.A[up, up], rate), stein(zs.A[down, down], rate)

    def metric(block: slice, value: np.ndarray) -> np.ndarray:
        out = np.zeros((n, n))
        out[block, block] = value
        return out

    m_core = dissipation_matrix(zs, metric(core, core_metric), core_multiplier, rate)
    m_up = dissipation_matrix(zs, metric(up, p_up), None, rate)
    m_down = dissipation_matrix(zs, metric(down, p_down), None, rate)
    rows = np.arange(n + nv)
    index = (np.concatenate([rows[core], rows[n:]]), rows[up], rows[down])
    return CascadeParts(m_core, m_up, m_down, p_up, p_down, index,
                        (_radius(zs.A[up, up]), _radius(zs.A[down, down])))


def _largest_generalized(a: np.ndarray, b_chol: np.ndarray) -> float:
    """λ_max(L⁻¹AL⁻ᵀ) for B = LLᵀ (A symmetric)."""
    if not a.size:
        return -np.inf
    x = sla.solve_triangular(b_chol, a, lower=True)
    y = sla.solve_triangular(b_chol, x.T, lower=True)
    return float(np.linalg.eigvalsh(0.5 * (y + y.T))[-1])


def scalars(parts: CascadeParts, theta: float, factor: float) -> tuple[float, float]:
    r"""(k₁, k₃) of the module docstring: k₃ = θ/λ_max(N_m⁻¹W), k₁ = factor·k₁,min.

    Raises ``np.linalg.LinAlgError`` when N_m (the core's LMI) or F₃ is not positive definite.
    """
    core, up, down = parts.index
    n_m = parts.core[np.ix_(core, core)]
    l_core = np.linalg.cholesky(n_m)
    x_cc = parts.down[np.ix_(core, core)]
    x_c3 = parts.down[np.ix_(core, down)]
    x_33 = parts.down[np.ix_(down, down)]
    if down.size:
        l3 = np.linalg.cholesky(x_33)
        g = sla.solve_triangular(l3, x_c3.T, lower=True)
        w = g.T @ g - x_cc
    else:
        w = -x_cc
    top = _largest_generalized(w, l_core)
    k_down = 1.0 if not top > 0 else theta / top
    if not up.size:
        return 1.0, k_down
    fixed = parts.core + k_down * parts.down
    rest = np.concatenate([core, down])
    r = fixed[np.ix_(rest, rest)]
    couple = fixed[np.ix_(rest, up)]
    d1 = fixed[np.ix_(up, up)]
    e = parts.up[np.ix_(up, up)]
    l_r = np.linalg.cholesky(r)
    h = sla.solve_triangular(l_r, couple, lower=True)
    need = h.T @ h - d1
    k_min = _largest_generalized(need, np.linalg.cholesky(e))
    k_up = factor * k_min if k_min > 0 else 1.0
    return k_up, k_down


def assemble_metric(cascade: Cascade, parts: CascadeParts, core_metric: np.ndarray,
                    k_up: float, k_down: float) -> np.ndarray:
    """𝒫 = Tᵀ blkdiag(𝒫_m, k₁P₁, k₃P₃) T in the loop's own coordinates."""
    n = cascade.transform.shape[0]
    core, up, down = cascade.slices
    p = np.zeros((n, n))
    p[core, core] = core_metric
    p[up, up] = k_up * parts.p_up
    p[down, down] = k_down * parts.p_down
    t = cascade.transform
    out = t.T @ p @ t
    return 0.5 * (out + out.T)
