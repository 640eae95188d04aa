"""Benchmark: certified rate and γ of a Lipschitz R2DN (nx = nv = n) by the KYP route and SDPs.

Run::

    .venv/bin/python benchmarks/bench_certify.py            # γ, n in {8, 32, 64, 128, 512}
    .venv/bin/python benchmarks/bench_certify.py --quick    # n in {8, 32}
    .venv/bin/python benchmarks/bench_certify.py --lower-bounds  # REN/R2DN: lower ≤ certified γ
    # Time against n; with --against, the earlier code on the same models, interleaved:
    mkdir -p /tmp/cert_old && git archive 777c947 r2dn_control | tar -x -C /tmp/cert_old
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_certify.py --speed \\
        --sizes 64 128 256 512 1024 2048 --against /tmp/cert_old --old-max 1024 --rounds-max 512

``--speed`` times, per n, the smallest certified contraction rate and the smallest certified γ
(``method="kyp"``, every answer proved by the float64 check), each in a fresh interpreter
(model construction and imports not timed; the explicit map's construction inside
``certify`` is), ``--rounds`` times up to ``--rounds-max`` (median), once above.
``--against DIR`` runs the same measurement with the ``r2dn_control`` package in DIR (e.g. the
revision before the latest speed-up, 777c947) right after each one.

SDPs are skipped where they would take minutes or run out of memory (Clarabel above
``--clarabel-max``, SCS above ``--scs-max``); the KYP route above ``--kyp-max``. The
"Riccati solves" column is the number of O(n³) Riccati solves the KYP route spent.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from r2dn_control import certify
from r2dn_control.nn import LipschitzR2DN


def run(method: str, model, solver: str | None = None
        ) -> tuple[str, float, float | None, int | None]:
    """(status, seconds, certified γ or None, Riccati solves or None)."""
    start = time.perf_counter()
    res = certify.lipschitz(model, method=method, solver=solver)
    seconds = time.perf_counter() - start
    return (res.status, seconds, res.bound if res.certified else None,
            res.details.get("riccati_solves"))


def lower_bounds() -> None:
    """Certified γ next to the adversarial lower bound (moved here from the tests: a REN
    rollout on the first calls took minutes)."""
    from r2dn_control.nn import LipschitzREN

    print(f"{'family':<14} {'certified γ':>12} {'lower bound':>12} {'sound':>6} {'seconds':>8}")
    for cls in (LipschitzR2DN, LipschitzREN):
        torch.manual_seed(5)
        model = cls(2, 3, 3, 2, hidden=(4,), gamma=2.0, dtype=torch.float64) \
            if cls is LipschitzR2DN else cls(2, 3, 3, 2, gamma=2.0, dtype=torch.float64)
        start = time.perf_counter()
        tight = certify.lipschitz(model)
        low = certify.lipschitz_lower_bound(model, steps=10, iters=25)
        print(f"{cls.__name__:<14} {tight.bound:12.6f} {low:12.6f} {str(low <= tight.bound):>6} "
              f"{time.perf_counter() - start:8.1f}", flush=True)


# ------------------------------------------------------------------ time against n
#: Run in a fresh interpreter per measurement (either tree): prints one JSON line.
_MEASURE = """
import json, sys, time
tree = sys.argv[3]
# The tree given, not an editable install of another one (its finder comes first otherwise).
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
import torch
import r2dn_control
assert r2dn_control.__file__.startswith(tree), (r2dn_control.__file__, tree)
from r2dn_control import certify
from r2dn_control.certify.blas import blas_threads
from r2dn_control.nn import LipschitzR2DN
n, what = int(sys.argv[1]), sys.argv[2]
if sys.argv[4] != "default":  # certify.threads (a tree without the setting runs its own way)
    from r2dn_control import config
    if "certify.threads" in config.defaults:
        config.set_defaults("certify", threads=None if sys.argv[4] == "auto" else int(sys.argv[4]))
torch.manual_seed(n)
model = LipschitzR2DN(2, n, n, 2, gamma=2.0, dtype=torch.float64)
cpu = time.process_time()
start = time.perf_counter()
res = certify.contraction(model, method="kyp") if what == "rate" else \\
    certify.lipschitz(model, method="kyp")
seconds = time.perf_counter() - start
cpu = time.process_time() - cpu
d = res.details
print(json.dumps({"seconds": seconds, "cpu": cpu, "status": res.status, "bound": res.bound,
                  "solves": d.get("riccati_solves"),
                  "proof": d.get("proof_margin", d.get("regularization"))}))
