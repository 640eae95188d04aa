"""The paper's experiments, runnable with one call or ``r2dn-control run EXPERIMENT``.

`EXPERIMENTS` is the dispatch table: experiment name → `Experiment` (its presets
``full`` / ``quick`` / ``test`` as frozen dataclasses and the function that runs one model with
one seed). Adding an experiment is one module with a ``run`` function and a ``PRESETS`` dict,
plus one entry here. Names in `UNAVAILABLE` are known but not runnable yet; asking for
one raises `ExperimentError` with the reason (the CLI's exit status 2).

Every run writes ``<out>/<experiment>-<model>-<seed>/`` (see `.common`); the runs are
compared with `r2dn_control.experiments.compare.compare`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .common import FAMILIES, ExperimentError, resolve_device, run_name


@dataclass(frozen=True)
class Experiment:
    """One registered experiment.

    Attributes
    ----------
    name : str
        CLI name, also the prefix of its run folders.
    module : str
        Module (relative to this package) with ``run(config, family, seed, run_dir, device,
        *, preset, experiment, progress) -> dict`` and ``DESCRIPTION``.
    presets : str
        Name of the module's ``{"full", "quick", "test"} → config`` dict.
    summary : str
        One-line description (default: the module's ``DESCRIPTION``).
    """

    name: str
    module: str
    presets: str = "PRESETS"
    summary: str = ""

    def load(self):
        return importlib.import_module(f".{self.module}", __name__)

    @property
    def description(self) -> str:
        return self.summary or self.load().DESCRIPTION

    def config(self, preset: str) -> Any:
        table = getattr(self.load(), self.presets)
        if preset not in table:
            raise ExperimentError(f"unknown preset {preset!r} for {self.name}; expected one of "
                                  f"{sorted(table)}")
        return table[preset]

    @property
    def runner(self) -> Callable[..., dict[str, Any]]:
        return self.load().run


EXPERIMENTS: dict[str, Experiment] = {
    "youla": Experiment("youla", "youla"),
    "youla-unstable": Experiment(
        "youla-unstable", "youla", "UNSTABLE_PRESETS",
        "the same Youla design on an open-loop-unstable plant (LQR/Kalman base gains)"),
    "observer": Experiment("observer", "observer"),
    "scaling": Experiment("scaling", "scaling"),
    "f16": Experiment("f16", "f16"),
    "bouc-wen": Experiment("bouc-wen", "bouc_wen"),
}

UNAVAILABLE: dict[str, str] = {}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; unknown or unavailable names raise ExperimentError."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    if name in UNAVAILABLE:
        raise ExperimentError(f"experiment {name!r} is not yet available: {UNAVAILABLE[name]}")
    raise ExperimentError(f"unknown experiment {name!r}; choose one of "
                          f"{', '.join(EXPERIMENTS)}")


def families(model: str) -> tuple[str, ...]:
    """``"r2dn"``, ``"ren"`` or ``"both"`` as a tuple of families."""
    if model == "both":
        return FAMILIES
    if model in FAMILIES:
        return (model,)
    raise ExperimentError(f"--model must be r2dn, ren or both, got {model!r}")


def run_experiment(name: str, *, model: str = "both", preset: str = "quick", seeds: int = 1,
                   device: str = "cpu", out: str | Path = "runs", progress: bool = True,
                   config: Any = None, data: str | Path | None = None) -> list[Path]:
    """Run ``name`` for each model family and seed 0 … seeds−1; returns the run folders.

    ``config`` overrides the preset's configuration (a config of the experiment's class);
    ``data`` is the data folder of experiments that read measured data (``f16``): an
    ExperimentError for the others.
    """
    experiment = get_experiment(name)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ExperimentError(f"--seeds must be a positive integer, got {seeds!r}")
    dev = resolve_device(device)
    config = experiment.config(preset) if config is None else config
    if data is not None:
        if (not is_dataclass(config) or isinstance(config, type)
                or "data" not in {f.name for f in fields(config)}):
            raise ExperimentError(f"--data applies to experiments that read measured data "
                                  f"(f16), not to {name!r}")
        config = replace(config, data=str(data))
    chosen = families(model)
    out = Path(out)
    runs = []
    for seed in range(seeds):
        for family in chosen:
            run_dir = out / run_name(name, family, seed)
            experiment.runner(config, family, seed, run_dir, dev, preset=preset,
                              experiment=name, progress=progress)
            runs.append(run_dir)
    return runs


def describe() -> str:
    """One line per experiment (for ``--help``)."""
    lines = [f"  {name:<15} {exp.description}" for name, exp in EXPERIMENTS.items()]
    lines += [f"  {name:<15} not yet available ({why.split(',')[0]})"
              for name, why in UNAVAILABLE.items()]
    return "\n".join(lines)


__all__ = ["EXPERIMENTS", "UNAVAILABLE", "Experiment", "ExperimentError", "describe",
           "families", "get_experiment", "run_experiment"]
