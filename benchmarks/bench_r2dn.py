"""Forward and forward+backward time of R2DN at the paper's sizes.

Sizes (docs/experiments.md, scaling):
* scaling study: nu = nx = ny = 1, nv = 16, six hidden LBDN layers of width 8..96,
  batch 64, horizon 128;
* F-16 size: nu = 2, nx = 75, nv = 75, hidden (87, 87, 87), ny = 3, batch 4, horizon 256.

Run ``python benchmarks/bench_r2dn.py`` (``--quick`` for a tiny smoke run). Prints medians in ms.
The full comparison with REN, LSTM and GRU is ``benchmarks/bench_speed.py``.
"""

from __future__ import annotations

import argparse
import platform

import torch
from timing import time_model

from r2dn_control.nn import ContractingR2DN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 1 if args.quick else args.repeats
    widths = (8,) if args.quick else (8, 16, 32, 64, 96)
    horizon = 16 if args.quick else 128
    print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} "
          f"threads, float32, median of {repeats}")
    print("| model | sizes (nu,nx,nv,ny) | hidden | batch×horizon | forward ms | fwd+bwd ms |")
    print("|---|---|---|---|---|---|")
    for width in widths:
        model = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, init="long_memory")
        fwd, bwd = time_model(model, torch.randn(64, horizon, 1), repeats)
        print(f"| R2DN | (1,1,16,1) | 6×{width} | 64×{horizon} | {1e3 * fwd:.1f} | "
              f"{1e3 * bwd:.1f} |")
    f16_horizon = 16 if args.quick else 256
    model = ContractingR2DN(2, 75, 75, 3, hidden=(87, 87, 87), init="long_memory")
    fwd, bwd = time_model(model, torch.randn(4, f16_horizon, 2), repeats)
    print(f"| R2DN | (2,75,75,3) | 3×87 | 4×{f16_horizon} | {1e3 * fwd:.1f} | {1e3 * bwd:.1f} |")


if __name__ == "__main__":
    main()
