"""Build-on-first-use C++ CPU kernels (``torch.ops.r2dn_control.*``) with a pure-torch fallback.

The sources beside this file are compiled once per machine with the system C++ compiler through
:func:`torch.utils.cpp_extension.load` and cached in torch's extensions directory
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later processes only load
the cached library. When no compiler is found, the build fails, or ``R2DN_DISABLE_CPP=1`` is
set, :func:`available` returns False (once, silently: no warning) and callers take their
pure-torch path. :func:`status` says why.

Operators (CPU, float32/float64; math contracts in ``r2dn_control/nn/fused_ren.md`` and
``r2dn_control/nn/fused_rollout.md``):

* ``equilibrium_forward(D11, b, activation) -> w``
* ``equilibrium_adjoint(D11, w, g, activation) -> ∂L/∂b``
* ``ren_forward(x0, dx, dv, A, B1, C1, D11, activation) -> (xs, ws, x_T)``
* ``ren_adjoint(g_xs, g_ws, g_final, ws, A, B1, C1, D11, activation) -> (λ_next, g_v, λ_0)``
* ``r2dn_forward(x0, dx, dv, A, B1, C1, weights, biases, activation) -> (x_0..T, vs, ws, acts)``
* ``r2dn_adjoint(g_xs, g_ws, g_final, A, B1, C1, weights, slopes) -> (λ_0..T, g_w, g_v, g_z)``
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

DISABLE_ENV = "R2DN_DISABLE_CPP"
SOURCES = tuple(pathlib.Path(__file__).with_name(name)
                for name in ("ren_kernels.cpp", "r2dn_kernels.cpp"))
_LOG = logging.getLogger(__name__)

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None, "reason": "not tried yet", "seconds": None}
_suspended = threading.local()


def _cpu_tag() -> str:
    """A short hash of the CPU's feature flags.

    The library is compiled with ``-march=native``; keying the cache by CPU keeps a build made
    on one machine from being loaded on another with fewer instructions (shared home dirs).
    """
    flags = platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _build() -> None:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r} not on PATH)")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not available (torch.utils.cpp_extension needs it)")
    # torch's loader may warn (compiler ABI check, missing CUDA); the fallback is silent by
    # design, and a working build needs no warning either.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpp_extension.load(
            name=f"r2dn_control_kernels_{_cpu_tag()}",
            sources=[str(s) for s in SOURCES],
            extra_cflags=["-O3", "-march=native", "-std=c++17"],
            is_python_module=False,
            verbose=False,
        )


def available() -> bool:
    """Whether the C++ kernels are loaded (building them on the first call).

    Returns False without raising or warning when ``R2DN_DISABLE_CPP=1``, inside
    :func:`suspended`, or when the build failed (see :func:`status`).
    """
    if getattr(_suspended, "depth", 0):
        return False
    loaded = _state["loaded"]
    if loaded is not None:
        return bool(loaded)
    with _lock:
        if _state["loaded"] is None:
            if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
                _state.update(loaded=False, reason=f"disabled by {DISABLE_ENV}")
            else:
                start = time.perf_counter()
                try:
                    _build()
                except Exception as error:  # any build/load failure means: use pure torch
                    _state.update(loaded=False, reason=f"build failed: {error}")
                    _LOG.info("r2dn_control C++ kernels unavailable: %s", error)
                else:
                    _state.update(loaded=True, reason="loaded")
                _state["seconds"] = time.perf_counter() - start
    return bool(_state["loaded"])


def status() -> str:
    """Why the kernels are (not) in use, and how long building/loading took."""
    seconds = _state["seconds"]
    took = "" if seconds is None else f" ({seconds:.1f} s to build/load)"
    return f"{_state['reason']}{took}"


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Within this block (this thread), :func:`available` is False: the pure-torch paths run.

    Used by the tests and benchmarks to compare the kernels with the reference code in one
    process.
    """
    _suspended.depth = getattr(_suspended, "depth", 0) + 1
    try:
        yield
    finally:
        _suspended.depth -= 1


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels apply to these tensors: all on the CPU, float32 or float64 alike.

    CUDA (or any other device) and other dtypes go to the pure-torch path automatically.
    """
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    if any(t.device != first.device or t.dtype != first.dtype for t in tensors[1:]):
        return False
    return available()


def ops() -> Any:
    """``torch.ops.r2dn_control`` (call :func:`available` first)."""
    return torch.ops.r2dn_control
