"""Public entry points: ``contraction``, ``lipschitz``, ``dissipativity``.

Tiers (docs/theory.md §4), tried in the order of `TIERS` (as torchdiffeq's
``SOLVERS[method](...)`` table): ``"implied"`` re-checks the certificate the parameterization
implies (milliseconds); ``"kyp"`` is the Riccati route for a scalar multiplier (R2DN, LTI, no
D₁₁); ``"cascade"`` builds a closed loop's certificate from its model's (a loop whose other
parts do not feed back, e.g. Youla; `certify.cascade`); ``"sdp"`` is cvxpy after
conditioning. Each tier turns the question into a `Candidate` (𝒫, multiplier, the bound
it claims) or a refusal; every candidate goes through the strict float64 check
`lmi.validate`. ``method="auto"`` answers a yes/no
question (a given rate, a (Q,S,R) supply) with the first tier that certifies it, and a
"smallest bound" question with the tightest tier that applies, keeping the implied certificate
as a fallback. Anything not proved is "not certified" or "inconclusive".
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..nn.lbdn import LBDN
from . import cascade as cascade_route
from . import kyp, sdp
from . import lbdn as lbdn_cert
from .blas import certificate_threads
from .empirical import contraction_lower_bound, lipschitz_lower_bound
from .lmi import Validation, lipschitz_supply, validate
from .result import CERTIFIED, INCONCLUSIVE, NOT_CERTIFIED, CertificateResult
from .target import Target, as_target

METHODS = ("auto", "implied", "kyp", "cascade", "sdp")
#: Relative inflations tried when a bound sits exactly on the LMI's boundary (strict check).
INFLATIONS = (0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-4, 1e-3)
#: The cascade route needs its LTI parts' spectral radii this far (relative) below the rate.
CASCADE_RADIUS_GAP = 1e-9
#: A (Q, S, R) supply rate.
Supply = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Question:
    """What is asked: the property, the system, and the requested rate/supply."""

    prop: str  # "contraction", "lipschitz", "dissipativity"
    target: Target
    rate: float | None = None
    supply: Supply | None = None
    solver: str | None = None
    rtol: float = 1e-4
    method: str = "auto"
    start: float = field(default_factory=time.perf_counter)

    @property
    def searches(self) -> bool:
        """True for a "smallest rate/γ" question, False for a yes/no one."""
        return self.prop == "lipschitz" or (self.prop == "contraction" and self.rate is None)

    def result(self, status: str, **kw) -> CertificateResult:
        kw.setdefault("requested", self.rate)
        return CertificateResult(self.prop, status=status,
                                 seconds=time.perf_counter() - self.start, **kw)


@dataclass
class Candidate:
    """A tier's proposed certificate, before the float64 check.

    ``bound`` is the rate (contraction) or γ (lipschitz) it claims; for a search the check
    may inflate it slightly (`INFLATIONS`) until the strict LMI holds.
    """

    metric: np.ndarray
    multiplier: np.ndarray | float | None
    bound: float | None
    solver: str
    details: dict = field(default_factory=dict)
    inflatable: bool = False
    proof: Validation | None = None  # `validate` at ``bound`` already run by the tier


def _lmi_for(q: Question, cand: Candidate, bound: float | None
             ) -> tuple[np.ndarray, np.ndarray | float | None, float, Supply | None]:
    """(metric, multiplier, rate, supply) of the LMI that proves ``bound``."""
    if q.prop == "dissipativity":
        return cand.metric, cand.multiplier, 1.0, q.supply
    if bound is None:
        raise ValueError(f"a {q.prop} candidate needs the bound it claims, got None")
    if q.prop == "contraction":
        return cand.metric, cand.multiplier, bound, None
    # Lipschitz: raising γ with (𝒫, λ) fixed only adds −C_yᵀC_y/γ' + C_yᵀC_y/γ ⪰ 0 and
    # (γ' − γ)I_u.
    nu, _, _, ny = q.target.sizes
    return cand.metric, cand.multiplier, 1.0, lipschitz_supply(bound, nu, ny)


def check(q: Question, cand: Candidate) -> CertificateResult:
    """The strict float64 check of a candidate (keyword-free, one place for every tier)."""
    values: list[float | None] = [cand.bound]
    if cand.inflatable and cand.bound is not None:
        bound = cand.bound
        inflated = [bound * (1 + d) for d in INFLATIONS]
        if q.prop == "contraction":
            inflated = [v for v in inflated if v <= 1.0] or [bound]
        values = list(inflated)
    last: Validation | None = None
    for value in values:
        metric, mult, rate, supply = _lmi_for(q, cand, value)
        if cand.proof is not None and value == cand.bound:
            last = cand.proof  # the same check, already run on these matrices by the tier
        else:
            last = validate(q.target.blocks, metric, mult, rate, supply)
        if last.holds:
            details = {**cand.details, "min_eigenvalue": last.min_eigenvalue,
                       "rounding_bound": last.error}
            return q.result(CERTIFIED, bound=value, margin=last.margin, P=metric,
                            multiplier=mult, solver=cand.solver,
                            message="strict LMI holds in float64 (λ_min(M) exceeds the "
                                    "rounding bound)", details=details)
    assert last is not None  # values is never empty
    return q.result(INCONCLUSIVE, margin=last.margin, solver=cand.solver, details=cand.details,
                    message=f"candidate certificate failed the strict float64 check: "
                            f"{last.reason}")


# ------------------------------------------------------------------------------ tiers
# Each tier answers a Question with a CertificateResult, or None when it does not apply.
def implied_tier(q: Question) -> CertificateResult | None:
    """Re-check the certificate the parameterization implies."""
    t = q.target
    if t.metric is None:
        return None
    if q.prop == "contraction":
        if t.rate is None or (q.rate is not None and q.rate < t.rate):
            return None
        bound, inflate = (t.rate, True) if q.rate is None else (q.rate, False)
    elif q.prop == "lipschitz":
        if t.gamma is None:
            return None
        bound, inflate = t.gamma, True
    else:
        if q.supply is None or t.supply is None or not all(np.allclose(a, b, rtol=1e-12, atol=1e-14)
                                       for a, b in zip(q.supply, t.supply)):
            return None
        bound, inflate = None, False
    return check(q, Candidate(t.metric, t.multiplier, bound, "implied", inflatable=inflate))


def kyp_applies(target: Target) -> bool:
    """A scalar multiplier and D₁₁ = 0: the bounded-real (Riccati) route is exact."""
    return target.nonlinearity in ("lipschitz", "none") and not target.has_feedthrough_loop


def kyp_tier(q: Question) -> CertificateResult | None:
    """Riccati equations of the bounded-real lemma (scalar multiplier, D₁₁ = 0)."""
    t = q.target
    if q.prop == "dissipativity" or not kyp_applies(t):
        return None
    limit = 1.0 if q.rate is None else q.rate
    radius = _radius_for(t, limit)
    if radius >= limit:
        return q.result(NOT_CERTIFIED, solver="kyp",
                        message=f"spectral radius of A is {radius:.12g} ≥ {limit:g}: no metric "
                                "contracts at this rate" if q.prop == "contraction" else
                                f"spectral radius of A is {radius:.12g} ≥ 1: the structured "
                                "route needs A Schur")
    res = None
    # A larger regularization ε buys a larger strict margin (docs/theory.md §6); the gain
    # search picks its margins itself (kyp.margin_riccati).
    regularizations = (kyp.REGULARIZATION, *kyp.RETRY_REGULARIZATIONS) \
        if q.prop == "contraction" else (kyp.REGULARIZATION,)
    for eps in regularizations:
        res = _kyp_attempt(q, eps, radius)
        if res.status != INCONCLUSIVE:
            return res
    return res


def _radius_for(t: Target, limit: float) -> float:
    """ρ(A) for the KYP tier: the dense value up to `kyp.DENSE_RADIUS_MAX`, else the Arnoldi
    estimate, confirmed by the dense eigenvalues when it is near or above ``limit`` (or fails).
    The value screens and bounds the search; every certificate is proved by `validate`."""
    if t.blocks.A.shape[0] <= kyp.DENSE_RADIUS_MAX or not np.all(np.isfinite(t.blocks.A)):
        return t.spectral_radius
    est = kyp.spectral_radius_estimate(t.blocks.A)
    if est is None or est >= limit * (1 - 1e-3):
        return t.spectral_radius
    return est


def _kyp_attempt(q: Question, eps: float, radius: float) -> CertificateResult:
    t = q.target
    if q.prop == "contraction":
        details: dict = {"regularization": eps}
        if q.rate is None:
            cert = kyp.smallest_rate(t.blocks, 1.0, q.rtol, eps=eps, radius=radius)
            found = None if cert is None else (cert.metric, cert.multiplier, cert.value)
            if cert is not None:
                details.update(riccati_solves=cert.solves, lower=cert.lower,
                               lower_reason=cert.lower_proof)
        else:
            pair = kyp.contraction_riccati(t.blocks, q.rate, eps=eps, schur_known=True)
            found = None if pair is None else (*pair, q.rate)
        if found is None:
            return q.result(NOT_CERTIFIED, solver="kyp",
                            message=f"bounded-real Riccati test fails at rate "
                                    f"{1.0 if q.rate is None else q.rate:g}")
        return check(q, Candidate(found[0], found[1], found[2], "kyp", details,
                                  inflatable=q.rate is None))
    hint = t.gamma
    lam = None if t.multiplier is None else float(np.asarray(t.multiplier).ravel()[0])
    nu, _, _, ny = t.sizes

    def accept(c: kyp.KypCertificate):
        return validate(t.blocks, c.metric, c.multiplier, 1.0, lipschitz_supply(c.value, nu, ny))

    cert = kyp.smallest_gain(t.blocks, hint, None if hint is None or lam is None else lam * hint,
                             accept=accept)
    if cert is None:
        return q.result(NOT_CERTIFIED, solver="kyp",
                        message="no (κ, γ) passed the bounded-real Riccati test")
    details = {"riccati_solves": cert.solves, "regularization": cert.margin or eps}
    if cert.margin:
        details["proof_margin"] = cert.margin
    return check(q, Candidate(cert.metric, cert.multiplier, cert.value, "kyp", details,
                              inflatable=True, proof=cert.proof))


def sdp_affordable(target: Target) -> bool:
    """Whether a dense contraction SDP of this size solves in seconds (LMI size ≲ 64)."""
    _, nx, nv, _ = target.blocks.sizes
    return nx + nv <= 64


def _sdp_failure(q: Question, ans: sdp.SdpAnswer) -> CertificateResult:
    status = INCONCLUSIVE if ans.status == "failed" else NOT_CERTIFIED
    return q.result(status, solver=ans.solver,
                    message=f"SDP: {ans.solver_status or 'no certificate with positive margin'}")


def _solution(ans: sdp.SdpAnswer) -> tuple[np.ndarray, float] | None:
    """(metric, objective value) of a solved SDP answer, None for any other status."""
    if ans.status != "solved" or ans.metric is None or ans.value is None:
        return None
    return ans.metric, ans.value


def sdp_tier(q: Question) -> CertificateResult | None:
    """cvxpy SDPs (Clarabel/SCS/MOSEK); in ``auto`` only where KYP is inexact or small."""
    if q.method == "auto" and kyp_applies(q.target) and not sdp_affordable(q.target):
        return None
    if q.prop == "lipschitz":
        ans = sdp.solve_gain(q.target, solver=q.solver)
        solved = _solution(ans)
        if solved is None:
            return _sdp_failure(q, ans)
        metric, value = solved
        gamma = math.sqrt(max(value, 0.0)) * (1 + 1e-6) + 1e-12
        # The γ-form's (𝒫̃, λ̃) are γ times those of (4b) with the supply (−I/γ, 0, γI).
        return check(q, Candidate(metric / gamma, np.asarray(ans.multiplier) / gamma, gamma,
                                  ans.solver, {"solver_status": ans.solver_status},
                                  inflatable=True))
    if q.prop == "dissipativity":
        ans = sdp.solve_dissipativity(q.target, q.supply, solver=q.solver)
        solved = _solution(ans)
        if solved is None or solved[1] <= 0:
            return _sdp_failure(q, ans)
        return check(q, Candidate(solved[0], ans.multiplier, None, ans.solver,
                                  {"solver_status": ans.solver_status}))
    return _sdp_contraction(q)


def _sdp_contraction(q: Question) -> CertificateResult:
    def attempt(rate: float) -> tuple[sdp.SdpAnswer, CertificateResult | None]:
        ans = sdp.solve_contraction(q.target, rate, solver=q.solver)
        solved = _solution(ans)
        if solved is None or solved[1] <= 0:
            return ans, None
        return ans, check(q, Candidate(solved[0], ans.multiplier, rate, ans.solver,
                                       {"solver_status": ans.solver_status}))

    ans, res = attempt(1.0 if q.rate is None else q.rate)
    if res is None:
        return _sdp_failure(q, ans)
    if q.rate is not None or not res.certified:
        return res
    best, lo, hi = res, q.target.spectral_radius, 1.0
    while hi - lo > q.rtol * hi:
        mid = 0.5 * (lo + hi)
        _, res = attempt(mid)
        if res is not None and res.certified:
            hi, best = mid, res
        else:
            lo = mid
    return best


# ------------------------------------------------------------------------------ cascade
def cascade_tier(q: Question) -> CertificateResult | None:
    """A cascade loop's contraction from its core's certificate (`certify.cascade`)."""
    structure = q.target.cascade
    if q.prop != "contraction" or structure is None:
        return None
    # In an "auto" search the loop's own SDP runs after this tier: the cascade bound is only a
    # fallback there, so the core is not searched by SDPs as well.
    methods = _core_methods(structure.core, sdp=not (q.method == "auto" and q.searches))
    floor = _cascade_floor(q, structure, methods)
    if isinstance(floor, CertificateResult):
        return floor
    if q.rate is not None:
        return _cascade_at(q, structure, q.rate, methods)
    lo, radius = floor
    res: CertificateResult | None = None
    for rate in _cascade_rates(lo, q.rtol):
        if rate <= radius / (1 - CASCADE_RADIUS_GAP):
            continue
        res = _cascade_at(q, structure, rate, methods)
        if res.certified:
            return res
    assert res is not None  # _cascade_rates ends with 1.0
    return res


def _core_methods(core: Target, sdp: bool = True) -> list[str]:
    """How the core is certified, in order: its implied certificate, then the tiers that are
    cheap at its size (KYP at any size; with ``sdp``, the SDP up to `sdp_affordable`, whose
    certificate usually has the larger relative margin that the cascade's scalars need)."""
    methods = ["implied"] if core.metric is not None else []
    if kyp_applies(core):
        methods.append("kyp")
    elif sdp and sdp_affordable(core):
        methods.append("sdp")
    return methods


def _core_results(q: Question, structure: cascade_route.Cascade, rate: float | None,
                  methods: list[str]) -> Iterator[CertificateResult]:
    """The core's certificates at ``rate`` (None: its smallest rate), one per method."""
    for method in methods:
        q_core = Question("contraction", structure.core, rate=rate, solver=q.solver,
                          rtol=q.rtol, method=method)
        try:
            yield TIERS[method](q_core) or q_core.result(
                NOT_CERTIFIED, solver=method, message=f"the {method} tier does not apply")
        except (np.linalg.LinAlgError, ValueError, ArithmeticError) as err:
            yield q_core.result(INCONCLUSIVE, solver=method,
                                message=f"numerical failure in the {method} tier: {err}")


def _cascade_floor(q: Question, structure: cascade_route.Cascade, methods: list[str]
                   ) -> tuple[float, float] | CertificateResult:
    """(the largest of the parts' rates, the largest LTI part's spectral radius), or a
    refusal. A search starts at the first."""
    up, down = cascade_route.part_radii(q.target.blocks, structure)
    limit = 1.0 if q.rate is None else q.rate
    for name, radius in (("upstream", up), ("downstream", down)):
        if not radius < limit:
            return q.result(NOT_CERTIFIED, solver="cascade",
                            message=f"the {name} LTI part of the cascade has spectral radius "
                                    f"{radius:.12g} ≥ {limit:g}: no metric contracts at this "
                                    "rate")
        if q.rate is not None and radius > limit * (1 - CASCADE_RADIUS_GAP):
            return q.result(INCONCLUSIVE, solver="cascade",
                            message=f"the {name} LTI part of the cascade has spectral radius "
                                    f"{radius:.12g}, within {CASCADE_RADIUS_GAP:g} (relative) "
                                    f"of the rate {limit:g}: its Stein metric is too "
                                    "ill-conditioned for a float64 proof")
    if q.rate is not None:
        return max(up, down), max(up, down)
    bounds = [c.bound for c in _core_results(q, structure, None, methods)
              if c.certified and c.bound is not None]
    if not bounds:
        return q.result(NOT_CERTIFIED, solver="cascade",
                        message=f"the cascade's core is not certified by any of {methods}")
    return max(up, down, min(bounds)), max(up, down)


def _cascade_rates(lo: float, rtol: float) -> list[float]:
    """lo, then lo·(1 + rtol·4ᵏ) up to 1: within a factor 4 of the smallest gap that passes."""
    rates = [lo] if lo <= 1.0 else []
    gap = rtol
    while lo * (1 + gap) < 1.0:
        rates.append(lo * (1 + gap))
        gap *= 4
    return rates + [1.0]


def _cascade_at(q: Question, structure: cascade_route.Cascade, rate: float,
                methods: list[str]) -> CertificateResult:
    """The block-diagonal candidate at ``rate`` for each core certificate (`_core_results`)
    and each of `cascade.SCALINGS`, float64-checked; the first that holds."""
    res: CertificateResult | None = None
    for core in _core_results(q, structure, rate, methods):
        if not core.certified or core.P is None:
            continue
        parts = cascade_route.cascade_parts(q.target.blocks, structure, core.P,
                                            core.multiplier, rate)
        for theta, factor in cascade_route.SCALINGS:
            try:
                k_up, k_down = cascade_route.scalars(parts, theta, factor)
            except np.linalg.LinAlgError as err:
                res = q.result(INCONCLUSIVE, solver="cascade",
                               message=f"the cascade's scalars could not be formed: {err}")
                break
            metric = cascade_route.assemble_metric(structure, parts, core.P, k_up, k_down)
            details = {"core_solver": core.solver, "upstream_scale": k_up,
                       "downstream_scale": k_down, "part_radii": parts.radii,
                       "transfer": structure.transfer}
            res = check(q, Candidate(metric, core.multiplier, rate, "cascade", details))
            if res.certified:
                return res
    if res is None:
        return q.result(NOT_CERTIFIED, solver="cascade",
                        message=f"the cascade's core is not certified at rate {rate:g} by any "
                                f"of {methods}")
    return res


Tier = Callable[[Question], "CertificateResult | None"]
#: The certificate tiers, cheapest first.
TIERS: dict[str, Tier] = {"implied": implied_tier, "kyp": kyp_tier, "cascade": cascade_tier,
                          "sdp": sdp_tier}


def _better(a: CertificateResult | None, b: CertificateResult) -> CertificateResult:
    if a is None or (b.bound is not None and a.bound is not None and b.bound < a.bound):
        return b
    return a


def answer(q: Question) -> CertificateResult:
    """Run the tiers of ``q.method`` (one tier, or all of `TIERS` in order for auto)."""
    names = list(TIERS) if q.method == "auto" else [q.method]
    best, last = None, None
    for name in names:
        try:
            res = TIERS[name](q)
        except (np.linalg.LinAlgError, ValueError, ArithmeticError) as err:
            res = q.result(INCONCLUSIVE, solver=name,
                           message=f"numerical failure in the {name} tier: {err}")
        if res is None:
            continue
        if res.certified:
            if not q.searches:
                return res
            best = _better(best, res)
            if name not in ("implied", "cascade"):  # neither searches the loop's own LMI
                break
        else:
            last = res
            if name == "kyp" and res.status == NOT_CERTIFIED:
                break  # the Riccati test is exact for a scalar multiplier
    out = best or last
    if out is None:
        if q.method == "kyp":
            raise ValueError("the KYP route needs a scalar multiplier and D11 = 0 (R2DN or "
                             "LTI) and applies to contraction and lipschitz only")
        if q.method == "cascade":
            raise ValueError("the cascade route applies to contraction of a target with a "
                             "cascade structure, e.g. certify.ClosedLoop(model, plant) with a "
                             "plant whose transfer from input to output is zero (D = 0, "
                             f"CAᵏB = 0); got {q.prop} of {q.target.name} "
                             f"(cascade: {q.target.cascade is not None})")
        out = q.result(NOT_CERTIFIED, solver=q.method,
                       message=f"the {q.method} tier does not apply to this question")
    out.seconds = time.perf_counter() - q.start
    return out


# ------------------------------------------------------------------------------ checks
def _check_method(method: object, allowed: tuple[str, ...] = METHODS) -> None:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"method must be one of {allowed}, got {method!r}")


