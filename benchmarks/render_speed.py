"""How much the render machinery costs over the network's own forward + backward.

For each configuration it times, interleaved in one process (so machine load hits all equally):
  * render: one full render step (parameterization -> standard transforms -> forward stopped at the
    objective's layer -> backward -> Adam step), through ``luminate.render``'s own loop;
  * cut:    a bare forward + backward of the same network stopped at the same layer, on a plain input
    tensor of the size the network sees after the standard transforms (size + 12 on average);
  * full:   a bare forward + backward of the whole network at that size (what stopping early saves).
and prints medians and the ratios render/cut (target: <= 1.15) and full/cut.

    python benchmarks/render_speed.py                 # the full table of the closing note
    python benchmarks/render_speed.py --quick         # one configuration
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from luminate import models, objectives as obj
from luminate.activations import LayerTap
from luminate.render import render

CONFIGS = {
    "efficientnet_lite0": {"middle": "blocks.9", "logits": "logits"},
    "inception_v1": {"middle": "mixed4a", "logits": "softmax2"},
}


def time_render_steps(model, objective, size, batch, steps) -> list[float]:
    stamps = []
    render(model, objective, size=size, batch=batch, steps=steps, seed=0, progress=False, redirect_relu_steps=0,
           callback=lambda *a: stamps.append(time.perf_counter()) and False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_bare(model, layer, size, batch, steps, stop_early) -> list[float]:
    x = torch.rand(batch, 3, size, size, device=model.device, requires_grad=True)
    times = []
    with LayerTap(model, [layer], stop_early=stop_early, check_inputs=False) as tap:
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
    seen = size + 12
    last_layer = [info.name for info in model.layers(seen)][-1]
    render_t, cut_t, full_t = [], [], []
    # warm-up: the random scales give ~11 input sizes; let every one build its convolution plans first
    time_render_steps(model, objective, size, batch, 30)
    for _ in range(rounds):
        render_t += time_render_steps(model, objective, size, batch, steps + 1)
        cut_t += time_bare(model, layer, seen, batch, steps, stop_early=True)
        full_t += time_bare(model, last_layer, seen, batch, steps, stop_early=False)
    r, c, f = (statistics.median(t) * 1000 for t in (render_t, cut_t, full_t))
    return {"model": name, "layer": layer, "size": size, "batch": batch, "render_ms": r, "cut_ms": c, "full_ms": f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only efficientnet_lite0, blocks.9, 128 px, batch 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="models to time")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        grid = [("efficientnet_lite0", "middle", 128, 1)]
    else:
        grid = [(n, w, s, b) for n in args.models for w in ("middle", "logits") for s in (128, 224) for b in (1, 8)]
    print(f"{'model':<20} {'layer':<10} {'size':>4} {'batch':>5} {'render ms':>10} {'cut ms':>8} {'full ms':>8} "
          f"{'render/cut':>10} {'full/cut':>8}")
    for name, which, size, batch in grid:
        row = bench(name, which, size, batch, args.rounds, args.steps)
        print(f"{row['model']:<20} {row['layer']:<10} {size:>4} {batch:>5} {row['render_ms']:>10.1f} "
              f"{row['cut_ms']:>8.1f} {row['full_ms']:>8.1f} {row['render_ms'] / row['cut_ms']:>10.2f} "
              f"{row['full_ms'] / row['cut_ms']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
