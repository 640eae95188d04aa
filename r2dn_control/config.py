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
``certify.validation_tol``    1e-9        Accuracy (SCS ``eps_abs`` and ``eps_rel``) the
                                          first-order SDP solver is asked for. The float64
                                          re-validation of a certificate needs no tolerance:
                                          it compares λ_min(M) with a computed rounding bound
                                          (docs/theory.md §4, §6).
``certify.large_lmi``         400         LMI dimension above which the dense SDP uses SCS
                                          instead of an interior-point solver.
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
"""

from __future__ import annotations

import copy
import os
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
    "certify.validation_tol": 1e-9,
    "certify.large_lmi": 400,
    "export.certificate_rtol": 1e-6,
}
_TYPES: dict[str, tuple[type, ...]] = {
    "nn.cpp.disable": (bool, type(None)),
    "nn.cpp.loop_width": (int,),
    "certify.validation_tol": (float,),
    "certify.large_lmi": (int,),
    "export.certificate_rtol": (float,),
}

#: The current settings (see the module docstring for the keys).
defaults: dict[str, Any] = copy.deepcopy(_FACTORY)


def _check(key: str, value: Any) -> Any:
    types = _TYPES[key]
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
        key = f"{module}.{name}"
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
