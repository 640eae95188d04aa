"""Side by side, in one run: our R2DN/REN, the authors' JAX R2DN/REN, and torch LSTM/GRU.

The authors' code (nic-barbara/R2DN, JAX/Flax) is never a dependency and none of it is copied
here: it runs in its own virtual environment as a subprocess executing a small timing server
that this script writes to a temporary file; the server imports ``robustnn`` from
``--peer-dir``. Build that environment once (CPU only), outside the repository::

    git clone https://github.com/nic-barbara/R2DN /work/peers/R2DN   # tested at 5e65ac9
    python3 -m venv /work/peers/jaxvenv
    /work/peers/jaxvenv/bin/pip install jax==0.5.3 jaxlib==0.5.3 flax==0.10.4 optax==0.2.4 \
        numpy==2.2.2
    python benchmarks/bench_peers.py --peer-dir /work/peers/R2DN \
        --jax-python /work/peers/jaxvenv/bin/python            # full (~15 min on one core)
    python benchmarks/bench_peers.py --quick                   # smoke run (2 sizes, 1 round)

Without the JAX environment (or the peer directory) the JAX columns are skipped with a message
and the rest still runs.

What is timed (float32, batch 64, horizon 128, nu = nx = ny = 1, identity output, polar
parameterization, the loss is mean(y²)):

* R2DN: nv = 16, six hidden layers of width w ∈ {8, 16, 24, 32, 48, 64, 80, 96} (the paper's
  scaling study), relu; REN: nv ∈ {20, 30, 40, 60, 80, 100, 128, 200}, tanh.
* forward: the whole sequence under ``torch.no_grad`` / a jitted ``simulate_sequence``;
  forward+backward: the gradient of the loss with respect to every parameter (torch:
  ``backward``; JAX: a jitted ``jax.grad``, every leaf blocked on). Both include the
  direct-to-explicit map, once per call, with one exception: our forward under
  ``torch.no_grad`` reuses the explicit weights of the previous call when no parameter changed
  (``RecurrentModel.inference_cache``; JAX recomputes them in every call), so the R2DN forward
  is also timed with the cache off (``ours, map every call``: a copy of the model with
  ``inference_cache = False``). JAX compile time is excluded (compiled before timing).
* LSTM/GRU: ``nn.LSTM``/``nn.GRU`` + linear head with the same parameter count as the R2DN.

Fairness: the process (and so the JAX subprocess, which inherits it) is pinned to the same CPU
core(s) (``--cores``); torch runs ``--threads`` intra-op threads, XLA runs single-threaded
Eigen (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) when
``--threads 1``. Every round times, for each size and each mode, ours, JAX, LSTM, GRU in turn
(``--repeats`` calls each, after one warm-up), so drift in machine load hits all of them alike.
Each call is timed by wall clock and by process CPU time (``time.process_time``, all threads of
the process); on a shared machine the CPU time is the robust figure (time spent preempted does
not count), so the main tables use it and a last table gives the wall-clock ratios. Reported:
medians over the rounds (each round: the median of its calls), and the ratio ours / other with
the range of the per-round ratios (below 1: ours is faster).

GFLOP/s: nominal matmul work of the R2DN (2 flops per multiply-add): forward = 2·B·T·(Σ over
the LBDN's weights of fan-in·fan-out + nx·(2nv + nx + 2nu)); forward+backward = 3 × forward
(forward products, the adjoint's transposed products, the weight gradients). Activations and
the explicit map are not counted. The peak is the GFLOP/s (by CPU time) of a 1024×1024×1024
float32 ``torch.mm`` on the same threads, the median of its values at the start and the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from bench_speed import TorchRNN, matched_hidden
from timing import median_wall_and_cpu, parameter_count, run_sequence

from r2dn_control.nn import ContractingR2DN, ContractingREN

R2DN_WIDTHS = (8, 16, 24, 32, 48, 64, 80, 96)
REN_FEATURES = (20, 30, 40, 60, 80, 100, 128, 200)
R2DN_FEATURES, R2DN_LAYERS = 16, 6
#: Our R2DN with the inference cache off (timed in the forward mode only).
UNCACHED = "ours, map every call"
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# The JAX side: a line-oriented JSON server (one request per stdin line, one reply per stdout
# line). It builds a model once ("build": jit-compiles forward and gradient), then times rounds
# on request ("time"), so the caller can interleave it with the torch models.
JAX_SERVER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp
from flax import linen
from robustnn import r2dn, ren

models = {}

def build(req):
    nu = nx = ny = 1
    act = getattr(linen, req["activation"])
    if req["kind"] == "r2dn":
        model = r2dn.ContractingR2DN(nu, nx, req["nv"], ny, tuple(req["hidden"]),
                                     identity_output=True, activation=act,
                                     init_method="random", do_polar_param=True)
    else:
        model = ren.ContractingREN(nu, nx, req["nv"], ny, identity_output=True, activation=act,
                                   init_method="random", do_polar_param=True)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(k1, (req["batch"], nx))
    u = jax.random.normal(k2, (req["horizon"], req["batch"], nu))
    params = model.init(k3, x0, u[0])

    @jax.jit
    def forward(params, x0, u):
        return model.simulate_sequence(params, x0, u)[1]

    def loss(params, x0, u):
        return jnp.mean(model.simulate_sequence(params, x0, u)[1] ** 2)

    grad = jax.jit(jax.grad(loss))
    calls = {
        "fwd": lambda: forward(params, x0, u).block_until_ready(),
        "fwd+bwd": lambda: jax.block_until_ready(grad(params, x0, u)),
    }
    compile_s = {}
    for mode, call in calls.items():
        start = time.perf_counter()
        call()
        compile_s[mode] = time.perf_counter() - start
    models[req["key"]] = calls
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    return {"params": int(n), "compile_s": compile_s}

def timed(req):
    call = models[req["key"]][req["mode"]]
    call()
    wall, cpu = [], []
    for _ in range(req["repeats"]):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {"wall": wall, "cpu": cpu}

print(json.dumps({"jax": jax.__version__, "devices": str(jax.devices())}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "quit":
        break
    reply = build(req) if req["cmd"] == "build" else timed(req)
    print(json.dumps(reply), flush=True)
'''


class JaxPeer:
    """The authors' JAX models in a subprocess (see ``JAX_SERVER``)."""

    def __init__(self, python: str, peer_dir: str, threads: int) -> None:
        self._file = tempfile.NamedTemporaryFile("w", suffix="_jax_peer_server.py", delete=False)
        self._file.write(JAX_SERVER)
        self._file.close()
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH="")
        if threads == 1:
            env["XLA_FLAGS"] = XLA_SINGLE_THREAD
        self._proc = subprocess.Popen([python, self._file.name, peer_dir], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
        self.version = self._read()

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            raise RuntimeError(f"the JAX subprocess ended (exit code {self._proc.poll()})")
        return json.loads(line)

    def request(self, **req: object) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.poll() is None:
            self.request_quit()
        os.unlink(self._file.name)

    def request_quit(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self._proc.stdin.close()
        self._proc.wait(timeout=60)


def start_peer(args: argparse.Namespace) -> JaxPeer | None:
    """The JAX subprocess, or None (with the reason printed) when it cannot run."""
    python, peer = pathlib.Path(args.jax_python), pathlib.Path(args.peer_dir)
    if not python.is_file():
        print(f"# JAX peer skipped: no python at --jax-python {python} (see the docstring)")
        return None
    if not (peer / "robustnn").is_dir():
        print(f"# JAX peer skipped: no robustnn package under --peer-dir {peer}")
        return None
    try:
        jax_peer = JaxPeer(str(python), str(peer), args.threads)
    except (OSError, RuntimeError, json.JSONDecodeError) as error:
        print(f"# JAX peer skipped: it did not start ({error})")
        return None
    print(f"# JAX peer: {jax_peer.version}, XLA_FLAGS="
          f"{XLA_SINGLE_THREAD if args.threads == 1 else '(default)'}")
    return jax_peer


def r2dn_flops(model: ContractingR2DN, batch: int, steps: int) -> float:
    """Nominal forward matmul flops of one R2DN rollout (see the module docstring)."""
    nx, nv, nu = model.state_size, model.features, model.input_size
    widths = (nv, *model.hidden, nv)
    mlp = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return 2.0 * batch * steps * (mlp + nx * (2 * nv + nx + 2 * nu))


def sgemm_gflops(size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """GFLOP/s of a size³ float32 ``torch.mm`` by (wall, CPU) time."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    wall, cpu = median_wall_and_cpu(lambda: torch.mm(a, b), repeats, warmup=2)
    return 2.0 * size**3 / wall / 1e9, 2.0 * size**3 / cpu / 1e9


@dataclass
class Cell:
    """Per-round medians (wall, CPU seconds) of one (model, mode)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def median(self, clock: str) -> float:
        return statistics.median(getattr(self, clock))


def torch_timer(model: torch.nn.Module, u: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "fwd":
        def call() -> None:
            with torch.no_grad():
                run_sequence(model, u)
    else:
        def call() -> None:
            model.zero_grad(set_to_none=True)
            run_sequence(model, u).square().mean().backward()
    return call


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def ratio(ours: Cell | None, theirs: Cell | None, clock: str) -> str:
    """ours / theirs of the medians, with the range of the per-round ratios."""
    if ours is None or theirs is None:
        return "–"
    a, b = getattr(ours, clock), getattr(theirs, clock)
    per_round = [x / y for x, y in zip(a, b)]
    return (f"{statistics.median(a) / statistics.median(b):.2f} "
            f"({min(per_round):.2f}–{max(per_round):.2f})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-dir", default="/work/peers/R2DN",
                        help="checkout of nic-barbara/R2DN (holds robustnn/)")
    parser.add_argument("--jax-python", default="/work/peers/jaxvenv/bin/python",
                        help="python of the venv with jax/flax")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cores", default=None,
                        help="comma-separated CPU ids to pin to (default: the first --threads "
                             "of this process's allowed cores)")
    parser.add_argument("--widths", default=",".join(map(str, R2DN_WIDTHS)))
    parser.add_argument("--ren-features", default=",".join(map(str, REN_FEATURES)),
                        help="REN sizes ('' to skip the REN)")
    parser.add_argument("--quick", action="store_true", help="2 sizes, 1 round, 1 repeat")
    return parser.parse_args()


def pin_cores(args: argparse.Namespace) -> list[int]:
    """Pin this process (and the JAX subprocess it starts) to ``--cores`` or the first
    ``--threads`` allowed cores; the cores used ([] where affinity is unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    cores = [int(c) for c in args.cores.split(",")] if args.cores else allowed[:args.threads]
    os.sched_setaffinity(0, set(cores))
    return cores


def time_rounds(entries: dict, u: dict[str, torch.Tensor], peer: JaxPeer | None,
                args: argparse.Namespace) -> dict[tuple[str, str, str], Cell]:
    """Every round: for each size and mode, each torch model and (after ours) the JAX model in
    turn, ``--repeats`` calls each; the per-round medians by (label, model, mode)."""
    cells: dict[tuple[str, str, str], Cell] = {}
    for r in range(args.rounds):
        start = time.perf_counter()
        for label, (models, key, _) in entries.items():
            for mode in ("fwd", "fwd+bwd"):
                for name, model in models.items():
                    if name == UNCACHED and mode != "fwd":
                        continue  # the cache never applies to a call that needs a graph
                    wall, cpu = median_wall_and_cpu(torch_timer(model, u[label], mode),
                                                    args.repeats)
                    cells.setdefault((label, name, mode), Cell()).add(wall, cpu)
                    if name == "ours" and peer is not None and key is not None:
                        got = peer.request(cmd="time", key=key, mode=mode, repeats=args.repeats)
                        cells.setdefault((label, "JAX", mode), Cell()).add(
                            statistics.median(got["wall"]), statistics.median(got["cpu"]))
        print(f"# round {r + 1}/{args.rounds}: {time.perf_counter() - start:.0f} s", flush=True)
    return cells


def main() -> None:
    args = parse_args()
    widths = [int(w) for w in args.widths.split(",") if w]
    ren_sizes = [int(n) for n in args.ren_features.split(",") if n]
    batch, horizon = 64, 128
    if args.quick:
        widths, ren_sizes = widths[:1] + widths[-1:], ren_sizes[:1]
        args.rounds, args.repeats, batch, horizon = 1, 1, 8, 16
    cores = pin_cores(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    from r2dn_control.nn import cpp

    kernels = cpp.status() if cpp.available() else f"off: {cpp.status()}"
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s) pinned to cores {cores}, float32, batch {batch}, "
          f"horizon {horizon}, {args.rounds} rounds × {args.repeats} calls; C++ kernels: "
          f"{kernels}")
    peaks = [sgemm_gflops()]
    peer = start_peer(args)

    # entries[label] = (torch models by name, JAX key or None, nominal forward flops)
    entries: dict[str, tuple[dict[str, torch.nn.Module], str | None, float]] = {}
    params: dict[str, str] = {}

    def add(label: str, models: dict[str, torch.nn.Module], flops: float, **jax_spec) -> None:
        n, key, theirs = parameter_count(models["ours"]), None, "–"
        if peer is not None:
            built = peer.request(cmd="build", key=label, batch=batch, horizon=horizon,
                                 **jax_spec)
            key, theirs = label, str(built["params"])
            compile_s = ", ".join(f"{k} {v:.1f} s" for k, v in built["compile_s"].items())
            print(f"# {label}: JAX compile {compile_s}", flush=True)
        params[label] = f"{n} / {theirs}"
        entries[label] = (models, key, flops)

    for w in widths:
        ours = ContractingR2DN(1, 1, R2DN_FEATURES, 1, hidden=(w,) * R2DN_LAYERS,
                               activation="relu", identity_output=True, device=device)
        n = parameter_count(ours)
        uncached = copy.deepcopy(ours)
        uncached.inference_cache = False
        add(f"R2DN 6×{w}", {
            "ours": ours,
            UNCACHED: uncached,
            "LSTM": TorchRNN("LSTM", 1, matched_hidden("LSTM", n), 1, device=device),
            "GRU": TorchRNN("GRU", 1, matched_hidden("GRU", n), 1, device=device),
        }, r2dn_flops(ours, batch, horizon), kind="r2dn", nv=R2DN_FEATURES,
            hidden=[w] * R2DN_LAYERS, activation="relu")
    for nv in ren_sizes:
        ours = ContractingREN(1, 1, nv, 1, activation="tanh", identity_output=True,
                              device=device)
        add(f"REN nv={nv}", {"ours": ours}, 0.0, kind="ren", nv=nv, activation="tanh")

    u = {label: torch.randn(batch, horizon, 1, device=device) for label in entries}
    cells = time_rounds(entries, u, peer, args)
    if peer is not None:
        peer.close()
    peaks.append(sgemm_gflops())
    peak_wall = statistics.median(p[0] for p in peaks)
    peak_cpu = statistics.median(p[1] for p in peaks)
    print(f"# sgemm peak (1024³ torch.mm, {args.threads} thread(s), start and end of the run): "
          f"{peak_cpu:.1f} GFLOP/s by CPU time, {peak_wall:.1f} by wall time")
    report(entries, cells, params, peak_cpu, bool(ren_sizes))


def report(entries: dict, cells: dict[tuple[str, str, str], Cell], params: dict[str, str],
           peak: float, with_ren: bool) -> None:
    """Markdown tables: CPU-time medians and ratios, then the wall-clock ratios."""

    def get(label: str, name: str, mode: str) -> Cell | None:
        return cells.get((label, name, mode))

    def cell_ms(c: Cell | None, clock: str = "cpu") -> str:
        return "–" if c is None else ms(c.median(clock))

    print("\n## R2DN (nv = 16, relu) vs the authors' JAX R2DN and torch LSTM/GRU\n")
    print("Process CPU time, medians over rounds in ms; ratio = ours / other (range over "
          "rounds); GFLOP/s by CPU time.\n")
    print("| size | params ours / JAX | ours fwd | JAX fwd | ours/JAX fwd "
          "| ours fwd, map every call | its ratio to JAX | ours fwd+bwd "
          "| JAX fwd+bwd | ours/JAX fwd+bwd | LSTM fwd+bwd | ours/LSTM fwd+bwd | GRU fwd+bwd "
          "| GFLOP/s fwd / fwd+bwd | fwd+bwd % of sgemm peak |")
    print("|" + "---|" * 15)
    r2dn_rows = [label for label in entries if label.startswith("R2DN")]
    for label in r2dn_rows:
        flops = entries[label][2]
        f, b = get(label, "ours", "fwd"), get(label, "ours", "fwd+bwd")
        jf, jb = get(label, "JAX", "fwd"), get(label, "JAX", "fwd+bwd")
        lb, gb = get(label, "LSTM", "fwd+bwd"), get(label, "GRU", "fwd+bwd")
        uf = get(label, UNCACHED, "fwd")
        assert f is not None and b is not None
        g_f, g_b = flops / f.median("cpu") / 1e9, 3 * flops / b.median("cpu") / 1e9
        print(f"| {label[5:]} | {params[label]} | {cell_ms(f)} | {cell_ms(jf)} "
              f"| {ratio(f, jf, 'cpu')} | {cell_ms(uf)} | {ratio(uf, jf, 'cpu')} "
              f"| {cell_ms(b)} | {cell_ms(jb)} | {ratio(b, jb, 'cpu')} "
              f"| {cell_ms(lb)} | {ratio(b, lb, 'cpu')} | {cell_ms(gb)} "
              f"| {g_f:.1f} / {g_b:.1f} | {100 * g_b / peak:.0f} % |", flush=True)
    ren_rows = [label for label in entries if label.startswith("REN")] if with_ren else []
    if ren_rows:
        print("\n## REN (tanh) vs the authors' JAX REN (process CPU time, ms; ours / JAX)\n")
        print("| nv | params ours / JAX | ours fwd | JAX fwd | ours/JAX fwd | ours fwd+bwd "
              "| JAX fwd+bwd | ours/JAX fwd+bwd |")
        print("|" + "---|" * 8)
        for label in ren_rows:
            f, b = get(label, "ours", "fwd"), get(label, "ours", "fwd+bwd")
            jf, jb = get(label, "JAX", "fwd"), get(label, "JAX", "fwd+bwd")
            print(f"| {label[7:]} | {params[label]} | {cell_ms(f)} | {cell_ms(jf)} "
                  f"| {ratio(f, jf, 'cpu')} | {cell_ms(b)} | {cell_ms(jb)} "
                  f"| {ratio(b, jb, 'cpu')} |")
    print("\n## The same ratios by wall-clock time (interleaved, same core; ms are wall medians)"
          "\n")
    print("| model | ours fwd | JAX fwd | ours/JAX fwd | ours fwd+bwd | JAX fwd+bwd "
          "| ours/JAX fwd+bwd | ours/LSTM fwd+bwd |")
    print("|" + "---|" * 8)
    for label in r2dn_rows + ren_rows:
        f, b = get(label, "ours", "fwd"), get(label, "ours", "fwd+bwd")
        jf, jb = get(label, "JAX", "fwd"), get(label, "JAX", "fwd+bwd")
        lb = get(label, "LSTM", "fwd+bwd")
        print(f"| {label} | {cell_ms(f, 'wall')} | {cell_ms(jf, 'wall')} "
              f"| {ratio(f, jf, 'wall')} | {cell_ms(b, 'wall')} | {cell_ms(jb, 'wall')} "
              f"| {ratio(b, jb, 'wall')} | {ratio(b, lb, 'wall')} |")


if __name__ == "__main__":
    sys.exit(main())
