"""``r2dn-control certify CHECKPOINT [--json OUT]``: certify a saved model and print a table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..nn.checkpoint import load_model
from .api import contraction, dissipativity, lipschitz


def _row(name: str, res, value_name: str) -> str:
    bound = "-" if res.bound is None else f"{res.bound:.6g}"
    lower = "-" if res.lower_bound is None else f"{res.lower_bound:.6g}"
    return (f"{name:<14} {res.status:<15} {value_name}={bound:<12} lower={lower:<10} "
            f"{res.solver:<10} {res.seconds:8.3f}s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 if every check was certified, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="r2dn-control certify",
                                     description="Certify a saved recurrent model (math.md §4).")
    parser.add_argument("checkpoint", help="file written by r2dn_control.nn.checkpoint.save_model")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON to this path")
    parser.add_argument("--method", default="auto", choices=["auto", "implied", "kyp", "sdp"])
    parser.add_argument("--no-empirical", action="store_true",
                        help="skip the adversarial lower bounds")
    args = parser.parse_args(argv)
    model, _ = load_model(args.checkpoint)
    empirical = not args.no_empirical
    results = {"contraction": contraction(model, method=args.method, lower_bound=empirical)}
    rows = [_row("contraction", results["contraction"], "rate")]
    if model.supply is not None and getattr(model, "gamma", None) is None:
        s = model.supply
        results["dissipativity"] = dissipativity(model, s.Q.numpy(), s.S.numpy(), s.R.numpy(),
                                                 method=args.method)
        rows.append(_row("(Q,S,R)", results["dissipativity"], "-"))
    results["lipschitz"] = lipschitz(model, method=args.method, lower_bound=empirical)
    rows.append(_row("lipschitz", results["lipschitz"], "gamma"))
    print(f"certificates for {type(model).__name__} ({args.checkpoint})")
    print(f"{'property':<14} {'status':<15} {'bound':<18} {'lower bound':<16} {'solver':<10} time")
    print("\n".join(rows))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({k: v.to_dict() for k, v in results.items()}, fh, indent=1)
    return 0 if all(r.certified for r in results.values()) else 1
