"""Interleaved A/B of two checkouts of r2dn_control: the R2DN map and whole calls, same core.

Run (one thread each; the "against main" figures in docs/performance.md come from this)::

    git archive 777c947 r2dn_control | tar -x -C /tmp/perf_old      # the "old" package
    python benchmarks/bench_ab.py --old /tmp/perf_old --new . --core 0 \\
        --kinds mapf,mapfb,f,fb --widths 8,32,96 --rounds 5 --calls 8

Two long-lived worker processes (one imports ``r2dn_control`` from ``--old``, the other from
``--new``) are pinned to the same core and driven alternately, one measurement at a time
(the order flips every round), so load drift hits both alike. Each measurement is the median
thread CPU time of ``--calls`` calls after one warm-up. Kinds: ``mapf`` / ``mapfb`` the
direct-to-explicit map ``_explicit(None, certificate=False)`` forward / forward+backward;
``f`` / ``fb`` the whole model (batch 64, horizon 128, loss mean(y²)). Model: the paper's
scaling R2DN (nu = nx = ny = 1, nv = 16, six relu hidden layers of width w, identity output).
Printed: medians over rounds and new/old with the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

WORKER = r'''
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
from r2dn_control.nn import ContractingR2DN
models = {}
u = torch.randn(64, 128, 1)
def model(width):
    if width not in models:
        torch.manual_seed(0)
        models[width] = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, activation="relu",
                                        identity_output=True)
    return models[width]
def job(kind, m):
    if kind == "mapf":
        with torch.no_grad():
            m._explicit(None, certificate=False)
    elif kind == "mapfb":
        e = m._explicit(None, certificate=False)
        loss = sum(t.sum() for t in e.matrices().values())
        (loss + sum((w * w).sum() for w in e.network.weights)).backward()
    elif kind == "f":
        with torch.no_grad():
            m(u)
    elif kind == "fb":
        y, _ = m(u)
        (y * y).mean().backward()
    else:
        raise ValueError(f"unknown kind {kind!r}")
for line in sys.stdin:
    kind, width, calls = line.split()
    m = model(int(width))
    job(kind, m)
    times = []
    for _ in range(int(calls)):
        start = time.thread_time()
        job(kind, m)
        times.append(time.thread_time() - start)
    print(json.dumps(1e3 * statistics.median(times)), flush=True)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="folder holding the old r2dn_control/")
    parser.add_argument("--new", default=".", help="folder holding the new r2dn_control/")
    parser.add_argument("--core", default="0")
    parser.add_argument("--kinds", default="mapf,mapfb,f,fb")
    parser.add_argument("--widths", default="8,32,96")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()
    workers = {}
    for side in ("old", "new"):
        path = str(pathlib.Path(getattr(args, side)).resolve())
        env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
        # cwd outside both checkouts, so PYTHONPATH decides which r2dn_control is imported.
        workers[side] = subprocess.Popen(
            ["taskset", "-c", args.core, sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env, cwd="/")
    kinds = args.kinds.split(",")
    widths = [int(w) for w in args.widths.split(",")]
    times: dict[tuple[str, int, str], list[float]] = {}
    for r in range(args.rounds):
        for width in widths:
            for kind in kinds:
                for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    proc = workers[side]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{kind} {width} {args.calls}\n")
                    proc.stdin.flush()
                    times.setdefault((kind, width, side), []).append(
                        json.loads(proc.stdout.readline()))
    print("| kind | size | old (ms) | new (ms) | new / old (range) |")
    print("|---|---|---|---|---|")
    for width in widths:
        for kind in kinds:
            old, new = times[(kind, width, "old")], times[(kind, width, "new")]
            ratios = [b / a for a, b in zip(old, new)]
            print(f"| {kind} | 6×{width} | {statistics.median(old):.2f} | "
                  f"{statistics.median(new):.2f} | {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main()
