"""Side-by-side speed of r2dn-control and tsfast (R2DN and REN) in one run, same machine.

Reproduce (tsfast lives in its own virtual environment; it is never a dependency of
r2dn-control). From the repository root::

    python3 -m venv /tmp/tsfast-venv
    /tmp/tsfast-venv/bin/pip install torch==2.13.0
    echo "torch==2.13.0" > /tmp/tsfast-constraints.txt   # keep tsfast from pulling another torch
    /tmp/tsfast-venv/bin/pip install -c /tmp/tsfast-constraints.txt "tsfast[cpp]==0.5.0"
    PYTHONPATH=. /tmp/tsfast-venv/bin/python benchmarks/bench_tsfast.py            # full
    PYTHONPATH=. /tmp/tsfast-venv/bin/python benchmarks/bench_tsfast.py --quick    # smoke

(``tsfast[cpp]`` adds ninja for tsfast's fused C++ REN kernel, compiled with the system C++
compiler on first use: about a minute once, then cached under ``~/.cache/torch_extensions``.)

What is timed: float32, ``torch.get_num_threads()`` threads for both, medians over
``--repeats`` rounds in which the two implementations alternate (so machine-load drift hits
both alike); batch 64, horizon 128, nu = nx = ny = 1.

* forward: under ``torch.no_grad`` with the explicit model cached (ours inside
  ``model.frozen()``, tsfast caches its realization itself whenever gradients are off);
* forward+backward: of ``mean(y²)``, the explicit model rebuilt from the free parameters.

Size matching (parameter counts are printed and checked equal):

* R2DN: ours ``ContractingR2DN(1, 1, 16, 1, hidden=(w,)*6)`` against tsfast's
  ``R2DN(1, 1, n_state=1, n_nl=16, depth=6, variant="contracting", act="relu")`` whose core is
  rebuilt from an ``R2DNSpec`` with ``hidden=(w,)*6``: tsfast's public constructor ties the
  hidden width to ``n_nl``, its spec does not, so the architectures are identical.
* REN: ours ``ContractingREN(1, 1, nv, 1)`` against tsfast's ``REN(1, 1, n_state=1,
  n_nl=nv, variant="contracting", act="relu", backend="c")`` (our activation; tsfast's
  default is tanh).

Without tsfast importable the script prints why and exits 0; without our REN (being written)
the REN rows are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timing import parameter_count, run_sequence
from torch import nn

from r2dn_control.nn import ContractingR2DN

try:
    from tsfast.models.architectures.ren import R2DN, REN, R2DNCore, R2DNSpec
except ImportError as error:  # the benchmark is optional; say how to get it
    REN = R2DN = R2DNCore = R2DNSpec = None
    TSFAST_ERROR: str | None = (
        f"tsfast is not importable ({error}); run this script with the tsfast venv's python "
        "(see the commands at the top of benchmarks/bench_tsfast.py)"
    )
else:
    TSFAST_ERROR = None

try:
    from r2dn_control.nn import ContractingREN
except ImportError:  # r2dn_control/nn/ren.py is optional while it is being written
    ContractingREN = None


@dataclass
class Timing:
    """Median seconds of one implementation."""

    params: int
    forward: float
    backward: float


def tsfast_r2dn(width: int, nv: int = 16, depth: int = 6) -> nn.Module:
    """tsfast's contracting R2DN with hidden widths ``(width,)*depth`` (see module docstring)."""
    model = R2DN(1, 1, n_state=1, n_nl=nv, depth=depth, variant="contracting", act="relu")
    model.core = R2DNCore(R2DNSpec(1, 1, 1, nv, (width,) * depth, "contracting", 1.0, "relu"))
    return model


def tsfast_ren(nv: int, backend: str) -> nn.Module:
    return REN(1, 1, n_state=1, n_nl=nv, variant="contracting", act="relu", backend=backend)


def tsfast_ren_mode(model: nn.Module, u: torch.Tensor) -> str:
    """The rollout tsfast will really run (it falls back to eager silently when a fused
    backend cannot serve the call), read through its private ``_rollout_mode`` if present."""
    probe = getattr(sys.modules.get(type(model).__module__), "_rollout_mode", None)
    if probe is None:
        return f"{model.backend} requested"
    x0 = u.new_zeros(u.shape[0], model.spec.n_state)
    return f"{model.backend} → {probe(model.backend, model.spec, u, x0)}"


