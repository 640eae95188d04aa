"""Benchmark: the R2DN's direct-to-explicit map alone (forward, forward+backward, op count).

Run (one thread; the figures in docs/performance.md come from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_explicit_map.py --widths 8,96

Model: the paper's scaling-study R2DN (nu = nx = ny = 1, nv = 16, six relu hidden layers of
width w, identity output). "forward" is ``_explicit(None, certificate=False)`` under
``torch.no_grad`` (what every training call does first); "forward+backward" adds the backward
pass of a loss touching every explicit matrix. Times are medians of per-call thread CPU time
(``time.thread_time``, robust on a shared machine); the op count is the number of ATen ops
``torch.profiler`` records in one forward+backward call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import profile

from r2dn_control.nn import ContractingR2DN
from r2dn_control.nn.explicit import ExplicitModel


def explicit_loss(model: ExplicitModel) -> torch.Tensor:
    """A scalar touching every explicit matrix and LBDN weight (so all gradients flow)."""
    total = sum(t.sum() for t in model.matrices().values())
    return total + sum((w * w).sum() for w in model.network.weights)


def call(model: ContractingR2DN, backward: bool) -> None:
    if backward:
        explicit_loss(model._explicit(None, certificate=False)).backward()
        return
    with torch.no_grad():
        model._explicit(None, certificate=False)


def median_ms(fn: Callable[[], None], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="8,32,96")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| width | map fwd (ms) | map fwd+bwd (ms) | ATen ops per fwd+bwd |")
    print("|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        model = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, activation="relu",
                                identity_output=True)
        for _ in range(3):
            call(model, True)
        fwd = median_ms(lambda m=model: call(m, False), args.calls)
        both = median_ms(lambda m=model: call(m, True), args.calls)
        with profile() as prof:
            call(model, True)
        ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
        print(f"| 6×{width} | {fwd:.2f} | {both:.2f} | {ops} |", flush=True)


if __name__ == "__main__":
    main()