def _check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate must be a real number in (0, 1] or None, got "
                        f"{type(rate).__name__} {rate!r}")
    rate = float(rate)
    if not (0 < rate <= 1.0):
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    return rate


def _check_dtype(dtype: object) -> None:
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32,
                                           torch.float64):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")


def _states(system: object) -> int:
    """The state dimension of ``system`` where it is known before its explicit model is built
    (a recurrent model's ``state_size``, an explicit model's A), else 0 (for the BLAS threads)."""
    size = getattr(system, "state_size", None)
    if isinstance(size, int):
        return size
    shape: tuple[int, ...] = tuple(getattr(getattr(system, "A", None), "shape", ()))
    return int(shape[0]) if len(shape) == 2 else 0


def _prepare(prop: str, system: object, method: str, dtype) -> Target | CertificateResult:
    """The target, or a "not certified" result when the weights are not finite."""
    _check_dtype(dtype)
    if isinstance(system, torch.nn.Module) and not all(
            bool(torch.isfinite(p).all()) for p in system.parameters()):
        return CertificateResult(prop, NOT_CERTIFIED, solver=method,
                                 message="non-finite weights (NaN or inf in the parameters)")
    target = as_target(system, dtype=dtype)
    if not target.blocks.is_finite():
        return CertificateResult(prop, NOT_CERTIFIED, solver=method,
                                 message="non-finite weights (NaN or inf in the explicit model)")
    return target


