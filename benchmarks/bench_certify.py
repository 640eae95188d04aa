"""Benchmark: certified γ of a Lipschitz R2DN (nx = nv = n) by the KYP route and by cvxpy SDPs.

Run::

    .venv/bin/python benchmarks/bench_certify.py            # n in {8, 32, 64, 128, 512}
    .venv/bin/python benchmarks/bench_certify.py --quick    # n in {8, 32}
    .venv/bin/python benchmarks/bench_certify.py --lower-bounds  # REN/R2DN: lower ≤ certified γ

SDPs are skipped where they would take minutes or run out of memory (Clarabel above
``--clarabel-max``, SCS above ``--scs-max``); the KYP route above ``--kyp-max``. The
"Riccati solves" column is the number of O(n³) Riccati tests the KYP route spent.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    if args.lower_bounds:
        lower_bounds()
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
