"""The F-16 ground-vibration-test benchmark (Noël & Schoukens 2017): loader and paper run.

`load_f16` reads the seven full-multisine files of the benchmark's ``BenchmarkData``
folder, with the R2DN paper's split: training L1, L3, L5, L7; test L2, L4, L6 (the
``_Validation`` files). Inputs u = (Force, Voltage), outputs y = (Acceleration1..3); the Fs
column (on the first data row only) and the trailing comma of every line are dropped.

Command line (the paper's configuration; one seed per call)::

    python -m r2dn_control.sysid --model r2dn --out runs/f16-r2dn-0 --seed 0

(``python -m r2dn_control.sysid.f16`` runs the same, with a harmless runpy warning.)

The data folder comes from ``--data``, else ``$R2DN_F16_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np

from .data import Normalization, SequenceData

ENV = "R2DN_F16_DIR"
COLUMNS = ("Force", "Voltage", "Acceleration1", "Acceleration2", "Acceleration3")
TRAIN_FILES = tuple(f"F16Data_FullMSine_Level{k}.csv" for k in (1, 3, 5, 7))
TEST_FILES = tuple(f"F16Data_FullMSine_Level{k}_Validation.csv" for k in (2, 4, 6))
PAPER_NORMALIZATION_FILE = "F16Data_FullMSine_Level4_Validation.csv"
DT = 1.0 / 400.0


@dataclass(frozen=True)
class F16Data:
    """The benchmark split: ``train`` (4 experiments), ``test`` (3) and the ``normalization``.

    ``normalization`` is fitted on the training files (default) or, with ``paper_split=True``,
    is the paper's: the per-column mean/std of ``L4_Validation`` (a test file).
    """

    train: SequenceData
    test: SequenceData
    normalization: Normalization


def read_f16_csv(path: str | os.PathLike) -> np.ndarray:
    """One benchmark file as a float64 array (T, 5): Force, Voltage, Acceleration1..3.

    Raises ``ValueError`` naming the file and line when the header or a row is malformed.
    """
    path = pathlib.Path(path)
    with open(path) as handle:
        lines = handle.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header {COLUMNS + ('Fs',)}")
    header = tuple(c.strip().strip('"') for c in lines[0].split(",") if c.strip())
    if header[:5] != COLUMNS:
        raise ValueError(f"{path}: header must start with {COLUMNS}, got {header}")
    rows = np.empty((len(lines) - 1, 5))
    count = 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < 5:
            raise ValueError(f"{path}, line {number}: expected at least 5 comma-separated values "
                             f"({', '.join(COLUMNS)}), got {line!r}")
        try:
            rows[count] = [float(f) for f in fields[:5]]
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected 5 numbers, got {line!r}") from None
        count += 1
    data = rows[:count]
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: contains non-finite values")
    if count == 0:
        raise ValueError(f"{path}: no data rows")
    return data


def _folder(path: str | os.PathLike | None) -> pathlib.Path:
    if path is None:
        path = os.environ.get(ENV)
        if path is None:
            raise FileNotFoundError(
                f"no F-16 data folder given: pass load_f16(path) or set ${ENV} to the folder "
                f"holding {', '.join(TRAIN_FILES + TEST_FILES)} (the benchmark's BenchmarkData/)"
            )
    folder = pathlib.Path(path)
    if not (folder / TRAIN_FILES[0]).exists() and (folder / "BenchmarkData").is_dir():
        folder = folder / "BenchmarkData"
    missing = [f for f in TRAIN_FILES + TEST_FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks the F-16 benchmark files {missing}; expected "
                                f"{', '.join(TRAIN_FILES + TEST_FILES)}")
    return folder


def load_f16(path: str | os.PathLike | None = None, paper_split: bool = False) -> F16Data:
    """Load the F-16 benchmark from a folder (or ``$R2DN_F16_DIR``) with the paper's split.

    Parameters
    ----------
    path : path, optional
        The folder holding the seven CSV files (or its parent holding ``BenchmarkData/``).
    paper_split : bool
        False (default): the normalisation is fitted on the four training files only (what a
        user should do). True: the paper's exact setup, where one normalisation for every file
        is the per-column mean/std of ``L4_Validation`` (a test file), applied to inputs and
        outputs alike.

    Returns
    -------
    F16Data
        ``train``: L1, L3, L5, L7; ``test``: L2, L4, L6 (_Validation); each 73,728 samples,
        u (T, 2) = (Force, Voltage), y (T, 3) = accelerations, ``dt`` = 1/400 s.
    """
    folder = _folder(path)

    def experiments(names: tuple[str, ...]) -> SequenceData:
        arrays = [read_f16_csv(folder / n) for n in names]
        return SequenceData([a[:, :2] for a in arrays], [a[:, 2:] for a in arrays], dt=DT,
                            names=[n.removesuffix(".csv") for n in names])

    train, test = experiments(TRAIN_FILES), experiments(TEST_FILES)
    if paper_split:
        ref = read_f16_csv(folder / PAPER_NORMALIZATION_FILE)
        mean, std = ref.mean(0), ref.std(0)
        norm = Normalization(mean[:2], std[:2], mean[2:], std[2:])
    else:
        norm = Normalization.fit(train)
    return F16Data(train=train, test=test, normalization=norm)


def paper_model(kind: str, seed: int = 0):
    """The paper's F-16 models: R2DN (nx = nv = 75, LBDN 3×87, 97,481 parameters) or REN
    (nx = 75, nv = 150, 96,995 parameters); contracting, relu, ``init="long_memory"``, ᾱ = 1;
    or a GRU with the R2DN's parameter count (``kind="gru"``)."""
    import torch

    from ..nn import ContractingR2DN, ContractingREN
    from .baselines import matched_baseline

    torch.manual_seed(seed)
    if kind == "r2dn":
        return ContractingR2DN(2, 75, 75, 3, hidden=(87, 87, 87), output_layer="sandwich", init="long_memory",
                               activation="relu")
    if kind == "ren":
        return ContractingREN(2, 75, 150, 3, init="long_memory", activation="relu")
    if kind == "gru":
        return matched_baseline(paper_model("r2dn", seed))
    raise ValueError(f"kind must be 'r2dn', 'ren' or 'gru', got {kind!r}")


