"""``r2dn-control``: run the paper's experiments, compare runs, certify saved models.

Commands
--------
run EXPERIMENT
    Train and evaluate Youla controllers, observers or the scaling study with R2DN and/or REN,
    write ``runs/<experiment>-<model>-<seed>/`` and print the comparison table.
compare RUNS...
    Table over finished runs: test metric mean ± std over seeds, time per epoch, REN/R2DN
    speed-up, certified bounds.
certify CHECKPOINT
    Verify the contraction / Lipschitz / (Q,S,R) certificates of a saved model (float64 LMIs).
export CHECKPOINT --format onnx|c --out DIR
    Export a saved model (ONNX or plain C) with its re-checked certificate.
demo
    Identify a Duffing oscillator with a Lipschitz R2DN in a few seconds.

Exit status: 0 success; 1 a certificate was not proved (certify, demo); 2 usage or file error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

EPILOG = """\
experiments:
{experiments}

examples:
  r2dn-control run youla --quick --model both     the README's main job (~2-3 min on 2 cores)
  r2dn-control run observer --model r2dn --seeds 3 --out runs/pde
  r2dn-control compare runs/                      every finished run below runs/
  r2dn-control certify runs/youla-r2dn-0/model.pt

exit status: 0 success, 1 a certificate was not proved, 2 usage or file error."""


class UsageError(Exception):
    """Reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    from ..experiments import describe

    parser = _Parser(prog="r2dn-control",
                     description="Provably stable recurrent networks (R2DN, REN) for control: "
                                 "the paper's experiments, comparisons and certificates.",
                     epilog=EPILOG.format(experiments=describe()),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run", help="run an experiment (R2DN and/or REN) and print the comparison",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate and certify one experiment. Each model and seed writes "
                    "OUT/<experiment>-<model>-<seed>/: config.json, metrics.json (test metric, "
                    "time per epoch without the first, parameter count, certified bounds), "
                    "curves.json, loss.png, the experiment's plot, model.pt and "
                    "certificate.json.",
        epilog="experiments:\n" + describe())
    run.add_argument("experiment",
                     help="youla, youla-unstable, observer, scaling, f16 or bouc-wen")
    run.add_argument("--model", default="both", choices=["r2dn", "ren", "both"],
                     help="network family of the learned part (default: both)")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="small configuration, about 2 minutes on 2 CPU cores")
    size.add_argument("--preset",
                      help="configuration preset: full (default, the paper's setup), quick, "
                           "test, or an experiment's own (scaling: cpu)")
    run.add_argument("--seeds", type=int, default=1, help="run seeds 0 … N−1 (default 1)")
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                     help="torch device (cuda must be available)")
    run.add_argument("--out", default="runs", help="parent folder of the run folders")
    run.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (default 1: these models' matmuls are small)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.add_argument("--data", default=None,
                     help="data folder of f16 (the benchmark's BenchmarkData/; default "
                          "$R2DN_F16_DIR)")

    compare = sub.add_parser("compare", help="table over finished runs",
                             description="Read metrics.json of run folders (or of every run "
                                         "folder inside the given folders) and print the table.")
    compare.add_argument("runs", nargs="+", help="run folders or folders containing them")

    from .. import demo

    demo.add_arguments(sub.add_parser("demo", help="10-second identification demo"))
    sub.add_parser("certify", help="verify a checkpoint's certificates (see certify --help)",
                   add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("export", help="export a checkpoint as ONNX or C (see export --help)",
                   add_help=False)
    return parser


def _check_checkpoint(argv: list[str]) -> None:
    """Load the checkpoint named in ``certify`` arguments; file errors become UsageError."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("checkpoint", nargs="?")
    pre.add_argument("--json")
    pre.add_argument("--method")
    known, _ = pre.parse_known_args(argv)
    if known.checkpoint is None or "-h" in argv or "--help" in argv:
        return  # the certify parser reports usage itself
    from ..nn.checkpoint import load_model

    try:
        load_model(known.checkpoint)
    except FileNotFoundError:
        raise UsageError(f"r2dn-control certify: error: {known.checkpoint}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"r2dn-control certify: error: {known.checkpoint}: is a directory, "
                         "expected a model.pt file") from None
    except Exception as exc:  # truncated zip, foreign pickle, wrong format: all file errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"r2dn-control certify: error: cannot read checkpoint "
                         f"{known.checkpoint} (truncated or not an r2dn-control model): "
                         f"{first}") from None


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments import run_experiment
    from ..experiments.compare import compare, load_metrics

    if args.threads < 1:
        raise UsageError(f"r2dn-control run: error: --threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    preset = "quick" if args.quick else (args.preset or "full")
    runs = run_experiment(args.experiment, model=args.model, preset=preset, seeds=args.seeds,
                          device=args.device, out=args.out, progress=not args.no_progress,
                          data=args.data)
    print(compare([str(r) for r in runs]))
    print("\ncertificates (float64 LMIs):")
    for run in runs:
        data = load_metrics(run)
        for label, cert in data["certificates"].items():
            bound = "-" if cert["bound"] is None else f"{cert['bound']:.6g}"
            print(f"  {run.name:<24} {label:<26} {cert['status']:<13} bound {bound:<10} "
                  f"({cert['solver']}, {cert['seconds']:.1f} s)")
        print(f"  {'':<24} plots: {run / data.get('plot', '')}, {run / 'loss.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from ..experiments.common import ExperimentError
    from ..nn.cpp.heap import retain_freed_memory

    retain_freed_memory()  # this command owns its process: glibc keeps freed buffers (heap.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["certify"]:
            from ..certify.cli import main as certify_main

            _check_checkpoint(argv[1:])
            return certify_main(argv[1:])
        if argv[:1] == ["export"]:
            from ..export.cli import main as export_main

            return export_main(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _run(args)
        if args.command == "compare":
            from ..experiments.compare import compare

            print(compare(args.runs))
            return 0
        if args.command == "demo":
            from .. import demo

            return demo.main(args)
        raise AssertionError(f"unhandled command {args.command}")  # argparse rejects others
    except (UsageError, ExperimentError) as exc:
        message = str(exc)
        if isinstance(exc, ExperimentError):
            message = f"r2dn-control: error: {message}"
        print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
