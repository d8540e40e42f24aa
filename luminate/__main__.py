"""``python -m luminate``: the command line (the OpenMP wait policy is only chosen before torch loads, so
for passive waiting start Python with ``OMP_WAIT_POLICY=PASSIVE`` or use the ``luminate`` script)."""

import sys

from luminate.cli import main

sys.exit(main())
