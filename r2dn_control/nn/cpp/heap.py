"""Keep freed heap memory in the process, so per-call tensor buffers do not page-fault.

A training call of a small R2DN allocates a few MB of buffers (the time loops' saved states
and activations, their gradients) and frees them at the end of the backward pass. With glibc's
default malloc, blocks over 128 KiB come from ``mmap`` and go back to the kernel when freed,
and the top of the heap is trimmed once more than twice the largest freed block is free, so
the next call gets fresh pages: every 4 KiB page is faulted in and zeroed again. Measured at
ContractingR2DN(1, 1, 16, 1), six relu layers of width 8, batch 64, T = 128 (one thread):
600–1,250 minor page faults per forward+backward, 0.6–2.4 ms of a 5–7 ms call.

`retain_freed_memory` raises glibc's mmap threshold to 32 MiB (its maximum on 64-bit systems:
blocks up to that size come from the heap and are reused) and its trim threshold to 256 MiB
(the process keeps up to that much freed heap instead of returning it), i.e. what
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment would do. It is
process-wide, so a library import never does it on its own: the C++ kernels' loader applies it
once when they load if the setting ``nn.cpp.retain_heap`` of `r2dn_control.config` is True
(default False), and the package's own commands (``r2dn-control``, ``python -m
r2dn_control.sysid``), which own their process, call `retain_freed_memory` at start.
Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: glibc's ``mallopt`` parameters (``<malloc.h>``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: The values applied (bytes): the largest mmap threshold glibc accepts on 64-bit systems, and
#: how much freed heap the process may keep.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024

_applied: list[bool] = []


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring) once per process.

    Returns True when both were set (now or by an earlier call), False where the C library is
    not glibc or ``mallopt`` refused.
    """
    if _applied:
        return _applied[0]
    ok = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # The mmap threshold first: setting either one freezes glibc's dynamic threshold.
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _applied.append(ok)
    return ok
