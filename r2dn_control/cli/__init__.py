"""``r2dn-control``: the command-line entry point.

Subcommands
-----------
demo
    Fit a Lipschitz R2DN to a simulated nonlinear system and print its guarantees.
certify CHECKPOINT
    Verify the contraction / Lipschitz / (Q,S,R) certificates of a saved model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2dn-control", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from .. import demo

    demo.add_arguments(sub.add_parser("demo", help="end-to-end identification demo"))
    certify = sub.add_parser("certify", help="verify a checkpoint's certificates",
                             add_help=False)
    certify.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certify"]:
        from ..certify.cli import main as certify_main

        return certify_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .. import demo

        return demo.main(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
