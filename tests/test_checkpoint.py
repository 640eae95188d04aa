"""Checkpoints: nothing in a file runs code, writes are atomic, round trips are exact, and every
corrupt file is refused with one clear error naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch
from families import FAMILIES, Family, Sizes

from r2dn_control.nn import (
    CheckpointError,
    ContractingR2DN,
    LipschitzR2DN,
    load_model,
    register_model,
    registered_models,
    save_model,
)
from r2dn_control.nn.checkpoint import FORMAT, LEGACY_FORMAT

ALL = pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)


def _make(family: Family, seed: int = 0, **common) -> torch.nn.Module:
    torch.manual_seed(seed)
    sizes = Sizes(nu=2, nx=3, nv=4, ny=2, hidden=(5,))
    return family.build(sizes, np.random.default_rng(seed), common)


def _assert_same(loaded, model) -> None:
    assert type(loaded) is type(model)
    assert loaded.dtype == model.dtype
    ours, theirs = loaded.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.equal(ours[key], theirs[key]), key
    u = torch.randn(2, 5, model.input_size, dtype=model.dtype)
    assert torch.equal(loaded(u)[0], model(u)[0])


# ------------------------------------------------------------------ item 1: no code from files
def _crafted(path, cls: str, kwargs: dict, fmt: str = LEGACY_FORMAT) -> None:
    torch.save({"format": fmt, "class": cls, "kwargs": kwargs, "state_dict": {},
                "metadata": {}, "sha256": ""}, path)


def test_crafted_certify_cli_checkpoint_cannot_overwrite_a_file(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    inner = tmp_path / "inner.pt"
    save_model(LipschitzR2DN(1, 2, 2, 1, dtype=torch.float64), inner)
    for fmt in (LEGACY_FORMAT, FORMAT):
        evil = tmp_path / f"evil-{fmt[-1]}.pt"
        _crafted(evil, "r2dn_control.certify.cli:main",
                 {"argv": [str(inner), "--json", str(victim), "--no-empirical"]}, fmt)
        with pytest.raises(CheckpointError, match="not a registered model class"):
            load_model(evil)
    assert victim.read_text() == "precious"


def test_crafted_demo_checkpoint_cannot_start_training(tmp_path) -> None:
    target = tmp_path / "attacker-folder"
    for fmt in (LEGACY_FORMAT, FORMAT):
        evil = tmp_path / f"demo-{fmt[-1]}.pt"
        _crafted(evil, "r2dn_control.demo:run_demo", {"out_dir": str(target)}, fmt)
        with pytest.raises(CheckpointError, match=str(evil.name)):
            load_model(evil)
    assert not target.exists()


def test_unknown_and_non_primitive_kwargs_are_refused(tmp_path) -> None:
    model = ContractingR2DN(1, 2, 2, 1, dtype=torch.float64)
    path = tmp_path / "m.pt"
    save_model(model, path)
    blob = torch.load(path, weights_only=True)
    blob["kwargs"]["out_dir"] = "/tmp/x"
    blob["format"] = LEGACY_FORMAT
    blob["class"] = "r2dn_control.nn.r2dn:ContractingR2DN"
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="without a checksum"), \
            pytest.raises(CheckpointError, match=r"does not take the arguments \['out_dir'\]"):
        load_model(path)
    blob["kwargs"].pop("out_dir")
    blob["kwargs"]["dtype"] = {"__dtype__": "int64"}
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="dtype marker"):
        load_model(path)


def test_registry_decorator_for_third_party_subclasses(tmp_path) -> None:
    @register_model(name="tests.Scaled")
    class Scaled(ContractingR2DN):
        def __init__(self, input_size, state_size, features, output_size, *,
                     scale: float = 1.0, **kwargs) -> None:
            super().__init__(input_size, state_size, features, output_size, **kwargs)
            self.scale = scale

    assert registered_models()["tests.Scaled"] is Scaled
    assert "LipschitzR2DN" in registered_models()
    model = Scaled(1, 2, 3, 1, scale=2.5, dtype=torch.float64)
    save_model(model, tmp_path / "s.pt")
    loaded, _ = load_model(tmp_path / "s.pt")
    assert loaded.scale == 2.5
    _assert_same(loaded, model)

    class Unregistered(ContractingR2DN):
        pass

    with pytest.raises(ValueError, match="not a registered model class"):
        save_model(Unregistered(1, 2, 3, 1), tmp_path / "u.pt")
    with pytest.raises(ValueError, match="already taken"):
        register_model(Unregistered, name="tests.Scaled")
    with pytest.raises(TypeError, match="RecurrentModel subclass"):
        register_model(dict)

    @register_model(name="tests.Positional")
    class Positional(ContractingR2DN):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    with pytest.raises(TypeError, match=r"\*args"):
        save_model(Positional(1, 2, 3, 1), tmp_path / "p.pt")


# ------------------------------------------------------------------ item 2: atomic writes
_WRITER = textwrap.dedent("""
    import sys, torch
    from r2dn_control.nn import LipschitzR2DN, save_model
    torch.manual_seed(int(sys.argv[2]))
    model = LipschitzR2DN(4, 120, 60, 4, hidden=(64, 64), dtype=torch.float64)
    print("ready", flush=True)
    while True:
        save_model(model, sys.argv[1], note="x" * 1000, values=list(range(20000)))
