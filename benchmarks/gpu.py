"""The GPU path, measured: one prepared script for a machine with a CUDA device (under 8 minutes there).

It prints, in order:
  1. the CUDA tests (``pytest -k cuda`` on the test suite: the tests that skip without a device);
  2. a 512-step 224 px render of a middle layer (``blocks.9`` of EfficientNet-Lite0, default settings; target < 3 s);
  3. 16 units batched vs one unit: seconds per step of one 16-unit render over one 1-unit render (target <= 3x);
  4. host syncs per step of the render loop (``torch.cuda.set_sync_debug_mode``: every synchronizing call warns;
     target 0 after the first steps);
  5. class renders per minute: the quality benchmark's class renders (224 px, defaults, 512 steps) back to back.

    python benchmarks/gpu.py            # on a GPU machine; on a CPU-only machine it says so and exits 0
    python benchmarks/gpu.py --quick    # fewer steps (a smoke run of the script itself)

Nothing here runs without a CUDA device: the CPU numbers are in benchmarks/render_speed.py and docs/quality.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("daisy", "goldfish", "balloon", "castle", "lemon", "volcano", "tabby", "broccoli")


def _timed_render(model, objective, steps: int, **kwargs) -> float:
    from luminate.render import render

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = render(model, objective, steps=steps, seed=0, progress=False, **kwargs)
    torch.cuda.synchronize()
    assert result.image.shape[-1] > 0
    return time.perf_counter() - t0


def cuda_tests() -> int:
    print("== 1. CUDA tests", flush=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda or gpu", str(ROOT / "tests")], cwd=ROOT)
    return done.returncode


def render_512(model, steps: int) -> float:
    _timed_render(model, "blocks.9:7", 8, size=224)       # warm-up: kernels, cuDNN plans
    seconds = _timed_render(model, "blocks.9:7", steps, size=224)
    print(f"== 2. {steps}-step 224 px render of blocks.9:7: {seconds:.2f} s (target < 3 s)", flush=True)
    return seconds


def batched_vs_one(model, steps: int) -> float:
    from luminate import objectives as obj

    one = _timed_render(model, obj.channel("blocks.9", 0), steps, size=224)
    many = _timed_render(model, sum(obj.channel("blocks.9", u, batch=i) for i, u in enumerate(range(16))), steps,
                         size=224, batch=16)
    print(f"== 3. 16 units batched vs one: {many:.2f} s vs {one:.2f} s for {steps} steps: {many / one:.2f}x "
          f"(target <= 3x)", flush=True)
    return many / one


def syncs_per_step(model, steps: int) -> float:
    from luminate.render import render

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            render(model, "blocks.9:7", size=224, steps=steps, seed=0, progress=False, redirect_relu_steps=0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    per_step = len(syncs) / steps
    print(f"== 4. host syncs: {len(syncs)} in {steps} steps ({per_step:.2f} per step; target 0 in the loop, the "
          f"result's copy to the CPU at the end counts)", flush=True)
    for w in syncs[:5]:
        print(f"   {w.filename}:{w.lineno}: {str(w.message)[:120]}")
    return per_step


def class_renders_per_minute(model, steps: int) -> float:
    seconds = sum(_timed_render(model, f"class:{c}", steps, size=224) for c in CLASSES)
    rate = 60 * len(CLASSES) / seconds
    print(f"== 5. class renders ({len(CLASSES)} classes, {steps} steps, 224 px): {rate:.1f} per minute", flush=True)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 steps instead of 512 (a smoke run)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the CUDA tests")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): the GPU figures are unmeasured on this "
              "machine. Run this script on a GPU machine; CPU timings are in benchmarks/render_speed.py.")
        return 0
    from luminate import models

    steps = 64 if args.quick else 512
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    status = 0 if args.skip_tests else cuda_tests()
    model = models.load("efficientnet_lite0", device="cuda")
    render_512(model, steps)
    batched_vs_one(model, max(16, steps // 8))
    syncs_per_step(model, 32)
    class_renders_per_minute(model, steps)
    return status


if __name__ == "__main__":
    sys.exit(main())
