"""The ``luminate`` console script: choose the CPU-sharing thread policy, then run :func:`luminate.cli.main`.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads, and importing any part of :mod:`luminate` loads
torch; so the command line sets passive waiting here, outside the package, before anything imports torch.
The library itself never writes the environment (``luminate.runtime.share_cpu()`` is its opt-in).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless already set), then the
    command line runs. Returns its exit code."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from luminate.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
