"""Compare finished runs: one row per (experiment, model) over its seeds.

Columns: test metric mean ± std over seeds, median time per epoch (first epoch excluded),
parameter count, certified bounds (worst over seeds, with status), and the REN/R2DN epoch-time
ratio ("speed-up") when both families ran the same experiment.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import METRICS_FORMAT, ExperimentError, read_json


def find_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders among ``paths``: a folder with metrics.json, or the run folders inside one."""
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "metrics.json":
            path = path.parent
        if not path.exists():
            raise ExperimentError(f"{path}: no such run directory")
        if not path.is_dir():
            raise ExperimentError(f"{path}: expected a run directory (with metrics.json)")
        if (path / "metrics.json").exists():
            runs.append(path)
            continue
        inside = sorted(p.parent for p in path.glob("*/metrics.json"))
        if not inside:
            raise ExperimentError(f"{path}: no metrics.json in it or in its sub-folders "
                                  "(unfinished or not a run directory)")
        runs.extend(inside)
    return runs


def load_metrics(run: Path) -> dict[str, Any]:
    data = read_json(run / "metrics.json")
    if not isinstance(data, dict) or data.get("format") != METRICS_FORMAT:
        raise ExperimentError(f"{run / 'metrics.json'}: not an r2dn-control run "
                              f"(format {METRICS_FORMAT!r})")
    for key in ("experiment", "model", "seed", "test_metric", "epoch_time", "certificates"):
        if key not in data:
            raise ExperimentError(f"{run / 'metrics.json'}: missing field {key!r}")
    return data


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _bound(certs: list[dict[str, Any]]) -> str:
    """Worst bound over seeds and the statuses, e.g. '0.9536 (certified)'."""
    statuses = sorted({c["status"] for c in certs})
    bounds = [c["bound"] for c in certs if c.get("bound") is not None]
    value = f"{max(bounds):.4g}" if bounds and statuses == ["certified"] else "-"
    return f"{value} ({'/'.join(statuses)})"


def summarize(runs: list[Path]) -> list[dict[str, Any]]:
    """Rows of the comparison table (dicts), grouped by experiment and model."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        data = load_metrics(run)
        groups[(data["experiment"], data["model"])].append(data)
    rows = []
    for (experiment, model), items in sorted(groups.items()):
        values = [d["test_metric"]["value"] for d in items]
        epochs = [d["epoch_time"]["median_s"] for d in items
                  if d["epoch_time"].get("median_s") is not None]
        labels = sorted({k for d in items for k in d["certificates"]})
        rows.append({
            "experiment": experiment, "model": model, "seeds": len(items),
            "metric": items[0]["test_metric"]["name"],
            "mean": _mean_std(values)[0], "std": _mean_std(values)[1],
            "epoch_s": statistics.median(epochs) if epochs else None,
            "parameters": items[0].get("parameters"),
            "certificates": {label: _bound([d["certificates"][label] for d in items
                                            if label in d["certificates"]]) for label in labels},
        })
    by_experiment: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_experiment[row["experiment"]][row["model"]] = row
    for models in by_experiment.values():
        r2dn, ren = models.get("r2dn"), models.get("ren")
        if r2dn and ren and r2dn["epoch_s"] and ren["epoch_s"]:
            r2dn["speedup"] = ren["epoch_s"] / r2dn["epoch_s"]
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `summarize` rows."""
    header = (f"{'experiment':<15} {'model':<5} {'seeds':>5}  {'test metric (mean ± std)':<34} "
              f"{'s/epoch':>8} {'REN/R2DN':>8} {'params':>8}  certified bounds")
    lines = [header, "-" * len(header)]
    for r in rows:
        metric = f"{r['metric']}: {r['mean']:.4g} ± {r['std']:.2g}"
        epoch = "-" if r["epoch_s"] is None else f"{r['epoch_s']:.3g}"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        certs = "; ".join(f"{k}: {v}" for k, v in r["certificates"].items())
        lines.append(f"{r['experiment']:<15} {r['model']:<5} {r['seeds']:>5}  {metric:<34} "
                     f"{epoch:>8} {speed:>8} {r['parameters'] or '-':>8}  {certs}")
    lines.append("s/epoch: median over epochs, first excluded. REN/R2DN: REN's time per epoch "
                 "divided by R2DN's (> 1: R2DN faster).")
    return "\n".join(lines)


def compare(paths: list[str | os.PathLike]) -> str:
    """The comparison table of the runs under ``paths``."""
    return format_table(summarize(find_runs(paths)))
