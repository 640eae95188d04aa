"""Limit the OpenBLAS thread pools of numpy/scipy while the structured certificates run.

Why: the KYP route is a sequence of small and medium dense factorizations (n ≤ ~1000).
Measured on the shared 2-core machine under load (load average ~4), multi-threaded OpenBLAS
spins: a 128×128 complex ``eigh`` took 1.3–1.8 s with 2 threads and 3 ms with 1, a 512×512
``eig`` 3.6 s vs 0.35 s. One thread per process is the robust choice for these sizes. The
limit is scoped (restored on exit) and a no-op where no OpenBLAS is loaded.
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


@contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run the block with at most ``n`` OpenBLAS threads, restoring the previous counts."""
    pools = _openblas_pools()
    previous = [get() for get, _ in pools]
    try:
        for (_, put), old in zip(pools, previous):
            put(min(n, old) if old > 0 else n)
        yield
    finally:
        for (_, put), old in zip(pools, previous):
            put(old)
