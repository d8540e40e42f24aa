"""How activation atlases scale: collection throughput and memory, layout time, icon time per cell.

Images are generated from scikit-learn's sample photos (random crops, flips and scales:
``luminate.atlas.atlas.demo_images``) into a temporary folder: N images and 10×N images. Each measurement runs in a
fresh subprocess, which reports its own peak resident memory (``VmHWM`` from ``/proc/self/status``; image-decoding
worker processes are not included):

* **collection vs plain inference**: images per second of ``luminate.atlas.collect`` (activations + forward-mode
  attributions to every class, written to the store) against a plain ``no_grad`` forward pass of the same model over
  the same images, with the same batch size and the same decoding (``image_loader``, same worker count); one run each
  on the 10×N set, and their ratio;
* **peak memory** of collecting N and 10×N images (same shard size): it must not grow with the number of images
  (rows go to disk shard by shard), so the ratio should be close to 1;
* **layout** seconds (``atlas_layout``, method ``auto``) on the N and 10×N stores;
* **icons**: seconds per cell of ``render_icons`` at the atlas defaults (80 px, 128 steps; ``--quick``: 32 steps).

    python benchmarks/atlas_scale.py            # N = 200 (and 2000)
    python benchmarks/atlas_scale.py --quick    # N = 40 (and 400), shards of 32 rows, 32 icon steps

The machine's load average is printed before and after: timings on a shared machine vary with it, ratios less.
Children run with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set: on an oversubscribed machine, OpenMP
threads that spin while waiting made PyTorch up to 30x slower here.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import children
from children import peak_rss_mib

MODEL, LAYER = "efficientnet_lite0", "blocks.10"


# ----- children --------------------------------------------------------------------------------------


def child_collect(images: str, store: str, batch_size: int, shard_size: int, workers: int) -> dict:
    import warnings

    import torch

    from luminate import models
    from luminate.atlas import collect

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = models.load(MODEL)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = collect(model, images, LAYER, store, batch_size=batch_size, shard_size=shard_size, progress=False,
                         num_workers=workers)
    seconds = time.perf_counter() - start
    return {"images": len(result), "seconds": seconds, "ips": len(result) / seconds, "peak_mib": peak_rss_mib()}


def child_infer(images: str, batch_size: int, workers: int) -> dict:
    import torch

    from luminate import models
    from luminate.data.inputs import image_loader, image_set

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = models.load(MODEL)
    imageset = image_set(images)
    batches = [list(range(s, min(s + batch_size, len(imageset)))) for s in range(0, len(imageset), batch_size)]
    start = time.perf_counter()
    n = 0
    with torch.no_grad():
        for batch in image_loader(imageset, model.contract, batches, num_workers=workers):
            if len(batch.indices):
                model(batch.images).argmax(1)
                n += len(batch.indices)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": seconds, "ips": n / seconds, "peak_mib": peak_rss_mib()}


def child_atlas(store: str, steps: int, cells: int) -> dict:
    import numpy as np
    import torch

    from luminate import models
    from luminate.atlas import ActivationStore, atlas_layout, bin_layout
    from luminate.atlas.atlas import auto_grid, auto_min_count
    from luminate.atlas.icons import render_icons

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    s = ActivationStore(store)
    acts = s.activations(LAYER)
    start = time.perf_counter()
    layout = atlas_layout(acts)
    layout_s = time.perf_counter() - start
    grid = auto_grid(len(acts))
    found = bin_layout(layout, acts, grid, auto_min_count(len(acts), grid))
    model = models.load(MODEL)
    directions = np.stack([c.mean for c in found[:cells]])
    start = time.perf_counter()
    render_icons(model, LAYER, directions, size=80, steps=steps, progress=False, cache_dir=False)   # times renders, not cache hits
    icons_s = time.perf_counter() - start
    return {"points": len(acts), "method": layout.method, "layout_s": layout_s, "grid": grid, "cells": len(found),
            "rendered": len(directions), "steps": steps, "s_per_cell": icons_s / len(directions),
            "peak_mib": peak_rss_mib()}


# ----- the parent ------------------------------------------------------------------------------------


def run_child(*args: str) -> dict:
    return children.run_child(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 40, shards of 32 rows, 32 icon steps")
    parser.add_argument("-n", type=int, default=None, help="N (default 200; 40 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=None,
                        help="rows per shard, the same for both sizes (default 128; 32 with --quick). Keep N above "
                             "the shard size and the batch size, or the small run never holds a full one")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers, the same for every run")
    parser.add_argument("--cells", type=int, default=8, help="icons rendered for the per-cell time")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = {"collect": child_collect, "infer": child_infer, "atlas": child_atlas}[kind]
        typed = [int(x) if x.isdigit() else x for x in rest]
        print(json.dumps(fn(*typed)))
        return

    from luminate.atlas.atlas import demo_images

    n = args.n or (40 if args.quick else 200)
    steps = 32 if args.quick else 128
    args.shard_size = args.shard_size or (32 if args.quick else 128)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE (set for the children)')}")
    with tempfile.TemporaryDirectory(prefix="atlas_scale_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        small = demo_images(tmp / "small", n, seed=0)
        large = demo_images(tmp / "large", 10 * n, seed=1)
        seconds = time.perf_counter() - start
        print(f"generated {n} + {10 * n} images from scikit-learn's sample photos in {seconds:.1f}s")
        common = (str(args.batch_size), str(args.shard_size), str(args.workers))
        c_small = run_child("collect", str(small), str(tmp / "store_small"), *common)
        c_large = run_child("collect", str(large), str(tmp / "store_large"), *common)
        plain = run_child("infer", str(large), str(args.batch_size), str(args.workers))
        a_small = run_child("atlas", str(tmp / "store_small"), str(steps), str(args.cells))
        a_large = run_child("atlas", str(tmp / "store_large"), str(steps), str(args.cells))

    print(f"\ncollection vs plain inference ({10 * n} images, batch {args.batch_size}, "
          f"{args.workers} decoding workers):")
    print(f"  plain inference  {plain['ips']:8.1f} images/s   ({plain['seconds']:.1f}s)")
    print(f"  collection       {c_large['ips']:8.1f} images/s   ({c_large['seconds']:.1f}s, activations + "
          f"attributions to every class, written to shards)")
    print(f"  ratio collection/inference: {c_large['ips'] / plain['ips']:.2f}")
    print(f"\npeak memory of collection (main process, shard size {args.shard_size} rows):")
    print(f"  {n:6d} images: {c_small['peak_mib']:7.0f} MiB")
    print(f"  {10 * n:6d} images: {c_large['peak_mib']:7.0f} MiB")
    print(f"  ratio {10 * n}/{n}: {c_large['peak_mib'] / c_small['peak_mib']:.2f}  (should stay near 1)")
    print("\nlayout and icons:")
    for a in (a_small, a_large):
        print(f"  {a['points']:6d} points: layout {a['method']} {a['layout_s']:6.1f}s; grid {a['grid']}, "
              f"{a['cells']} cells; icons {a['s_per_cell']:.2f}s per cell ({a['rendered']} rendered, 80 px, "
              f"{a['steps']} steps, batched)")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
