"""What the scale benchmarks share: each measurement runs in a fresh child process of the benchmark script
(its own peak memory, no warm caches from another measurement), with passive OpenMP waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident set size of this process (``VmHWM``), MiB; Linux only (nan elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_child(script: str, *args: str, threads: int | None = None) -> dict:
    """Run ``script --child ARGS`` in a fresh interpreter and return the JSON object its last output line holds.
    ``threads`` pins the child's OpenMP / MKL threads (default: inherited)."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
