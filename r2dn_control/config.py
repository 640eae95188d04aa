"""Package-wide settings in one place: read them from `defaults`, change them with
`set_defaults`, restore them with `reset_defaults`.

============================  ==========  ====================================================
key                           default     meaning
============================  ==========  ====================================================
``nn.cpp.disable``            None        True: never build/load the C++ CPU kernels (pure
                                          torch everywhere); False: use them; None: follow the
                                          environment variable ``R2DN_DISABLE_CPP`` (``1``
                                          disables), read when the kernels are first needed.
``nn.cpp.loop_width``         128         Widest LBDN layer for which the C++ R2DN loop runs
                                          its hand-vectorised lanes (wider: its ATen loop).
``nn.cpp.maps``               True        Run the R2DN's direct-to-explicit maps (LBDN
                                          weights, contracting LTI blocks) in C++ on the CPU;
                                          False: their torch Functions (same math).
``nn.cpp.retain_heap``        False       True: when the C++ kernels load, set glibc's
                                          malloc to keep freed blocks up to 32 MiB (up to 256
                                          MiB in all) in the process instead of returning
                                          them, so per-call buffers are not page-faulted in
                                          again (process-wide, once; see
                                          ``r2dn_control/nn/cpp/heap.py``). Off in a library
                                          import (it changes malloc for the whole process);
                                          the package's own commands (``r2dn-control``,
                                          ``python -m r2dn_control.sysid``) apply it at
                                          start. Read when the kernels load.
``certify.scs_accuracy``      1e-9        Accuracy (SCS ``eps_abs`` and ``eps_rel``) the
                                          first-order SDP solver is asked for. The float64
                                          re-validation of a certificate needs no tolerance:
                                          it compares λ_min(M) with a computed rounding bound
                                          (docs/theory.md §4, §6). Formerly
                                          ``certify.validation_tol`` (deprecated alias).
``certify.large_lmi``         400         LMI dimension above which the dense SDP uses SCS
                                          instead of an interior-point solver.
``certify.threads``           1           BLAS threads for one certificate (``contraction``,
                                          ``lipschitz``). 1: one OpenBLAS thread, torch's count
                                          untouched (measured best on a shared 2-core machine,
                                          docs/performance.md); k ≥ 2: exactly k OpenBLAS and
                                          torch threads (may exceed the environment's count);
                                          None: 1 below ``certify.threads_from`` states, the
                                          OpenBLAS pool's current count from there on.
``certify.threads_from``      1024        State dimension from which ``certify.threads=None``
                                          uses the pool's threads.
``export.certificate_rtol``   1e-6        How far (relative) the bound certified on the
                                          exported (rounded) weights may exceed the guaranteed
                                          one before an export is refused; also the largest
                                          relaxation of R tried for a (Q,S,R) supply
                                          (docs/deployment.md).
============================  ==========  ====================================================

Example::

    from r2dn_control import config
    config.set_defaults("nn.cpp", disable=True)   # pure-torch rollouts in this process

The settings are process-wide, like python-control's ``control.config``; they are read when
used, so changing one affects later calls only. Nothing here touches torch's own global flags.

A renamed key keeps working for one release under its old name (`DEPRECATED`), in
`set_defaults` and in ``defaults[...]``, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

#: The environment variable behind ``nn.cpp.disable=None``.
DISABLE_CPP_ENV = "R2DN_DISABLE_CPP"

_FACTORY: dict[str, Any] = {
    "nn.cpp.disable": None,
    # Measured (2-core EPYC, batch 64, T = 128, six hidden layers): the lane loops beat the
    # ATen loop at every width tried (8 … 256) on one thread and up to 96 on two; at 128 on two
    # threads they broke even (lane forward faster, ATen adjoint faster), hence the limit. See
    # r2dn_control/nn/fused_rollout.md.
    "nn.cpp.loop_width": 128,
    "nn.cpp.maps": True,
    # Measured (same machine, 6×8 training call): 600–1,250 page faults per call without it.
    "nn.cpp.retain_heap": False,
    "certify.scs_accuracy": 1e-9,
    "certify.large_lmi": 400,
    "certify.threads": 1,
    "certify.threads_from": 1024,
    "export.certificate_rtol": 1e-6,
}
_TYPES: dict[str, tuple[type, ...]] = {
    "nn.cpp.disable": (bool, type(None)),
    "nn.cpp.loop_width": (int,),
    "nn.cpp.maps": (bool,),
    "nn.cpp.retain_heap": (bool,),
    "certify.scs_accuracy": (float,),
    "certify.large_lmi": (int,),
    "certify.threads": (int, type(None)),
    "certify.threads_from": (int,),
    "export.certificate_rtol": (float,),
}

#: Old key → new key, accepted with a ``DeprecationWarning`` until the next release.
DEPRECATED: dict[str, str] = {"certify.validation_tol": "certify.scs_accuracy"}


def _current_key(key: str, stacklevel: int) -> str:
    """``key``, or its new name (with a ``DeprecationWarning``) when it was renamed."""
    new = DEPRECATED.get(key)
    if new is None:
        return key
    warnings.warn(f"the setting {key!r} is deprecated: it sets the SCS accuracy, use {new!r}",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    return new


class _Settings(dict[str, Any]):
    """The settings dict; a deprecated key reads and writes its new name (with a warning)."""

    def __missing__(self, key: str) -> Any:
        if key in DEPRECATED:
            return self[_current_key(key, stacklevel=2)]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(_current_key(key, stacklevel=2) if key in DEPRECATED else key, value)


#: The current settings (see the module docstring for the keys).
defaults: dict[str, Any] = _Settings(copy.deepcopy(_FACTORY))


def _check(key: str, value: Any) -> Any:
    types = _TYPES[key]
    if value is None and type(None) in types:
        return None
    if bool in types:
        if not isinstance(value, types):
            raise TypeError(f"{key} must be True, False or None, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number, got {type(value).__name__} {value!r}")
    if int in types and value != int(value):
        raise TypeError(f"{key} must be an int, got {value!r}")
    value = types[0](value)
    if key == "nn.cpp.loop_width" and value < 0:
        raise ValueError(f"{key} must be >= 0, got {value}")
    if key != "nn.cpp.loop_width" and not value > 0:
        raise ValueError(f"{key} must be > 0, got {value}")
    return value


def set_defaults(module: str, **keywords: Any) -> None:
    """Set ``defaults[f"{module}.{name}"] = value`` for each keyword, e.g.
    ``set_defaults("nn.cpp", disable=True, loop_width=64)``.

    Raises ``ValueError`` for an unknown key and ``TypeError``/``ValueError`` for a bad value
    (nothing is changed then).
    """
    if not isinstance(module, str):
        raise TypeError(f"module must be a str such as 'nn.cpp', got {module!r}")
    updates = {}
    for name, value in keywords.items():
        key = _current_key(f"{module}.{name}", stacklevel=2)
        if key not in _FACTORY:
            raise ValueError(f"unknown setting {key!r}; known: {sorted(_FACTORY)}")
        updates[key] = _check(key, value)
    defaults.update(updates)


def reset_defaults() -> None:
    """Restore every setting to its factory value."""
    defaults.clear()
    defaults.update(copy.deepcopy(_FACTORY))


def cpp_disabled() -> bool:
    """Whether the C++ kernels are switched off (``nn.cpp.disable``, else the environment)."""
    setting = defaults["nn.cpp.disable"]
    if setting is not None:
        return bool(setting)
    return os.environ.get(DISABLE_CPP_ENV, "0") not in ("", "0")
