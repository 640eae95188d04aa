r"""The tight tier: the LMIs of math.md §4 as SDPs in cvxpy, after conditioning.

Conditioning (math.md §4): (1) Gramian balancing of the state, (2) for a diagonal multiplier,
variables scaled by the implied Λ, (3) preconditioning with the implied metric when known.
The solver is always named explicitly: MOSEK when installed, else Clarabel; SCS for LMIs larger
than :data:`LARGE_LMI` or when Clarabel fails. The solver's answer is only a candidate: the
caller re-validates it in float64 (:func:`lmi.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.linalg as sla

from .lmi import StateSpaceBlocks, transform_state
from .target import Target

#: LMI dimension above which SCS is used instead of an interior-point solver.
LARGE_LMI = 400
#: Largest condition number of a balancing transform worth using (see balancing_transform).
MAX_TRANSFORM_CONDITION = 1e4

_ACCURATE = {cp.OPTIMAL}
_INFEASIBLE = {cp.INFEASIBLE}


@dataclass
class SdpAnswer:
    """What a solver returned, mapped back to the original coordinates."""

    status: str  # "solved", "infeasible", "failed"
    solver: str
    metric: np.ndarray | None = None
    multiplier: np.ndarray | float | None = None
    value: float | None = None
    solver_status: str = ""


def choose_solvers(size: int, solver: str | None = None) -> list[str]:
    """Solvers to try, in order (never cvxpy's implicit default)."""
    if solver is not None:
        return [solver.upper()]
    installed = cp.installed_solvers()
    order = ["MOSEK"] if "MOSEK" in installed else []
    order += ["SCS", "CLARABEL"] if size > LARGE_LMI else ["CLARABEL", "SCS"]
    return [s for s in order if s in installed]


def balancing_transform(ss: StateSpaceBlocks) -> np.ndarray:
    """T of the Gramian-balanced realization (identity when A is not Schur or it fails)."""
    nx = ss.A.shape[0]
    b = np.hstack([ss.B1, ss.B2])
    c = np.vstack([ss.C1, ss.C2])
    try:
        if nx == 0 or np.abs(np.linalg.eigvals(ss.A)).max() >= 1.0:
            return np.eye(nx)
        wc = sla.solve_discrete_lyapunov(ss.A, b @ b.T)
        wo = sla.solve_discrete_lyapunov(ss.A.T, c.T @ c)
        shift = 1e-12 * max(1.0, np.abs(wc).max())
        lc = np.linalg.cholesky(0.5 * (wc + wc.T) + shift * np.eye(nx))
        sym = lc.T @ wo @ lc
        sig2, u = np.linalg.eigh(0.5 * (sym + sym.T))
        sig2 = np.maximum(sig2, 1e-12 * max(1e-300, sig2.max()))
        t = np.diag(sig2**0.25) @ u.T @ np.linalg.inv(lc)
        # A badly conditioned T (near-uncontrollable or unobservable modes, e.g. a Youla loop's
        # observer error) would map a well-scaled SDP metric back to one whose positive
        # definiteness float64 can no longer confirm: cond(𝒫) ≈ cond(T)²·cond(𝒫̃).
        if not np.all(np.isfinite(t)) or np.linalg.cond(t) > MAX_TRANSFORM_CONDITION:
            return np.eye(nx)
        return t
    except (np.linalg.LinAlgError, ValueError):
        return np.eye(nx)


def conditioning(target: Target) -> tuple[np.ndarray, np.ndarray | None]:
    """State transform T (balancing, then implied-metric preconditioning) and multiplier scale."""
    ss = target.blocks
    t = balancing_transform(ss)
    if target.metric is not None and target.metric.size:
        t_inv = np.linalg.inv(t)
        metric = t_inv.T @ target.metric @ t_inv
        try:
            l_p = np.linalg.cholesky(0.5 * (metric + metric.T))
            t = l_p.T @ t
        except np.linalg.LinAlgError:
            pass
    scale = None
    if target.nonlinearity == "slope":
        nv = ss.C1.shape[0]
        scale = np.ones(nv)
        implied = None if target.multiplier is None else np.asarray(target.multiplier, float)
        if implied is not None and implied.shape == (nv,) and np.all(implied > 0):
            scale = implied / implied.max()
    return t, scale


def _lmi_expression(ss: StateSpaceBlocks, metric, mult, nonlinearity: str, rate: float,
                    supply, mu, scale):
    """The cvxpy expression of M (math.md §4), optionally with the γ-form term ``μ I_uᵀI_u``."""
    nu, nx, nv, ny = ss.sizes
    with_u = supply is not None or mu is not None
    g = np.hstack([ss.A, ss.B1] + ([ss.B2] if with_u else []))
    n = g.shape[1]
    i_x = np.zeros((nx, n))
    i_x[:, :nx] = np.eye(nx)
    c_v = np.hstack([ss.C1, ss.D11] + ([ss.D12] if with_u else []))
    i_w = np.zeros((nv, n))
    i_w[:, nx:nx + nv] = np.eye(nv)
    m = rate**2 * (i_x.T @ metric @ i_x) - g.T @ metric @ g
    if nonlinearity == "lipschitz" and nv:
        m = m - mult * (c_v.T @ c_v - i_w.T @ i_w)
    elif nonlinearity == "slope" and nv:
        half = i_w.T @ cp.diag(cp.multiply(scale, mult)) @ (c_v - i_w)
        m = m - (half + half.T)
    if with_u:
        c_y = np.hstack([ss.C2, ss.D21, ss.D22])
        i_u = np.zeros((nu, n))
        i_u[:, nx + nv:] = np.eye(nu)
        if supply is not None:
            q, s, r = supply
            cross = i_u.T @ s @ c_y
            m = m + c_y.T @ q @ c_y + cross + cross.T + i_u.T @ r @ i_u
        if mu is not None:
            m = m - c_y.T @ c_y + mu * (i_u.T @ i_u)
    return 0.5 * (m + m.T), n


def solve(target: Target, problem: str, rate: float = 1.0, supply=None,
          solver: str | None = None) -> SdpAnswer:
    """Solve one SDP: ``problem`` is ``"contraction"``, ``"gain"`` or ``"dissipativity"``.

    * contraction: maximize t s.t. M(𝒫, λ) ⪰ tI at ``rate``, I ⪯ 𝒫 ⪯ 10⁶I;
      solved with t ≥ 0 gives a candidate certificate, t < 0 means none within that box.
    * gain: minimize μ s.t. the γ-form M ⪰ 0, 𝒫 ⪰ 0 (γ = √μ).
    * dissipativity: maximize t ≤ 1 s.t. M(𝒫, λ; Q,S,R) ⪰ tI, 𝒫 ⪰ 0.
    Returns the candidate in original coordinates (𝒫 = Tᵀ𝒫̃T, λ scaled back).
    """
    ss0 = target.blocks
    t_mat, scale = conditioning(target)
    ss = transform_state(ss0, t_mat)
    nu, nx, nv, ny = ss.sizes
    metric = cp.Variable((nx, nx), symmetric=True) if nx else np.zeros((0, 0))
    kind = target.nonlinearity if nv else "none"
    mult = cp.Variable(nonneg=True) if kind == "lipschitz" else (
        cp.Variable(nv, nonneg=True) if kind == "slope" else None)
    constraints = []
    mu = cp.Variable(nonneg=True) if problem == "gain" else None
    margin = cp.Variable() if problem != "gain" else None
    if problem == "gain":
        m, n = _lmi_expression(ss, metric, mult, kind, 1.0, None, mu, scale)
        constraints.append(m >> 0)
        objective = cp.Minimize(mu)
    elif problem == "contraction":
        m, n = _lmi_expression(ss, metric, mult, kind, rate, None, None, scale)
        constraints += [m >> margin * np.eye(n), margin <= 1.0]
        objective = cp.Maximize(margin)
    elif problem == "dissipativity":
        m, n = _lmi_expression(ss, metric, mult, kind, rate, supply, None, scale)
        constraints += [m >> margin * np.eye(n), margin <= 1.0]
        objective = cp.Maximize(margin)
    else:
        raise ValueError(f"problem must be 'contraction', 'gain' or 'dissipativity', got {problem!r}")
    if nx:
        if problem == "contraction":
            constraints += [metric >> np.eye(nx), metric << 1e6 * np.eye(nx)]
        else:
            constraints.append(metric >> 0)
    prob = cp.Problem(objective, constraints)
    last = SdpAnswer("failed", "none", solver_status="no SDP solver installed")
    for name in choose_solvers(n, solver):
        try:
            kwargs = {"eps": 1e-9, "max_iters": 100000} if name == "SCS" else {}
            prob.solve(solver=name, **kwargs)
        except (cp.error.SolverError, ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            last = SdpAnswer("failed", name, solver_status=f"solver error: {err}")
            continue
        status = str(prob.status)
        if prob.status in _INFEASIBLE:
            return SdpAnswer("infeasible", name, solver_status=status)
        if prob.status not in _ACCURATE:
            last = SdpAnswer("failed", name, solver_status=status)
            continue
        p_t = np.asarray(metric.value) if nx else np.zeros((0, 0))
        p_orig = t_mat.T @ p_t @ t_mat if nx else p_t
        if mult is None:
            lam = target.zero_multiplier()
        elif kind == "slope":
            lam = np.maximum(np.asarray(mult.value).ravel() * scale, 0.0)
        else:
            lam = max(float(mult.value), 0.0)
        value = float(mu.value) if mu is not None else float(margin.value)
        return SdpAnswer("solved", name, 0.5 * (p_orig + p_orig.T), lam, value, status)
    return last