def paper_nrmse(predictor, data: SequenceData, washout: int = 100) -> float:
    """The paper's test metric: sqrt(MSE / mean(y²)) in the predictor's normalised units, from
    the zero state, after ``washout`` samples, pooled over experiments and channels."""
    norm = predictor.normalization
    err, ref = [], []
    for u, y in zip(data.u, data.y):
        y_hat = predictor.predict(u)
        err.append(norm.normalize_y(y_hat)[washout:] - norm.normalize_y(y)[washout:])
        ref.append(norm.normalize_y(y)[washout:])
    return float(np.sqrt(np.mean(np.concatenate(err) ** 2) / np.mean(np.concatenate(ref) ** 2)))


def main(argv: list[str] | None = None) -> int:
    from ..nn.cpp.heap import retain_freed_memory

    retain_freed_memory()  # this command owns its process: glibc keeps freed buffers (heap.py)
    parser = argparse.ArgumentParser(prog="python -m r2dn_control.sysid",
                                     description="Train one seed of the paper's F-16 experiment.")
    parser.add_argument("--model", choices=("r2dn", "ren", "gru"), default="r2dn")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, history, results)")
    parser.add_argument("--data", default=None, help=f"data folder (default ${ENV})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--segment", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-normalization", action="store_true",
                        help="fit the normalisation on the training files instead of the paper's "
                             "L4_Validation statistics")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT samples of every file (smoke tests)")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--evaluate-checkpoint", action="store_true",
                        help="do not train: score the last epoch saved in OUT/checkpoint.pt "
                             "(e.g. of a run still in progress) and write OUT/results-partial.json")
    args = parser.parse_args(argv)

    import torch

    from .evaluate import evaluate
    from .fit import fit

    torch.set_num_threads(args.threads)
    data = load_f16(args.data, paper_split=not args.train_normalization)
    train, test = data.train, data.test
    if args.limit is not None:
        train = SequenceData([u[: args.limit] for u in train.u], [y[: args.limit] for y in train.y],
                             dt=DT)
        test = SequenceData([u[: args.limit] for u in test.u], [y[: args.limit] for y in test.y],
                            dt=DT)
    model = paper_model(args.model, args.seed)
    params = sum(p.numel() for p in model.parameters())
    if args.evaluate_checkpoint:
        from .checkpointing import CHECKPOINT, load_checkpoint
        from .predictor import Predictor

        blob = load_checkpoint(pathlib.Path(args.out) / CHECKPOINT)
        model.load_state_dict(blob["model"])
        predictor = Predictor(model.eval(), data.normalization)
        rep = evaluate(predictor, test, washout=100)
        times = [row["seconds"] for row in blob["history"]]
        partial = {"model": args.model, "parameters": params, "epochs_done": len(times),
                   "train_loss_last_epoch": blob["history"][-1]["train_loss"],
                   "epoch_seconds_median": float(np.median(times[1:] if len(times) > 1 else times)),
                   "test_paper_nrmse": paper_nrmse(predictor, test, 100),
                   "test_nrmse": rep.nrmse, "test_rmse": rep.rmse,
                   "test_nrmse_per_channel": rep.per_channel["nrmse"].tolist()}
        pathlib.Path(args.out, "results-partial.json").write_text(json.dumps(partial, indent=1))
        print(json.dumps(partial, indent=1))
        return 0
    start = time.perf_counter()
    res = fit(model, train, val=False, epochs=args.epochs, segment=args.segment, lr=1e-3,
              schedule="step", milestones=(20, 40, 60), decay=0.1, clip_value=10.0, loss="paper",
              normalize=data.normalization, x0="zero", out_dir=args.out,
              resume=not args.no_resume, progress=args.progress, early_stopping=None,
              seed=args.seed)
    wall = time.perf_counter() - start
    washout = min(100, test.lengths[0] - 1)
    rep = evaluate(res.predictor, test, washout=washout)
    times = [row["seconds"] for row in res.history]
    results = {
        "model": args.model, "parameters": params, "seed": args.seed, "epochs": len(res.history),
        "threads": args.threads, "final_train_loss": res.history[-1]["train_loss"],
        "epoch_seconds_median": float(np.median(times[1:] if len(times) > 1 else times)),
        "epoch_seconds_mean_after_first": float(np.mean(times[1:])) if len(times) > 1 else None,
        "test_paper_nrmse": paper_nrmse(res.predictor, test, washout),
        "test_nrmse": rep.nrmse, "test_rmse": rep.rmse,
        "test_nrmse_per_channel": rep.per_channel["nrmse"].tolist(), "washout": washout,
        "wall_seconds_this_call": wall,
    }
    pathlib.Path(args.out, "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
