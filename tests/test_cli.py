"""The r2dn-control command line: exit codes, one-line error messages, the main job."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from r2dn_control.cli import main
from r2dn_control.experiments.common import read_json
from r2dn_control.nn import ContractingR2DN
from r2dn_control.nn.checkpoint import save_model


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # one line, no traceback
    assert "Traceback" not in captured.err
    return lines[0]


def test_missing_checkpoint(tmp_path, capsys) -> None:
    assert main(["certify", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt: no such file" in _error_line(capsys)


def test_truncated_checkpoint(tmp_path, capsys) -> None:
    path = tmp_path / "m.pt"
    save_model(ContractingR2DN(1, 2, 2, 1, dtype=torch.float64), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert main(["certify", str(path)]) == 2
    assert "cannot read checkpoint" in _error_line(capsys)
    path.write_text("not a checkpoint")
    assert main(["certify", str(path), "--no-empirical"]) == 2
    assert "cannot read checkpoint" in _error_line(capsys)


def test_certify_a_good_checkpoint_still_works(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    save_model(ContractingR2DN(1, 2, 2, 1, dtype=torch.float64), path)
    code = main(["certify", str(path), "--no-empirical", "--method", "implied"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "contraction" in out and "certified" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "nope"], "unknown experiment 'nope'"),
    (["run", "f16", "--data", "/nonexistent/f16"], "lacks F16Data_FullMSine_Level1.csv"),
    (["run", "bouc-wen", "--preset", "test", "--data", "somewhere"], "--data applies"),
    (["run", "youla", "--model", "lstm"], "invalid choice: 'lstm'"),
    (["run", "youla", "--seeds", "0", "--preset", "test"], "--seeds must be a positive"),
    (["run", "youla", "--quick", "--preset", "full"], "not allowed with argument"),
    (["run", "youla", "--preset", "cpu"], "unknown preset 'cpu' for youla"),
    (["compare"], "the following arguments are required"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_cuda_that_is_absent_is_a_usage_error(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["run", "youla", "--preset", "test", "--device", "cuda"]) == 2
    assert "no CUDA device" in _error_line(capsys)


def test_compare_file_errors(tmp_path, capsys) -> None:
    assert main(["compare", str(tmp_path / "absent")]) == 2
    assert "no such run directory" in _error_line(capsys)
    run = tmp_path / "youla-r2dn-0"
    run.mkdir()
    (run / "metrics.json").write_text('{"format": "r2dn-control-run/1", "exper')
    assert main(["compare", str(run)]) == 2
    assert "not valid JSON" in _error_line(capsys)


def test_run_then_compare_through_the_cli(tmp_path, capsys) -> None:
    out = tmp_path / "runs"
    code = main(["run", "youla", "--preset", "test", "--model", "both", "--out", str(out),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "closed-loop contraction" in printed and "REN/R2DN" in printed
    for family in ("r2dn", "ren"):
        metrics = read_json(out / f"youla-{family}-0" / "metrics.json")
        assert metrics["preset"] == "test" and metrics["model"] == family
        assert f"{metrics['test_metric']['value']:.4g}" in printed
    assert main(["compare", str(out)]) == 0
    assert "youla" in capsys.readouterr().out
    # the certify command accepts the run's checkpoint
    code = main(["certify", str(out / "youla-r2dn-0" / "model.pt"), "--no-empirical"])
    assert code in (0, 1) and "contraction" in capsys.readouterr().out


def test_help_explains_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--quick", "--seeds", "--device", "metrics.json", "youla", "observer"):
        assert word in text


@pytest.mark.slow
def test_main_job_command(tmp_path) -> None:
    """The README's first command, as a user runs it (about 2-3 minutes on 2 cores)."""
    result = subprocess.run(
        [sys.executable, "-m", "r2dn_control.cli", "run", "youla", "--quick", "--model", "both",
         "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "closed-loop contraction" in result.stdout
    for family in ("r2dn", "ren"):
        run = tmp_path / f"youla-{family}-0"
        assert (run / "steps.png").is_file() and (run / "loss.png").is_file()
        metrics = read_json(run / "metrics.json")
        # trained Youla-Q beats the open loop on the fixed test disturbances
        assert metrics["test_metric"]["value"] < metrics["baseline_cost"]
