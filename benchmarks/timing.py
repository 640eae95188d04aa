"""Timing helpers shared by the benchmark scripts (medians, device sync, saved-tensor memory)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device,
                   warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""

    def timed() -> float:
        if device.type == "cuda":  # kernels are asynchronous: time to completion
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    return statistics.median(timed() for _ in range(repeats))


def median_thread_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median thread CPU time (``time.thread_time``: this thread only, preemption not counted)
    of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def median_wall_and_cpu(fn: Callable[[], object], repeats: int,
                        warmup: int = 1) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn`` (CPU work) over ``repeats`` calls.

    On a shared machine the CPU time (``time.process_time``: every thread of this process) is
    the robust figure: time spent preempted by other processes does not count.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall), statistics.median(cpu)


def run_sequence(model: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """Outputs of an r2dn-control model or a torch RNN (+ linear head) on ``u``."""
    out = model(u)
    return out[0] if isinstance(out, tuple) else out


def time_model(model: nn.Module, u: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(forward under no_grad, forward + backward of the mean squared output) median seconds."""

    def forward() -> None:
        with torch.no_grad():
            run_sequence(model, u)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        run_sequence(model, u).square().mean().backward()

    return median_seconds(forward, repeats, u.device), median_seconds(forward_backward, repeats,
                                                                       u.device)


def saved_for_backward_bytes(model: nn.Module, u: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (activation memory).

    Deterministic on any device, unlike process RSS on the CPU; counts each storage once.
    """
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.device.index or 0)
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_sequence(model, u).square().mean()
    return sum(seen.values())


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
