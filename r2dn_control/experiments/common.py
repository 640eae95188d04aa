"""Shared plumbing of the experiments: run folders, atomic files, timing, models, plots.

Every run writes ``<out>/<experiment>-<model>-<seed>/`` with

* ``config.json``: the resolved configuration (preset name, seed, device, every field);
* ``metrics.json``: test metric, time per epoch (median over epochs, the first excluded),
  parameter count, certified bounds with their status;
* ``curves.json`` and ``loss.png``: the loss curves;
* the experiment's characteristic plot (PNG);
* ``model.pt`` (`r2dn_control.nn.checkpoint.save_model`) and ``certificate.json``.

Files are written atomically (temporary file, then ``os.replace``): an interrupted run never
leaves a half-written file under its final name.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..nn import RecurrentModel

FAMILIES = ("r2dn", "ren")
METRICS_FORMAT = "r2dn-control-run/1"


class ExperimentError(Exception):
    """A usage or file error the CLI reports in one line with exit status 2."""


# ---------------------------------------------------------------------------- files
def check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless each named field of ``config`` is a positive int (no bools)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (non-finite floats become null)."""
    text = json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    _atomic(Path(path), write)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or unparseable file is an `ExperimentError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(f"{path}: no such file") from None
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentError(f"{path}: not valid JSON (truncated or corrupt file?): "
                              f"{exc.msg} at line {exc.lineno}") from None


def save_checkpoint(model: RecurrentModel, path: str | os.PathLike, **metadata: Any) -> None:
    """`save_model`, written atomically."""
    from ..nn.checkpoint import save_model

    _atomic(Path(path), lambda tmp: save_model(model, tmp, **metadata))


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

    try:
        _atomic(Path(path), write)
    finally:
        plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - the plot extra is part of the default setup
        raise ExperimentError("plots need matplotlib: pip install 'r2dn-control[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- runs
def run_name(experiment: str, family: str, seed: int) -> str:
    return f"{experiment}-{family}-{seed}"


def config_dict(config: Any) -> dict[str, Any]:
    """A frozen-dataclass config as a JSON-able dict (tuples become lists)."""
    if not is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(asdict(config)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from `config_dict` output (lists back to tuples).

    A field missing from ``data`` that the class lists in its ``LEGACY_FIELDS`` (fields added
    after older runs were written) takes that legacy value, i.e. what the run actually used,
    not today's default; any other missing field takes its default.
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected some of "
                         f"{sorted(names)}")
    legacy = {k: v for k, v in getattr(cls, "LEGACY_FIELDS", {}).items() if k not in data}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()} | legacy
    return cls(**kwargs)


def resolve_device(device: str) -> torch.device:
    """``"cpu"`` or ``"cuda"``; CUDA that is not available is an `ExperimentError`."""
    if device not in ("cpu", "cuda"):
        raise ExperimentError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExperimentError(f"--device cuda: no CUDA device is available to this torch "
                              f"build ({torch.__version__}); use --device cpu")
    return torch.device(device)


def parameter_count(module: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class EpochTimer:
    """Wall time of each epoch; ``summary()`` excludes the first (warm-up, kernel builds)."""

    seconds: list[float] = field(default_factory=list)

    @contextmanager
    def epoch(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        timed = self.seconds[1:] if len(self.seconds) > 1 else self.seconds
        return {
            "median_s": statistics.median(timed) if timed else None,
            "mean_s": statistics.fmean(timed) if timed else None,
            "epochs_timed": len(timed),
            "first_epoch_s": self.seconds[0] if self.seconds else None,
            "excludes_first_epoch": len(self.seconds) > 1,
            "total_s": sum(self.seconds),
        }


def certificate_summary(result: Any) -> dict[str, Any]:
    """Status, bound and method of a `CertificateResult`."""
    return {"status": result.status, "bound": result.bound, "margin": result.margin,
            "solver": result.solver, "seconds": result.seconds, "message": result.message}


def environment() -> dict[str, Any]:
    """Hardware and software the run used (for the results tables)."""
    import platform

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


def write_run(run_dir: Path, *, experiment: str, family: str, seed: int, preset: str,
              device: torch.device, config: Any, metrics: dict[str, Any],
              curves: dict[str, list[float]], certificates: dict[str, Any]) -> dict[str, Any]:
    """Write config.json, curves.json, certificate.json, metrics.json and loss.png.

    ``metrics`` must hold ``test_metric`` ({"name", "value", "lower_is_better"}),
    ``epoch_time`` (`EpochTimer.summary`) and ``parameters``; ``certificates`` maps a
    label to a `CertificateResult`. Returns the metrics dict as written.
    """
    header = {"experiment": experiment, "model": family, "seed": seed, "preset": preset,
              "device": str(device)}
    write_json(run_dir / "config.json", {**header, "config": config_dict(config)})
    write_json(run_dir / "curves.json", curves)
    write_json(run_dir / "certificate.json",
               {label: res.to_dict(include_matrices=True) for label, res in certificates.items()})
    full = {"format": METRICS_FORMAT, **header, **metrics,
            "certificates": {k: certificate_summary(v) for k, v in certificates.items()},
            "environment": environment()}
    plot_curves(curves, run_dir / "loss.png", f"{experiment}: {family.upper()} (seed {seed})")
    write_json(run_dir / "metrics.json", full)  # last: its presence marks a finished run
    return full


def plot_curves(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Log-scale loss curves against epoch (or optimizer step when the curve is longer)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, values in curves.items():
        if values:
            ax.plot(range(len(values)), values, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (or optimizer step, see legend)")
    ax.set_ylabel("loss / cost")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


# Largest R2DN state (the size of its KYP Riccati equations) given the tight certificate.
_TIGHT_CERTIFICATE_STATES = 128


def certificate_method(model: RecurrentModel) -> str:
    """``"auto"`` (tightest bound) for R2DNs with small states, ``"implied"`` otherwise.

    The implied certificate re-validates, in float64, the LMI the direct parameterization
    satisfies by construction (docs/theory.md §4), in milliseconds. "auto" searches for a
    smaller bound: for an R2DN by Riccati equations of the size of its state (the features
    enter only as input channels; ~0.1 s at 10 states and 100 features), so only the state
    size is limited; for a REN by a bisection over dense SDPs of size states + features
    (minutes even at 60 features), so RENs keep the implied certificate.
    """
    from ..nn.ren import _REN

    small = model.state_size <= _TIGHT_CERTIFICATE_STATES
    return "auto" if small and not isinstance(model, _REN) else "implied"
