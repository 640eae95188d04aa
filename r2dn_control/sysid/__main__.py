"""``python -m r2dn_control.sysid --model r2dn --out DIR``: the paper's F-16 run (see `.f16`)."""

import sys

from .f16 import main

sys.exit(main())
