"""Save and load recurrent models with the constructor arguments needed to rebuild them.

A checkpoint is a plain ``torch.save`` dict (loadable with ``weights_only=True``)::

    {"format": "r2dn-control/1", "class": "r2dn_control.nn.r2dn:LipschitzR2DN",
     "kwargs": {...}, "state_dict": {...}, "metadata": {...}}
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np
import torch

from .base import RecurrentModel

FORMAT = "r2dn-control/1"


def _plain(value: Any) -> Any:
    """Constructor arguments as primitives (tensors/arrays → lists, dtypes → names)."""
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                          dtype=np.float64).tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    return value


def _restore(value: Any) -> Any:
    if isinstance(value, dict) and "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


def save_model(model: RecurrentModel, path: str | os.PathLike, **metadata: Any) -> None:
    """Write ``model`` (class, constructor arguments, weights) and JSON-able ``metadata``."""
    if not isinstance(model, RecurrentModel):
        raise TypeError(f"save_model expects a RecurrentModel, got {type(model).__name__}")
    cls = type(model)
    kwargs = {k: v for k, v in model.init_kwargs.items() if k not in ("device",)}
    torch.save({
        "format": FORMAT,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "kwargs": _plain(kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": _plain(metadata),
    }, os.fspath(path))


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[RecurrentModel, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, metadata)``."""
    blob = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not an r2dn-control checkpoint (format {FORMAT!r})")
    module_name, _, qualname = blob["class"].partition(":")
    if not module_name.startswith("r2dn_control."):
        raise ValueError(f"refusing to load class {blob['class']!r} from outside r2dn_control")
    cls = getattr(importlib.import_module(module_name), qualname)
    model = cls(**_restore(blob["kwargs"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(map_location), blob.get("metadata", {})
