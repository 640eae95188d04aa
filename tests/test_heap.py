"""glibc's malloc keeps freed blocks once the C++ kernels load (``nn.cpp.retain_heap``), so a
training call's buffers are reused instead of page-faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from r2dn_control import config
from r2dn_control.nn.cpp import heap

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")

# Minor page faults per 6×8 training call (median of 5 after 3 warm-ups) in a fresh process.
_FAULTS = r"""
import json, resource, statistics, sys, torch
from r2dn_control import config
config.set_defaults("nn.cpp", retain_heap=sys.argv[1] == "on")
from r2dn_control.nn import ContractingR2DN, cpp
assert cpp.build()
torch.manual_seed(0)
model = ContractingR2DN(1, 1, 16, 1, hidden=(8,) * 6, activation="relu", identity_output=True)
u = torch.randn(64, 128, 1)
faults = []
for k in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.zero_grad(set_to_none=True)
    model(u)[0].square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
from r2dn_control.nn.cpp import heap
print(json.dumps({"faults": statistics.median(faults[3:]), "applied": heap._applied}))
"""


def _faults(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _FAULTS, setting], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@glibc
def test_retain_freed_memory_sets_mallopt_once() -> None:
    assert heap.retain_freed_memory() is True
    assert heap.retain_freed_memory() is True  # idempotent
    assert heap._applied == [True]


@glibc
def test_training_calls_stop_page_faulting_when_the_kernels_load() -> None:
    """With the setting on, a warm 6×8 training call touches no fresh pages (it reuses the
    freed heap); with it off the loader leaves malloc alone."""
    on = _faults("on")
    assert on["applied"] == [True]
    # A call allocates ~3 MB of buffers, i.e. ~700 pages if each were fresh.
    assert on["faults"] < 50, on
    off = _faults("off")
    assert off["applied"] == []


def test_the_setting_is_checked() -> None:
    with pytest.raises(TypeError, match="retain_heap"):
        config.set_defaults("nn.cpp", retain_heap=1)
    assert config.defaults["nn.cpp.retain_heap"] is False  # opt-in: it is process-wide
