"""Diagnose an identification run: train one model, then measure what its nonlinearity does.

    OMP_NUM_THREADS=1 python benchmarks/sysid_diagnosis.py TAG SECONDS ['{"hidden": [32]}'] ['{"lr": 1e-2}']

MODEL_KW go to `sysid.default_model` (``"kind": "free"`` builds `sysid_free_r2dn.FreeR2DN`,
``"nx"``/``"nv"`` a `ContractingR2DN` of that size); FIT_KW override ``fit(x0="encoder",
lr=3e-3)``. ``BENCH=bw|duff|tanks`` picks the simulated benchmark (default Bouc–Wen),
``SEED`` the seed. Prints test NRMSE and, for R2DN-structured models, the RMS over the test
record of every term of the explicit model (‖D₂₁w‖ vs ‖C₂x‖, ‖B₁w‖ vs ‖Ax‖, ‖w‖ vs ‖v‖), how
affine φ is over the visited v (residual of an affine least-squares fit), and ‖B₁‖, ‖C₁‖.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import torch

from r2dn_control import sysid
from r2dn_control.nn import ContractingR2DN

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from sysid_free_r2dn import FreeR2DN  # noqa: E402


def data(bench: str) -> tuple[sysid.SequenceData, sysid.SequenceData]:
    if bench == "duff":
        return sysid.duffing_data(2, seed=1), sysid.duffing_data(1, seed=2)
    if bench == "tanks":
        return sysid.cascaded_tanks_data(1, seed=1), sysid.cascaded_tanks_data(1, seed=2)
    return sysid.bouc_wen_data(2, periods=1, seed=1), sysid.bouc_wen_data(1, periods=1, seed=2)


def build(train: sysid.SequenceData, kw: dict, seed: int) -> torch.nn.Module:
    kind = kw.pop("kind", "r2dn")
    torch.manual_seed(seed)
    if kind == "free":
        return FreeR2DN(train.nu, 16, 32, train.ny, **kw)
    if "nx" in kw:
        nx, nv = kw.pop("nx"), kw.pop("nv")
        kw.setdefault("init", "long_memory")
        kw.setdefault("contraction_rate", sysid.suggested_contraction_rate(train))
        return ContractingR2DN(train.nu, nx, nv, train.ny, **kw)
    return sysid.default_model(train, kind=kind, seed=seed, **kw)


def term_norms(e, u: torch.Tensor) -> dict[str, float]:
    """RMS over time of the norm of every term of the explicit model, simulated from zero."""
    x = torch.zeros(e.A.shape[0], dtype=torch.float64)
    rec: dict[str, list[float]] = {}
    vs = []
    for ut in u:
        v = e.C1 @ x + e.D12 @ ut + e.bv
        w = e.network(v[None])[0]
        for name, value in (("Ax", e.A @ x), ("B1w", e.B1 @ w), ("B2u", e.B2 @ ut),
                            ("C2x", e.C2 @ x), ("D21w", e.D21 @ w), ("v", v), ("w", w)):
            rec.setdefault(name, []).append(float(value.norm()))
        vs.append(v)
        x = e.A @ x + e.B1 @ w + e.B2 @ ut + e.bx
    out = {k: float(np.sqrt(np.mean(np.square(val)))) for k, val in rec.items()}
    v_all = torch.stack(vs)
    w_all = e.network(v_all)
    design = torch.cat([v_all, torch.ones(v_all.shape[0], 1, dtype=v_all.dtype)], 1)
    residual = w_all - design @ torch.linalg.lstsq(design, w_all).solution
    out["affine_residual"] = float(residual.norm() / (w_all - w_all.mean(0)).norm())
    return out


def main() -> None:
    torch.set_num_threads(1)
    tag, seconds = sys.argv[1], float(sys.argv[2])
    model_kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    fit_kw = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    seed = int(os.environ.get("SEED", 0))
    train, test = data(os.environ.get("BENCH", "bw"))
    model = build(train, model_kw, seed)
    res = sysid.fit(model, train, seconds=seconds, progress=False, seed=seed,
                    **{"x0": "encoder", "lr": 3e-3, **fit_kw})
    rep = sysid.evaluate(res.predictor, test, washout=100)
    print(json.dumps({"tag": tag, "parameters": sysid.parameter_count(model),
                      "epochs": len(res.history), "best_epoch": res.best_epoch,
                      "test_nrmse": rep.nrmse,
                      "val_nrmse": [round(r["val_nrmse"], 3) for r in res.history],
                      "lr": [r["lr"] for r in res.history]}))
    if not hasattr(model, "explicit"):
        return
    model.double()
    u = torch.as_tensor(res.normalization.apply(test).u[0], dtype=torch.float64)
    with torch.no_grad():
        e = model.explicit() if isinstance(model, FreeR2DN) else model.explicit(torch.float64)
        norms = term_norms(e, u)
        norms.update({name: float(torch.linalg.matrix_norm(m, 2))
                      for name, m in (("|B1|", e.B1), ("|C1|", e.C1))})
    print(json.dumps({"tag": tag, **{k: round(v, 4) for k, v in norms.items()}}))


if __name__ == "__main__":
    main()
