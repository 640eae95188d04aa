"""Each experiment's "test" preset runs end to end and writes parseable, consistent files."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from experiment_runs import check_run_folder, one_thread  # noqa: F401 (autouse fixture)

from r2dn_control import certify
from r2dn_control.experiments import (
    EXPERIMENTS,
    UNAVAILABLE,
    ExperimentError,
    get_experiment,
    run_experiment,
)
from r2dn_control.experiments.common import config_from_dict, read_json, write_json
from r2dn_control.experiments.compare import compare, find_runs, summarize
from r2dn_control.experiments.scaling import _plain_log_formatter, fitted_slope
from r2dn_control.nn.checkpoint import load_model

# The identification experiments have their own tests (tests/test_experiments_sysid.py).
RUNNABLE = [name for name in EXPERIMENTS if name not in ("f16", "bouc-wen")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every runnable experiment, both families, test preset (youla: two seeds)."""
    out = tmp_path_factory.mktemp("runs")
    folders = {}
    for name in RUNNABLE:
        seeds = 2 if name == "youla" else 1
        folders[name] = run_experiment(name, model="both", preset="test", seeds=seeds, out=out,
                                       progress=False)
    return out, folders


def test_every_run_writes_its_files(runs) -> None:
    _, folders = runs
    for name, dirs in folders.items():
        for run in dirs:
            check_run_folder(name, run)


def test_contraction_certificate_matches_a_fresh_check(runs) -> None:
    _, folders = runs
    for run in folders["observer"] + folders["youla"][:2]:
        metrics = read_json(run / "metrics.json")
        model, _ = load_model(run / "model.pt")
        label = next(k for k in metrics["certificates"] if "contraction" in k
                     and "closed" not in k)
        stored = metrics["certificates"][label]
        fresh = certify.contraction(model, method=stored["solver"] if stored["solver"]
                                    in ("implied", "kyp") else "auto")
        assert fresh.status == stored["status"] == "certified"
        assert fresh.bound == pytest.approx(stored["bound"], rel=1e-6)
        assert fresh.bound <= 1.0


def test_youla_closed_loop_is_certified_and_training_is_recorded(runs) -> None:
    _, folders = runs
    for run in folders["youla"] + folders["youla-unstable"]:
        metrics = read_json(run / "metrics.json")
        loop = metrics["certificates"]["closed-loop contraction"]
        assert loop["status"] == "certified" and loop["bound"] <= 1.0
        curves = read_json(run / "curves.json")
        config = read_json(run / "config.json")["config"]
        test_curve = curves["test cost (per epoch)"]
        assert len(test_curve) == config["epochs"] + 1  # before every epoch and at the end
        assert test_curve[-1] == metrics["test_metric"]["value"]
        assert metrics["initial_test_cost"] == test_curve[0]


def test_scaling_records_every_size_and_its_slopes(runs) -> None:
    _, folders = runs
    config = get_experiment("scaling").config("test")
    for run in folders["scaling"]:
        metrics = read_json(run / "metrics.json")
        widths = config.r2dn_widths if metrics["model"] == "r2dn" else config.ren_widths
        assert [r["width"] for r in metrics["sizes"]] == list(widths)
        params = [r["parameters"] for r in metrics["sizes"]]
        assert params == sorted(params) and len(set(params)) == len(params)
        for key in ("inference", "backprop"):
            expected = fitted_slope([r["expressivity"] for r in metrics["sizes"]],
                                    [r[f"{key}_ms"] for r in metrics["sizes"]])
            assert metrics["slopes"][key]["slope"] == pytest.approx(expected["slope"])


def test_fitted_slope_recovers_a_power_law() -> None:
    x = [1.0, 2.0, 4.0, 8.0, 16.0]
    fit = fitted_slope(x, [3.0 * v**0.4 for v in x])
    assert fit["slope"] == pytest.approx(0.4) and fit["stderr"] == pytest.approx(0.0, abs=1e-9)
    noisy = fitted_slope(x, [3.0 * v**0.4 * (1.1 if i % 2 else 0.9) for i, v in enumerate(x)])
    assert noisy["stderr"] > 0


def test_scaling_plot_ticks_are_plain_numbers() -> None:
    """Log-axis ticks read 0.3, 4, 20, 100000: no 6×10⁰-style labels running into the axis label."""
    fmt = _plain_log_formatter(label_only_base=False)
    assert [fmt._num_to_string(x, 0.1, 1e6) for x in (0.3, 4.0, 20.0, 1e5)] == [
        "0.3", "4", "20", "100000"]


def test_compare_reads_the_runs(runs) -> None:
    out, folders = runs
    rows = summarize(find_runs([out]))
    assert {(r["experiment"], r["model"]) for r in rows} == {
        (name, family) for name in RUNNABLE for family in ("r2dn", "ren")}
    for row in rows:
        dirs = [d for d in folders[row["experiment"]] if f"-{row['model']}-" in d.name]
        values = [read_json(d / "metrics.json")["test_metric"]["value"] for d in dirs]
        assert row["seeds"] == len(values)
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0)
        if row["model"] == "r2dn":
            ren = next(r for r in rows if r["experiment"] == row["experiment"]
                       and r["model"] == "ren")
            assert row["speedup"] == pytest.approx(ren["epoch_s"] / row["epoch_s"])
    table = compare([out])
    assert "youla" in table and "± " in table and "REN/R2DN" in table


