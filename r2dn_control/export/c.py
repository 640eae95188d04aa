r"""Plain C99 export: a header and a source with static weights and ``name_step``.

The generated step evaluates the stacked step form of `r2dn_control.nn.realtime`
(docs/theory.md §2, §3), with ``z = [x; u]``:

$$
v = W_{in}^\top z + b_v,\quad w = \phi(v),\quad
[y; x^+] = W_{out}^\top [z; w] + b_{out},
$$

``φ`` the folded LBDN (one matrix per layer) or the REN equilibrium solved row by row
(``w_i = σ(v_i + Σ_{j<i} (D₁₁)_{ij} w_j)``, exact). No heap allocation (stack buffers of
compile-time size), no library call except ``tanh``/``exp`` for those activations. The
arithmetic type is ``NAME_REAL`` (default: the exported dtype, ``float`` or ``double``), so
the same source builds in float and in double.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import numpy as np

from ..nn.realtime import StepForm
from .files import atomic_write

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_ACTIVATION_C = {
    "relu": "(a > 0 ? a : 0)",
    "leaky_relu": "(a > 0 ? a : (NAME_real)0.01 * a)",
    "tanh": "NAME_tanh(a)",
    "sigmoid": "((NAME_real)1 / ((NAME_real)1 + exp(-a)))",
    "identity": "(a)",
}
_NEEDS_LIBM = ("tanh", "sigmoid")

#: tanh(a) ≈ a·p(a²)/q(a²) on |a| ≤ TANH_CLAMP (±1 beyond, where 1 − tanh < 3.1e-8): a
#: relative-error minimax fit of degree (4, 4) in a² (max relative error 2.1e-8 in exact
#: arithmetic), coefficients lowest degree first. Evaluated in double and rounded once to
#: float, so the float build's tanh is within 1e-7 of tanh in double (tested over a dense
#: grid against libm in tests/test_export_c.py).
TANH_CLAMP = 9.0
TANH_P = (0.99999997948433317, 0.13381015639413105, 0.0034955757998157678,
          2.060886371200232e-05, 1.3354336943372924e-08)
TANH_Q = (1.0, 0.46714331245402546, 0.02587693646077803, 0.00032856139343392585,
          7.7764295813318064e-07)


def _horner(coefficients: tuple[float, ...], var: str) -> str:
    text = f"{coefficients[-1]!r}"
    for c in reversed(coefficients[:-1]):
        text = f"({text} * {var} + {c!r})"
    return text


def tanh_source() -> str:
    """C text of ``NAME_tanh``: the rational tanh in the float build, libm's in double.

    Branch-free (the clamp is a select, NaN propagates), so the activation loop vectorizes.
    Define ``NAME_LIBM_TANH`` to use libm's ``tanh`` in every precision (e.g. a target
    without a double-precision FPU).
    """
    return f"""
/* tanh: in the float build a rational approximation evaluated in double and rounded once
   (|error| <= 1e-7 against tanh in double; about 4x cheaper than tanhf and vectorizable);
   in the double build, or with -DNAME_LIBM_TANH, libm's tanh. */
static NAME_real NAME_tanh(NAME_real a) {{
#ifndef NAME_LIBM_TANH
  if (sizeof(NAME_real) == sizeof(float)) {{
    double x = (double)a;
    x = x < -{TANH_CLAMP!r} ? -{TANH_CLAMP!r} : (x > {TANH_CLAMP!r} ? {TANH_CLAMP!r} : x);
    const double t = x * x;
    return (NAME_real)(x * {_horner(TANH_P, "t")} / {_horner(TANH_Q, "t")});
  }}
#endif
  return tanh(a);
}}
"""


def check_name(name: object) -> str:
    """``name`` must be a C identifier (it prefixes every generated symbol)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be a C identifier ([A-Za-z_][A-Za-z0-9_]*), got {name!r}")
    return name


def _array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.float64).ravel()
    pieces = [f"{v:.17g}" for v in flat] if flat.size else ["0"]
    text, line = [], ""
    for piece in pieces:  # about 100 characters a line, a number never split
        if line and len(line) + len(piece) > 96:
            text.append(line)
            line = ""
        line += piece + ","
    text.append(line.rstrip(","))
    return f"static const NAME_real {name}[{max(flat.size, 1)}] = {{\n  " + "\n  ".join(text) + "\n};\n"


