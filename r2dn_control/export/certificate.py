r"""The certificate that travels with an exported model: re-checked on the exported weights.

The parameterization guarantees its bounds for the exact (float64) explicit model
(docs/theory.md §4, §5). An artifact stores the weights rounded to the export dtype, so the
export re-validates the implied certificate — the same metric 𝒫 and multiplier — on the
rounded matrices promoted to float64 (the LMI itself is evaluated in float64), through
:func:`r2dn_control.certify.contraction` / ``lipschitz`` / ``dissipativity`` with
``method="implied"``. If an LMI no longer holds within the validation tolerance the export
refuses (or warns, by option).

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

from .. import certify
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


def _summary(res: certify.CertificateResult) -> dict:
    return {"status": res.status, "bound": res.bound, "margin": res.margin,
            "solver": res.solver, "message": res.message}


def _implied_contraction(target: certify.Target) -> certify.CertificateResult:
    """LMI (4a) at the guaranteed rate with the implied metric, nothing else.

    Called through :func:`certify.validate` directly: ``certify.contraction(...,
    method="implied")`` goes on to an SDP search when the implied certificate fails, which
    costs seconds and would certify a *different* metric than the one recorded here.
    """
    ok, margin = certify.validate(target.blocks, target.metric, target.multiplier, target.rate)
    return certify.CertificateResult(
        "contraction", certify.CERTIFIED if ok else certify.NOT_CERTIFIED,
        bound=target.rate if ok else None, margin=margin, solver="implied",
        requested=target.rate,
        message="LMI re-validated in float64" if ok else
        f"implied certificate fails in float64 (margin {margin:.3e})")


def recheck(model: RecurrentModel, exported: ExplicitModel) -> dict:
    """Re-validate ``model``'s implied certificate on ``exported`` (any dtype, checked in float64).

    ``exported`` must carry the metric and multiplier (``model.explicit(dtype)`` does).
    Returns ``{"holds": bool, "checks": {property: summary}}``.
    """
    if exported.metric is None or exported.multiplier is None:
        raise ValueError("the exported explicit model carries no implied certificate (metric "
                         "and multiplier are None); build it with model.explicit(dtype)")
    promoted = exported.to(dtype=torch.float64, device=torch.device("cpu"))
    bounds = guaranteed_bounds(model)
    target = certify.as_target(promoted)
    supply = None
    if model.supply is not None:
        s = model.supply
        supply = tuple(getattr(s, k).detach().cpu().numpy() for k in "QSR")
    target = dataclasses.replace(target, name=type(model).__name__,
                                 rate=bounds["contraction_rate"], supply=supply,
                                 gamma=bounds.get("lipschitz_gamma"))
    checks = {"contraction": _implied_contraction(target)}
    if "lipschitz_gamma" in bounds:
        checks["lipschitz"] = certify.lipschitz(target, method="implied")
    elif supply is not None:
        checks["dissipativity"] = certify.dissipativity(target, *supply, method="implied")
    return {"holds": all(r.certified for r in checks.values()),
            "checks": {k: _summary(r) for k, r in checks.items()}}


def certificate_record(model: RecurrentModel, exported: ExplicitModel, dtype: torch.dtype,
                       on_failure: str = "raise") -> dict:
    """The sidecar's certificate block; raises :class:`CertificateError` (or warns) if the
    certificate fails on the exported weights."""
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    result = recheck(model, exported)
    record = {
        "guaranteed": guaranteed_bounds(model),
        "certified": result["checks"],
        "holds_on_exported_weights": result["holds"],
        "verified_dtype": f"{str(dtype).removeprefix('torch.')} weights, LMIs evaluated in float64",
        "metric_sha256": metric_checksum(exported.metric),
        "metric_shape": list(exported.metric.shape),
        "metric_checksum_of": "the metric P as little-endian float64, C order",
    }
    if not result["holds"]:
        failed = [k for k, v in result["checks"].items() if v["status"] != certify.CERTIFIED]
        message = (f"the certificate no longer holds on the {dtype} weights: {failed} failed "
                   f"({result['checks']}); export in float64 or retrain with a margin")
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
        lines.append(f"{prop}: {res['status']} (bound {bound}, LMI margin {margin}, "
                     f"{res['solver']})")
    lines += [f"verified on: {record['verified_dtype']}",
              f"holds on the exported weights: {record['holds_on_exported_weights']}",
              f"metric P {record['metric_shape']} sha256: {record['metric_sha256']}"]
    return lines