"""


def _measure(tree: str, n: int, what: str, threads: str = "default") -> dict:
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEASURE, str(n), what, os.path.abspath(tree),
                          threads], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(sizes: list[int], against: str | None, old_max: int, rounds: int,
          tree: str | None = None, rounds_max: int = 256, threads: str = "default",
          whats: tuple[str, ...] = ("rate", "gamma")) -> None:
    """Rate and γ against n; with ``against`` (a directory holding an earlier
    ``r2dn_control``) the earlier code on the same model, interleaved: new, old, new, old, …
    ``threads``: ``certify.threads`` in the measured process ("default": not set, "auto":
    None, else a count); wall-clock and process CPU seconds (all threads) are printed."""
    import os
    import statistics

    here = tree or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"{'n':>5} {'what':<6} {'code':<5} {'median s':>9} {'cpu s':>8} {'runs':>4} "
          f"{'status':<14} {'bound':>12} {'Riccati':>8} {'margin/ε':>10}", flush=True)
    for n in sizes:
        for what in whats:
            trees = [("new", here)] + ([("old", against)] if against and n <= old_max else [])
            times: dict[str, list[float]] = {name: [] for name, _ in trees}
            cpus: dict[str, list[float]] = {name: [] for name, _ in trees}
            last: dict[str, dict] = {}
            for _ in range(rounds if n <= rounds_max else 1):
                for name, tree in trees:
                    last[name] = _measure(tree, n, what, threads)
                    times[name].append(last[name]["seconds"])
                    cpus[name].append(last[name].get("cpu", math.nan))
            for name, _ in trees:
                r = last[name]
                bound = r["bound"] if r["bound"] is not None else math.nan
                proof = "-" if r["proof"] is None else f"{r['proof']:.1e}"
                print(f"{n:>5} {what:<6} {name:<5} {statistics.median(times[name]):9.2f} "
                      f"{statistics.median(cpus[name]):8.2f} "
                      f"{len(times[name]):>4} {r['status']:<14} {bound:12.7f} "
                      f"{r['solves'] if r['solves'] is not None else '-'!s:>8} {proof:>10}",
                      flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--clarabel-max", type=int, default=32)
    parser.add_argument("--scs-max", type=int, default=32)
    parser.add_argument("--kyp-max", type=int, default=512)
    parser.add_argument("--lower-bounds", action="store_true")
    parser.add_argument("--rate", action="store_true",
                        help="also time the smallest certified contraction rate (KYP tier)")
    parser.add_argument("--speed", action="store_true",
                        help="time against n: rate and γ, current vs earlier searches")
    parser.add_argument("--against", metavar="DIR",
                        help="--speed: also time the r2dn_control package in DIR (an earlier "
                             "revision: git archive REV r2dn_control | tar -x -C DIR)")
    parser.add_argument("--tree", metavar="DIR",
                        help="--speed: the r2dn_control package timed as 'new' (default: this "
                             "checkout)")
    parser.add_argument("--old-max", type=int, default=512,
                        help="largest n for the --against code in --speed")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timing rounds per size in --speed (one above --rounds-max)")
    parser.add_argument("--rounds-max", type=int, default=256,
                        help="largest n timed --rounds times in --speed (once above)")
    parser.add_argument("--threads", default="default",
                        help="--speed: certify.threads in the measured process: 'default' "
                             "(unset), 'auto' (None) or a count")
    parser.add_argument("--what", nargs="*", choices=("rate", "gamma"),
                        default=["rate", "gamma"], help="--speed: which certificates")
    args = parser.parse_args(argv)
    if args.lower_bounds:
        lower_bounds()
        return
    if args.speed:
        speed(args.sizes or [64, 128, 256, 512], args.against, args.old_max, args.rounds,
              args.tree, args.rounds_max, args.threads, tuple(args.what))
        return
    sizes = args.sizes or ([8, 32] if args.quick else [8, 32, 64, 128, 512])
    print(f"{'n':>4} {'method':<9} {'status':<14} {'seconds':>9} {'gamma':>12} "
          f"{'rel. to best SDP':>17} {'Riccati solves':>15}")
    for n in sizes:
        torch.manual_seed(n)
        model = LipschitzR2DN(2, n, n, 2, gamma=2.0, dtype=torch.float64)
        rows = [("implied", *run("implied", model))]
        if n <= args.kyp_max:
            rows.append(("kyp", *run("kyp", model)))
            if args.rate:
                start = time.perf_counter()
                res = certify.contraction(model, method="kyp")
                print(f"{n:>4} {'rate/kyp':<9} {res.status:<14} {time.perf_counter() - start:9.3f} "
                      f"{res.bound if res.certified else float('nan'):>12.7f}", flush=True)
        if n <= args.clarabel_max:
            rows.append(("CLARABEL", *run("sdp", model, "CLARABEL")))
        if n <= args.scs_max:
            rows.append(("SCS", *run("sdp", model, "SCS")))
        sdp = [r[3] for r in rows if r[0] in ("CLARABEL", "SCS") and r[3] is not None]
        ref = min(sdp) if sdp else None
        for name, status, secs, bound, solves in rows:
            rel = "-" if ref is None or bound is None else f"{bound / ref - 1:+.2e}"
            b = "-" if bound is None else f"{bound:.7f}"
            k = "-" if solves is None else str(solves)
            print(f"{n:>4} {name:<9} {status:<14} {secs:9.3f} {b:>12} {rel:>17} {k:>15}",
                  flush=True)
        skipped = [m for m, lim in (("kyp", args.kyp_max), ("CLARABEL", args.clarabel_max),
                                    ("SCS", args.scs_max)) if n > lim]
        if skipped:
            print(f"{n:>4} skipped: {', '.join(skipped)} (minutes or out of memory at this size)")


if __name__ == "__main__":
    main()