def test_compare_rejects_truncated_and_missing_files(runs, tmp_path) -> None:
    _, folders = runs
    run = tmp_path / "youla-r2dn-0"
    run.mkdir()
    text = (folders["youla"][0] / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.raises(ExperimentError, match="not valid JSON"):
        compare([run])
    with pytest.raises(ExperimentError, match="no such run directory"):
        compare([tmp_path / "absent"])
    write_json(run / "metrics.json", {"format": "other"})
    with pytest.raises(ExperimentError, match="not an r2dn-control run"):
        compare([run])


def test_registry_errors() -> None:
    for name in UNAVAILABLE:  # empty once every experiment has landed
        with pytest.raises(ExperimentError, match="not yet available"):
            get_experiment(name)
    with pytest.raises(ExperimentError, match="--data applies"):
        run_experiment("youla", preset="test", data="somewhere")
    with pytest.raises(ExperimentError, match="unknown experiment 'nope'"):
        get_experiment("nope")
    with pytest.raises(ExperimentError, match="--model"):
        run_experiment("youla", model="lstm", preset="test")
    with pytest.raises(ExperimentError, match="--seeds"):
        run_experiment("youla", seeds=0, preset="test")
    with pytest.raises(ExperimentError, match="unknown preset"):
        run_experiment("youla", preset="huge")
    if not torch.cuda.is_available():
        with pytest.raises(ExperimentError, match="no CUDA device"):
            run_experiment("youla", preset="test", device="cuda")


def test_presets_validate_their_fields() -> None:
    cls = type(get_experiment("youla").config("test"))
    with pytest.raises(ValueError, match="plant must be one of"):
        cls(plant="pendulum")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        cls(epochs=0)
    with pytest.raises(ValueError, match="unknown YoulaConfig fields"):
        config_from_dict(cls, {"epochz": 3})


def test_an_old_scaling_config_is_rebuilt_with_the_construction_it_ran() -> None:
    """A config.json written before r2dn_init / r2dn_output_layer / lr_staircase existed was
    run with the library's init, a linear last layer and the continuous decay, not with today's
    defaults; a config that names them keeps them."""
    from r2dn_control.experiments.common import config_dict

    cls = type(get_experiment("scaling").config("test"))
    now = config_dict(cls())
    old = {k: v for k, v in now.items() if k not in cls.LEGACY_FIELDS}
    rebuilt = config_from_dict(cls, old)
    assert (rebuilt.r2dn_init, rebuilt.r2dn_output_layer, rebuilt.lr_staircase) == (
        "default", "linear", False)
    assert config_from_dict(cls, now) == cls()


def test_json_files_are_written_atomically(tmp_path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left behind


@pytest.mark.parametrize("family", ["r2dn", "ren"])
def test_youla_q_stays_odd_so_zero_disturbance_gives_zero_control(family) -> None:
    """With ``q_biases=False`` training keeps Q odd: Q(−ỹ) = −Q(ỹ) and Q(0) = 0 (no offset);
    with trained biases (the paper's Q) the same training moves Q(0) away from 0."""
    from dataclasses import replace

    from r2dn_control.control import step_disturbances, train_policy_gradient
    from r2dn_control.experiments import youla

    outputs_at_zero = {}
    for q_biases in (False, True):
        config = replace(youla.PRESETS["test"], epochs=3, lr=5e-2, q_biases=q_biases)
        torch.manual_seed(0)
        q = youla.make_q(config, family)
        controller, plant = youla.build_loop(config, q, torch.device("cpu"))
        w = step_disturbances(config.batch, config.horizon, hold=config.hold,
                              amplitude=config.amplitude, generator=torch.Generator().manual_seed(1))
        train_policy_gradient(controller, plant, w, youla.stage_cost(config),
                              epochs=config.epochs, segment=config.segment, lr=config.lr,
                              progress=False)
        y_tilde = torch.randn(5, 30, 1, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            plus, minus = q(y_tilde)[0], q(-y_tilde)[0]
            outputs_at_zero[q_biases] = float(q(torch.zeros(1, 30, 1))[0].abs().max())
        if not q_biases:
            assert all(float(p.abs().max()) == 0.0 for p in youla.bias_parameters(q))
            torch.testing.assert_close(minus, -plus, rtol=0, atol=1e-6)
    assert outputs_at_zero[False] == 0.0
    assert outputs_at_zero[True] > 1e-4


@pytest.mark.parametrize("family", ["r2dn", "ren"])
def test_youla_closed_loop_beyond_the_sdp_size_is_certified(family) -> None:
    """An R2DN Q's closed loop is decided by Riccati equations at any number of features; a
    REN Q's, beyond `CLOSED_LOOP_SDP_SIZE` (no dense SDP), by the cascade route from Q's own
    certificate."""
    from dataclasses import replace

    from r2dn_control.experiments import youla

    config = replace(youla.PRESETS["test"], r2dn_features=100, r2dn_hidden=(8,),
                     ren_features=100, certify_gamma=False)
    torch.manual_seed(0)
    q = youla.make_q(config, family).double()
    controller, _ = youla.build_loop(config, q, torch.device("cpu"))
    assert q.state_size + q.features + controller.base.youla_system().nstates \
        > youla.CLOSED_LOOP_SDP_SIZE
    results = youla.certify_q(config, controller, progress=False)
    loop = results["closed-loop contraction"]
    if family == "r2dn":
        assert loop.certified and loop.solver == "kyp" and loop.bound <= 1.0
        assert results["Q contraction"].solver == "kyp"  # the tight rate: 3 states
        assert loop.bound >= results["Q contraction"].bound  # no faster than Q itself
    else:
        assert loop.certified and loop.solver == "cascade" and loop.bound == loop.requested
        assert loop.details["core_solver"] == "implied"
        assert loop.bound >= results["Q contraction"].bound
