"""Defaults study for ``sysid.fit`` on the simulated Bouc–Wen benchmark: R2DN vs a same-size GRU.

Every configuration gets the same wall-clock training budget (``--seconds``, default 90 s) on one
thread, the same training data (two random-phase multisine records, 8,192 samples each, 50 N
RMS, started from the steady state of a previous period) and is scored on a *fresh* random-phase
multisine record (8,192 samples) after a washout of 100 samples: RMSE in metres and NRMSE.

    OMP_NUM_THREADS=1 python benchmarks/bench_sysid_defaults.py --seconds 90 --out runs/defaults

One JSON line per configuration is printed and appended to ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from r2dn_control import sysid

CONFIGS = [
    # (kind, contraction rate, x0, lr)
    ("r2dn", 0.995, "encoder", 3e-3),
    ("r2dn", 1.0, "encoder", 3e-3),
    ("r2dn", 0.99, "encoder", 3e-3),
    ("r2dn", 0.995, "zero", 3e-3),
    ("r2dn", 0.995, "encoder", 1e-3),
    ("gru", None, "encoder", 3e-3),
    ("gru", None, "zero", 3e-3),
    ("gru", None, "encoder", 1e-3),
    # second round: what limits the R2DN
    ("r2dn-random", 0.995, "encoder", 3e-3),
    ("r2dn", 0.995, "encoder", 1e-2),
    ("r2dn-medium", 0.995, "encoder", 3e-3),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--out", default="runs/sysid-defaults")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="config indices")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = sysid.bouc_wen_data(2, periods=1, seed=1)
    test = sysid.bouc_wen_data(1, periods=1, seed=2)
    for index, (kind, rate, x0, lr) in enumerate(CONFIGS):
        if args.only is not None and index not in args.only:
            continue
        kw = {} if rate is None else {"contraction_rate": rate}
        if kind == "r2dn-random":
            kw["init"] = "random"
        size = "medium" if kind == "r2dn-medium" else "small"
        model = sysid.default_model(1, 1, kind.split("-")[0], size, seed=0, **kw)
        start = time.perf_counter()
        res = sysid.fit(model, train, val=None, epochs=10_000, segment=256, lr=lr, washout=100,
                        x0=x0, seconds=args.seconds, progress=False, early_stopping=None,
                        out_dir=out / f"config{index}")
        rep = sysid.evaluate(res.predictor, test, washout=100)
        row = {"config": index, "kind": kind, "rate": rate, "x0": x0, "lr": lr,
               "parameters": sysid.parameter_count(model), "epochs": len(res.history),
               "best_epoch": res.best_epoch, "seconds": time.perf_counter() - start,
               "test_rmse_m": rep.rmse, "test_nrmse": rep.nrmse,
               "val_nrmse_best": min(r["val_nrmse"] for r in res.history)}
        print(json.dumps(row), flush=True)
        with open(out / "results.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
