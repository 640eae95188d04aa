"""Save and load recurrent models with the constructor arguments needed to rebuild them.

A checkpoint is a plain ``torch.save`` dict, read back with ``weights_only=True`` (nothing in the
file can run code)::

    {"format": "r2dn-control/2", "class": "LipschitzR2DN", "kwargs": {...},
     "state_dict": {...}, "metadata": {...}, "sha256": "..."}

Guarantees
----------
* Only classes in the explicit registry (`register_model`) are
  constructed, and only with keyword arguments their constructors accept, whose values are
  JSON-like primitives (``None``, bool, int, float, str, lists, str-keyed dicts) or a dtype
  marker ``{"__dtype__": "float64"}``.
* Writes are atomic: a temporary file in the same folder is written, flushed, fsync'ed and moved
  over the target with ``os.replace``; a crash leaves the previous file intact.
* ``sha256`` is the SHA-256 of the class name, the canonical JSON of ``kwargs`` and ``metadata``,
  and every tensor's name, dtype, shape and raw bytes in sorted key order; it is verified on load.
* The dtype is read from the parameters at save time, so ``model.double()`` reloads as float64.
* Non-finite weights are refused at save time unless ``allow_nonfinite=True``.
* Every failure to read a file raises `CheckpointError` (a ``ValueError``) naming it;
  a missing file raises ``FileNotFoundError``.

Files in the earlier format ``"r2dn-control/1"`` (import path as class, no checksum) still load
when the path names a registered class, with a warning that nothing verifies their weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .base import RecurrentModel
from .r2dn import ContractingR2DN, GeneralR2DN, LipschitzR2DN, PassiveR2DN
from .registry import register_model, registered_models, registry_name
from .ren import ContractingREN, GeneralREN, LipschitzREN, PassiveREN

FORMAT = "r2dn-control/2"
LEGACY_FORMAT = "r2dn-control/1"
#: dtypes a model (and so a checkpoint) may have; the algebra needs LAPACK, so no half types.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_KEYS = ("format", "class", "kwargs", "state_dict", "metadata")

for _family in (ContractingR2DN, GeneralR2DN, LipschitzR2DN, PassiveR2DN,
                ContractingREN, GeneralREN, LipschitzREN, PassiveREN):
    register_model(_family)


class CheckpointError(ValueError):
    """A file could not be loaded as an r2dn-control checkpoint (the message names the file)."""


# --------------------------------------------------------------------------- plain values
def to_plain(value: Any, where: str = "value") -> Any:
    """``value`` as JSON-like primitives: arrays/tensors → nested lists, numpy scalars → Python
    scalars, dtypes → ``{"__dtype__": name}``, devices → str.

    Raises ``TypeError`` naming ``where`` for anything else (it could not be loaded back).
    """
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return to_plain(value.item(), where)
    if value is None or type(value) in (bool, int, float, str):
        return value
    for plain in (bool, int, float, str):  # other subclasses (IntEnum, ...) as the base type
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _plain_array(value, where)
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be str, got {type(key).__name__} {key!r}")
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where} must be None, bool, int, float, str, a list/dict of those, an array or a "
        f"dtype, got {type(value).__name__}"
    )


def _plain_array(value: torch.Tensor | np.ndarray, where: str) -> list:
    """A real or integer tensor/array as nested lists (``TypeError`` for other dtypes)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    if array.dtype.kind in "biuf":
        return array.tolist()
    raise TypeError(f"{where} must be a real or integer array, got dtype {array.dtype}")


#: The name r2dn_control.export uses (kept so its sidecar stays in step with checkpoints).
_plain = to_plain


def _check_plain(value: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a JSON-like primitive tree (or a dtype marker)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        if "__dtype__" in value:
            if set(value) != {"__dtype__"} or value["__dtype__"] not in DTYPES:
                raise ValueError(f"{where} must be a dtype marker for one of {list(DTYPES)}, "
                                 f"got {value!r}")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-str key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where} must hold only JSON-like values, got {type(value).__name__}")


def _restore(value: Any) -> Any:
    if isinstance(value, dict) and "__dtype__" in value:
        return DTYPES[value["__dtype__"]]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- checksum
def checksum(class_name: str, kwargs: dict, state_dict: dict[str, torch.Tensor],
             metadata: dict) -> str:
    """SHA-256 over the class name, canonical JSON of kwargs and metadata, and each tensor's
    name, dtype, shape and bytes in sorted key order."""
    digest = hashlib.sha256()
    canonical = json.dumps([class_name, kwargs, metadata], sort_keys=True, allow_nan=True)
    digest.update(canonical.encode())
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- save
def save_model(model: RecurrentModel, path: str | os.PathLike, *, allow_nonfinite: bool = False,
               **metadata: Any) -> None:
    """Atomically write ``model`` (registry name, constructor arguments, weights, checksum).

    Parameters
    ----------
    model : RecurrentModel
        An instance of a registered class (every built-in family is).
    path : str or os.PathLike
        Target file; replaced atomically (the previous file survives any crash).
    allow_nonfinite : bool
        Write NaN/inf weights instead of refusing them.
    **metadata
        JSON-like values (numpy scalars and arrays are converted to Python values).

    Raises
    ------
    TypeError
        ``model`` is not a RecurrentModel, or a metadata/constructor value cannot be stored.
    ValueError
        The class is not registered, or the weights are not finite (and not allowed).
    """
    if not isinstance(model, RecurrentModel):
        raise TypeError(f"save_model expects a RecurrentModel, got {type(model).__name__}")
    name = registry_name(type(model))
    varargs = [p.name for p in inspect.signature(type(model).__init__).parameters.values()
               if p.kind is p.VAR_POSITIONAL]
    if varargs and varargs[0] in model.init_kwargs:
        raise TypeError(f"{type(model).__qualname__}.__init__ takes *{varargs[0]}: a checkpoint "
                        "rebuilds a model from keyword arguments only, so name its parameters")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if not allow_nonfinite:
        for key, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"refusing to save non-finite weights in {key!r} "
                                 "(pass allow_nonfinite=True to save them anyway)")
    kwargs = {k: v for k, v in model.init_kwargs.items() if k != "device"}
    kwargs["dtype"] = model.dtype  # the parameters' dtype now, e.g. after model.double()
    kwargs["eps"] = model.eps  # fixed at construction from the dtype then: keep it, not recompute
    plain_kwargs = to_plain(kwargs, "constructor argument")
    plain_metadata = to_plain(metadata, "metadata")
    blob = {"format": FORMAT, "class": name, "kwargs": plain_kwargs, "state_dict": state,
            "metadata": plain_metadata,
            "sha256": checksum(name, plain_kwargs, state, plain_metadata)}
    _atomic_save(blob, os.fspath(path))


