"""Kill a real training subprocess with SIGKILL, resume it, and continue the same loss curve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import torch
    from r2dn_control import sysid
    from r2dn_control.nn import ContractingR2DN

    def run(out_dir, resume):
        rng = np.random.default_rng(0)
        u = rng.standard_normal((2, 600, 1))
        y = np.cumsum(u, axis=1) * 0.1 + 0.05 * rng.standard_normal((2, 600, 1))
        data = sysid.SequenceData(list(u), list(y))
        torch.manual_seed(0)
        model = ContractingR2DN(1, 4, 8, 1, hidden=(8,), init="long_memory",
                                contraction_rate=0.99, dtype=torch.float64)
        return sysid.fit(model, data, epochs=EPOCHS, segment=50, lr=1e-2, washout=20,
                         x0="learn", schedule="plateau", plateau_patience=1, out_dir=out_dir,
                         resume=resume, progress=False, early_stopping=None)

    EPOCHS = 12
    if __name__ == "__main__":
        run(sys.argv[1], sys.argv[2] == "resume")
''')


@pytest.mark.slow
def test_sigkill_and_resume_continue_the_same_loss_curve(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "R2DN_DISABLE_CPP": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "fresh"], env=env)
    history = out / "history.json"
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if history.exists():
                seen = len(json.loads(history.read_text()))
                if seen >= 3:
                    break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 3 <= seen < 12
    done = subprocess.run([sys.executable, str(script), str(out), "resume"], env=env,
                          timeout=300)
    assert done.returncode == 0
    resumed = json.loads(history.read_text())
    starts = [int(line.rsplit(" ", 1)[1]) for line in (out / "log.txt").read_text().splitlines()
              if "resume from epoch" in line]
    assert starts[0] == 0 and starts[1] >= seen  # at most the epoch in progress was lost
    assert [row["epoch"] for row in resumed] == list(range(1, 13))
    assert not list(out.glob("*.tmp"))

    # the uninterrupted run, in this process, gives the same curve
    namespace: dict = {}
    exec(compile(SCRIPT, "train.py", "exec"), namespace)
    from r2dn_control.nn import cpp

    with cpp.suspended():
        reference = namespace["run"](None, False)
    for a, b in zip(resumed, reference.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["val_nrmse"] == pytest.approx(b["val_nrmse"], rel=1e-9)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
