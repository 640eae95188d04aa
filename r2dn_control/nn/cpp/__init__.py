"""Build-on-first-use C++ CPU kernels (``torch.ops.r2dn_control.*``) with a pure-torch fallback.

The sources beside this file are compiled once per machine with the system C++ compiler (``-O3
-march=native``) through `torch.utils.cpp_extension.load` and cached in torch's extensions
directory (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), in a folder named
after the CPU and a hash of the sources (location and content) and flags (different kernels or
checkouts never share one); later processes only load the cached library. The first compilation
(about a minute) is announced by one WARNING log line; prebuild with ``python -m
r2dn_control.nn.cpp`` or `build`. When no compiler is found or the build fails, `available`
returns False, one ``RuntimeWarning`` says why, and callers take their pure-torch path. Disabled
(``R2DN_DISABLE_CPP=1`` or ``r2dn_control.config.set_defaults("nn.cpp", disable=True)``) it
returns False silently. `status` says why.

Operators (CPU, float32/float64; math contracts in ``r2dn_control/nn/fused_ren.md`` and
``r2dn_control/nn/fused_rollout.md``):

* ``equilibrium_forward(D11, b, activation) -> w``
* ``equilibrium_adjoint(D11, w, g, activation) -> ∂L/∂b``
* ``ren_forward(x0, dx, dv, A, B1, C1, D11, activation) -> (xs, ws, x_T)``
* ``ren_adjoint(g_xs, g_ws, g_final, ws, A, B1, C1, D11, activation) -> (λ_next, g_v, λ_0)``
* ``r2dn_forward(x0, dx, dv, A, B1, C1, weights, biases, activation, max_loop_width, save)
  -> (x_0..T, vs, ws, acts)`` (``save=False``: inference, vs and acts are not kept)
* ``r2dn_adjoint(g_xs, g_ws, g_final, A, B1, C1, weights, vs, acts, activation, max_loop_width)
  -> (λ_0..T, g_w, g_v, g_z, ∂W, ∂b)``

* ``snapshot_bytes(tensors) -> bytes`` and ``snapshot_equal(tensors, bytes) -> bool``: the
  raw bytes of contiguous CPU tensors (any dtypes) concatenated, and whether they still match
  (the inference cache of the explicit weights, ``r2dn_control/nn/_inference_cache.py``)

* ``gram_pairs(xs, gs) -> ([xᵀg], [Σ_rows g])``: the weight gradients of the fused rollout
  (tall K×m, K×n pairs, m, n up to a few hundred; ``r2dn_control/nn/fused_rollout.md``)

* ``lbdn_map_forward(weights, scales, log_psis, log_gamma, eps, clip) -> (explicit weights,
  saved)`` and ``lbdn_map_backward(grads, weights, saved, hidden_count, clip) -> (∂/∂weights,
  ∂/∂scales, ∂/∂log_psis, ∂/∂log γ)``: the LBDN's direct-to-explicit weight map, every layer
  at its own size (math in ``r2dn_control/nn/_lbdn_map.py``)
* ``contracting_lti_forward(X, polar, Y, C1, B1_hat, rate, eps, dtype) -> (A, B1, saved)`` and
  ``contracting_lti_backward(g_A, g_B1, saved, X, polar, Y, C1, B1_hat, rate) -> (∂/∂X, ∂/∂p,
  ∂/∂Y, ∂/∂C1, ∂/∂B1_hat)``: the contracting R2DN's LTI map in float64 (math in
  ``r2dn_control/nn/_contracting_map.py``). Both maps are used while the setting
  ``nn.cpp.maps`` is True (`maps_usable`).

``max_loop_width`` (setting ``nn.cpp.loop_width`` in `r2dn_control.config`): networks whose
widths are all at most this run the hand-vectorised lane loops, wider ones the ATen loops.
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

from ... import config

DISABLE_ENV = config.DISABLE_CPP_ENV
SOURCES = tuple(pathlib.Path(__file__).with_name(name)
                for name in ("ren_kernels.cpp", "r2dn_kernels.cpp", "snapshot_kernels.cpp",
                             "gram_kernels.cpp", "explicit_map_kernels.cpp"))
#: Headers the sources include (they change the build as much as the sources do).
HEADERS = tuple(pathlib.Path(__file__).with_name(name)
                for name in ("activation_math.h", "gram_tile.h"))
#: Compiler flags of the kernels.
CFLAGS = ("-O3", "-march=native", "-std=c++17")
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


def _source_tag(files: tuple[pathlib.Path, ...] | None = None,
                flags: tuple[str, ...] | None = None) -> str:
    """A short hash of the kernel sources (their location and content), headers and flags.

    It is part of the library's name, hence of its build folder. The location counts because
    torch writes the sources' absolute paths into the folder's ``build.ninja``: two checkouts
    with identical kernels sharing one folder would rewrite it in turn and make ninja rebuild
    (a minute or more) in every process. So two checkouts, or two versions, never share a
    folder, and neither rebuilds the other's library nor waits on a ``lock`` it left behind.
    """
    digest = hashlib.sha1()
    for path in (SOURCES + HEADERS) if files is None else files:
        digest.update(str(path.resolve()).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(CFLAGS if flags is None else flags).encode())
    return digest.hexdigest()[:10]


def _library_name() -> str:
    """``r2dn_control_kernels_<cpu>_<sources>``: the CPU tag (builds use ``-march=native``)
    and the hash of the sources and flags (`_source_tag`)."""
    return f"r2dn_control_kernels_{_cpu_tag()}_{_source_tag()}"


#: A load that takes longer than this (seconds) is compiling: announce it. Loading a cached
#: build takes well under a second; torch recompiles whenever the sources changed (a new hash
#: means a new folder, so this is a first build or an edited checkout).
ANNOUNCE_AFTER_S = 2.0
_ANNOUNCEMENT = (
    "r2dn_control: compiling the C++ CPU kernels once for this machine (about a minute; later "
    "processes load the cached build). Prebuild with `python -m r2dn_control.nn.cpp`, or "
    "disable them with %s=1 or r2dn_control.config.set_defaults('nn.cpp', disable=True).")


def _build() -> None:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r} not on PATH)")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not available (torch.utils.cpp_extension needs it)")
    # torch's loader may warn (compiler ABI check, missing CUDA): not actionable for users; a
    # failure is reported by available() and the first compilation by the timer below.
    announce = threading.Timer(ANNOUNCE_AFTER_S, _LOG.warning, (_ANNOUNCEMENT, DISABLE_ENV))
    announce.daemon = True
    announce.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpp_extension.load(
                name=_library_name(),
                sources=[str(s) for s in SOURCES],
                extra_cflags=list(CFLAGS),
                is_python_module=False,
                verbose=False,
            )
    finally:
        announce.cancel()


def available() -> bool:
    """Whether the C++ kernels are loaded (building them on the first call).

    Returns False without raising when disabled (``R2DN_DISABLE_CPP=1`` or the
    ``nn.cpp.disable`` setting of `r2dn_control.config`), inside `suspended`, or
    when the build failed (then one ``RuntimeWarning`` per process; see `status`).
    """
    if getattr(_suspended, "depth", 0) or config.defaults["nn.cpp.disable"] is True:
        return False
    loaded = _state["loaded"]
    if loaded is not None:
        return bool(loaded)
    with _lock:
        if _state["loaded"] is None:
            if config.cpp_disabled():
                _state.update(loaded=False, reason=f"disabled by {DISABLE_ENV}")
            else:
                _load()
    return bool(_state["loaded"])


def _load() -> None:
    """Build/load once (caller holds the lock); on failure record why and warn once."""
    start = time.perf_counter()
    try:
        _build()
    except Exception as error:  # any build/load failure means: use pure torch
        _state.update(loaded=False, reason=f"build failed: {error}")
        _LOG.warning("r2dn_control C++ kernels unavailable: %s", error)
        warnings.warn(f"r2dn_control: the C++ CPU kernels could not be built ({error}); using "
                      f"the slower pure-torch paths. Set {DISABLE_ENV}=1 to skip the attempt.",
                      RuntimeWarning, stacklevel=4)
    else:
        _state.update(loaded=True, reason="loaded")
        if config.defaults["nn.cpp.retain_heap"] is True:
            from .heap import retain_freed_memory

            retain_freed_memory()
    _state["seconds"] = time.perf_counter() - start


def build() -> bool:
    """Compile (or load the cached) kernels now instead of on the first forward.

    Ignores ``R2DN_DISABLE_CPP`` and the ``nn.cpp.disable`` setting (an explicit request).
    Returns True when the kernels are loaded; raises ``RuntimeError`` with the reason if the
    build failed.
    """
    with _lock:
        if not _state["loaded"]:
            _state.update(loaded=None)
            _load()
    if not _state["loaded"]:
        raise RuntimeError(f"r2dn_control C++ kernels: {status()}")
    return True


def status() -> str:
    """Why the kernels are (not) in use, and how long building/loading took."""
    seconds = _state["seconds"]
    took = "" if seconds is None else f" ({seconds:.1f} s to build/load)"
    return f"{_state['reason']}{took}"


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Within this block (this thread), `available` is False: the pure-torch paths run.

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


def maps_usable() -> bool:
    """Whether the explicit maps run in C++: kernels `available` and the ``nn.cpp.maps``
    setting of `r2dn_control.config` on (the callers check devices and dtypes)."""
    return config.defaults["nn.cpp.maps"] is True and available()


def ops() -> Any:
    """``torch.ops.r2dn_control`` (call `available` first)."""
    return torch.ops.r2dn_control
