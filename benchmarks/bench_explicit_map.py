"""Benchmark: the R2DN's direct-to-explicit map alone (forward, forward+backward, op count).

Run (one thread; the figures in docs/performance.md come from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_explicit_map.py --widths 8,96
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_explicit_map.py \
        --widths 8,32,96 --compare --rounds 5     # fused maps vs the composed reference

``--compare`` times, interleaved in one process (per round and width: fused, then composed, or
the other way round on odd rounds), the default fused maps (`r2dn_control.nn._lbdn_map`,
`r2dn_control.nn._contracting_map`) and the composed reference algebra
(``model.fused_maps = False``), and prints medians over rounds and the ratio
fused / composed with the range of the per-round ratios.

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


def op_count(model: ContractingR2DN) -> int:
    with profile() as prof:
        call(model, True)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def compare(widths: list[int], calls: int, rounds: int) -> None:
    """Fused maps vs the composed reference, interleaved, medians over rounds."""
    models = {}
    for width in widths:
        torch.manual_seed(0)
        models[width] = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, activation="relu",
                                        identity_output=True)
    times: dict[tuple[int, str, bool], list[float]] = {}
    for r in range(rounds):
        for width, model in models.items():
            for fused in ((True, False) if r % 2 == 0 else (False, True)):
                model.fused_maps = fused
                for _ in range(2):
                    call(model, True)
                for mode, backward in (("fwd", False), ("fwd+bwd", True)):
                    times.setdefault((width, mode, fused), []).append(
                        median_ms(lambda m=model, b=backward: call(m, b), calls))
    print("| size | mode | fused (ms) | composed (ms) | fused / composed (range) |")
    print("|---|---|---|---|---|")
    for width in models:
        for mode in ("fwd", "fwd+bwd"):
            new, old = times[(width, mode, True)], times[(width, mode, False)]
            ratios = [a / b for a, b in zip(new, old)]
            print(f"| 6×{width} | {mode} | {statistics.median(new):.2f} | "
                  f"{statistics.median(old):.2f} | {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    for width, model in models.items():
        counts = []
        for fused in (True, False):
            model.fused_maps = fused
            counts.append(op_count(model))
        print(f"# 6×{width}: ATen ops per fwd+bwd, fused {counts[0]}, composed {counts[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="8,32,96")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--compare", action="store_true",
                        help="fused maps vs the composed reference, interleaved")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --compare")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.compare:
        compare([int(w) for w in args.widths.split(",")], args.calls, args.rounds)
        return
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
        ops = op_count(model)
        print(f"| 6×{width} | {fwd:.2f} | {both:.2f} | {ops} |", flush=True)


if __name__ == "__main__":
    main()
