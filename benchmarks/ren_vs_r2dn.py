"""Forward and forward+backward time of REN beside R2DN at the paper's scaling sizes.

Sizes (issue 3, paper's scaling study): nu = nx = ny = 1, tanh, batch 64, horizon 128;
REN with nv in {20, 30, 40, 60, 80, 100, 128, 200}; R2DN with nv = 16 and six hidden LBDN
layers of width 8..96. Rows pair the i-th REN size with the i-th R2DN width; the paper's
headline pair is REN nv = 200 vs R2DN width 96 (≈9.4× forward, ≈9.1× backward, on GPU).

"forward" is one rollout under ``torch.no_grad``; "fwd+bwd" is a rollout with gradients plus
``backward`` of the mean squared output. Both include the direct-to-explicit map (once per
call). Times are medians over ``--repeats`` after one warm-up call. The ratio columns are
t_REN / t_R2DN, i.e. how many times faster the R2DN is.

Run ``python benchmarks/ren_vs_r2dn.py`` (``--quick`` for a tiny smoke run; ``--device cuda``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from r2dn_control.nn import ContractingR2DN, ContractingREN, RecurrentModel

REN_FEATURES = (20, 30, 40, 60, 80, 100, 128, 200)
R2DN_WIDTHS = (8, 12, 16, 24, 32, 48, 64, 96)
R2DN_FEATURES, R2DN_DEPTH = 16, 6


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""

    def timed() -> float:
        if device.type == "cuda":  # kernels are asynchronous: time to completion
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    timed()
    return statistics.median(timed() for _ in range(repeats))


def time_model(model: RecurrentModel, batch: int, horizon: int, repeats: int
               ) -> tuple[float, float]:
    """(forward, forward+backward) median seconds on inputs of shape (batch, horizon, nu)."""
    u = torch.randn(batch, horizon, model.input_size, dtype=model.dtype, device=model.device)

    def forward() -> None:
        with torch.no_grad():
            model(u)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        y, _ = model(u)
        y.square().mean().backward()

    return (median_seconds(forward, repeats, model.device),
            median_seconds(forward_backward, repeats, model.device))


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="two small sizes, batch 8, horizon 16, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    repeats = 1 if args.quick else args.repeats
    batch, horizon = (8, 16) if args.quick else (64, 128)
    pairs = list(zip(REN_FEATURES, R2DN_WIDTHS))[:2] if args.quick else list(
        zip(REN_FEATURES, R2DN_WIDTHS))
    common = {"activation": "tanh", "dtype": dtype, "device": device}

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"# torch {torch.__version__}, {where}, {args.dtype}, batch {batch}, "
          f"horizon {horizon}, median of {repeats} (ms)")
    print("| REN nv | REN params | REN fwd | REN fwd+bwd | R2DN hidden | R2DN params "
          "| R2DN fwd | R2DN fwd+bwd | fwd REN/R2DN | fwd+bwd REN/R2DN |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nv, width in pairs:
        ren = ContractingREN(1, 1, nv, 1, **common)
        r2dn = ContractingR2DN(1, 1, R2DN_FEATURES, 1, hidden=(width,) * R2DN_DEPTH, **common)
        ren_f, ren_b = time_model(ren, batch, horizon, repeats)
        r2dn_f, r2dn_b = time_model(r2dn, batch, horizon, repeats)
        print(f"| {nv} | {parameter_count(ren)} | {1e3 * ren_f:.1f} | {1e3 * ren_b:.1f} "
              f"| {R2DN_DEPTH}×{width} | {parameter_count(r2dn)} | {1e3 * r2dn_f:.1f} "
              f"| {1e3 * r2dn_b:.1f} | {ren_f / r2dn_f:.2f}× | {ren_b / r2dn_b:.2f}× |",
              flush=True)


if __name__ == "__main__":
    main()
