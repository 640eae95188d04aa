"""Limit the OpenBLAS thread pools of numpy/scipy while the structured certificates run.

Why: the KYP route is a sequence of small and medium dense factorizations (n ≤ ~1000).
Measured on the shared 2-core machine under load (load average ~4), multi-threaded OpenBLAS
spins: a 128×128 complex ``eigh`` took 1.3–1.8 s with 2 threads and 3 ms with 1, a 512×512
``eig`` 3.6 s vs 0.35 s. One thread per process is the robust choice for these sizes. The
limit is scoped (restored on exit) and a no-op where no OpenBLAS is loaded.

`certificate_threads` chooses the count for one certificate from the ``certify.threads``
setting: 1 (the default) one OpenBLAS thread; k ≥ 2 exactly k (it may raise the count above
the pool's, and torch's intra-op count with it); None one thread below
``certify.threads_from`` states and the pool's current count (what the environment allows,
e.g. ``OMP_NUM_THREADS``; never more) from there on, where the O(n³) products dominate.
Measured on the shared 2-core machine under load (docs/performance.md, round 5): two threads
at n = 1024 spent ~4× the CPU time of one (spinning), load average ≈ 10.
`blas_threads` with no count (the KYP functions' decorator) keeps that choice inside a
certificate and means one thread outside one.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads")


# One loaded OpenBLAS: its thread-count getter and setter (ctypes foreign functions).
Pool = tuple[Callable[[], int], Callable[[int], Any]]


def _first(lib: ctypes.CDLL, names: tuple[str, ...]) -> Any:
    """The first exported symbol of ``names`` in ``lib`` (a ctypes foreign function), or None."""
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def _loaded_openblas() -> list[Pool]:
    """(getter, setter) of every OpenBLAS already mapped into this process (Linux only)."""
    found: list[Pool] = []
    seen: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return found
    for path in sorted(paths):
        if path in seen or not (path.endswith(".so") or ".so." in path):
            continue
        seen.add(path)
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        get, put = _first(lib, _GETTERS), _first(lib, _SETTERS)
        if get is not None and put is not None:
            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
            found.append((get, put))
    return found


@dataclass
class _Scan:
    """The last `_loaded_openblas` result and the ``len(sys.modules)`` it was taken at."""

    modules: int = -1
    pools: list[Pool] = field(default_factory=list)


_cache = _Scan()


def _openblas_pools() -> list[Pool]:
    """`_loaded_openblas`, rescanned only when a module was imported since the last scan
    (shared libraries arrive with imports), so each bisection step does not reopen OpenBLAS."""
    if _cache.modules != len(sys.modules):
        _cache.pools = _loaded_openblas()
        _cache.modules = len(sys.modules)
    return _cache.pools


#: The thread count `blas_threads()` (no count) applies: set by `certificate_threads` for
#: the duration of one certificate, 1 outside one.
_active = [1]


@contextmanager
def blas_threads(n: int | None = None, exact: bool = False) -> Iterator[None]:
    """Run the block with at most ``n`` OpenBLAS threads (``exact``: exactly ``n``, raising the
    pools' counts if need be), restoring the previous counts. ``n=None``: the count of the
    enclosing `certificate_threads` (1 outside one)."""
    count = _active[-1] if n is None else n
    pools = _openblas_pools()
    previous = [get() for get, _ in pools]
    try:
        for (_, put), old in zip(pools, previous):
            put(count if exact or old <= 0 else min(count, old))
        yield
    finally:
        for (_, put), old in zip(pools, previous):
            put(old)


def _pool_threads() -> int:
    """The largest current thread count of the loaded OpenBLAS pools (1 if none)."""
    counts = [get() for get, _ in _openblas_pools()]
    return max([c for c in counts if c > 0], default=1)


def threads_for(states: int) -> tuple[int, bool]:
    """(count, exact) for a certificate of a model with ``states`` states (module docstring)."""
    from .. import config

    chosen = config.defaults["certify.threads"]
    if chosen is not None:
        return int(chosen), chosen != 1  # 1: as before (one BLAS thread, torch untouched)
    if states < config.defaults["certify.threads_from"]:
        return 1, False
    return _pool_threads(), False


@contextmanager
def certificate_threads(states: int) -> Iterator[int]:
    """Scope one certificate's BLAS threads (`threads_for`): the OpenBLAS pools and torch's
    intra-op threads (the explicit model), both restored on exit; yields the count."""
    import torch

    count, exact = threads_for(states)
    torch_before = torch.get_num_threads()
    # One thread by default (a small model): torch's own count is left as it was.
    torch_count = count if exact else (torch_before if count == 1 else min(count, torch_before))
    _active.append(count)
    try:
        if torch_count != torch_before:
            torch.set_num_threads(torch_count)
        with blas_threads(count, exact=exact):
            yield count
    finally:
        _active.pop()
        if torch.get_num_threads() != torch_before:
            torch.set_num_threads(torch_before)