def header_source(form: StepForm, name: str, comment: str) -> str:
    """The text of ``name.h``: sizes, the real type, the step's prototype and ``comment``."""
    up = name.upper()
    real = "double" if str(form.dtype) == "torch.float64" else "float"
    lines = ["/*", *[f" * {line}".rstrip() for line in comment.splitlines()], " */",
             f"#ifndef {up}_H", f"#define {up}_H", "",
             f"#ifndef {up}_REAL", f"#define {up}_REAL {real}", "#endif",
             f"typedef {up}_REAL {name}_real;", "",
             f"#define {up}_NU {form.nu}", f"#define {up}_NX {form.nx}",
             f"#define {up}_NV {form.nv}", f"#define {up}_NY {form.ny}", "",
             "/* One step: reads u[NU] and x[NX], writes y[NY], overwrites x with the next state.",
             "   y and x must not overlap. No heap allocation; reentrant. */",
             f"void {name}_step(const {name}_real *u, {name}_real *x, {name}_real *y);", "",
             f"#endif /* {up}_H */", ""]
    return "\n".join(lines)


def body_source(form: StepForm, name: str) -> str:
    """The text of ``name.c``: static weights and the step."""
    nz = form.nx + form.nu
    parts = [f'#include "{name}.h"']
    if form.activation in _NEEDS_LIBM:
        parts.append("#include <tgmath.h>")
    parts.append("")
    parts.append(_array("NAME_w_in", form.w_in))
    parts.append(_array("NAME_b_in", form.b_in))
    widths = []
    for k, (w, b) in enumerate(form.layers):
        parts.append(_array(f"NAME_w{k}", w))
        parts.append(_array(f"NAME_b{k}", np.zeros(w.shape[1]) if b is None else b))
        widths.append(w.shape[1])
    if form.d11 is not None:
        parts.append(_array("NAME_d11", form.d11))
    parts.append(_array("NAME_w_out", form.w_out))
    parts.append(_array("NAME_b_out", form.b_out))
    act = _ACTIVATION_C[form.activation]
    if form.activation == "tanh":
        parts.append(tanh_source())
    parts.append(f"""
/* out = b + in @ W with W row-major (n_in x n_out): column-wise axpy, vectorizable. */
static void NAME_affine(const NAME_real *restrict w, const NAME_real *restrict b,
                        const NAME_real *restrict in, int n_in, int n_out,
                        NAME_real *restrict out) {{
  for (int i = 0; i < n_out; ++i) out[i] = b[i];
  for (int j = 0; j < n_in; ++j) {{
    const NAME_real a = in[j];
    const NAME_real *restrict row = w + (long)j * n_out;
    for (int i = 0; i < n_out; ++i) out[i] += a * row[i];
  }}
}}

static NAME_real NAME_act(NAME_real a) {{ return {act}; }}
""")
    hidden = max([form.nv, *widths[:-1]]) if form.layers else form.nv
    step = ["void NAME_step(const NAME_real *u, NAME_real *x, NAME_real *y) {",
            f"  NAME_real zw[{nz + form.nv}];  /* [x, u, w] */",
            f"  NAME_real v[{form.nv}];",
            f"  NAME_real out[{form.ny + form.nx}];",
            f"  for (int i = 0; i < {form.nx}; ++i) zw[i] = x[i];",
            f"  for (int i = 0; i < {form.nu}; ++i) zw[{form.nx} + i] = u[i];",
            f"  NAME_affine(NAME_w_in, NAME_b_in, zw, {nz}, {form.nv}, v);"]
    if form.d11 is not None:  # REN: exact row-by-row equilibrium
        step += [f"  NAME_real *w = zw + {nz};",
                 f"  for (int i = 0; i < {form.nv}; ++i) {{",
                 "    NAME_real s = v[i];",
                 f"    const NAME_real *row = NAME_d11 + (long)i * {form.nv};",
                 "    for (int j = 0; j < i; ++j) s += row[j] * w[j];",
                 "    w[i] = NAME_act(s);",
                 "  }"]
    else:  # R2DN: folded LBDN, ping-pong buffers
        step += [f"  NAME_real h[2][{hidden}];", "  const NAME_real *in = v;"]
        n_in = form.nv
        for k, width in enumerate(widths):
            last = k == len(widths) - 1
            dst = f"zw + {nz}" if last else f"h[{k % 2}]"
            step.append(f"  NAME_affine(NAME_w{k}, NAME_b{k}, in, {n_in}, {width}, {dst});")
            if not last:
                step += [f"  for (int i = 0; i < {width}; ++i) h[{k % 2}][i] = NAME_act(h[{k % 2}][i]);",
                         f"  in = h[{k % 2}];"]
            n_in = width
    step += [f"  NAME_affine(NAME_w_out, NAME_b_out, zw, {nz + form.nv}, {form.ny + form.nx}, out);",
             f"  for (int i = 0; i < {form.ny}; ++i) y[i] = out[i];",
             f"  for (int i = 0; i < {form.nx}; ++i) x[i] = out[{form.ny} + i];",
             "}", ""]
    parts.append("\n".join(step))
    text = "\n".join(parts)
    for macro in ("NAME_REAL", "NAME_LIBM_TANH"):
        text = text.replace(macro, macro.replace("NAME", name.upper()))
    return text.replace("NAME_", f"{name}_")


