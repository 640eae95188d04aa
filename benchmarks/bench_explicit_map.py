"""Benchmark: the R2DN's direct-to-explicit map alone (forward, forward+backward, op count).

Run (one thread; the figures in docs/performance.md come from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_explicit_map.py --widths 8,96
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_explicit_map.py \
        --widths 8,32,96 --compare --rounds 5     # fused maps vs the composed reference

``--compare`` times, interleaved in one process (per round and width the three in turn, the
order rotating every round), the default C++ maps (``cpp/explicit_map_kernels.cpp``), the same
maps' torch Functions (`r2dn_control.nn._lbdn_map`, `r2dn_control.nn._contracting_map`, setting
``nn.cpp.maps=False``) and the composed reference algebra (``model.fused_maps = False``), and
prints medians over rounds and the ratios C++ / other with the range of the per-round ratios.

Model: the paper's scaling-study R2DN (nu = nx = ny = 1, nv = 16, six relu hidden layers of
width w, identity output). "forward" is ``_explicit(None, certificate=False)`` under
``torch.no_grad`` with the inference cache off (what every training call does first);
"forward+backward" adds the backward pass of a loss touching every explicit matrix. Times are
medians of per-call thread CPU time (``time.thread_time``, robust on a shared machine); the
op count is the number of ATen ops ``torch.profiler`` records in one forward+backward call.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from timing import median_thread_seconds
from torch.profiler import profile

from r2dn_control import config
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
    return 1e3 * median_thread_seconds(fn, calls)


def op_count(model: ContractingR2DN) -> int:
    with profile() as prof:
        call(model, True)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


#: The implementations `compare` times: name → (model.fused_maps, the ``nn.cpp.maps`` setting).
VARIANTS = {"C++ maps": (True, True), "torch Functions": (True, False),
            "composed": (False, False)}


def _use(model: ContractingR2DN, variant: str) -> None:
    fused, in_cpp = VARIANTS[variant]
    model.fused_maps = fused
    config.set_defaults("nn.cpp", maps=in_cpp)


def compare(widths: list[int], calls: int, rounds: int) -> None:
    """The C++ maps, their torch Functions and the composed reference, interleaved (the order
    rotates every round), medians over rounds; ratios C++ / other with per-round ranges."""
    models = {}
    for width in widths:
        torch.manual_seed(0)
        models[width] = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, activation="relu",
                                        identity_output=True)
        models[width].inference_cache = False  # the forward rebuilds the map every call
    names = list(VARIANTS)
    times: dict[tuple[int, str, str], list[float]] = {}
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for width, model in models.items():
                for variant in order:
                    _use(model, variant)
                    for _ in range(2):
                        call(model, True)
                    for mode, backward in (("fwd", False), ("fwd+bwd", True)):
                        times.setdefault((width, mode, variant), []).append(
                            median_ms(lambda m=model, b=backward: call(m, b), calls))
        head = " | ".join(f"{n} (ms)" for n in names)
        ratios_head = " | ".join(f"C++ / {n} (range)" for n in names[1:])
        print(f"| size | mode | {head} | {ratios_head} |")
        print("|---|---|" + "---|" * (2 * len(names) - 1))
        for width in models:
            for mode in ("fwd", "fwd+bwd"):
                base = times[(width, mode, names[0])]
                cells = [f"{statistics.median(times[(width, mode, n)]):.2f}" for n in names]
                for other in names[1:]:
                    ratios = [a / b for a, b in zip(base, times[(width, mode, other)])]
                    cells.append(f"{statistics.median(ratios):.2f} "
                                 f"({min(ratios):.2f}–{max(ratios):.2f})")
                print(f"| 6×{width} | {mode} | " + " | ".join(cells) + " |")
        for width, model in models.items():
            counts = []
            for variant in names:
                _use(model, variant)
                counts.append(f"{variant} {op_count(model)}")
            print(f"# 6×{width}: ATen ops per fwd+bwd: " + ", ".join(counts))
    finally:
        config.reset_defaults()


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
        model.inference_cache = False  # the forward rebuilds the map every call
        for _ in range(3):
            call(model, True)
        fwd = median_ms(lambda m=model: call(m, False), args.calls)
        both = median_ms(lambda m=model: call(m, True), args.calls)
        ops = op_count(model)
        print(f"| 6×{width} | {fwd:.2f} | {both:.2f} | {ops} |", flush=True)


if __name__ == "__main__":
    main()
