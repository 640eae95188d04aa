"""``to_onnx`` and ``to_c``: write an artifact, its sidecar JSON, after re-checking the certificate."""

from __future__ import annotations

import json
import os
import pathlib

import torch

from ..nn.base import RecurrentModel
from ..nn.checkpoint import _plain
from ..nn.realtime import StepForm
from . import c as c_export
from .certificate import certificate_record, comment_lines
from .files import atomic_write, sha256_file

SIDECAR_FORMAT = "r2dn-control-export/1"
DTYPES = (torch.float32, torch.float64)


def _prepare(model: object, dtype: torch.dtype, on_failure: str) -> tuple[StepForm, dict]:
    if not isinstance(model, RecurrentModel):
        raise TypeError(f"export expects a RecurrentModel (R2DN/REN), got {type(model).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    with torch.no_grad():
        exported = model.explicit(dtype)
    record = certificate_record(model, exported, dtype, on_failure)
    return StepForm.from_explicit(exported), record


def _sidecar(model: RecurrentModel, form: StepForm, record: dict, artifact: dict) -> dict:
    cls = type(model)
    return {
        "format": SIDECAR_FORMAT,
        "model": f"{cls.__module__}:{cls.__qualname__}",
        "kwargs": _plain({k: v for k, v in model.init_kwargs.items() if k != "device"}),
        "sizes": {"nu": form.nu, "nx": form.nx, "nv": form.nv, "ny": form.ny},
        "activation": form.activation,
        "exported_dtype": str(form.dtype).removeprefix("torch."),
        "artifact": artifact,
        "certificate": record,
        "torch_version": torch.__version__,
    }


def _write_sidecar(path: pathlib.Path, sidecar: dict) -> pathlib.Path:
    return atomic_write(path, (json.dumps(sidecar, indent=1) + "\n").encode())


def to_onnx(model: RecurrentModel, path: str | os.PathLike, mode: str = "step", *,
            dtype: torch.dtype = torch.float32, on_failure: str = "raise") -> dict:
    """Export ``model`` as ONNX (``mode="step"`` or ``"sequence"``) and a sidecar JSON.

    Parameters
    ----------
    model : RecurrentModel
    path : path-like
        The ``.onnx`` file; the sidecar is written beside it as ``<path>.json``.
    mode : {"step", "sequence"}
        One step ``(u, x) -> (y, x_next)``, or a rollout ``(u (B,T,nu), x0) -> (y, x_final)``.
    dtype : torch.float32 or torch.float64
        Precision of the stored weights (and of the graph).
    on_failure : {"raise", "warn"}
        What to do when the certificate does not hold on the ``dtype`` weights
        (`CertificateError`, or a ``RuntimeWarning``).

    Returns
    -------
    dict
        The sidecar's content.
    """
    from .onnx import onnx_model

    form, record = _prepare(model, dtype, on_failure)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = "\n".join(comment_lines(record))
    atomic_write(path, onnx_model(form, mode, doc).SerializeToString())
    sidecar = _sidecar(model, form, record, {"format": "onnx", "mode": mode,
                                             "files": {path.name: sha256_file(path)}})
    _write_sidecar(path.with_name(path.name + ".json"), sidecar)
    return sidecar


def to_c(model: RecurrentModel, directory: str | os.PathLike, name: str = "r2dn", *,
         dtype: torch.dtype = torch.float32, on_failure: str = "raise") -> dict:
    """Export ``model`` as dependency-free C99 ``name.h`` / ``name.c`` and ``name.json``.

    The step is ``name_step(const name_real *u, name_real *x, name_real *y)`` with
    ``name_real`` = ``float`` (``dtype=torch.float32``) or ``double``; define
    ``NAME_REAL=double`` (upper-case name) when compiling to build in the other precision.
    The header starts with the certificate as a comment. ``on_failure`` as in `to_onnx`.
    """
    c_export.check_name(name)
    form, record = _prepare(model, dtype, on_failure)
    directory = pathlib.Path(directory)
    comment = "\n".join([f"{name}: {type(model).__name__} exported by r2dn-control "
                         f"({str(dtype).removeprefix('torch.')} weights)",
                         f"sizes: nu={form.nu} nx={form.nx} nv={form.nv} ny={form.ny}, "
                         f"activation {form.activation}", "", *comment_lines(record)])
    paths = c_export.write_c(form, directory, name, comment)
    sidecar = _sidecar(model, form, record, {
        "format": "c", "step": f"void {name}_step(const {name}_real *u, {name}_real *x, "
                               f"{name}_real *y)",
        "files": {k: sha256_file(p) for k, p in paths.items()}})
    _write_sidecar(directory / f"{name}.json", sidecar)
    return sidecar
