"""Youla closed-loop contraction: the cascade route against the dense SDP (CPU time).

For each Q (a freshly initialised REN of a preset, or a saved ``model.pt`` of a REN Youla run)
certifies Q in feedback with the nominal Youla system at the rate `youla.certify_q` checks,
by ``method="cascade"`` and, where the loop's LMI is at most ``--sdp-max``, by
``method="sdp"`` in the same process. Prints one JSON line per (Q, method).

    python benchmarks/bench_youla_cascade.py --presets quick full --models runs/youla-ren-0/model.pt
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from r2dn_control import certify
from r2dn_control.control.design import spectral_radius
from r2dn_control.experiments import youla
from r2dn_control.nn import load_model


def loop_and_rate(config: youla.YoulaConfig, q) -> tuple[certify.Target, float, float]:
    """The loop's target, the rate certify_q checks, and Q's certified (implied) rate."""
    controller, _ = youla.build_loop(config, q, torch.device("cpu"))
    nominal = controller.base.youla_system()
    q_rate = certify.contraction(q, method="implied").bound or 1.0
    floor = max(q_rate, spectral_radius(nominal.A))
    rate = min(1.0, floor + 0.1 * (1.0 - floor))
    loop = certify.ClosedLoop(q, nominal[: q.input_size, :]).to_target()
    return loop, rate, q_rate


def measure(name: str, config: youla.YoulaConfig, q, sdp_max: int) -> None:
    loop, rate, q_rate = loop_and_rate(config, q)
    size = sum(loop.sizes[1:3])
    methods = ["cascade"] + (["sdp"] if size <= sdp_max else [])
    for method in methods:
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = certify.contraction(loop, rate=rate, method=method)
        cpu = time.process_time() - start
        p = np.asarray(res.P) if res.P is not None else None
        print(json.dumps({
            "q": name, "lmi_size": size, "method": method, "status": res.status,
            "rate": rate, "q_rate": q_rate, "solver": res.solver, "cpu_s": round(cpu, 4),
            "margin": res.margin, "min_eigenvalue": res.details.get("min_eigenvalue"),
            "rounding_bound": res.details.get("rounding_bound"),
            "metric_condition": None if p is None else float(np.linalg.cond(p)),
            "message": res.message[:160]}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["quick", "full"],
                        help="fresh REN Qs of these youla presets (seed 0)")
    parser.add_argument("--models", nargs="*", default=[],
                        help="model.pt files of REN Youla runs (paper plant, full preset)")
    parser.add_argument("--sdp-max", type=int, default=90,
                        help="largest loop LMI (states + features) also solved by the SDP")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for preset in args.presets:
        config = replace(youla.PRESETS[preset], certify_gamma=False)
        torch.manual_seed(0)
        measure(f"fresh {preset}", config, youla.make_q(config, "ren"), args.sdp_max)
    for path in args.models:
        model, _ = load_model(path)
        measure(path, youla.PRESETS["full"], model, args.sdp_max)


if __name__ == "__main__":
    main()
