"""``python -m r2dn_control.cli``: the ``r2dn-control`` command."""

import sys

from . import main

sys.exit(main())
