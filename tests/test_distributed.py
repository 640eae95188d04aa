"""Data-parallel training: 2 CPU ranks (gloo, loopback only) reproduce single-process training.

The two-rank run is a real ``torchrun`` launch of this very file (see ``_worker`` at the
bottom), in its own process session with a hard timeout, so a hung collective can neither
hang the suite nor leave processes behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r2dn_control.cli.distributed import main
from r2dn_control.control import Observer
from r2dn_control.control.training import fit_observer
from r2dn_control.nn import ContractingR2DN, LipschitzR2DN
from r2dn_control.train import fit_sequences
from r2dn_control.train.distributed import (
    DistributedContext,
    DistributedLoss,
    fit_sequences_distributed,
    init_distributed,
    shard,
)

WORLD = 2
STEPS = 4
EPOCHS = 3
# Five sequences over two ranks: uneven shards (3 + 2), which a naive per-shard mean gets wrong.
BATCH, HORIZON = 5, 12
ROWS = 20  # observer rows, split evenly (10 + 10)
TOL = 1e-10


# ------------------------------------------------------------------ the problem, shared by both
def _sysid_problem(init_seed: int) -> tuple[LipschitzR2DN, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    u = torch.randn(BATCH, HORIZON, 1, generator=g, dtype=torch.float64)
    y = torch.tanh(u.cumsum(1) * 0.3) + 0.1 * torch.randn(u.shape, generator=g,
                                                           dtype=torch.float64)
    torch.manual_seed(init_seed)
    model = LipschitzR2DN(1, 3, 4, 1, hidden=(8,), gamma=2.0, dtype=torch.float64)
    _generic(model)
    return model, u, y


def _observer_problem(init_seed: int) -> tuple[Observer, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(99)
    x, x_next, y, u = (torch.randn(ROWS, n, generator=g, dtype=torch.float64)
                       for n in (2, 2, 1, 1))
    torch.manual_seed(init_seed)
    model = ContractingR2DN(2, 2, 4, 2, hidden=(8,), identity_output=True, dtype=torch.float64)
    _generic(model)
    return Observer(model, input_size=1), (x, x_next, y, u)


def _generic(module: torch.nn.Module) -> None:
    """Perturb every parameter, so that no gradient entry is zero by symmetry.

    Adam divides by √v, so an exactly-zero gradient turns rounding noise (1e-16) into a full
    lr-sized step of random sign; at a generic point the comparison is well conditioned.
    """
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Parameters the loss never touches (the observer's output bias) keep grad None.
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()
            if p.grad is not None}


# ------------------------------------------------------------------ the 2-rank worker
def _worker(out: Path) -> None:
    """Run under torchrun: train both problems data-parallel, save this rank's results."""
    from r2dn_control.train.distributed import distributed_session

    torch.set_num_threads(1)
    with distributed_session("gloo", timeout_s=30.0) as ctx:
        assert ctx.world_size == WORLD, ctx
        # A different initial model on each rank: DDP must make rank 0's the common start.
        model, u, y = _sysid_problem(init_seed=ctx.rank)
        fit = fit_sequences_distributed(model, u, y, max_steps=STEPS, lr=1e-2,
                                        progress=False, context=ctx)
        observer, rows = _observer_problem(init_seed=10 + ctx.rank)
        mine = [shard(t, ctx.rank, ctx.world_size) for t in rows]
        obs_losses = fit_observer(DistributedLoss(observer, context=ctx), *mine, epochs=EPOCHS,
                                  batches=1, progress=False)
        torch.save({"losses": fit.losses, "params": _state(model), "grads": _grads(model),
                    "obs_losses": obs_losses, "obs_params": _state(observer),
                    "obs_grads": _grads(observer)}, out / f"rank{ctx.rank}.pt")
        # The command-line demo inside the same group (it reuses, and leaves, the group).
        main(["--batch", "4", "--horizon", "16", "--steps", "2", "--hidden", "8",
              "--no-progress"])


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    # GLOO_SOCKET_IFNAME=lo: gloo's peer connections stay on the loopback interface too.
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
           "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={_free_loopback_port()}",
           __file__, str(out)]
    # Own session: on timeout the launcher *and* its workers are killed together.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{stdout[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, "")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], str]:
    out = tmp_path_factory.mktemp("ddp")
    run = _torchrun(out)
    assert run.returncode == 0, f"torchrun failed (exit {run.returncode}):\n{run.stdout[-4000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)], run.stdout


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    assert got.keys() == want.keys()
    for name in want:
        err = (got[name] - want[name]).abs().max().item()
        assert err < TOL, f"{what} {name}: max |Δ| = {err:.3g}, expected < {TOL}"


