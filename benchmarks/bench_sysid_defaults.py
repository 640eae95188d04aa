"""R2DN vs a same-parameter-count GRU under ``sysid.fit``'s defaults, same wall-clock budget.

Five benchmarks (four simulated, data-free):

* ``boucwen``: the simulated Bouc–Wen oscillator (``sysid.bouc_wen_data``): training on two
  random-phase multisine records of 8,192 samples (``val=None``: their last 20 % validates),
  test on a fresh record of 8,192 samples.
* ``duffing``: a Silverbox-like Duffing oscillator (``sysid.duffing_data``): two odd-multisine
  records of 8,192 samples, test on a fresh one.
* ``tanks``: cascaded tanks with overflow (``sysid.cascaded_tanks_data``): one record of 1,024
  samples from a random initial level, test on another (the benchmark's sizes).
* ``wh``: a Wiener–Hammerstein circuit-like system (``sysid.wiener_hammerstein_data``): two
  steady-state multisine records of 8,192 samples at 51.2 kHz, test on a fresh one.
* ``f16``: a short-budget slice of the real F-16 GVT data (``sysid.load_f16``, path from
  ``--data`` or ``$R2DN_F16_DIR``): the first ``--f16-samples`` (8,192) samples of each of the
  four training files, test on the same slice of the three validation files.

For every seed all configurations run **at the same time** as separate processes (one torch
thread each), so they share the machine under the same conditions; each gets ``--seconds`` of
training (plus validation) with ``sysid.fit``'s defaults (``--common``) and is scored
with ``sysid.evaluate`` after a washout of 100 samples
(the encoder reads those samples). Prints one JSON line per run, appends them to
``OUT/results.jsonl``, then a table of medians over seeds, the R2DN/GRU ratio, and the
simulation NRMSE of a least-squares ARX(8) model on the same normalised data (the linear
level a nonlinear model must beat).

    OMP_NUM_THREADS=1 python benchmarks/bench_sysid_defaults.py --benchmark boucwen \\
        --seconds 120 --seeds 0 1 --out runs/defaults-bw
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from r2dn_control import sysid
from r2dn_control.nn import cpp
from r2dn_control.sysid.evaluate import scores
from r2dn_control.sysid.poles import arx_rows

# Settings shared by every run (both models), chosen with --common: "defaults" is sysid.fit's
# defaults (lr="auto", x0="zero", segment 256, carried-state TBPTT, cosine schedule over the
# budget, clip 10, val=None, no epoch limit with a time budget); "encoder" adds x0="encoder";
# "encoder-3e-3" is the setting of the first table in docs/results.md (x0="encoder", lr 3e-3
# for both, plateau schedule, 100 epochs).
COMMON = {"defaults": {}, "encoder": {"x0": "encoder"},
          "encoder-3e-3": {"x0": "encoder", "lr": 3e-3, "epochs": 100,
                           "schedule": "plateau"}}
# name -> (default_model kwargs, fit kwargs overriding COMMON); "r2dn" is default_model(train).
CONFIGS: dict[str, tuple[dict, dict]] = {
    "r2dn": ({"kind": "r2dn"}, {}),
    "gru": ({"kind": "gru"}, {}),
    "r2dn-deep": ({"kind": "r2dn", "hidden": (32, 32)}, {}),  # the previous default LBDN
    "ren": ({"kind": "ren"}, {}),
    "r2dn-random": ({"kind": "r2dn", "init": "random"}, {}),
    "r2dn-a0.995": ({"kind": "r2dn", "contraction_rate": 0.995}, {}),
    "r2dn-a1": ({"kind": "r2dn", "contraction_rate": 1.0}, {}),
    # ᾱ = |λ|max^κ with κ = decay_share (sysid.suggested_contraction_rate): κ = 1/2 was the
    # default before κ = 1/4 ("r2dn"), "r2dn-q" is κ = 1/4 spelled out
    "r2dn-half": ({"kind": "r2dn", "decay_share": 0.5}, {}),
    "r2dn-q": ({"kind": "r2dn", "decay_share": 0.25}, {}),
    "r2dn-eighth": ({"kind": "r2dn", "decay_share": 0.125}, {}),
    "r2dn-lr1e-3": ({"kind": "r2dn"}, {"lr": 1e-3}),
    "r2dn-lr1e-2": ({"kind": "r2dn"}, {"lr": 1e-2}),
    "gru-lr1e-3": ({"kind": "gru"}, {"lr": 1e-3}),
    "gru-lr1e-2": ({"kind": "gru"}, {"lr": 1e-2}),
    "r2dn-shuffle": ({"kind": "r2dn"}, {"shuffle": True, "batch_size": 16}),
    "gru-shuffle": ({"kind": "gru"}, {"shuffle": True, "batch_size": 16}),
    "r2dn-lip": ({"kind": "r2dn", "gamma": "learn"}, {}),
    "r2dn-zero": ({"kind": "r2dn"}, {"x0": "zero"}),
    "gru-zero": ({"kind": "gru"}, {"x0": "zero"}),
    "r2dn-enc": ({"kind": "r2dn"}, {"x0": "encoder"}),
    "gru-enc": ({"kind": "gru"}, {"x0": "encoder"}),
    "gru-lr3e-3": ({"kind": "gru"}, {"lr": 3e-3}),
    "r2dn-lr3e-3": ({"kind": "r2dn"}, {"lr": 3e-3}),
    "r2dn-lr5e-3": ({"kind": "r2dn"}, {"lr": 5e-3}),
    # the previous ContractingR2DN init: B2 and D12 with std 1/sqrt(nu) (fan-in = columns)
    # instead of 1/sqrt(nx), 1/sqrt(nv); rescaled after construction (both are free weights)
    "r2dn-colinit": ({"kind": "r2dn", "io_init": "columns"}, {}),
}


BENCHMARKS = ("boucwen", "f16", "duffing", "tanks", "wh")


def load(benchmark: str, data: str | None, samples: int) -> tuple[sysid.SequenceData,
                                                                 sysid.SequenceData]:
    """(train, test) of ``benchmark`` (the same records for every seed)."""
    if benchmark == "boucwen":
        return sysid.bouc_wen_data(2, periods=1, seed=1), sysid.bouc_wen_data(1, periods=1, seed=2)
    if benchmark == "duffing":
        return sysid.duffing_data(2, seed=1), sysid.duffing_data(1, seed=2)
    if benchmark == "wh":
        return sysid.wiener_hammerstein_data(2, seed=1), sysid.wiener_hammerstein_data(1, seed=2)
    if benchmark == "tanks":
        return sysid.cascaded_tanks_data(1, seed=1), sysid.cascaded_tanks_data(1, seed=2)
    f16 = sysid.load_f16(data)

    def head(d: sysid.SequenceData) -> sysid.SequenceData:
        return sysid.SequenceData([u[:samples] for u in d.u], [y[:samples] for y in d.y], d.dt)

    return head(f16.train), head(f16.test)


def arx_nrmse(train: sysid.SequenceData, test: sysid.SequenceData, order: int = 8,
              washout: int = 100) -> float:
    """Simulation NRMSE (``sysid.evaluate``'s definition) of a least-squares ARX(``order``) model
    fitted to the normalised training data, simulated on ``test`` from its first ``order``
    measured outputs and scored after ``washout`` samples."""
    norm = sysid.Normalization.fit(train)
    rows = [arx_rows(u, y, order) for u, y in zip(norm.apply(train).u, norm.apply(train).y)]
    theta = np.linalg.lstsq(np.concatenate([r[0] for r in rows]),
                            np.concatenate([r[1] for r in rows]), rcond=None)[0]
    scaled = norm.apply(test)
    predictions = []
    for u, y in zip(scaled.u, scaled.y):
        y_hat = np.array(y, dtype=float)
        for t in range(order, y.shape[0]):
            regressor = np.concatenate([y_hat[t - order:t][::-1].ravel(),
                                        u[t - order:t][::-1].ravel(), [1.0]])
            y_hat[t] = regressor @ theta
        predictions.append(norm.denormalize_y(y_hat))
    nrmse = scores(predictions, test.y, washout)["nrmse"]
    return float(np.mean(nrmse))


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    train, test = load(args.benchmark, args.data, args.f16_samples)
    model_kw, fit_kw = CONFIGS[args.worker]
    model_kw = dict(model_kw)
    kind = model_kw.pop("kind")
    io_init = model_kw.pop("io_init", None)
    if "decay_share" in model_kw:
        model_kw["contraction_rate"] = sysid.suggested_contraction_rate(
            train, decay_share=model_kw.pop("decay_share"))
    model = sysid.default_model(train, kind=kind, seed=args.seed, **model_kw)
    if io_init == "columns":
        with torch.no_grad():
            model.B2.mul_((model.state_size / model.input_size) ** 0.5)
            model.D12.mul_((model.features / model.input_size) ** 0.5)
    start = time.perf_counter()
    res = sysid.fit(model, train, seconds=args.seconds, progress=False, seed=args.seed,
                    out_dir=pathlib.Path(args.out) / f"{args.worker}-s{args.seed}",
                    **{**COMMON[args.common], **fit_kw})
    rep = sysid.evaluate(res.predictor, test, washout=100)
    row = {"benchmark": args.benchmark, "config": args.worker, "seed": args.seed,
           "parameters": sysid.parameter_count(model),
           "contraction_rate": getattr(model, "contraction_rate", None),
           "epochs": len(res.history), "best_epoch": res.best_epoch, "stopped": res.stopped,
           "seconds": round(time.perf_counter() - start, 1), "test_rmse": rep.rmse,
           "test_nrmse": rep.nrmse, "common": args.common, "lr": res.history[0]["lr"],
           "val_nrmse_best": min(r["val_nrmse"] for r in res.history),
           "load_average_1min": round(os.getloadavg()[0], 1)}
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--benchmark", choices=BENCHMARKS, default="boucwen")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=["r2dn", "gru"], choices=list(CONFIGS))
    parser.add_argument("--data", default=None, help="F-16 directory (or $R2DN_F16_DIR)")
    parser.add_argument("--f16-samples", type=int, default=8192)
    parser.add_argument("--out", default="runs/sysid-defaults")
    parser.add_argument("--common", choices=list(COMMON), default="defaults",
                        help="fit settings shared by every configuration")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Build/load the C++ kernels here first: a worker compiling them (1–2 min of several
    # cores) while the other trains would make the concurrent comparison unequal.
    cpp.available()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for seed in args.seeds:  # all configurations of one seed run concurrently
        common = [sys.executable, __file__, "--benchmark", args.benchmark, "--seconds",
                  str(args.seconds), "--out", str(out), "--f16-samples", str(args.f16_samples),
                  "--seed", str(seed), "--common", args.common]
        common += [] if args.data is None else ["--data", args.data]
        procs = [subprocess.Popen(common + ["--worker", name], stdout=subprocess.PIPE, env=env,
                                  text=True) for name in args.configs]
        for proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed (exit {proc.returncode})")
            row = json.loads(stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
            with open(out / "results.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
    print(f"\n{args.benchmark}, {args.seconds:.0f} s each, seeds {args.seeds}, fit settings "
          f"{args.common!r} (medians)")
    print("| config | parameters | ᾱ | epochs | test RMSE | test NRMSE |")
    print("|---|---|---|---|---|---|")
    median = {}
    for name in args.configs:
        mine = [r for r in rows if r["config"] == name]
        median[name] = statistics.median(r["test_nrmse"] for r in mine)
        rate = mine[0]["contraction_rate"]
        print(f"| {name} | {mine[0]['parameters']} | {'–' if rate is None else f'{rate:.4f}'} | "
              f"{statistics.median(r['epochs'] for r in mine):.0f} | "
              f"{statistics.median(r['test_rmse'] for r in mine):.3g} | {median[name]:.3f} |")
    if "r2dn" in median and "gru" in median:
        print(f"NRMSE ratio R2DN/GRU (median): {median['r2dn'] / median['gru']:.3f}")
    train, test = load(args.benchmark, args.data, args.f16_samples)
    print(f"linear reference: ARX(8) simulation NRMSE {arx_nrmse(train, test):.3f}")


if __name__ == "__main__":
    main()
