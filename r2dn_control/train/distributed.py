"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun``.

Every rank holds the same model (DDP broadcasts rank 0's parameters and buffers when it wraps
the model) and a *shard* of the batch; after each backward DDP averages the gradients over the
ranks, so every rank takes the same optimizer step. The loss on a shard is scaled so that this
average is exactly the gradient of the full-batch loss (see `squared_error_step`), so
``N`` ranks reproduce single-process training on the same data up to rounding.

Backends: ``gloo`` on CPU, ``nccl`` on GPU (one GPU per rank, ``cuda:LOCAL_RANK``), chosen
automatically. Run ``torchrun --nproc_per_node=2 -m r2dn_control.cli.distributed --help``
for the demo (`r2dn_control.cli.distributed`); without ``torchrun`` everything runs in
one process (no process group).

See ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .guard import check_finite, check_on_nonfinite
from .sysid import FitResult, check_targets, run_steps, squared_error_step

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, rank on this node (torchrun's ``RANK``,
        ``WORLD_SIZE``, ``LOCAL_RANK``).
    backend : str or None
        ``"gloo"`` or ``"nccl"``; None when running as a single process without a group.
    device : torch.device
        The device this rank computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs, shows progress and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is in use."""
        return self.backend is not None and self.world_size > 1


def default_backend() -> str:
    """``"nccl"`` when CUDA and NCCL are available, otherwise ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") \
            from None


def init_distributed(backend: str | None = None, *, timeout_s: float = 300.0
                     ) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment.

    Without torchrun (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) no group is created and a
    single-process context is returned, so the same script runs with or without a launcher.
    A group that is already initialised (e.g. by the caller) is reused.

    Parameters
    ----------
    backend : {"gloo", "nccl"}, optional
        Default: `default_backend`.
    timeout_s : float
        Collective-operation timeout: a rank that waits longer (e.g. because another rank died)
        raises instead of hanging forever.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
        if world == 1:
            return DistributedContext()
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = backend or default_backend()
        # env:// reads MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE, all set by torchrun.
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    local_rank = _env_int("LOCAL_RANK", rank)
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistributedContext(rank, world, local_rank, backend, device)


def shutdown_distributed() -> None:
    """Destroy the default process group if there is one (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(backend: str | None = None, *, timeout_s: float = 300.0
                        ) -> Iterator[DistributedContext]:
    """``with distributed_session() as ctx:`` init the group, and always destroy it on exit."""
    owns = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(backend, timeout_s=timeout_s)
    try:
        yield ctx
    finally:
        if owns:
            shutdown_distributed()


def shard(tensor: Tensor, rank: int, world_size: int, dim: int = 0) -> Tensor:
    """Rank ``rank``'s contiguous slice of ``tensor`` along ``dim`` (sizes differ by ≤ 1).

    Raises
    ------
    ValueError
        Fewer items than ranks (some rank would get an empty shard), or a bad rank.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if tensor.shape[dim] < world_size:
        raise ValueError(f"cannot shard {tensor.shape[dim]} items along dim {dim} over "
                         f"{world_size} ranks: need at least one item per rank")
    return tensor.tensor_split(world_size, dim=dim)[rank]


def _ddp(module: nn.Module, ctx: DistributedContext, **ddp_kwargs: Any
         ) -> DistributedDataParallel:
    if ctx.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [ctx.device.index])
    return DistributedDataParallel(module, **ddp_kwargs)


def _mean_over_ranks(value: Tensor, ctx: DistributedContext) -> Tensor:
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / ctx.world_size


def _any_rank(flag: bool, ctx: DistributedContext) -> bool:
    votes = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


