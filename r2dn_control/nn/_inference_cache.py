"""Reuse of a model's explicit weights between inference calls whose inputs to the map are
unchanged.

The direct-to-explicit map (docs/theory.md §1–§3) is a deterministic function of the model's
parameters, buffers and scalar settings. Under ``torch.no_grad`` (or when nothing requires a
gradient) its result carries no autograd graph, so a later call may return the same explicit
model — provided nothing it depends on has changed. The check is by value, not by
bookkeeping: the parameters and buffers of the model (and of every submodule) are compared
bit for bit (their raw bytes, so NaN and −0.0 compare exactly) against a snapshot kept with
the cached result, together with their names, shapes, dtypes and devices and every scalar
(bool/int/float/str/None) attribute of every submodule. It therefore sees every way of
changing a parameter: optimizer steps, ``load_state_dict``, ``p.data`` writes (which version
counters miss), re-assigned ``nn.Parameter`` objects, and changed settings such as the
contraction rate. On the CPU one check is one C++ call (``snapshot_equal``: a ``memcmp`` of
every tensor against the snapshot); elsewhere one concatenation and one ``torch.equal`` per
(dtype, device) group. Either is negligible next to the map it saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from . import cpp

_SCALARS = (bool, int, float, str, type(None))
_Value = TypeVar("_Value")


def _gather(module: nn.Module) -> tuple[tuple, list[Tensor]]:
    """``(layout, tensors)``: every parameter and buffer of ``module`` and its submodules, and
    a hashable description of them (names, shapes, dtypes, devices) and of every scalar
    instance attribute of every submodule."""
    tensors: list[Tensor] = []
    layout: list[object] = []
    for sub in module.modules():
        layout.append(tuple(item for item in sub.__dict__.items()
                            if isinstance(item[1], _SCALARS)))
        for group in (sub._parameters, sub._buffers):
            for name, t in group.items():
                if t is not None:
                    tensors.append(t)
                    layout.append((name, t.shape, t.dtype, t.device))
    return tuple(layout), tensors


def _native(tensors: list[Tensor]) -> bool:
    """Whether the C++ snapshot operators apply: contiguous CPU tensors, kernels built."""
    return (all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
            and cpp.available())


def _snapshot(tensors: list[Tensor]) -> list[Tensor]:
    """A copy of the tensors' bytes: one uint8 tensor (C++), or one per (dtype, device) group
    of concatenated values viewed as bytes (torch; any device)."""
    if _native(tensors):
        return [cpp.ops().snapshot_bytes(tensors)]
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t.detach().reshape(-1))
    return [torch.cat(parts).view(torch.uint8) for parts in groups.values()]


def _matches(tensors: list[Tensor], snapshot: list[Tensor]) -> bool:
    """Whether the tensors' bytes equal ``snapshot`` (taken by `_snapshot` with the same
    layout)."""
    if len(snapshot) == 1 and snapshot[0].device.type == "cpu" and _native(tensors):
        return bool(cpp.ops().snapshot_equal(tensors, snapshot[0]))
    current = _snapshot(tensors)
    return len(current) == len(snapshot) and all(
        torch.equal(a, b) for a, b in zip(current, snapshot, strict=True))


@dataclass
class _Entry:
    layout: tuple
    snapshot: list[Tensor]
    value: object


class InferenceCache:
    """One cached value per key (e.g. the target dtype), valid while the module's parameters,
    buffers and scalar settings are bit-for-bit those it was computed from."""

    def __init__(self) -> None:
        self._entries: dict[object, _Entry] = {}

    def clear(self) -> None:
        """Forget every cached value (e.g. after ``.to()``)."""
        self._entries.clear()

    def get(self, module: nn.Module, key: object, build: Callable[[], _Value]) -> _Value:
        """The value cached under ``key`` if ``module`` is unchanged since it was built, else
        ``build()`` (then cached). Call only where ``build()``'s result needs no autograd
        graph (the caller's responsibility: ``torch.no_grad`` or nothing requires grad)."""
        with torch.no_grad():
            layout, tensors = _gather(module)
            entry = self._entries.get(key)
            if entry is not None and entry.layout == layout and _matches(tensors,
                                                                         entry.snapshot):
                return entry.value  # type: ignore[return-value]
            self._entries.pop(key, None)
            snapshot = _snapshot(tensors)
        value = build()
        self._entries[key] = _Entry(layout, snapshot, value)
        return value


def needs_no_graph(module: nn.Module) -> bool:
    """Whether a map of ``module``'s parameters computed now would carry no autograd graph:
    gradients are off, or no parameter requires one."""
    return not torch.is_grad_enabled() or not any(p.requires_grad for p in module.parameters())
