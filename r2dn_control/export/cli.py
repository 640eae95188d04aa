"""``r2dn-control export CHECKPOINT --format onnx|c --out DIR``: export a saved model."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import torch

from ..nn.checkpoint import load_model
from .api import to_c, to_onnx
from .certificate import CertificateError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 if the certificate refused the export."""
    parser = argparse.ArgumentParser(
        prog="r2dn-control export",
        description="Export a saved model as ONNX or plain C with its re-checked certificate.")
    parser.add_argument("checkpoint", help="file written by r2dn_control.nn.checkpoint.save_model")
    parser.add_argument("--format", required=True, choices=["onnx", "c"], dest="fmt")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default="r2dn", help="file stem and C symbol prefix")
    parser.add_argument("--mode", default="step", choices=["step", "sequence"],
                        help="ONNX graph: one step or a whole sequence (Scan)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--warn-only", action="store_true",
                        help="export with a warning when the certificate fails on the weights")
    args = parser.parse_args(argv)
    model, _ = load_model(args.checkpoint)
    dtype = getattr(torch, args.dtype)
    on_failure = "warn" if args.warn_only else "raise"
    out = pathlib.Path(args.out)
    try:
        if args.fmt == "onnx":
            sidecar = to_onnx(model, out / f"{args.name}.onnx", args.mode, dtype=dtype,
                              on_failure=on_failure)
        else:
            sidecar = to_c(model, out, args.name, dtype=dtype, on_failure=on_failure)
    except CertificateError as exc:
        print(f"export refused: {exc}")
        return 1
    cert = sidecar["certificate"]
    print(f"exported {type(model).__name__} to {out} ({', '.join(sidecar['artifact']['files'])})")
    for prop, res in cert["certified"].items():
        print(f"  {prop:<14} {res['status']:<15} bound={res['bound']} margin={res['margin']}")
    return 0
