"""The data-parallel demo: ``torchrun --nproc_per_node=N -m r2dn_control.cli.distributed``.

Identifies a forced Duffing oscillator with a Lipschitz R2DN, the batch sharded across the
ranks (`r2dn_control.train.distributed`; docs/distributed.md). Without ``torchrun`` it
runs in one process. ``-m r2dn_control.train.distributed`` runs the same CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ..train.distributed import BACKENDS, distributed_session, fit_sequences_distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m r2dn_control.cli.distributed",
        description="Data-parallel demo: identify a forced Duffing oscillator (multisine "
                    "inputs) with a Lipschitz R2DN, the batch sharded across the ranks.",
    )
    parser.add_argument("--batch", type=int, default=16, help="sequences in the full batch")
    parser.add_argument("--horizon", type=int, default=200, help="time steps per sequence")
    parser.add_argument("--state", type=int, default=8, help="state size nx")
    parser.add_argument("--features", type=int, default=16, help="nonlinearity width nv")
    parser.add_argument("--hidden", type=int, nargs="*", default=[32, 32],
                        help="hidden widths of the LBDN")
    parser.add_argument("--gamma", type=float, default=5.0, help="Lipschitz bound γ")
    parser.add_argument("--steps", type=int, default=200, help="Adam steps")
    parser.add_argument("--seconds", type=float, default=None, help="optional time budget")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed, the same on every rank")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="default: nccl with CUDA, else gloo")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="collective timeout in seconds")
    parser.add_argument("--save", default=None, help="checkpoint path (written by rank 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    from ..data import DuffingOscillator, multisine
    from ..nn import LipschitzR2DN
    from ..train.metrics import nrmse

    args = build_parser().parse_args(argv)
    dtype = getattr(torch, args.dtype)
    with distributed_session(args.backend, timeout_s=args.timeout) as ctx:
        # Same seed everywhere: every rank builds the same data and (before DDP's broadcast)
        # the same model, so nothing depends on which rank's state wins.
        torch.manual_seed(args.seed)
        g = torch.Generator().manual_seed(args.seed)
        plant = DuffingOscillator()
        u = multisine(args.batch, args.horizon, generator=g, dtype=torch.float64)
        y = plant.simulate(u, noise_std=0.01, generator=g)
        u_test = multisine(2, 2 * args.horizon, generator=g, dtype=torch.float64)
        y_test = plant.simulate(u_test)
        u, y, u_test, y_test = (t.to(dtype) for t in (u, y, u_test, y_test))
        model = LipschitzR2DN(1, args.state, args.features, 1, hidden=tuple(args.hidden),
                              gamma=args.gamma, init="long_memory", dtype=dtype)
        fit = fit_sequences_distributed(model, u, y, max_steps=args.steps,
                                        seconds=args.seconds, lr=args.lr,
                                        progress=not args.no_progress, context=ctx)
        if ctx.is_main:
            with torch.no_grad():
                score = nrmse(model(u_test.to(ctx.device))[0].cpu(), y_test,
                              washout=min(50, args.horizon // 4))
            print(f"data-parallel fit on {ctx.world_size} rank(s) "
                  f"(backend {ctx.backend or 'none'}, device {ctx.device})")
            print(f"  {fit.steps} Adam steps in {fit.seconds:.1f} s; full-batch MSE "
                  f"{fit.losses[0]:.4g} -> {fit.final_loss:.4g}; test NRMSE {score:.4f}")
            if args.save:
                from ..nn.checkpoint import save_model

                save_model(model, args.save, task="distributed demo: Duffing oscillator",
                           nrmse=score, world_size=ctx.world_size)
                print(f"  checkpoint: {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
