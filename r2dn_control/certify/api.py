"""Public entry points: ``contraction``, ``lipschitz``, ``dissipativity``.

Tiers (math.md §4): ``"implied"`` re-validates the certificate the parameterization implies
(milliseconds); ``"kyp"`` is the Riccati route for a scalar multiplier (R2DN, LTI, no D₁₁);
``"sdp"`` is cvxpy after conditioning. ``method="auto"`` uses the tight tier that applies
(KYP where it applies, else SDP) and keeps the implied certificate as a fallback. Every
returned certificate passed :func:`lmi.validate`; anything else is "not certified" or
"inconclusive".
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..nn.lbdn import LBDN
from . import kyp, sdp
from . import lbdn as lbdn_cert
from .blas import blas_threads
from .empirical import contraction_lower_bound, lipschitz_lower_bound
from .lmi import VALIDATION_TOL, lipschitz_supply, validate
from .result import CERTIFIED, INCONCLUSIVE, NOT_CERTIFIED, CertificateResult
from .target import Target, as_target

METHODS = ("auto", "implied", "kyp", "sdp")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _kyp_applies(target: Target) -> bool:
    return target.nonlinearity in ("lipschitz", "none") and not target.has_feedthrough_loop


def _result(prop: str, start: float, **kw) -> CertificateResult:
    return CertificateResult(prop, seconds=time.perf_counter() - start, **kw)


def _validated(prop, start, target, metric, mult, rate, supply, solver, bound, requested,
               tol, details=None, message="") -> CertificateResult:
    ok, margin = validate(target.blocks, metric, mult, rate, supply, tol)
    if ok:
        return _result(prop, start, status=CERTIFIED, bound=bound, margin=margin, P=metric,
                       multiplier=mult, solver=solver, requested=requested,
                       message=message or "LMI re-validated in float64", details=details or {})
    return _result(prop, start, status=INCONCLUSIVE, margin=margin, solver=solver,
                   requested=requested, details=details or {},
                   message=f"candidate certificate failed float64 re-validation (margin {margin:.2e})")


# ------------------------------------------------------------------------------ contraction
def contraction(system: object, rate: float | None = None, method: str = "auto",
                solver: str | None = None, rtol: float = 1e-4, tol: float = VALIDATION_TOL,
                lower_bound: bool = False) -> CertificateResult:
    """Certify contraction at ``rate`` (ᾱ), or find the smallest certified rate.

    ``‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫`` for any two trajectories under the same input (LMI (4a)).
    """
    _check_method(method)
    if isinstance(system, LBDN):
        raise TypeError("an LBDN is a static map: contraction does not apply (use lipschitz)")
    start = time.perf_counter()
    target = as_target(system)
    if rate is not None and not (0 < rate <= 1.0 + 1e-12):
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    with blas_threads(1):  # small/medium dense LAPACK calls: threads only spin (see .blas)
        res = _contraction(target, rate, method, solver, rtol, tol, start)
    if lower_bound:
        res.lower_bound = contraction_lower_bound(target, res.P)
    return res


def _contraction(target, rate, method, solver, rtol, tol, start) -> CertificateResult:
    implied_ok = target.metric is not None and target.rate is not None
    if method in ("auto", "implied") and implied_ok and (rate is None or rate >= target.rate):
        check_rate = target.rate if rate is None else rate
        res = _validated("contraction", start, target, target.metric, target.multiplier,
                         check_rate, None, "implied", check_rate, rate, tol)
        if res.certified and (rate is not None or method == "implied"):
            return res
        fallback = res if res.certified else None
    elif method == "implied":
        return _result("contraction", start, status=NOT_CERTIFIED, requested=rate, solver="implied",
                       message="no implied certificate at this rate")
    else:
        fallback = None
    upper = 1.0 if rate is None else rate
    if method in ("auto", "kyp") and _kyp_applies(target):
        if rate is None:
            cert = kyp.smallest_rate(target.blocks, upper, rtol)
            found = None if cert is None else (cert.metric, cert.multiplier, cert.value)
        else:
            pair = kyp.contraction_riccati(target.blocks, rate)
            found = None if pair is None else (*pair, rate)
        if found is not None:
            res = _validated("contraction", start, target, found[0], found[1], found[2], None,
                             "kyp", found[2], rate, tol)
            if res.certified:
                return res
            # The Riccati metric can be singular on modes the nonlinearity never sees (e.g. a
            # plant's observer error in a closed loop); the SDP adds 𝒫 ⪰ I. Try it when small.
            if method == "auto" and _sdp_affordable(target):
                return _sdp_contraction(target, rate, solver, rtol, tol, start, fallback or res)
            if fallback is None:
                return res
        elif fallback is None:
            return _result("contraction", start, status=NOT_CERTIFIED, requested=rate, solver="kyp",
                           message=f"bounded-real Riccati test fails at rate {upper:g}")
        return fallback
    if method == "kyp":
        raise ValueError("the KYP route needs a scalar multiplier and D11 = 0 (R2DN or LTI)")
    return _sdp_contraction(target, rate, solver, rtol, tol, start, fallback)


def _sdp_affordable(target) -> bool:
    """Whether a dense contraction SDP of this size solves in seconds (LMI size ≲ 64)."""
    _, nx, nv, _ = target.blocks.sizes
    return nx + nv <= 64


def _sdp_contraction(target, rate, solver, rtol, tol, start, fallback):
    def attempt(r):
        ans = sdp.solve(target, "contraction", rate=r, solver=solver)
        if ans.status != "solved" or ans.value < 0:
            return ans, None
        res = _validated("contraction", start, target, ans.metric, ans.multiplier, r, None,
                         ans.solver, r, rate, tol, {"solver_status": ans.solver_status})
        return ans, res

    if rate is not None:
        ans, res = attempt(rate)
        if res is not None:
            return res
        status = INCONCLUSIVE if ans.status == "failed" else NOT_CERTIFIED
        return _result("contraction", start, status=status, requested=rate, solver=ans.solver,
                       message=f"SDP: {ans.solver_status or 'no certificate with t >= 0'}")
    best = fallback
    ans, res = attempt(1.0)
    if res is None or not res.certified:
        if best is not None:
            return best
        status = INCONCLUSIVE if ans.status == "failed" or res is not None else NOT_CERTIFIED
        return _result("contraction", start, status=status, solver=ans.solver,
                       message=f"SDP at rate 1: {ans.solver_status}")
    best = res
    radius = float(np.abs(np.linalg.eigvals(target.blocks.A)).max()) if target.blocks.A.size else 0
    lo, hi = radius, 1.0
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        _, res = attempt(mid)
        if res is not None and res.certified:
            hi, best = mid, res
        else:
            lo = mid
    best.seconds = time.perf_counter() - start
    return best


# ------------------------------------------------------------------------------ lipschitz
def lipschitz(system: object, method: str = "auto", solver: str | None = None,
              tol: float = VALIDATION_TOL, lower_bound: bool = False) -> CertificateResult:
    """The smallest certified incremental ℓ₂ gain γ.

    ``‖Δy‖₂ ≤ γ‖Δu‖₂ + √(γΔx₀ᵀ𝒫Δx₀)`` (math.md §4). For an LBDN: ``method="sandwich"``
    (default) or ``"lipsdp"``; a list of weight matrices gets the per-layer LipSDP.
    """
    if isinstance(system, LBDN) or isinstance(system, (list, tuple)):
        res = lbdn_cert.lipschitz(system, "sandwich" if method in ("auto", "sandwich") else "lipsdp",
                                  solver)
        return res
    _check_method(method)
    start = time.perf_counter()
    target = as_target(system)
    with blas_threads(1):  # small/medium dense LAPACK calls: threads only spin (see .blas)
        res = _lipschitz(target, method, solver, tol, start)
    if lower_bound:
        res.lower_bound = lipschitz_lower_bound(target)
    return res


def _lipschitz(target, method, solver, tol, start) -> CertificateResult:
    nu, _, _, ny = target.sizes
    implied = None
    if method in ("auto", "implied") and target.gamma is not None and target.metric is not None:
        g = target.gamma
        implied = _validated("lipschitz", start, target, target.metric, target.multiplier, 1.0,
                             lipschitz_supply(g, nu, ny), "implied", g, None, tol)
        if method == "implied":
            return implied
    if method == "implied":
        return implied or _result("lipschitz", start, status=NOT_CERTIFIED, solver="implied",
                                  message="the parameterization implies no Lipschitz bound")
    tight = None
    if method in ("auto", "kyp") and _kyp_applies(target):
        hint = target.gamma
        lam = None if target.multiplier is None else float(np.asarray(target.multiplier).ravel()[0])
        cert = kyp.smallest_gain(target.blocks, hint,
                                 None if hint is None or lam is None else lam * hint)
        if cert is None:
            tight = _result("lipschitz", start, status=NOT_CERTIFIED, solver="kyp",
                            message="no (κ, γ) passed the bounded-real Riccati test")
        else:
            tight = _validated("lipschitz", start, target, cert.metric, cert.multiplier, 1.0,
                               lipschitz_supply(cert.value, nu, ny), "kyp", cert.value, None, tol,
                               {"riccati_solves": cert.solves})
    elif method == "kyp":
        raise ValueError("the KYP route needs a scalar multiplier and D11 = 0 (R2DN or LTI)")
    else:
        ans = sdp.solve(target, "gain", solver=solver)
        if ans.status == "solved":
            # Report √μ slightly inflated: the solver's point sits on the LMI's boundary.
            gamma = math.sqrt(max(ans.value, 0.0)) * (1 + 1e-6) + 1e-12
            tight = _validated("lipschitz", start, target, ans.metric / gamma,
                               np.asarray(ans.multiplier) / gamma, 1.0,
                               lipschitz_supply(gamma, nu, ny), ans.solver, gamma, None, tol,
                               {"solver_status": ans.solver_status})
        else:
            status = NOT_CERTIFIED if ans.status == "infeasible" else INCONCLUSIVE
            tight = _result("lipschitz", start, status=status, solver=ans.solver,
                            message=f"SDP: {ans.solver_status}")
    if implied is not None and implied.certified and not (
            tight.certified and tight.bound <= implied.bound):
        implied.details["tight_tier"] = tight.to_dict(include_matrices=False)
        implied.seconds = time.perf_counter() - start
        return implied
    tight.seconds = time.perf_counter() - start
    return tight


# ------------------------------------------------------------------------------ (Q, S, R)
def dissipativity(system: object, Q, S, R, method: str = "auto", solver: str | None = None,
                  tol: float = VALIDATION_TOL) -> CertificateResult:
    """Certify incremental (Q,S,R)-dissipativity: ``Σ s(Δu,Δy) ≥ −Δx₀ᵀ𝒫Δx₀`` (LMI (4b))."""
    _check_method(method)
    if isinstance(system, LBDN):
        raise TypeError("dissipativity of an LBDN is not supported; use lipschitz")
    start = time.perf_counter()
    target = as_target(system)
    nu, _, _, ny = target.sizes
    supply = tuple(np.asarray(m, dtype=np.float64) for m in (Q, S, R))
    for name, m, shape in zip("QSR", supply, ((ny, ny), (nu, ny), (nu, nu))):
        if m.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {m.shape}")
    if method in ("auto", "implied") and target.metric is not None and target.supply is not None \
            and all(np.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(supply, target.supply)):
        res = _validated("dissipativity", start, target, target.metric, target.multiplier,
                         1.0, supply, "implied", None, None, tol)
        if res.certified or method == "implied":
            return res
    elif method == "implied":
        return _result("dissipativity", start, status=NOT_CERTIFIED, solver="implied",
                       message="the parameterization implies a different (or no) supply rate")
    if method == "kyp":
        raise ValueError("the (Q,S,R) check uses the SDP tier (method='sdp' or 'auto')")
    ans = sdp.solve(target, "dissipativity", supply=supply, solver=solver)
    if ans.status == "solved" and ans.value >= 0:
        res = _validated("dissipativity", start, target, ans.metric, ans.multiplier, 1.0, supply,
                         ans.solver, None, None, tol, {"solver_status": ans.solver_status})
        return res
    status = INCONCLUSIVE if ans.status == "failed" else NOT_CERTIFIED
    return _result("dissipativity", start, status=status, solver=ans.solver,
                   message=f"SDP: {ans.solver_status} (margin {ans.value})",
                   details={"supply": {"Q": supply[0], "S": supply[1], "R": supply[2]}})
