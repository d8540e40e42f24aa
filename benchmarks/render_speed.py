"""How much the render machinery costs over the network's own forward + backward.

For each configuration it times, interleaved in one process (so machine load hits all equally):
  * render: one full render step (parameterization -> default transforms -> forward stopped at the
    objective's layer -> backward -> Adam step), through ``luminate.render``'s own loop (BatchNorm folded);
  * cut:    a bare forward + backward of the plain (unfused) network stopped at the same layer, on a plain
    input tensor of the image's size (the default transforms keep it);
  * folded: the same with BatchNorm folded into the convolutions and channels-last weights (``luminate.fold``);
  * full:   a bare forward + backward of the whole plain network at that size (what stopping early saves).
and prints medians and the ratios render/cut (issue 20's target: <= 0.9 at 224 px), folded/cut and full/cut.

    python benchmarks/render_speed.py                 # the full table of the closing note
    python benchmarks/render_speed.py --quick         # one configuration
    python benchmarks/render_speed.py --lucent        # Luminate against Lucent 0.1.8 at 128 and 224 px

``--lucent`` runs Lucent (``../shared/peers/lucent``: its own venv, ``/tmp/lucent-venv`` by default) and Luminate on
the same workload (InceptionV1 with random weights, ``mixed4a:476``, each library's default parameterization and
transforms), alternating the two in one run, and prints per-step medians after warm-up and the time per image at
the defaults (Lucent: 512 steps; Luminate: the steps its default-length render took, at most 512).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

from luminate import models, objectives as obj
from luminate.activations import LayerTap
from luminate.render import _folded, render

CONFIGS = {
    "efficientnet_lite0": {"middle": "blocks.9", "logits": "logits"},
    "inception_v1": {"middle": "mixed4a", "logits": "softmax2"},
}


def time_render_steps(model, objective, size, batch, steps) -> list[float]:
    stamps = []
    render(model, objective, size=size, batch=batch, steps=steps, seed=0, progress=False, redirect_relu_steps=0,
           callback=lambda *a: stamps.append(time.perf_counter()) and False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_bare(model, layer, size, batch, steps, stop_early, fold=False) -> list[float]:
    x = torch.rand(batch, 3, size, size, device=model.device, requires_grad=True)
    if fold and model.device.type == "cpu":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    times = []
    folding = _folded(model, [layer]) if fold else contextlib.nullcontext()
    with model.frozen(), folding, LayerTap(model, [layer], stop_early=stop_early, check_inputs=False) as tap:
        for _ in range(steps):
            t0 = time.perf_counter()
            act = tap(x)[layer]
            act[:, 0].mean().backward()
            x.grad = None
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return times


def bench(name: str, which: str, size: int, batch: int, rounds: int, steps: int) -> dict:
    model = models.load(name, weights=name != "inception_v1")
    layer = CONFIGS[name][which]
    objective = obj.channel(layer, 0) if which == "middle" else obj.class_logit(1, layer=layer)
    seen = size
    last_layer = [info.name for info in model.layers(seen)][-1]
    render_t, cut_t, fold_t, full_t = [], [], [], []
    # warm-up: the random scales give ~11 input sizes; let every one build its convolution plans first
    time_render_steps(model, objective, size, batch, 30)
    for _ in range(rounds):
        render_t += time_render_steps(model, objective, size, batch, steps + 1)
        cut_t += time_bare(model, layer, seen, batch, steps, stop_early=True)
        fold_t += time_bare(model, layer, seen, batch, steps, stop_early=True, fold=True)
        full_t += time_bare(model, last_layer, seen, batch, steps, stop_early=False)
    r, c, d, f = (statistics.median(t) * 1000 for t in (render_t, cut_t, fold_t, full_t))
    return {"model": name, "layer": layer, "size": size, "batch": batch, "render_ms": r, "cut_ms": c, "folded_ms": d,
            "full_ms": f}


LUCENT = Path(__file__).resolve().parents[2] / "shared" / "peers" / "lucent"


def lucent_step(size: int, batch: int, steps: int, warmup: int, venv: str) -> float:
    """Lucent's median seconds per step (its own process, 2 threads)."""
    env = dict(os.environ, PYTHONPATH=str(LUCENT / "stubs"), BENCH_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([f"{venv}/bin/python", str(LUCENT / "bench_lucent.py"), "render", str(size), str(batch),
                          str(steps), str(warmup)], capture_output=True, text=True, env=env, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["s_per_step_median"])


def luminate_step(model, size: int, batch: int, steps: int, warmup: int) -> float:
    stamps = []
    render(model, "mixed4a:476", size=size, batch=batch, steps=steps + warmup, seed=0, progress=False,
           callback=lambda *a: stamps.append(time.perf_counter()) and False)
    return statistics.median(b - a for a, b in list(zip(stamps, stamps[1:]))[warmup:])


def against_lucent(rounds: int, steps: int, warmup: int, venv: str) -> None:
    model = models.load("inception_v1", weights=False)
    default_steps = {}
    for size in (128, 224):   # the steps a default-length render takes (it may stop on a plateau)
        default_steps[size] = len(render(model, "mixed4a:476", size=size, seed=0, progress=False).history)
    print(f"{'size':>4} {'round':>5} {'lucent s/step':>13} {'luminate s/step':>15} {'ratio':>6} "
          f"{'lucent s/image':>14} {'luminate s/image':>16} {'ratio':>6}")
    for size in (128, 224):
        for r in range(rounds):
            theirs = lucent_step(size, 1, steps, warmup, venv)
            ours = luminate_step(model, size, 1, steps, warmup)
            image_theirs, image_ours = theirs * 512, ours * default_steps[size]
            print(f"{size:>4} {r + 1:>5} {theirs:>13.4f} {ours:>15.4f} {theirs / ours:>5.1f}x {image_theirs:>14.1f} "
                  f"{image_ours:>16.1f} {image_theirs / image_ours:>5.1f}x  (Luminate: {default_steps[size]} steps)",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only efficientnet_lite0, logits, 224 px, batch 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="models to time")
    parser.add_argument("--lucent", action="store_true", help="Luminate against Lucent at 128 and 224 px")
    parser.add_argument("--lucent-venv", default="/tmp/lucent-venv")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.lucent:
        against_lucent(args.rounds, max(args.steps, 24), 8, args.lucent_venv)
        return
    if args.quick:
        grid = [("efficientnet_lite0", "logits", 224, 1)]
    else:
        grid = [(n, w, s, b) for n in args.models for w in ("middle", "logits") for s in (128, 224) for b in (1, 8)]
    print(f"{'model':<20} {'layer':<10} {'size':>4} {'batch':>5} {'render ms':>10} {'cut ms':>8} {'folded ms':>9} "
          f"{'full ms':>8} {'render/cut':>10} {'folded/cut':>10} {'full/cut':>8}")
    for name, which, size, batch in grid:
        row = bench(name, which, size, batch, args.rounds, args.steps)
        print(f"{row['model']:<20} {row['layer']:<10} {size:>4} {batch:>5} {row['render_ms']:>10.1f} "
              f"{row['cut_ms']:>8.1f} {row['folded_ms']:>9.1f} {row['full_ms']:>8.1f} "
              f"{row['render_ms'] / row['cut_ms']:>10.2f} {row['folded_ms'] / row['cut_ms']:>10.2f} "
              f"{row['full_ms'] / row['cut_ms']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
