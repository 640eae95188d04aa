"""Run the public-API fuzz suite and print its figures: inputs tried, handled, clear errors,
unclear errors and silent wrong results (issue 12's goal: 0 unclear, 0 silent).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_report.py [--examples 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="hypothesis draws per test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = os.path.join(folder, "fuzz.json")
        env = dict(os.environ, R2DN_FUZZ_EXAMPLES=str(args.examples), R2DN_FUZZ_REPORT=report)
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/test_fuzz_api.py"], env=env)
        with open(report) as fh:
            data = json.load(fh)
    total = data["total"]
    print(f"{sum(total.values())} inputs tried: {total.get('handled', 0)} handled correctly, "
          f"{total.get('clear', 0)} clear errors, {total.get('unclear', 0)} unclear, "
          f"{total.get('silent', 0)} silent wrong")
    for api, counts in sorted(data["per_api"].items()):
        print(f"  {api:<24} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