# ------------------------------------------------------------------------------ contraction
def contraction(system: object, rate: float | None = None, method: str = "auto",
                solver: str | None = None, rtol: float = 1e-4, lower_bound: bool = False,
                dtype: torch.dtype | None = None) -> CertificateResult:
    """Certify contraction at ``rate`` (ᾱ), or find the smallest certified rate.

    ``‖Δx_{t+1}‖_𝒫 ≤ ᾱ‖Δx_t‖_𝒫`` for any two trajectories under the same input (LMI (4a),
    docs/theory.md §4), proved by the strict float64 check of `lmi.validate`.

    Parameters
    ----------
    rate : float, optional
        The rate to check; None searches the smallest certified one (slightly above the
        boundary of the LMI, so that the check is strict).
    dtype : torch.dtype, optional
        Check the explicit matrices as cast to this dtype (e.g. ``torch.float32``, the matrices
        a float32 rollout uses; docs/theory.md §5). Default: the float64 explicit model.
    """
    _check_method(method)
    rate = _check_rate(rate)
    if isinstance(system, LBDN):
        raise TypeError("an LBDN is a static map: contraction does not apply (use lipschitz)")
    # One BLAS thread for small and medium models (threads only spin on their small LAPACK
    # calls), the pool's threads for large ones (certify.threads, certify.threads_from).
    with certificate_threads(_states(system)):
        target = _prepare("contraction", system, method, dtype)
        if isinstance(target, CertificateResult):
            return target
        res = answer(Question("contraction", target, rate=rate, solver=solver, rtol=rtol,
                              method=method))
    if lower_bound:
        res.lower_bound = contraction_lower_bound(target, res.P)
    return res


