"""Packaging, command line and the benchmark's --quick configuration."""

from __future__ import annotations

import configparser
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {
        ".".join(("r2dn_control",) + p.parent.relative_to(ROOT / "r2dn_control").parts)
        for p in (ROOT / "r2dn_control").rglob("__init__.py")
    }
    found |= {
        ".".join(("r2dn_control", "envs") + p.parent.relative_to(ROOT / "envs").parts)
        for p in (ROOT / "envs").rglob("__init__.py")
    }
    assert found <= listed, f"packages missing from setup.cfg: {sorted(found - listed)}"


def test_envs_import_under_the_package_name_only() -> None:
    import r2dn_control.envs  # noqa: F401

    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('envs') is not None)"
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_nn_layer_does_not_import_higher_layers() -> None:
    code = ("import sys, r2dn_control.nn; bad = [m for m in ('cvxpy', 'control', 'gymnasium', "
            "'r2dn_control.certify') if m in sys.modules]; sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_demo_quick_runs_and_certifies(tmp_path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "r2dn_control.cli", "demo", "--quick", "--no-progress",
         "--out", str(out)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "guaranteed γ" in result.stdout and "implied LMI certified" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] >= 1 and report["implied_status"] == "certified"
    assert report["final_loss"] < report["initial_loss"]
    assert report["certified_gamma"] <= 5.0 * (1 + 1e-6)
    certified = subprocess.run(
        [sys.executable, "-m", "r2dn_control.cli", "certify", str(out / "model.pt"),
         "--no-empirical", "--json", str(tmp_path / "cert.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert certified.returncode == 0, certified.stdout + certified.stderr
    results = json.loads((tmp_path / "cert.json").read_text())
    assert results["lipschitz"]["status"] == "certified"
    assert results["lipschitz"]["bound"] <= 5.0 * (1 + 1e-6)


def test_benchmark_quick_prints_its_table() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_r2dn.py"), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| R2DN")]
    assert len(rows) == 2


def test_speed_benchmark_quick_prints_every_table() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for heading in ("## 1. Scaling study", "## 2. Sweeps", "## 3. Activation memory", "## 4. F-16"):
        assert heading in result.stdout
    assert "| 6×96 |" in result.stdout and "| REN nv=150 (relu) |" in result.stdout
