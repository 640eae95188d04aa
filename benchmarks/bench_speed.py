"""Speed and memory of R2DN vs REN vs torch LSTM/GRU: the one benchmark command.

    python benchmarks/bench_speed.py            # full tables (~5 min on 2 CPU cores)
    python benchmarks/bench_speed.py --quick    # tiny smoke run (used by the tests)
    python benchmarks/bench_speed.py --device cuda
    python benchmarks/bench_speed.py --no-cpp   # REN without the C++ kernels (pure torch)

Tables (float32, medians in ms, ratios measured in the same run):

1. Paper scaling study (nu = nx = ny = 1, tanh, batch 64, horizon 128): REN with nv in
   {20, …, 200} beside R2DN (nv = 16, six hidden layers of width 8 … 96), and a torch LSTM and
   GRU with the same parameter count as that R2DN. R2DN is timed with its fused rollout and
   with the reference autograd loop. Ratio columns are t_other / t_R2DN (how many times faster
   the R2DN is).
2. Batch-size and horizon sweeps at the largest scaling size.
3. Activation memory: bytes autograd saves for the backward pass (plus the CUDA peak when on
   a GPU).
4. F-16 size (nu = 2, nx = 75, ny = 3, batch 4, horizon 256): R2DN (nv = 75, hidden 3×87)
   vs REN (nv = 150), per training segment, and the implied epoch time (288 segments).

Every time includes the direct-to-explicit map, computed once per call.
"""

from __future__ import annotations

import argparse
import math
import os
import platform

import torch
from timing import parameter_count, saved_for_backward_bytes, time_model
from torch import nn

from r2dn_control.nn import ContractingR2DN, ContractingREN

REN_FEATURES = (20, 30, 40, 60, 80, 100, 128, 200)
R2DN_WIDTHS = (8, 12, 16, 24, 32, 48, 64, 96)


class TorchRNN(nn.Module):
    """``nn.LSTM``/``nn.GRU`` plus a linear read-out, batch-first."""

    def __init__(self, kind: str, input_size: int, hidden: int, output_size: int, **factory):
        super().__init__()
        cell = {"LSTM": nn.LSTM, "GRU": nn.GRU}[kind]
        self.rnn = cell(input_size, hidden, batch_first=True, **factory)
        self.head = nn.Linear(hidden, output_size, **factory)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(u)[0])


def matched_hidden(kind: str, params: int, nu: int = 1, ny: int = 1) -> int:
    """Hidden size h whose RNN + read-out has about ``params`` parameters."""
    gates = {"LSTM": 4, "GRU": 3}[kind]
    # gates·h·(nu + h + 2) + h·ny + ny = params  →  solve the quadratic in h
    a, b, c = gates, gates * (nu + 2) + ny, ny - params
    return max(1, round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))


