"""The ``luminate`` console script: choose the CPU-sharing thread policy, then run :func:`luminate.cli.main`.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads, and importing any part of :mod:`luminate` loads
torch; so the command line sets passive waiting here, outside the package, before anything imports torch.
The library itself never writes the environment (``luminate.runtime.share_cpu()`` is its opt-in).
"""

from __future__ import annotations

import os
import sys

#: Spins an idle thread of GNU OpenMP (the runtime of torch's Linux wheels) makes before it sleeps, under the passive
#: policy (which alone means none). With none, a lite0 render step at 224 px took 1.6-2x as long as with libgomp's
#: default of 300,000, since each of the step's few hundred small parallel regions then waits for its threads to wake.
#: Measured with ``benchmarks/concurrency.py`` (256 steps at 224 px, two cores): no spin 8.6 s alone and 1.13x for two
#: renders at once; 1,000 spins 7.0 s and 1.70x; 3,000 spins 2.5x; 10,000 spins 5.4x (the cliff). 1,000 keeps most of
#: the speed while two renders still share the cores better than fairly (< 2x). Other OpenMP runtimes ignore it.
BRIEF_SPIN = "1000"


def main() -> int:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless already set) after a brief
    spin (``GOMP_SPINCOUNT``), then the command line runs. Returns its exit code."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", BRIEF_SPIN)
    from luminate.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
