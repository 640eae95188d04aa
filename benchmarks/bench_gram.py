"""Benchmark: the rollout's weight-gradient kernel ``gram_pairs`` alone against torch.mm + sum.

Run (one thread; the kernel-alone table of docs/performance.md, "Sixth round", was measured
with a copy of this comparison that loaded several builds side by side)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_gram.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gram.py --dtype float64 \
        --shapes 16x16,64x64 --rows 8192 --rounds 5

For each shape m×n: X (K×m) and G (K×n) random, the product XᵀG and the column sums Σ_r G,
once by ``torch.ops.r2dn_control.gram_pairs`` (one pair per call, as `weight_gradients` of
`r2dn_control.nn.fused_rollout` calls it with several) and once by ``x.t() @ g`` and
``g.sum(0)``, interleaved (the order flips every round). Each measurement is the median thread
CPU time of ``--calls`` calls after one warm-up; printed are medians over rounds, kernel/mm
with the range of the per-round ratios, and the kernel's GFLOP/s (2·K·m·n per call). The
operands are hot in cache (the same ones every call); inside a training call they come from
L3 or memory and both take longer.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from timing import median_thread_seconds

from r2dn_control.nn import cpp

SHAPES = ("1x1,1x16,16x1,16x16,16x24,24x24,16x32,32x32,32x16,16x48,48x48,48x16,16x64,64x64,"
          "64x16,16x96,96x96,96x16,128x128")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated m×n, e.g. 16x32")
    parser.add_argument("--rows", type=int, default=8192, help="K = T·B samples")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not cpp.available():
        raise SystemExit(f"the C++ kernels are not available: {cpp.status()}")
    gram = cpp.ops().gram_pairs
    dtype = getattr(torch, args.dtype)
    print(f"# K = {args.rows}, {args.dtype}, one thread, thread CPU time, medians of "
          f"{args.rounds} rounds × {args.calls} calls")
    print("| m×n | kernel µs | torch.mm + sum µs | kernel / mm (range) | kernel GFLOP/s |")
    print("|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        m, n = (int(v) for v in shape.lower().split("x"))
        x = torch.randn(args.rows, m, dtype=dtype)
        g = torch.randn(args.rows, n, dtype=dtype)
        runs: dict[str, Callable[[], object]] = {
            "kernel": lambda x=x, g=g: gram([x], [g]),
            "mm": lambda x=x, g=g: (x.t() @ g, g.sum(0)),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name in (("kernel", "mm") if r % 2 == 0 else ("mm", "kernel")):
                times[name].append(1e6 * median_thread_seconds(runs[name], args.calls, warmup=1))
        ratios = [a / b for a, b in zip(times["kernel"], times["mm"], strict=True)]
        kernel, mm = statistics.median(times["kernel"]), statistics.median(times["mm"])
        gflops = 2 * args.rows * m * n / kernel / 1e3
        print(f"| {m}×{n} | {kernel:.1f} | {mm:.1f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | {gflops:.0f} |", flush=True)


if __name__ == "__main__":
    main()
