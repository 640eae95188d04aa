"""Atomic, code-free training checkpoints (every epoch) for `fit`.

A checkpoint is a ``torch.save`` dict of tensors, numbers, strings, lists and dicts only, so it
loads with ``weights_only=True`` (nothing in it can run code). It is written to a temporary file
in the same folder, flushed to disk, then renamed over the old one (``os.replace`` is atomic on
POSIX and Windows): a run killed at any instant leaves either the previous or the new checkpoint,
never a half-written one.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
FORMAT = "r2dn-control-sysid-fit/1"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename ``tmp_path`` to ``path`` once it is on disk."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write a training-state dict (see `load_checkpoint`)."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (``weights_only=True``)."""
    blob = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sysid training checkpoint (format {FORMAT!r})")
    return blob