def _forward(model: nn.Module, u: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        with torch.no_grad():
            run_sequence(model, u)
    return run


def _forward_backward(model: nn.Module, u: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        run_sequence(model, u).square().mean().backward()
    return run


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _alternate(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each ``fn``, calling them in turn each round after one warm-up."""
    for fn in fns:  # warm-up: first-use compilation, caches, allocator
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            samples[k].append(_seconds(fn))
    return [statistics.median(s) for s in samples]


def time_pair(ours: nn.Module, theirs: nn.Module, u: torch.Tensor, repeats: int
              ) -> tuple[Timing, Timing]:
    """Forward and forward+backward medians of ours and theirs, alternating each round."""
    # Cache our explicit model for the forward, as tsfast does by itself under no_grad.
    with ours.frozen() if hasattr(ours, "frozen") else contextlib.nullcontext():
        forward = _alternate([_forward(ours, u), _forward(theirs, u)], repeats)
    backward = _alternate([_forward_backward(ours, u), _forward_backward(theirs, u)], repeats)
    a, b = (Timing(parameter_count(m), f, fb) for m, f, fb in zip((ours, theirs), forward,
                                                                   backward))
    return a, b


def _row(name: str, size: str, ours: Timing, theirs: Timing) -> str:
    ms = 1e3
    return (f"| {name} | {size} | {ours.params} / {theirs.params} | "
            f"{ms * ours.forward:.1f} | {ms * theirs.forward:.1f} | "
            f"{theirs.forward / ours.forward:.2f} | {ms * ours.backward:.1f} | "
            f"{ms * theirs.backward:.1f} | {theirs.backward / ours.backward:.2f} |")


def _check_sizes(name: str, ours: Timing, theirs: Timing) -> None:
    if ours.params != theirs.params:
        print(f"warning: {name} parameter counts differ: ours {ours.params}, tsfast "
              f"{theirs.params}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run: width 8, nv 16, batch 8, horizon 16, 1 repeat")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 96],
                        help="R2DN hidden widths (six layers each)")
    parser.add_argument("--ren-nv", type=int, default=200, help="REN width nv")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--ren-backend", default="c",
                        help="tsfast REN backend (c: fused C++ kernel; eager: Python loop)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if TSFAST_ERROR is not None:
        print(f"SKIPPED: {TSFAST_ERROR}")
        return 0
    if args.quick:
        args.widths, args.ren_nv, args.batch, args.horizon, args.repeats = [8], 16, 8, 16, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import tsfast

    u = torch.randn(args.batch, args.horizon, 1)
    print(f"# r2dn-control vs tsfast {getattr(tsfast, '__version__', '?')}: torch "
          f"{torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"float32, batch {args.batch}, horizon {args.horizon}, median of {args.repeats}; "
          "ratio = tsfast / ours (> 1: ours faster)")
    print("| model | size | params ours / tsfast | fwd ours ms | fwd tsfast ms | fwd ratio | "
          "fwd+bwd ours ms | fwd+bwd tsfast ms | fwd+bwd ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width in args.widths:
        ours = ContractingR2DN(1, 1, 16, 1, hidden=(width,) * 6)
        a, b = time_pair(ours, tsfast_r2dn(width), u, args.repeats)
        _check_sizes(f"R2DN 6×{width}", a, b)
        print(_row("R2DN", f"nv 16, 6×{width}", a, b), flush=True)
    if ContractingREN is None:
        print("(REN rows skipped: r2dn_control.nn.ContractingREN is not available yet)")
        return 0
    ours, theirs = ContractingREN(1, 1, args.ren_nv, 1), tsfast_ren(args.ren_nv, args.ren_backend)
    a, b = time_pair(ours, theirs, u, args.repeats)
    _check_sizes(f"REN nv {args.ren_nv}", a, b)
    print(_row("REN", f"nv {args.ren_nv} (tsfast {tsfast_ren_mode(theirs, u)})", a, b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