# ------------------------------------------------------------------------------ building
_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "NAME.h"

/* Test/benchmark driver (not part of the export):
 *   run T < u.bin > y.bin   float64 inputs (T x NU) from x = 0; writes T x (NY + NX) float64
 *   bench N                 prints N per-step latencies in nanoseconds */
int main(int argc, char **argv) {
  NAME_real u[NAME_NU], x[NAME_NX] = {0}, y[NAME_NY];
  if (argc == 3 && argv[1][0] == 'r') {
    long steps = atol(argv[2]);
    for (long t = 0; t < steps; ++t) {
      double buf[NAME_NU + NAME_NY + NAME_NX];
      if (fread(buf, sizeof(double), NAME_NU, stdin) != NAME_NU) return 2;
      for (int i = 0; i < NAME_NU; ++i) u[i] = (NAME_real)buf[i];
      NAME_step(u, x, y);
      for (int i = 0; i < NAME_NY; ++i) buf[i] = y[i];
      for (int i = 0; i < NAME_NX; ++i) buf[NAME_NY + i] = x[i];
      fwrite(buf, sizeof(double), NAME_NY + NAME_NX, stdout);
    }
    return 0;
  }
  if (argc == 3 && argv[1][0] == 'b') {
    long n = atol(argv[2]);
    for (int i = 0; i < NAME_NU; ++i) u[i] = (NAME_real)(0.1 * (i + 1));
    for (long k = 0; k < n; ++k) {
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      NAME_step(u, x, y);
      clock_gettime(CLOCK_MONOTONIC, &b);
      u[0] = (NAME_real)(0.5 * y[0]);  /* keep the loop data dependent */
      printf("%ld\n", (long)((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec)));
    }
    return 0;
  }
  fprintf(stderr, "usage: %s run T | bench N\n", argv[0]);
  return 1;
}
"""


def c_compiler() -> str | None:
    """The system C compiler (``$CC``, else ``cc``), or None when there is none."""
    compiler = os.environ.get("CC", "cc")
    return shutil.which(compiler)


def build_harness(directory: str | os.PathLike, name: str, real: str | None = None,
                  flags: tuple[str, ...] = ("-O3", "-march=native")) -> pathlib.Path:
    """Compile the exported ``name.c`` with a small driver; returns the executable's path.

    ``real`` overrides the arithmetic type (``"float"`` or ``"double"``). The driver is for
    tests and benchmarks (``run T`` / ``bench N``, see its source in this module).
    """
    compiler = c_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC or install cc)")
    directory = pathlib.Path(directory)
    check_name(name)
    if real not in (None, "float", "double"):
        raise ValueError(f"real must be None, 'float' or 'double', got {real!r}")
    driver = directory / f"{name}_driver.c"
    driver.write_text(_HARNESS.replace("NAME_step", f"{name}_step")
                      .replace("NAME_real", f"{name}_real")
                      .replace("NAME_", f"{name.upper()}_").replace("NAME", name))
    exe = directory / f"{name}_driver_{real or 'default'}"
    define = [] if real is None else [f"-D{name.upper()}_REAL={real}"]
    cmd = [compiler, "-std=c99", "-D_POSIX_C_SOURCE=199309L", *flags, *define, "-o", str(exe),
           str(driver), str(directory / f"{name}.c"), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"C build failed ({' '.join(cmd)}):\n{done.stderr}")
    return exe


def run_harness(exe: str | os.PathLike, u: np.ndarray, ny: int, nx: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Run the driver on ``u`` (T, nu) from x₀ = 0; returns ``y`` (T, ny) and states x₁…x_T."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    done = subprocess.run([os.fspath(exe), "run", str(u.shape[0])], input=u.tobytes(),
                          capture_output=True, check=True)
    out = np.frombuffer(done.stdout, dtype=np.float64).reshape(u.shape[0], ny + nx)
    return out[:, :ny], out[:, ny:]


def bench_harness(exe: str | os.PathLike, steps: int) -> np.ndarray:
    """Per-step latencies of the driver's ``bench`` mode, in seconds."""
    done = subprocess.run([os.fspath(exe), "bench", str(int(steps))], capture_output=True,
                          text=True, check=True)
    return np.array([int(s) for s in done.stdout.split()], dtype=np.float64) * 1e-9


def write_c(form: StepForm, directory: str | os.PathLike, name: str, comment: str
            ) -> dict[str, pathlib.Path]:
    """Write ``name.h`` and ``name.c`` atomically into ``directory``; returns their paths."""
    check_name(name)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.h": header_source(form, name, comment), f"{name}.c": body_source(form, name)}
    paths = {}
    for filename, text in files.items():
        paths[filename] = atomic_write(directory / filename, text.encode())
    return paths
