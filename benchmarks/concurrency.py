"""Two renders at once vs one alone, per thread policy: the shared-CPU cliff and how Luminate avoids it.

Each policy runs ``luminate render`` once alone, then twice at the same time, in fresh processes (OpenMP reads
its settings when torch loads). It prints the wall time of each and the ratio ``pair / solo``: 2.0 means the
two renders shared the cores fairly (each took twice as long), ~1.0 means the cores were idle enough to run
both at full speed, and 10+ is the oversubscription cliff.

Policies:
  luminate   Luminate's default: OMP_WAIT_POLICY=PASSIVE after a brief spin (GOMP_SPINCOUNT, set by the `luminate`
             command), all cores per process
  passive    OMP_WAIT_POLICY=PASSIVE with no spin at all (Luminate's default before the brief spin)
  spin       OMP_WAIT_POLICY=ACTIVE, all cores per process (what torch does without Luminate's policy)
  1-thread   OMP_NUM_THREADS=1 per process

    python benchmarks/concurrency.py                     # all three, 192 steps at 128 px
    python benchmarks/concurrency.py --policies luminate --steps 96

Measure on a quiet machine: other jobs on the same cores change both numbers (the script prints the load
average before and after, so you can tell).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICIES = {
    "luminate": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"},
    "spin": {"OMP_WAIT_POLICY": "ACTIVE"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
}


def command(out: Path, steps: int, size: int) -> list[str]:
    return [sys.executable, "-m", "luminate_launcher", "render", "efficientnet_lite0", "blocks.9:7", "--size", str(size),
            "--steps", str(steps), "--seed", "0", "--quiet", "-o", str(out)]


def run(n: int, env: dict, folder: Path, steps: int, size: int, timeout: float) -> float:
    """Wall seconds for ``n`` renders started together."""
    start = time.perf_counter()
    procs = [subprocess.Popen(command(folder / f"r{i}.png", steps, size), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(n)]
    try:
        for p in procs:
            if p.wait(timeout=timeout) != 0:
                raise RuntimeError(f"a render failed (exit {p.returncode})")
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        return float("inf")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES),
                    help="thread policies to measure (default: all)")
    ap.add_argument("--steps", type=int, default=192, help="render steps (default 192)")
    ap.add_argument("--size", type=int, default=128, help="render size in pixels (default 128)")
    ap.add_argument("--timeout", type=float, default=600, help="give up on a run after this many seconds")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                "GOMP_SPINCOUNT")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f}; render: {args.steps} steps at {args.size} px "
          "(process start and model load included)")
    print(f"{'policy':<10} {'one alone':>10} {'two at once':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.policies:
            env = dict(base, **POLICIES[name])
            solo = run(1, env, Path(tmp), args.steps, args.size, args.timeout)
            if solo == float("inf"):
                print(f"{name:<10} >{args.timeout:.0f}s alone (timed out; the pair was not run)", flush=True)
                continue
            pair = run(2, env, Path(tmp), args.steps, args.size, max(args.timeout, 20 * solo))
            shown = f"{pair:>11.1f}s" if pair != float("inf") else f">{max(args.timeout, 20 * solo):>10.0f}s"
            print(f"{name:<10} {solo:>9.1f}s {shown} {pair / solo:>6.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
