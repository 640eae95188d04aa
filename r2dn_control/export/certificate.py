r"""The certificate that travels with an exported model: re-checked on the exported weights.

The parameterization guarantees its bounds for the exact (float64) explicit model
(docs/theory.md §4, §5). An artifact stores the weights rounded to the export dtype, so the
export re-validates the implied certificate — the same metric 𝒫 and multiplier — on the
rounded matrices promoted to float64, with the strict float64 check of
`r2dn_control.certify.validate` (λ_min(M) must exceed a rounding-error bound).

Rounding to float32 moves the LMI by about 1e-8 relative, so at *exactly* the guaranteed
bound the LMI of the rounded weights may sit a hair on the wrong side (margins ≈ −1e-14 are
typical). The re-check therefore reports the bound that actually holds for the exported
weights, with the same 𝒫 and multiplier:

* contraction: the smallest rate ᾱ' ≥ ᾱ of the ladder ``ᾱ(1 + δ)``
  (``certify.contraction(rate=None, method="implied")``);
* Lipschitz: the smallest γ' ≥ γ of the ladder ``γ(1 + δ)``
  (``certify.lipschitz(method="implied")``);
* (Q,S,R): the supply with R relaxed to ``R + δ s I``, ``s = max(‖Q‖₂, ‖S‖₂, ‖R‖₂)``, for
  the smallest δ in `RELAXATIONS` that certifies (a larger R is a weaker claim).

The export is accepted when every certified bound is within the relative tolerance
``config.defaults["export.certificate_rtol"]`` (1e-6) of the guaranteed one, i.e.
``ᾱ' ≤ ᾱ(1 + rtol)``, ``γ' ≤ γ(1 + rtol)``, ``δ ≤ rtol``; otherwise it refuses (or warns, by
option). The sidecar records both the guaranteed and the certified bounds.

What the re-check covers: the LTI blocks (A, B₁, B₂, C₁, C₂, D₁₁, D₁₂, D₂₁, D₂₂) exactly as
stored. It treats the LBDN as 1-Lipschitz (R2DN), resp. σ as slope-restricted in [0, 1]
(REN); the LBDN's own 1-Lipschitz bound holds for the exact folded weights and is not
re-proved after rounding (docs/theory.md §5).
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings

import numpy as np
import torch

from .. import certify, config
from ..nn.base import RecurrentModel
from ..nn.explicit import ExplicitModel

ON_FAILURE = ("raise", "warn")


class CertificateError(ValueError):
    """The exported weights no longer satisfy the model's certificate."""


def metric_checksum(metric: np.ndarray | torch.Tensor) -> str:
    """SHA-256 of the metric 𝒫 as little-endian float64 bytes in C order (hex)."""
    if isinstance(metric, torch.Tensor):
        metric = metric.detach().cpu().numpy()
    data = np.ascontiguousarray(metric, dtype="<f8").tobytes()
    return hashlib.sha256(data).hexdigest()


def guaranteed_bounds(model: RecurrentModel) -> dict:
    """What the parameterization guarantees: contraction rate, γ or the (Q,S,R) supply."""
    out: dict = {"contraction_rate": float(model.contraction_rate)}
    gamma = getattr(model, "gamma", None)
    if gamma is not None:
        out["lipschitz_gamma"] = float(gamma)
    elif model.supply is not None:
        s = model.supply
        out["supply"] = {k: getattr(s, k).detach().cpu().numpy().tolist() for k in "QSR"}
    return out


#: Relative relaxations δ of R tried for a (Q,S,R) supply, smallest first (those ≤ the tolerance).
RELAXATIONS = (0.0, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)


def tolerance() -> float:
    """The accepted relative excess of a certified bound (``export.certificate_rtol``)."""
    return float(config.defaults["export.certificate_rtol"])


def _summary(res: certify.CertificateResult, guaranteed: float | None, rtol: float) -> dict:
    """One property's record: what was guaranteed, what holds on the exported weights."""
    out = {"status": res.status, "guaranteed": guaranteed, "bound": res.bound,
           "relative_excess": None, "accepted": False, "margin": res.margin,
           "solver": res.solver, "message": res.message}
    if res.certified and guaranteed is not None and res.bound is not None:
        excess = res.bound / guaranteed - 1.0
        out["relative_excess"] = max(excess, 0.0)
        out["accepted"] = excess <= rtol
    return out


def _relaxed_dissipativity(target: certify.Target, supply: tuple, rtol: float) -> dict:
    """(Q, S, R + δ s I) with the smallest δ ≤ rtol of `RELAXATIONS` that certifies."""
    q, s, r = supply
    scale = max(float(np.linalg.norm(m, 2)) if m.size else 0.0 for m in supply) or 1.0
    # The first relaxation that certifies (the list is never empty, so res is always bound).
    for delta in [d for d in RELAXATIONS if d <= rtol] or [0.0]:
        relaxed = (q, s, r + delta * scale * np.eye(r.shape[0]))
        res = certify.dissipativity(dataclasses.replace(target, supply=relaxed), *relaxed,
                                    method="implied")
        if res.certified:
            break
    out = {"status": res.status, "guaranteed": "the supply as designed", "bound": None,
           "R_relaxation": delta if res.certified else None,
           "R_relaxation_absolute": delta * scale if res.certified else None,
           "relative_excess": delta if res.certified else None, "accepted": res.certified,
           "margin": res.margin, "solver": res.solver,
           "message": res.message + ("" if not res.certified else
                                     f"; supply (Q, S, R + {delta:g}·{scale:.6g}·I)")}
    return out