def fit_sequences_distributed(
    model: nn.Module,
    u: Tensor,
    y: Tensor,
    *,
    max_steps: int = 1000,
    seconds: float | None = None,
    lr: float = 1e-2,
    progress: bool = True,
    context: DistributedContext | None = None,
    presharded: bool = False,
    ddp_kwargs: dict[str, Any] | None = None,
    on_nonfinite: str = "raise",
) -> FitResult:
    """Data-parallel `fit_sequences` (full-batch Adam on MSE).

    Call it on every rank with the same arguments. The model is trained in place; each rank
    returns the same `FitResult`, whose losses are the full-batch losses.

    Parameters
    ----------
    model : nn.Module
        Returns ``(prediction, final_state)`` from ``model(u)``, e.g. an R2DN; moved to the
        context's device. Its initial parameters are taken from rank 0.
    u, y : Tensor
        The full batch, inputs (batch, time, nu) and targets (batch, time, ny), identical on
        every rank; each rank trains on its contiguous slice of the batch dimension.
    max_steps, seconds, lr, progress
        As in ``fit_sequences``; the progress bar is shown on rank 0 only, and with
        ``seconds`` all ranks stop at the same step (the first at which any rank is out of time).
    context : DistributedContext, optional
        Default: `init_distributed` (joins the group if torchrun launched this process).
    presharded : bool
        ``u``, ``y`` are already this rank's shard (e.g. loaded per rank); the full-batch size
        is then summed over the ranks once.
    ddp_kwargs : dict, optional
        Extra ``DistributedDataParallel`` arguments (e.g. ``find_unused_parameters=True``).
    on_nonfinite : {"raise", "skip"}
        As in ``fit_sequences``. The gradients are averaged over the ranks before the guard
        looks at them, so a NaN on any rank makes every rank raise (or skip) at the same step.

    Raises
    ------
    ValueError
        ``y`` does not match ``u`` and the model's output size, or the batch has fewer
        sequences than there are ranks.
    """
    ctx = init_distributed() if context is None else context
    check_targets(model, u, y)
    check_on_nonfinite(on_nonfinite)
    check_finite("u", u)
    check_finite("y", y)
    model.to(ctx.device)
    u, y = u.to(ctx.device), y.to(ctx.device)
    if not ctx.distributed:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        return run_steps(
            lambda: squared_error_step(model, opt, u, y, on_nonfinite=on_nonfinite).item(),
            max_steps=max_steps, seconds=seconds, progress=progress)
    if presharded:
        total = torch.tensor([float(y.numel())], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(total)
        numel = float(total.item())
    else:
        numel = float(y.numel())
        u, y = shard(u, ctx.rank, ctx.world_size), shard(y, ctx.rank, ctx.world_size)
    # DDP averages gradients over ranks, so each rank's loss is its sum of squared errors
    # divided by numel / world: the average of these is exactly the full-batch mean, even for
    # uneven shards.
    normaliser = numel / ctx.world_size
    ddp = _ddp(model, ctx, **(ddp_kwargs or {}))
    opt = torch.optim.Adam(ddp.parameters(), lr=lr)

    def step() -> float:
        local = squared_error_step(ddp, opt, u, y, normaliser=normaliser,
                                   on_nonfinite=on_nonfinite, context="distributed fit")
        # Sum over ranks of (local SSE · world / numel), divided by world: the full-batch MSE.
        return _mean_over_ranks(local, ctx).item()

    return run_steps(step, max_steps=max_steps, seconds=seconds,
                     progress=progress and ctx.is_main, agree=lambda f: _any_rank(f, ctx))


class _MethodAsForward(nn.Module):
    """Expose ``module.<method>`` as ``forward`` so that DDP's gradient hooks see the call."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        if not callable(getattr(module, method, None)):
            raise AttributeError(f"{type(module).__name__} has no method {method!r}")
        self.module = module
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return getattr(self.module, self.method)(*args, **kwargs)


class DistributedLoss:
    """Make a module's scalar loss method data-parallel, e.g. for ``fit_observer``.

    ``DistributedLoss(observer).loss(...)`` evaluates ``observer.loss(...)`` through
    ``DistributedDataParallel``, so its backward averages gradients across ranks, and returns
    a tensor whose *value* is the mean of the ranks' losses (identical on every rank, so
    loss-driven logic such as ``ReduceLROnPlateau`` stays in lockstep) and whose *gradient*
    is this rank's. It has ``parameters()``, so it can stand in for the observer::

        losses = fit_observer(DistributedLoss(observer), x_r, x_next_r, y_r, u_r,
                              progress=ctx.is_main)

    with ``x_r, …`` this rank's equal-size shards of the rows (the mean of equal-size shard
    means is the full mean; with ``batches=1`` this is exactly single-process full-batch
    training).

    Parameters
    ----------
    module : nn.Module
        Trained in place.
    method : str
        Name of the method that returns the scalar loss.
    context : DistributedContext, optional
        Default: `init_distributed`.
    **ddp_kwargs
        Extra ``DistributedDataParallel`` arguments; ``find_unused_parameters`` defaults to
        True here.
    """

    def __init__(self, module: nn.Module, method: str = "loss", *,
                 context: DistributedContext | None = None, **ddp_kwargs: Any) -> None:
        self.context = init_distributed() if context is None else context
        self.module = module.to(self.context.device)
        wrapped = _MethodAsForward(module, method)
        # Loss methods often leave some parameters out (Observer.loss never uses the output
        # bias), which plain DDP reports as an error at the next step; the graph search this
        # enables is cheap next to a recurrent model's backward.
        ddp_kwargs.setdefault("find_unused_parameters", True)
        self._call: nn.Module = (_ddp(wrapped, self.context, **ddp_kwargs)
                                 if self.context.distributed else wrapped)

    def loss(self, *args: Any, **kwargs: Any) -> Tensor:
        """The rank-averaged loss value, carrying this rank's gradient."""
        local = self._call(*args, **kwargs)
        if not self.context.distributed:
            return local
        return local + (_mean_over_ranks(local, self.context) - local.detach())

    __call__ = loss

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.module.parameters(recurse)


if __name__ == "__main__":  # ``torchrun -m r2dn_control.train.distributed``: the demo CLI
    from ..cli.distributed import main

    sys.exit(main())
