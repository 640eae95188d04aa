"""``r2dn-control certify CHECKPOINT [--json OUT]``: certify a saved model and print a table.

Exit codes: 0 every check certified; 1 some check not certified; 3 none refuted but some
inconclusive (a solver failure or a candidate that failed the strict float64 check); 2 usage or
file errors (missing, truncated, corrupt or foreign checkpoint, a directory, malformed
normalisation metadata, unwritable JSON path). Errors are one line on stderr, never a traceback.

When the checkpoint metadata holds ``"normalization": {"u_mean", "u_std", "y_mean", "y_std"}``
(per-channel lists, as the sysid workflow saves them), γ is also certified in physical units
on the model with the scalings folded in (`.physical.in_physical_units`), next to the
simple bound ``γ · max(y_std) / min(u_std)``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence

from ..nn.checkpoint import load_model
from .api import contraction, dissipativity, lipschitz
from .physical import in_physical_units, normalization_scales
from .result import INCONCLUSIVE, NOT_CERTIFIED, CertificateResult

EXIT_CERTIFIED, EXIT_NOT_CERTIFIED, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
#: What a bad checkpoint file can raise, across versions of ``load_model`` and torch.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError,
               TypeError, AttributeError, ImportError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _row(name: str, res: CertificateResult, value_name: str) -> str:
    bound = "-" if res.bound is None else f"{res.bound:.6g}"
    lower = "-" if res.lower_bound is None else f"{res.lower_bound:.6g}"
    return (f"{name:<20} {res.status:<15} {value_name}={bound:<12} lower={lower:<10} "
            f"{res.solver:<10} {res.seconds:8.3f}s")


def _fail(message: str) -> int:
    print(f"r2dn-control certify: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _write_json(path: str, data: dict) -> None:
    """Atomic write: a temporary file in the same folder, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".certify-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def exit_code(results: dict[str, CertificateResult]) -> int:
    """0 all certified, 1 any not certified, 3 otherwise (some inconclusive)."""
    statuses = {r.status for r in results.values()}
    if NOT_CERTIFIED in statuses:
        return EXIT_NOT_CERTIFIED
    if INCONCLUSIVE in statuses:
        return EXIT_INCONCLUSIVE
    return EXIT_CERTIFIED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code of the module docstring."""
    parser = _Parser(prog="r2dn-control certify",
                     description="Certify a saved recurrent model (docs/theory.md §4).")
    parser.add_argument("checkpoint", help="file written by r2dn_control.nn.checkpoint.save_model")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON to this path")
    parser.add_argument("--method", default="auto", choices=["auto", "implied", "kyp", "sdp"])
    parser.add_argument("--no-empirical", action="store_true",
                        help="skip the adversarial lower bounds")
    args = parser.parse_args(argv)
    if os.path.isdir(args.checkpoint):
        return _fail(f"{args.checkpoint} is a directory, not a checkpoint file")
    try:
        model, metadata = load_model(args.checkpoint)
    except LOAD_ERRORS as err:
        return _fail(f"cannot load checkpoint {args.checkpoint}: {err}".splitlines()[0])
    try:
        scales = normalization_scales(metadata, model.input_size, model.output_size)
    except (TypeError, ValueError) as err:
        return _fail(f"{args.checkpoint}: {err}")
    empirical = not args.no_empirical
    method = args.method
    kyp_only = method == "kyp"
    results = {"contraction": contraction(model, method=method, lower_bound=empirical)}
    rows = [_row("contraction", results["contraction"], "rate")]
    if model.supply is not None and getattr(model, "gamma", None) is None:
        s = model.supply
        results["dissipativity"] = dissipativity(
            model, s.Q.cpu().numpy(), s.S.cpu().numpy(), s.R.cpu().numpy(),
            method="auto" if kyp_only else method)
        rows.append(_row("(Q,S,R)", results["dissipativity"], "-"))
    results["lipschitz"] = lipschitz(model, method=method, lower_bound=empirical)
    rows.append(_row("lipschitz", results["lipschitz"], "gamma"))
    extra = []
    if scales is not None:
        u_std, y_std = scales
        phys = lipschitz(in_physical_units(model, u_std, y_std),
                         method="auto" if method == "implied" else method)
        results["lipschitz_physical"] = phys
        rows.append(_row("lipschitz (physical)", phys, "gamma"))
        g = results["lipschitz"].bound
        simple = None if g is None else g * float(y_std.max()) / float(u_std.min())
        phys.details["simple_bound"] = simple
        if simple is not None:
            extra.append(f"physical units: gamma <= {simple:.6g} by gamma*max(y_std)/min(u_std)")
    print(f"certificates for {type(model).__name__} ({args.checkpoint})")
    print(f"{'property':<20} {'status':<15} {'bound':<18} {'lower bound':<16} {'solver':<10} time")
    print("\n".join(rows + extra))
    if args.json_out:
        try:
            _write_json(args.json_out, {k: v.to_dict() for k, v in results.items()})
        except OSError as err:
            return _fail(f"cannot write {args.json_out}: {err}")
    return exit_code(results)
