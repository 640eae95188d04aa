r"""The tight tier: the LMIs of docs/theory.md §4 as SDPs in cvxpy, after conditioning.

Conditioning (docs/theory.md §4): (1) Gramian balancing of the state, (2) for a diagonal multiplier,
variables scaled by the implied Λ, (3) preconditioning with the implied metric when known.
The solver is always named explicitly: MOSEK when installed, else Clarabel; SCS for LMIs larger
than ``config.defaults["certify.large_lmi"]`` or when Clarabel fails (SCS then runs to the accuracy
``config.defaults["certify.scs_accuracy"]``). The solver's answer is only a candidate: the
caller re-validates it in float64 (`lmi.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.linalg as sla

from .. import config
from .lmi import StateSpaceBlocks, assemble, lmi_terms, transform_state
from .target import Target

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
    large = size > config.defaults["certify.large_lmi"]
    order += ["SCS", "CLARABEL"] if large else ["CLARABEL", "SCS"]
    return [s for s in order if s in installed]


def _solver_options(name: str) -> dict[str, float | int]:
    """Keyword arguments for ``prob.solve(solver=name)``: SCS (first-order, inaccurate by
    default) is asked for ``certify.scs_accuracy`` absolute and relative accuracy."""
    if name == "SCS":
        tol = config.defaults["certify.scs_accuracy"]
        return {"eps_abs": tol, "eps_rel": tol, "max_iters": 100000}
    return {}


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


@dataclass
class _Setup:
    """A conditioned problem: transformed blocks, variables, and the map back."""

    target: Target
    t_mat: np.ndarray
    scale: np.ndarray | None
    ss: StateSpaceBlocks
    metric: cp.Variable | np.ndarray  # the SDP's 𝒫̃ (a constant empty matrix when nx = 0)
    mult: cp.Variable | None  # λ (scalar) or the entries of diag Λ; None without φ
    mult_expr: cp.Expression | None  # the multiplier as it enters M (Λ scaled by `scale`)

    @classmethod
    def build(cls, target: Target) -> _Setup:
        t_mat, scale = conditioning(target)
        ss = transform_state(target.blocks, t_mat)
        _, nx, nv, _ = ss.sizes
        metric: cp.Variable | np.ndarray = (cp.Variable((nx, nx), symmetric=True) if nx
                                            else np.zeros((0, 0)))
        kind = target.nonlinearity if nv else "none"
        mult: cp.Variable | None = None
        mult_expr: cp.Expression | None = None
        if kind == "lipschitz":
            mult = mult_expr = cp.Variable(nonneg=True)
        elif kind == "slope":
            mult = cp.Variable(nv, nonneg=True)
            mult_expr = cp.multiply(scale, mult)
        return cls(target, t_mat, scale, ss, metric, mult, mult_expr)

    def lmi(self, rate: float = 1.0, supply=None, mu=None):
        """The cvxpy expression of M: the same `lmi.lmi_terms` as the float64 check."""
        return assemble(lmi_terms(self.ss, self.metric, self.mult_expr, rate=rate,
                                  supply=supply, mu=mu, xp=cp))

    def answer(self, name: str, status: str, value: float) -> SdpAnswer:
        """The solution in the original coordinates (𝒫 = Tᵀ𝒫̃T, λ scaled back)."""
        nx = self.ss.A.shape[0]
        p_t = (np.asarray(self.metric.value) if isinstance(self.metric, cp.Variable)
               else np.zeros((0, 0)))
        p_orig = self.t_mat.T @ p_t @ self.t_mat if nx else p_t
        lam: np.ndarray | float
        if self.mult is None:
            lam = self.target.zero_multiplier()
        elif self.mult.value is None:
            raise ValueError(f"{name} reported {status} but returned no multiplier value")
        elif self.scale is not None and np.ndim(self.mult.value) == 1:
            lam = np.maximum(np.asarray(self.mult.value).ravel() * self.scale, 0.0)
        else:
            lam = max(float(self.mult.value), 0.0)
        return SdpAnswer("solved", name, 0.5 * (p_orig + p_orig.T), lam, value, status)


def _solve(setup: _Setup, objective, constraints, size: int, value_of, solver: str | None
           ) -> SdpAnswer:
    """Try the solvers of `choose_solvers` in order; map the first accurate answer back."""
    prob = cp.Problem(objective, constraints)
    last = SdpAnswer("failed", "none", solver_status="no SDP solver installed")
    for name in choose_solvers(size, solver):
        try:
            kwargs = _solver_options(name)
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
        return setup.answer(name, status, float(value_of()))
    return last


def solve_contraction(target: Target, rate: float, solver: str | None = None) -> SdpAnswer:
    """maximize t ≤ 1 s.t. M(𝒫, λ) ⪰ tI at ``rate`` (4a), I ⪯ 𝒫 ⪯ 10⁶I.

    Solved with t > 0 gives a candidate; t ≤ 0 means none within that box.
    """
    setup = _Setup.build(target)
    nx = setup.ss.A.shape[0]
    m = setup.lmi(rate)
    margin = cp.Variable()
    constraints = [m >> margin * np.eye(m.shape[0]), margin <= 1.0]
    if nx:
        constraints += [setup.metric >> np.eye(nx), setup.metric << 1e6 * np.eye(nx)]
    return _solve(setup, cp.Maximize(margin), constraints, m.shape[0], lambda: margin.value,
                  solver)


def solve_gain(target: Target, solver: str | None = None) -> SdpAnswer:
    """minimize μ s.t. the γ-form M(𝒫̃, λ̃; μ) ⪰ 0, 𝒫̃ ⪰ 0 (γ = √μ, 𝒫 = 𝒫̃/γ, λ = λ̃/γ)."""
    setup = _Setup.build(target)
    nx = setup.ss.A.shape[0]
    mu = cp.Variable(nonneg=True)
    m = setup.lmi(1.0, mu=mu)
    constraints = [m >> 0] + ([setup.metric >> 0] if nx else [])
    return _solve(setup, cp.Minimize(mu), constraints, m.shape[0], lambda: mu.value, solver)


def solve_dissipativity(target: Target, supply, solver: str | None = None) -> SdpAnswer:
    """maximize t ≤ 1 s.t. M(𝒫, λ; Q, S, R) ⪰ tI, 𝒫 ⪰ 0 (4b)."""
    setup = _Setup.build(target)
    nx = setup.ss.A.shape[0]
    m = setup.lmi(1.0, supply=tuple(np.asarray(a, dtype=np.float64) for a in supply))
    margin = cp.Variable()
    constraints = [m >> margin * np.eye(m.shape[0]), margin <= 1.0]
    constraints += [setup.metric >> 0] if nx else []
    return _solve(setup, cp.Maximize(margin), constraints, m.shape[0], lambda: margin.value,
                  solver)