# ------------------------------------------------------------------ tests
@pytest.mark.timeout(150)
def test_sysid_two_ranks_match_single_process(two_ranks):
    results, _ = two_ranks
    model, u, y = _sysid_problem(init_seed=0)  # rank 0's initial model
    ref = fit_sequences(model, u, y, max_steps=STEPS, lr=1e-2, progress=False)
    for rank, res in enumerate(results):
        assert len(res["losses"]) == STEPS
        assert max(abs(a - b) for a, b in zip(res["losses"], ref.losses)) < TOL, \
            f"rank {rank} losses {res['losses']} != single-process {ref.losses}"
        _assert_close(res["grads"], _grads(model), f"rank {rank} gradient")
        _assert_close(res["params"], _state(model), f"rank {rank} parameter")
    # Training moved the parameters, so agreement above is not agreement of untouched inits.
    start, _, _ = _sysid_problem(init_seed=0)
    assert any((p - q).abs().max() > 1e-4
               for p, q in zip(_state(model).values(), _state(start).values()))


@pytest.mark.timeout(150)
def test_observer_two_ranks_match_single_process(two_ranks):
    results, _ = two_ranks
    observer, rows = _observer_problem(init_seed=10)
    ref = fit_observer(observer, *rows, epochs=EPOCHS, batches=1, progress=False)
    for rank, res in enumerate(results):
        assert max(abs(a - b) for a, b in zip(res["obs_losses"], ref)) < TOL, \
            f"rank {rank} losses {res['obs_losses']} != single-process {ref}"
        _assert_close(res["obs_grads"], _grads(observer), f"rank {rank} observer gradient")
        _assert_close(res["obs_params"], _state(observer), f"rank {rank} observer parameter")


@pytest.mark.timeout(150)
def test_cli_demo_under_torchrun(two_ranks):
    _, stdout = two_ranks
    assert "data-parallel fit on 2 rank(s) (backend gloo, device cpu)" in stdout, stdout[-2000:]
    assert stdout.count("Adam steps") == 1  # rank 0 alone reports


def test_single_process_is_fit_sequences():
    # Without torchrun the data-parallel entry point is exactly the plain loop.
    assert init_distributed() == DistributedContext()
    a, u, y = _sysid_problem(init_seed=3)
    b, _, _ = _sysid_problem(init_seed=3)
    ra = fit_sequences(a, u, y, max_steps=2, progress=False)
    rb = fit_sequences_distributed(b, u, y, max_steps=2, progress=False)
    assert ra.losses == rb.losses
    _assert_close(_state(b), _state(a), "parameter")


def test_shard_covers_batch_contiguously():
    t = torch.arange(5)
    parts = [shard(t, r, 2) for r in range(2)]
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4]]


def test_shard_errors_name_expected_and_given():
    with pytest.raises(ValueError, match="1 items along dim 0 over 2 ranks"):
        shard(torch.zeros(1, 3), 0, 2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard(torch.zeros(4), 2, 2)


def test_distributed_loss_rejects_missing_method():
    with pytest.raises(AttributeError, match="no method 'nope'"):
        DistributedLoss(torch.nn.Linear(1, 1), "nope")


@pytest.mark.parametrize("module", ["r2dn_control.cli.distributed",
                                    "r2dn_control.train.distributed"])
def test_cli_help_runs_without_launcher(module):
    """The CLI lives in r2dn_control.cli.distributed; the old module path still runs it."""
    run = subprocess.run([sys.executable, "-m", module, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "torchrun --nproc_per_node=N -m r2dn_control.cli.distributed" in run.stdout


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
