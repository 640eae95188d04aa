"""F-16 loader (real files when present) and a tiny end-to-end F-16 run."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from r2dn_control import sysid
from r2dn_control.nn import cpp
from r2dn_control.sysid import f16

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("R2DN_F16_DIR", ROOT.parent / "shared" / "data" / "f16"))
needs_data = pytest.mark.skipif(
    not (DATA / "BenchmarkData" / f16.TRAIN_FILES[0]).exists()
    and not (DATA / f16.TRAIN_FILES[0]).exists(),
    reason=f"F-16 benchmark files not found in {DATA} (set R2DN_F16_DIR to the folder holding "
           "F16Data_FullMSine_Level*.csv)",
)

HEADER = '"Force","Voltage","Acceleration1","Acceleration2","Acceleration3","Fs",\n'


def write_folder(folder: pathlib.Path, rows: int = 600, bad: dict[str, str] | None = None) -> None:
    rng = np.random.default_rng(0)
    for name in f16.TRAIN_FILES + f16.TEST_FILES:
        values = rng.standard_normal((rows, 5))
        lines = [HEADER]
        for t, row in enumerate(values):
            fs = "400" if t == 0 else ""
            lines.append(",".join(f"{v:.8g}" for v in row) + f",{fs},\n")
        text = "".join(lines)
        if bad and name in bad:
            text = bad[name]
        (folder / name).write_text(text)


@needs_data
def test_reads_the_real_files():
    folder = DATA / "BenchmarkData" if (DATA / "BenchmarkData").is_dir() else DATA
    raw = f16.read_f16_csv(folder / f16.TRAIN_FILES[0])
    assert raw.shape == (73_728, 5)
    assert raw[0].tolist() == pytest.approx([0.95714, -0.00045788, -0.018392, -0.049607, -0.046328])
    data = sysid.load_f16(DATA)
    assert data.train.lengths == [73_728] * 4 and data.test.lengths == [73_728] * 3
    assert (data.train.nu, data.train.ny) == (2, 3)
    assert np.allclose(data.normalization.y_std, np.concatenate(data.train.y).std(0))
    paper = sysid.load_f16(DATA, paper_split=True)
    l4 = f16.read_f16_csv(folder / f16.PAPER_NORMALIZATION_FILE)
    assert np.allclose(paper.normalization.u_std, l4[:, :2].std(0))


def test_trailing_commas_and_fs_column_are_dropped(tmp_path):
    write_folder(tmp_path, rows=10)
    raw = f16.read_f16_csv(tmp_path / f16.TRAIN_FILES[0])
    assert raw.shape == (10, 5)
    data = sysid.load_f16(tmp_path)
    assert data.train.u[0].shape == (10, 2) and data.train.y[0].shape == (10, 3)


@pytest.mark.parametrize("text, match", [
    ('"Force","Voltage","Acc1"\n1,2,3\n', "header must start with"),
    (HEADER + "1,2,3,4,5,400,\n1,2,x,4,5,,\n", "line 3: expected 5 numbers"),
    (HEADER + "1,2,3,\n", "line 2: expected at least 5"),
    ("", "empty file"),
])
def test_malformed_file_is_a_clear_error(tmp_path, text, match):
    write_folder(tmp_path, rows=5, bad={f16.TEST_FILES[1]: text})
    with pytest.raises(ValueError, match=match):
        sysid.load_f16(tmp_path)


def test_missing_files_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="F16Data_FullMSine_Level1.csv"):
        sysid.load_f16(tmp_path)
    monkeypatch.delenv(f16.ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=f16.ENV):
        sysid.load_f16()


def test_tiny_f16_run_completes(tmp_path):
    """Two segments per epoch, small model, on the real files if present (else synthetic)."""
    folder = DATA
    if not ((DATA / "BenchmarkData").is_dir() or (DATA / f16.TRAIN_FILES[0]).exists()):
        folder = tmp_path / "data"
        folder.mkdir()
        write_folder(folder)
    data = sysid.load_f16(folder)
    train = sysid.SequenceData([u[:512] for u in data.train.u], [y[:512] for y in data.train.y])
    test = sysid.SequenceData([u[:400] for u in data.test.u], [y[:400] for y in data.test.y])
    with cpp.suspended():
        res = sysid.fit(sysid.default_model(2, 3, seed=0), train, val=test, epochs=2,
                        segment=256, washout=100, progress=False, out_dir=tmp_path / "run",
                        normalize=data.normalization)
        rep = sysid.evaluate(res.predictor, test, washout=100)
    assert [r["steps"] for r in res.history] == [2, 2]
    assert np.isfinite(rep.nrmse) and rep.y_hat[0].shape == (400, 3)
    assert (tmp_path / "run" / "loss.png").exists()
