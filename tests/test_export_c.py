"""C export: the compiled C99 step reproduces torch (float32 ≤ 1e-5, double build ≤ 1e-12)."""

from __future__ import annotations

import copy
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from export_cases import CASES, IDS, build, relative_error

from r2dn_control.export import c as c_export
from r2dn_control.export import to_c
from r2dn_control.export.files import sha256_file

if c_export.c_compiler() is None:
    pytest.skip("no C compiler (cc or $CC) on PATH: the C export test needs one",
                allow_module_level=True)

STEPS = 25


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Export every case in float32 and float64 and compile each once for the module."""
    root = tmp_path_factory.mktemp("c_export")
    models, jobs = {}, []
    for k, (family, activation) in enumerate(CASES):
        model = build(family, seed=k, activation=activation)
        to_c(model, root, f"m{k}")
        double = copy.deepcopy(model).double()
        to_c(double, root, f"d{k}", dtype=torch.float64)
        models[IDS[k]] = (model, double)
        jobs += [(f"m{k}", None), (f"d{k}", "double")]
    with ThreadPoolExecutor(max_workers=4) as pool:  # compilers run as separate processes
        exes = dict(zip(jobs, pool.map(lambda job: c_export.build_harness(root, *job), jobs)))
    out = {case: (model, exes[(f"m{k}", None)], double, exes[(f"d{k}", "double")])
           for k, (case, (model, double)) in enumerate(models.items())}
    return root, out


def _inputs(model, dtype):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(STEPS, model.input_size, generator=gen, dtype=dtype)


@pytest.mark.parametrize(("precision", "tol"), [("float", 1e-5), ("double", 1e-12)])
@pytest.mark.parametrize("case", IDS)
def test_c_build_matches_torch(builds, case, precision, tol):
    """float build vs torch float32 (≤ 1e-5), double build of a float64 export vs float64."""
    model32, exe32, model64, exe64 = builds[1][case]
    model, exe = (model32, exe32) if precision == "float" else (model64, exe64)
    u = _inputs(model, model.dtype)
    with torch.no_grad():
        y_ref, x_ref = model(u)
    y, xs = c_export.run_harness(exe, u.double().numpy(), model.output_size, model.state_size)
    assert relative_error(y, y_ref) <= tol
    assert relative_error(xs[-1], x_ref) <= tol


def test_c_source_is_dependency_free_and_carries_the_certificate(builds):
    root, _ = builds
    header = (root / "m0.h").read_text()
    source = (root / "m0.c").read_text()
    assert "guaranteed contraction rate" in header and "metric P" in header
    assert "void m0_step(const m0_real *u, m0_real *x, m0_real *y);" in header
    assert "typedef M0_REAL m0_real;" in header and "#define M0_REAL float" in header
    includes = set(re.findall(r"#include\s+[<\"]([^>\"]+)", source))
    assert includes == {"m0.h"}  # relu: no libm at all
    assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", source)
    tanh_case = IDS.index(next(i for i in IDS if i.endswith("-tanh")))
    assert set(re.findall(r"#include\s+[<\"]([^>\"]+)", (root / f"m{tanh_case}.c").read_text())) \
        == {f"m{tanh_case}.h", "tgmath.h"}
    sidecar = json.loads((root / "m0.json").read_text())
    assert sidecar["artifact"]["files"] == {"m0.h": sha256_file(root / "m0.h"),
                                            "m0.c": sha256_file(root / "m0.c")}
    assert sidecar["certificate"]["holds_on_exported_weights"] is True


def test_c_name_must_be_an_identifier(tmp_path):
    from families import FAMILIES

    with pytest.raises(ValueError, match="C identifier"):
        to_c(build(FAMILIES[0]), tmp_path, "1bad-name")
    assert list(tmp_path.iterdir()) == []


def test_c_bench_mode_reports_latencies(builds):
    _, out = builds
    lat = c_export.bench_harness(out[IDS[0]][1], 50)
    assert lat.shape == (50,) and np.all(lat > 0)


_TANH_DRIVER = r"""
#include <stdio.h>
#include <tgmath.h>
typedef float t_real;
TANH
int main(void) {  /* float32 values on stdin -> the float build's tanh as float64 on stdout */
  float a;
  while (fread(&a, sizeof a, 1, stdin) == 1) {
    double r = t_tanh(a);
    fwrite(&r, sizeof r, 1, stdout);
  }
  return 0;
}
"""


def test_float_tanh_is_within_1e_7_of_libm_over_a_dense_grid(tmp_path):
    """The float build's rational tanh vs libm's tanh in double: |error| ≤ 1e-7 everywhere."""
    import subprocess

    source = tmp_path / "tanh.c"
    source.write_text(_TANH_DRIVER.replace("TANH", c_export.tanh_source())
                      .replace("NAME_LIBM_TANH", "T_LIBM_TANH").replace("NAME_", "t_"))
    exe = tmp_path / "tanh"
    subprocess.run([c_export.c_compiler(), "-std=c99", "-O2", "-o", str(exe), str(source),
                    "-lm"], check=True, capture_output=True)
    grid = np.linspace(-12.0, 12.0, 2**21 + 1, dtype=np.float32)
    tiny = np.float32(2.0) ** -np.arange(1, 150, dtype=np.float32)  # down to subnormals
    clamp = np.float32(c_export.TANH_CLAMP)
    edges = np.array([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, clamp,
                      np.nextafter(clamp, np.float32(0)), np.nextafter(clamp, np.float32(20))],
                     dtype=np.float32)
    a = np.concatenate([grid, tiny, -tiny, edges, [np.nan]]).astype(np.float32)
    done = subprocess.run([str(exe)], input=a.tobytes(), capture_output=True, check=True)
    got = np.frombuffer(done.stdout, dtype=np.float64)
    assert got.shape == a.shape
    assert np.isnan(got[-1])
    ref = np.tanh(a[:-1].astype(np.float64))
    err = np.abs(got[:-1] - ref)
    assert err.max() <= 1e-7, (err.max(), a[:-1][err.argmax()])
    assert np.all(np.abs(got[:-1]) <= 1.0) and np.all(np.sign(got[:-1]) == np.sign(ref))
    assert np.all(np.diff(got[:grid.size]) >= 0)  # monotone on the grid
