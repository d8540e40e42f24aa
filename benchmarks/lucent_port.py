"""Lucent's render_vis (torch-lucent 0.1.8) against luminate.lucent's, same workload, same run.

InceptionV1 with random weights, objective ``mixed4a:476``, Lucent's defaults (Fourier image, decorrelated colour,
standard transforms, Adam 0.05), batch 1, at 128 and 224 px. Each implementation runs in its own subprocess,
alternating, ``--rounds`` times; a run's per-step wall times after ``--warmup`` steps give its median, and the line
printed is the ratio Lucent / Luminate of the medians (over rounds). Lucent is timed by
``../shared/peers/lucent/bench_lucent.py`` in the venv its README describes (default ``/tmp/lucent-venv``).

    flock /tmp/luminate-cpu.lock .venv/bin/python benchmarks/lucent_port.py [--steps 48 --warmup 8 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "lucent"


def luminate_run(size: int, batch: int, steps: int, warmup: int) -> dict:
    """One render_vis of luminate.lucent, timed per step (between the render loop's callbacks)."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from luminate.lucent.modelzoo import inceptionv1
    from luminate.lucent.optvis import param, render
    from luminate.lucent.util import set_seed

    set_seed(0)
    model = inceptionv1(pretrained=False).eval()
    stamps = [time.perf_counter()]
    original = render._render

    def timed(*args, **kwargs):
        report = kwargs["callback"]

        def callback(step, images, scores):
            stamps.append(time.perf_counter())
            return report(step, images, scores)
        stamps[0] = time.perf_counter()
        return original(*args, **{**kwargs, "callback": callback})

    render._render = timed
    try:
        render.render_vis(model, "mixed4a:476", lambda: param.image(size, batch=batch), thresholds=(steps,),
                          show_image=False, progress=False)
    finally:
        render._render = original
    per_step = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    return {"s_per_step_median": statistics.median(per_step), "steps": len(per_step)}


def lucent_run(python: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PEER / "stubs")}
    out = subprocess.run([python, str(PEER / "bench_lucent.py"), "render", str(size), str(batch), str(steps),
                          str(warmup)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def own_run(size: int, batch: int, steps: int, warmup: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", str(size), str(batch), str(steps), str(warmup)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--lucent-python", default="/tmp/lucent-venv/bin/python")
    parser.add_argument("--one", nargs=4, type=int, metavar=("SIZE", "BATCH", "STEPS", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(luminate_run(*args.one)))
        return
    if not Path(args.lucent_python).is_file():
        raise SystemExit(f"no Lucent venv at {args.lucent_python}: install it as {PEER / 'README.md'} says")
    for size in (int(s) for s in args.sizes.split(",")):
        lucent, ours = [], []
        for _ in range(args.rounds):
            lucent.append(lucent_run(args.lucent_python, size, args.batch, args.steps, args.warmup)["s_per_step_median"])
            ours.append(own_run(size, args.batch, args.steps, args.warmup)["s_per_step_median"])
        a, b = statistics.median(lucent), statistics.median(ours)
        print(f"InceptionV1 mixed4a:476, {size} px, batch {args.batch}, {args.steps} steps ({args.warmup} warm-up), "
              f"{args.rounds} rounds: Lucent {a:.3f} s/step, luminate.lucent {b:.3f} s/step -> {a / b:.1f}x")


if __name__ == "__main__":
    main()
