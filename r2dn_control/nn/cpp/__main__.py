"""``python -m r2dn_control.nn.cpp``: build (or load the cached) C++ kernels and say how it went.

Exit status 0 when the kernels are loaded, 1 when the build failed (the reason is printed).
"""

from __future__ import annotations

import sys

from . import build, status


def main() -> int:
    try:
        build()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"r2dn_control C++ kernels: {status()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