def _implied_metric(exported: ExplicitModel) -> torch.Tensor:
    """The metric 𝒫 ``exported`` carries; a ``ValueError`` without its implied certificate."""
    if exported.metric is None or exported.multiplier is None:
        raise ValueError("the exported explicit model carries no implied certificate (metric "
                         "and multiplier are None); build it with model.explicit(dtype)")
    return exported.metric


def recheck(model: RecurrentModel, exported: ExplicitModel) -> dict:
    """Re-validate ``model``'s implied certificate on ``exported`` (any dtype, checked in float64).

    ``exported`` must carry the metric and multiplier (``model.explicit(dtype)`` does).
    Returns ``{"holds": bool, "tolerance": rtol, "checks": {property: record}}``; each record
    holds the guaranteed and the certified bound (see the module docstring), ``holds`` is
    True when every property is certified within the tolerance.
    """
    _implied_metric(exported)
    rtol = tolerance()
    promoted = exported.to(dtype=torch.float64, device=torch.device("cpu"))
    bounds = guaranteed_bounds(model)
    target = certify.as_target(promoted)
    supply = None
    if model.supply is not None:
        s = model.supply
        supply = tuple(getattr(s, k).detach().cpu().to(torch.float64).numpy() for k in "QSR")
    target = dataclasses.replace(target, name=type(model).__name__,
                                 rate=bounds["contraction_rate"], supply=supply,
                                 gamma=bounds.get("lipschitz_gamma"))
    checks = {"contraction": _summary(certify.contraction(target, method="implied"),
                                      bounds["contraction_rate"], rtol)}
    if "lipschitz_gamma" in bounds:
        checks["lipschitz"] = _summary(certify.lipschitz(target, method="implied"),
                                       bounds["lipschitz_gamma"], rtol)
    elif supply is not None:
        checks["dissipativity"] = _relaxed_dissipativity(target, supply, rtol)
    return {"holds": all(c["accepted"] for c in checks.values()), "tolerance": rtol,
            "checks": checks}


def certified_bounds(checks: dict) -> dict:
    """The bounds proved on the exported weights (None where nothing was certified)."""
    out = {"contraction_rate": checks["contraction"]["bound"]}
    if "lipschitz" in checks:
        out["lipschitz_gamma"] = checks["lipschitz"]["bound"]
    if "dissipativity" in checks:
        out["supply_R_relaxation"] = checks["dissipativity"]["R_relaxation"]
    return out


def certificate_record(model: RecurrentModel, exported: ExplicitModel, dtype: torch.dtype,
                       on_failure: str = "raise") -> dict:
    """The sidecar's certificate block; raises `CertificateError` (or warns) if the
    certificate fails on the exported weights."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    result = recheck(model, exported)
    metric = _implied_metric(exported)
    record = {
        "guaranteed": guaranteed_bounds(model),
        "certified_bounds": certified_bounds(result["checks"]),
        "certified": result["checks"],
        "relative_tolerance": result["tolerance"],
        "holds_on_exported_weights": result["holds"],
        "verified_dtype": f"{str(dtype).removeprefix('torch.')} weights, LMIs evaluated in float64",
        "metric_sha256": metric_checksum(metric),
        "metric_shape": list(metric.shape),
        "metric_checksum_of": "the metric P as little-endian float64, C order",
    }
    if not result["holds"]:
        failed = {k: (v["status"], v["bound"], v["relative_excess"])
                  for k, v in result["checks"].items() if not v["accepted"]}
        message = (f"the certificate no longer holds on the {dtype} weights within relative "
                   f"tolerance {result['tolerance']:g}: (status, certified bound, relative "
                   f"excess) {failed}; export in float64 or retrain with a margin")
        if on_failure == "raise":
            raise CertificateError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return record


def comment_lines(record: dict) -> list[str]:
    """The certificate block as plain text lines (for the C header)."""
    g = record["guaranteed"]
    lines = [f"guaranteed contraction rate: {g['contraction_rate']:.17g}"]
    if "lipschitz_gamma" in g:
        lines.append(f"guaranteed incremental l2 gain (Lipschitz) bound: {g['lipschitz_gamma']:.17g}")
    if "supply" in g:
        lines.append(f"guaranteed (Q,S,R) supply: {g['supply']}")
    for prop, res in record["certified"].items():
        bound = "-" if res["bound"] is None else f"{res['bound']:.17g}"
        margin = "-" if res["margin"] is None else f"{res['margin']:.3e}"
        excess = "-" if res["relative_excess"] is None else f"{res['relative_excess']:.3e}"
        what = "R relaxation" if prop == "dissipativity" else "relative excess"
        lines.append(f"{prop}: {res['status']} on the exported weights (certified bound "
                     f"{bound}, {what} {excess}, LMI margin {margin}, {res['solver']})")
    lines.append(f"accepted within relative tolerance: {record['relative_tolerance']:g}")
    lines += [f"verified on: {record['verified_dtype']}",
              f"holds on the exported weights: {record['holds_on_exported_weights']}",
              f"metric P {record['metric_shape']} sha256: {record['metric_sha256']}"]
    return lines