def _atomic_save(blob: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(blob, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX; not on Windows)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# --------------------------------------------------------------------------- load
def _allowed_arguments(cls: type) -> set[str]:
    """Keyword names ``cls(...)`` accepts, following ``**kwargs`` up the constructors."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, RecurrentModel)):
            break
        if "__init__" not in klass.__dict__:
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"device"}


def _resolve_class(blob: dict, fail) -> type[RecurrentModel]:
    registry = registered_models()
    name = blob["class"]
    if not isinstance(name, str):
        fail(f"its class must be a str, got {type(name).__name__}")
    if blob["format"] == LEGACY_FORMAT:  # format 1 stored "module:qualname"
        for cls in registry.values():
            if f"{cls.__module__}:{cls.__qualname__}" == name:
                return cls
    elif name in registry:
        return registry[name]
    fail(f"its class {name!r} is not a registered model class "
         f"(registered: {sorted(registry)}); refusing to construct it")
    raise AssertionError  # unreachable: fail raises


def _read_checkpoint(path: str, fail: Callable[..., Any]) -> dict[str, Any]:
    """The checkpoint's dict, with its entries' types checked (``fail`` raises otherwise)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        fail("it is a directory")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, OSError, UnpicklingError, KeyError, RuntimeError, ...
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split(". ")[0].strip()
        fail(f"the file is corrupt or not a torch checkpoint ({type(err).__name__}: {detail})",
             err)
    if not isinstance(blob, dict) or blob.get("format") not in (FORMAT, LEGACY_FORMAT):
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        fail(f"not an r2dn-control checkpoint (expected format {FORMAT!r}, got {found!r})")
    missing = [k for k in _KEYS if k not in blob and k != "metadata"]
    if missing:
        fail(f"missing entries {missing}")
    kwargs, state, metadata = blob["kwargs"], blob["state_dict"], blob.get("metadata", {})
    if not isinstance(kwargs, dict) or not isinstance(metadata, dict):
        fail("kwargs and metadata must be dicts")
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        fail("state_dict must map str to tensors")
    try:
        _check_plain(kwargs, "kwargs")
        _check_plain(metadata, "metadata")
    except ValueError as err:
        fail(str(err), err)
    return blob


def _verify_checksum(blob: dict[str, Any], path: str, fail: Callable[..., Any]) -> None:
    """Check the SHA-256 of a current-format checkpoint; warn that a legacy one has none."""
    if blob["format"] == FORMAT:
        stored = blob.get("sha256")
        if not isinstance(stored, str):
            fail("it has no sha256 checksum")
        if checksum(blob["class"], blob["kwargs"], blob["state_dict"],
                    blob.get("metadata", {})) != stored:
            fail("SHA-256 checksum mismatch: the weights or arguments were modified or corrupted")
    else:
        warnings.warn(f"checkpoint {path!r} has the old format {LEGACY_FORMAT!r} without a "
                      "checksum: its weights cannot be verified; save it again to add one",
                      UserWarning, stacklevel=3)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[RecurrentModel, dict[str, Any]]:
    """Rebuild a model saved by `save_model`; returns ``(model, metadata)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is unreadable, corrupt, fails its checksum, names an unregistered class or
        arguments its constructor does not take, or its weights do not fit the model.
    """
    path = os.fspath(path)

    def fail(reason: str, cause: BaseException | None = None):
        raise CheckpointError(f"cannot load checkpoint {path!r}: {reason}") from cause

    blob = _read_checkpoint(path, fail)
    kwargs, state, metadata = blob["kwargs"], blob["state_dict"], blob.get("metadata", {})
    cls = _resolve_class(blob, fail)
    _verify_checksum(blob, path, fail)
    unknown = sorted(set(kwargs) - _allowed_arguments(cls))
    if unknown:
        fail(f"{cls.__qualname__} does not take the arguments {unknown}")
    try:
        model = cls(**_restore(kwargs))
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as err:
        fail(f"its arguments or weights do not fit {cls.__qualname__}: {err}", err)
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            warnings.warn(f"checkpoint {path!r} holds non-finite weights in {key!r}",
                          RuntimeWarning, stacklevel=2)
            break
    return model.to(map_location), metadata