""")


def test_sigkill_during_overwrite_keeps_a_loadable_file(tmp_path) -> None:
    path = tmp_path / "model.pt"
    good = LipschitzR2DN(4, 120, 60, 4, hidden=(64, 64), dtype=torch.float64)
    save_model(good, path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rng = np.random.default_rng(0)
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(trial)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.2 * rng.random())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        loaded, _ = load_model(path)  # the previous or the new model, never a torn file
        assert isinstance(loaded, LipschitzR2DN)
    assert not [p for p in os.listdir(tmp_path) if p != "model.pt" and not p.startswith(".")]


def test_failed_save_leaves_previous_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "model.pt"
    model = ContractingR2DN(1, 2, 2, 1, dtype=torch.float64)
    save_model(model, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"metadata\['bad'\]"):
        save_model(model, path, bad=object())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]


# ------------------------------------------------------------------ item 3: exact round trips
@ALL
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_exact_for_every_family_and_dtype(family, dtype, tmp_path) -> None:
    model = _make(family, dtype=dtype)
    save_model(model, tmp_path / "m.pt", note="unit")
    loaded, metadata = load_model(tmp_path / "m.pt")
    _assert_same(loaded, model)
    assert metadata == {"note": "unit"}


@ALL
def test_double_converted_model_reloads_as_float64(family, tmp_path) -> None:
    model = _make(family, dtype=torch.float32).double()
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    _assert_same(loaded, model)


def test_numpy_arguments_and_metadata_round_trip(tmp_path) -> None:
    model = LipschitzR2DN(2, 3, 4, 2, gamma=np.float64(2.5), hidden=(3,), dtype=torch.float64)
    save_model(model, tmp_path / "m.pt", nrmse=np.float32(0.25), steps=np.int64(7),
               curve=np.array([1.0, 2.0]), nested={"a": (np.float64(1.5), None)})
    loaded, metadata = load_model(tmp_path / "m.pt")
    _assert_same(loaded, model)
    assert loaded.gamma == 2.5
    assert metadata == {"nrmse": 0.25, "steps": 7, "curve": [1.0, 2.0], "nested": {"a": [1.5, None]}}


# ------------------------------------------------------------------ item 4: no NaN weights saved
def test_save_refuses_non_finite_weights_unless_asked(tmp_path) -> None:
    model = ContractingR2DN(1, 2, 2, 1, dtype=torch.float64)
    with torch.no_grad():
        model.bx[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights in 'bx'"):
        save_model(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    save_model(model, tmp_path / "m.pt", allow_nonfinite=True)
    with pytest.warns(RuntimeWarning, match="non-finite weights"):
        loaded, _ = load_model(tmp_path / "m.pt")
    assert torch.isnan(loaded.bx[0])


# ------------------------------------------------------------------ items 5 and 12: corruption
def _rewrite_zip(path, transform) -> None:
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info, data in entries:
            dst.writestr(info, transform(info.filename, data))


def test_zeroed_tensor_bytes_fail_the_checksum(tmp_path) -> None:
    path = tmp_path / "m.pt"
    save_model(LipschitzR2DN(1, 2, 2, 1, dtype=torch.float64), path)
    _rewrite_zip(path, lambda name, data: bytes(len(data)) if "/data/" in name else data)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model(path)
    from r2dn_control.certify.cli import main

    assert main([str(path), "--no-empirical"]) == 2  # a file error, never "certified" (exit 0)


def test_modified_argument_fails_the_checksum(tmp_path) -> None:
    path = tmp_path / "m.pt"
    save_model(LipschitzR2DN(1, 2, 2, 1, gamma=1.0, dtype=torch.float64), path)
    blob = torch.load(path, weights_only=True)
    blob["kwargs"]["gamma"] = 100.0
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(path)


@pytest.mark.parametrize("corrupt", ["empty", "truncated", "random", "text", "zip-no-pickle",
                                     "list", "other-format"])
def test_corrupt_files_give_one_clear_error_naming_the_file(corrupt, tmp_path) -> None:
    path = tmp_path / f"{corrupt}.pt"
    save_model(ContractingR2DN(1, 2, 2, 1, dtype=torch.float64), path)
    data = path.read_bytes()
    rng = np.random.default_rng(1)
    if corrupt == "empty":
        path.write_bytes(b"")
    elif corrupt == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif corrupt == "random":
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif corrupt == "text":
        path.write_text("not a checkpoint")
    elif corrupt == "zip-no-pickle":
        _rewrite_zip(path, lambda name, d: rng.integers(0, 256, len(d), dtype=np.uint8).tobytes()
                     if name.endswith("data.pkl") else d)
    elif corrupt == "list":
        torch.save([1, 2, 3], path)
    else:
        torch.save({"format": "someone-else/1"}, path)
    with pytest.raises(CheckpointError, match=f"checkpoint '.*{corrupt}.pt'"):
        load_model(path)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_model(tmp_path)


def test_legacy_format_loads_with_a_warning(tmp_path) -> None:
    model = LipschitzR2DN(1, 2, 2, 1, gamma=2.0, dtype=torch.float64)
    path = tmp_path / "old.pt"
    torch.save({"format": LEGACY_FORMAT, "class": "r2dn_control.nn.r2dn:LipschitzR2DN",
                "kwargs": {"input_size": 1, "state_size": 2, "features": 2, "output_size": 1,
                           "gamma": 2.0, "dtype": {"__dtype__": "float64"}},
                "state_dict": model.state_dict(), "metadata": {"a": 1}}, path)
    with pytest.warns(UserWarning, match="cannot be verified"):
        loaded, metadata = load_model(path)
    _assert_same(loaded, model)
    assert metadata == {"a": 1}