# ------------------------------------------------------------------------------ lipschitz
def lipschitz(system: object, method: str = "auto", solver: str | None = None,
              lower_bound: bool = False, dtype: torch.dtype | None = None) -> CertificateResult:
    """The smallest certified incremental ℓ₂ gain γ.

    ``‖Δy‖₂ ≤ γ‖Δu‖₂ + √(γΔx₀ᵀ𝒫Δx₀)`` (docs/theory.md §4). For an LBDN: ``method="sandwich"``
    (default) or ``"lipsdp"``; a list of weight matrices gets the per-layer LipSDP. ``dtype``
    as in `contraction`.
    """
    if isinstance(system, LBDN) or isinstance(system, (list, tuple)):
        return lbdn_cert.lipschitz(system, "sandwich" if method in ("auto", "sandwich")
                                   else "lipsdp", solver)
    _check_method(method)
    with certificate_threads(_states(system)):  # as in `contraction`
        target = _prepare("lipschitz", system, method, dtype)
        if isinstance(target, CertificateResult):
            return target
        res = answer(Question("lipschitz", target, solver=solver, method=method))
    if lower_bound:
        res.lower_bound = lipschitz_lower_bound(target)
    return res


# ------------------------------------------------------------------------------ (Q, S, R)
def dissipativity(system: object, Q, S, R, method: str = "auto", solver: str | None = None,
                  dtype: torch.dtype | None = None) -> CertificateResult:
    """Certify incremental (Q,S,R)-dissipativity: ``Σ s(Δu,Δy) ≥ −Δx₀ᵀ𝒫Δx₀`` (LMI (4b)).

    ``dtype`` as in `contraction`.
    """
    _check_method(method, ("auto", "implied", "sdp"))
    if isinstance(system, LBDN):
        raise TypeError("dissipativity of an LBDN is not supported; use lipschitz")
    target = _prepare("dissipativity", system, method, dtype)
    if isinstance(target, CertificateResult):
        return target
    nu, _, _, ny = target.sizes
    supply: Supply = (np.asarray(Q, dtype=np.float64), np.asarray(S, dtype=np.float64),
                      np.asarray(R, dtype=np.float64))
    for name, m, shape in zip("QSR", supply, ((ny, ny), (nu, ny), (nu, nu))):
        if m.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{name} must be finite, got {m}")
    res = answer(Question("dissipativity", target, supply=supply, solver=solver, method=method))
    res.details.setdefault("supply", {"Q": supply[0], "S": supply[1], "R": supply[2]})
    return res