def r2dn(width: int, **common) -> ContractingR2DN:
    return ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6, **common)


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-cpp", action="store_true",
                        help="disable the C++ CPU kernels (REN falls back to pure torch)")
    args = parser.parse_args()
    if args.no_cpp:  # read when the kernels are first needed, i.e. after this point
        os.environ["R2DN_DISABLE_CPP"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    repeats = 1 if args.quick else args.repeats
    batch, horizon = (8, 16) if args.quick else (64, 128)
    pairs = list(zip(REN_FEATURES, R2DN_WIDTHS))
    pairs = pairs[:1] + pairs[-1:] if args.quick else pairs
    common = {"activation": "tanh", "device": device}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    from r2dn_control.nn import cpp

    kernels = cpp.status() if cpp.available() else f"off: {cpp.status()}"
    print(f"# torch {torch.__version__}, {where}, float32, median of {repeats}, times in ms; "
          f"C++ kernels: {kernels}")

    def u_of(b: int, t: int, nu: int = 1) -> torch.Tensor:
        return torch.randn(b, t, nu, device=device)

    print(f"\n## 1. Scaling study (batch {batch}, horizon {horizon})\n")
    print("| R2DN hidden | params | R2DN fwd | R2DN fwd+bwd | reference-loop fwd+bwd | REN nv "
          "| REN fwd | REN fwd+bwd | LSTM h | LSTM fwd | LSTM fwd+bwd | GRU fwd+bwd "
          "| REN/R2DN fwd | REN/R2DN fwd+bwd | LSTM/R2DN fwd+bwd |")
    print("|" + "---|" * 15)
    for nv, width in pairs:
        model = r2dn(width, **common)
        u = u_of(batch, horizon)
        f_fast, b_fast = time_model(model, u, repeats)
        model.rollout_method = "reference"
        _, b_ref = time_model(model, u, repeats)
        ren_f, ren_b = time_model(ContractingREN(1, 1, nv, 1, **common), u, repeats)
        params = parameter_count(model)
        h = matched_hidden("LSTM", params)
        lstm_f, lstm_b = time_model(TorchRNN("LSTM", 1, h, 1, device=device), u, repeats)
        _, gru_b = time_model(TorchRNN("GRU", 1, matched_hidden("GRU", params), 1,
                                       device=device), u, repeats)
        print(f"| 6×{width} | {params} | {ms(f_fast)} | {ms(b_fast)} | {ms(b_ref)} | {nv} "
              f"| {ms(ren_f)} | {ms(ren_b)} | {h} | {ms(lstm_f)} | {ms(lstm_b)} | {ms(gru_b)} "
              f"| {ren_f / f_fast:.1f}× | {ren_b / b_fast:.1f}× | {lstm_b / b_fast:.2f}× |",
              flush=True)

    width, nv = pairs[-1][1], pairs[-1][0]
    params = parameter_count(r2dn(width, **common))
    models = {
        f"R2DN 6×{width}": lambda: r2dn(width, **common),
        f"REN nv={nv}": lambda: ContractingREN(1, 1, nv, 1, **common),
        "LSTM": lambda: TorchRNN("LSTM", 1, matched_hidden("LSTM", params), 1, device=device),
        "GRU": lambda: TorchRNN("GRU", 1, matched_hidden("GRU", params), 1, device=device),
    }
    sweeps = {"batch": (4, 16) if args.quick else (16, 64, 256),
              "horizon": (8, 32) if args.quick else (32, 128, 512)}
    print("\n## 2. Sweeps at the largest scaling size (fwd / fwd+bwd)\n")
    print("| sweep | value | " + " | ".join(models) + " |")
    print("|" + "---|" * (2 + len(models)))
    for name, values in sweeps.items():
        for value in values:
            b, t = (value, horizon) if name == "batch" else (batch, value)
            cells = []
            for build in models.values():
                f, bw = time_model(build(), u_of(b, t), repeats)
                cells.append(f"{ms(f)} / {ms(bw)}")
            print(f"| {name} | {value} | " + " | ".join(cells) + " |", flush=True)

    print(f"\n## 3. Activation memory (batch {batch}, horizon {horizon})\n")
    print("| model | params | saved for backward (MB) | CUDA peak (MB) |")
    print("|---|---|---|---|")
    for label, build in models.items():
        model = build()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        saved = saved_for_backward_bytes(model, u_of(batch, horizon))
        peak = (f"{torch.cuda.max_memory_allocated(device) / 2**20:.1f}"
                if device.type == "cuda" else "n/a")
        print(f"| {label} | {parameter_count(model)} | {saved / 2**20:.2f} | {peak} |")

    seg = 16 if args.quick else 256
    print(f"\n## 4. F-16 size (batch 4, segment {seg}; 288 segments per epoch)\n")
    print("| model | params | fwd ms | fwd+bwd ms | epoch estimate (s) |")
    print("|---|---|---|---|---|")
    f16 = {
        "R2DN nv=75, 3×87 (relu)": ContractingR2DN(2, 75, 75, 3, hidden=(87, 87, 87),
                                                  device=device),
        "REN nv=150 (relu)": ContractingREN(2, 75, 150, 3, device=device),
    }
    for label, model in f16.items():
        f, bw = time_model(model, u_of(4, seg, 2), repeats)
        print(f"| {label} | {parameter_count(model)} | {ms(f)} | {ms(bw)} | {288 * bw:.1f} |")


if __name__ == "__main__":
    main()
