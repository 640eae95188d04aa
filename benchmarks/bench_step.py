"""Real-time step latency (batch 1): compiled step, frozen model.step, the plain rollout path,
a same-size GRU cell, and the exported C step.

    OMP_NUM_THREADS=1 python benchmarks/bench_step.py [--steps 5000]

Prints median and 99th-percentile latency per call in µs. Every candidate of a model is timed
in interleaved rounds (one thread), so a load spike on a shared machine hits all of them.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from r2dn_control.export import c as c_export
from r2dn_control.export import to_c
from r2dn_control.nn import ContractingR2DN
from r2dn_control.nn.explicit import rollout
from r2dn_control.nn.realtime import compile_step

MODELS = {
    # name: (nu, nx, nv, ny, hidden, activation)
    "youla-Q (paper)": (1, 10, 100, 1, (140,) * 4, "tanh"),
    "f16-size R2DN": (2, 75, 75, 3, (87,) * 3, "relu"),
    "small policy": (4, 8, 16, 2, (16, 16), "relu"),
}


def interleaved(candidates: dict, steps: int, rounds: int = 10) -> dict[str, np.ndarray]:
    """Per-call seconds of each candidate, ``steps`` calls in ``rounds`` alternating blocks."""
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    per_round = max(steps // rounds, 1)
    for fn in candidates.values():  # warm-up
        for _ in range(200):
            fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            out = samples[name]
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return {k: np.asarray(v) for k, v in samples.items()}


def report(name: str, seconds: np.ndarray) -> None:
    print(f"  {name:<34} median {np.median(seconds) * 1e6:8.2f} µs   "
          f"p99 {np.percentile(seconds, 99) * 1e6:8.2f} µs")


def bench_model(label: str, spec: tuple, steps: int) -> None:
    """Time every candidate for one model size and print the table rows."""
    nu, nx, nv, ny, hidden, act = spec
    model = ContractingR2DN(nu, nx, nv, ny, hidden=hidden, activation=act)
    x, u = torch.randn(nx), torch.randn(nu)
    step = compile_step(model)
    gru = torch.nn.GRUCell(nu, nx)
    with torch.no_grad():
        explicit = model.explicit()
    x_b, u_b = x[None], u[None, None]
    with torch.no_grad(), model.frozen():
        candidates = {
            "compile_step()": lambda: step(x, u),
            "model.step inside frozen()": lambda: model.step(x, u),
            # what model.step ran per call inside frozen() before the fast path:
            "rollout path (previous step)": lambda: rollout(explicit, u_b, x_b),
            f"torch GRUCell({nu}, {nx})": lambda: gru(u_b[0], x_b),
        }
        times = interleaved(candidates, steps)
    print(f"{label}: nu={nu} nx={nx} nv={nv} ny={ny} LBDN {hidden} {act}")
    for name, sec in times.items():
        report(name, sec)
    if c_export.c_compiler() is None:
        print("  C step: skipped (no C compiler)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        to_c(model, tmp, "bench")
        builds = {"C step (-O3 -march=native)": c_export.build_harness(tmp, "bench")}
        if act == "tanh":  # the same export with libm's tanhf instead of the rational tanh
            to_c(model, tmp, "libm")
            builds["C step, libm tanhf"] = c_export.build_harness(
                tmp, "libm", flags=("-O3", "-march=native", "-DLIBM_LIBM_TANH"))
        samples: dict[str, list[np.ndarray]] = {k: [] for k in builds}
        for _ in range(10):  # interleaved blocks
            for label_c, exe in builds.items():
                samples[label_c].append(c_export.bench_harness(exe, max(steps // 10, 1)))
        for label_c, parts in samples.items():
            report(label_c, np.concatenate(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"batch 1, float32, torch {torch.__version__}, {torch.get_num_threads()} thread")
    for label, spec in MODELS.items():
        bench_model(label, spec, args.steps)


if __name__ == "__main__":
    main()
