"""How the Microscope scales: batched unit renders, collection speed and memory, Ray against one process.

Ratios, each measured in this one run (on a shared machine absolute times swing with the load; ratios less):

* **render**: seconds per optimization step of ``channels()`` on EfficientNet-Lite0 ``blocks.9`` at 128 px for a
  batch of 16 units against one unit (the issue's target: <= 8x on a CPU, <= 3x on a GPU; on a GPU when
  ``--device cuda`` or one is available);
* **collection vs plain inference**: images per second of ``collect_examples`` (peaks and arg-max of every unit of
  ``blocks.10``, written to shards; no class attribution) against a plain ``no_grad`` forward pass of the whole
  model over the same images with the same loader; and the same with class attribution for the default sample;
* **peak memory** (``VmHWM`` of a fresh process) collecting N and 10 x N images: flat when shards stream to disk;
* **Ray**: collection with ``--ray local`` and 2 workers (1 thread each) against one process with 1 thread.
* **whole model** (``--scale N``, N >= 2000): every layer of lite0 (``layers="all"``, 3,120 units) over N images,
  in-process (2 threads) against Ray Data (2 model actors x 1 thread, start-up timed apart), images/s and peak
  memory of the driver; and units rendered per hour per device (``units_per_batch`` units at 256 steps, from the
  render step time).

    OMP_NUM_THREADS=1 python benchmarks/microscope_scale.py            # N = 100 (and 1000)
    OMP_NUM_THREADS=1 python benchmarks/microscope_scale.py --quick    # N = 24 (and 240), fewer steps

Every measurement runs in a fresh subprocess with ``OMP_WAIT_POLICY=PASSIVE``.
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

MODEL = "efficientnet_lite0"


def child_render(units: int, steps: int, device: str, redirect: bool) -> dict:
    import torch

    from luminate import models, objectives as obj, param, render

    model = models.load(MODEL).to(device)
    objective = obj.channels("blocks.9", list(range(units)))
    render(model, objective, param.image(128, batch=units), steps=2, seed=0, progress=False)   # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    # redirect_relu_steps: the first 16 steps of a render redirect ReLU gradients (a heavier backward); the
    # steady state is every later step, most of a 64-512-step render
    render(model, objective, param.image(128, batch=units), steps=steps, seed=0, progress=False,
           redirect_relu_steps=steps if redirect else 0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"seconds_per_step": (time.perf_counter() - start) / steps}


def child_collect(images: str, out: str, attribution: int, ray: str | None, shard: int) -> dict:
    from luminate import models
    from luminate.microscope import collect_examples

    model = models.load(MODEL)
    start = time.perf_counter()
    examples = collect_examples(model, images, "blocks.10", out, units="0:8", attribution_images=attribution,
                                shard_images=shard, progress=False, ray=ray, num_cpus=2 if ray else None)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": examples.store.n_images, "peak_mib": peak_rss_mib()}


def child_scale(images: str, out: str, ray: str | None) -> dict:
    """Every layer of lite0 over ``images``; Ray start-up (``ray.init`` + the first actor) timed separately."""
    from luminate import models
    from luminate.microscope import collect_examples

    model = models.load(MODEL)
    startup = 0.0
    context = None
    if ray:
        from luminate.parallel import RayContext

        start = time.perf_counter()
        context = RayContext(ray, 2)
        context.__enter__()
        startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        examples = collect_examples(model, images, "all", out, units=None, attribute=False, shard_images=256,
                                    progress=False, ray=ray, num_cpus=2 if ray else None)
        seconds = time.perf_counter() - start
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return {"seconds": seconds, "startup": startup, "images": examples.store.n_images, "peak_mib": peak_rss_mib(),
            "layers": len(examples.layers)}


def child_inference(images: str) -> dict:
    import torch

    from luminate import models
    from luminate.data.inputs import image_loader, image_set

    model = models.load(MODEL)
    imageset = image_set(images)
    batches = [list(range(s, min(s + 32, len(imageset)))) for s in range(0, len(imageset), 32)]
    start = time.perf_counter()
    with torch.no_grad():
        for batch in image_loader(imageset, model.contract, batches):
            model(batch.images)
    return {"seconds": time.perf_counter() - start, "images": len(imageset)}


def run_child(*args: str, threads: int = 1) -> dict:
    return children.run_child(__file__, *args, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None, help="device for the render ratio (default: cuda when available)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["render", "collect", "memory", "ray"])
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="only the whole-model comparison over N images (in-process vs Ray Data)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "render":
            result = child_render(int(rest[0]), int(rest[1]), rest[2], rest[3] == "redirect")
        elif kind == "scale":
            result = child_scale(rest[0], rest[1], None if rest[2] == "-" else rest[2])
        elif kind == "collect":
            result = child_collect(rest[0], rest[1], int(rest[2]), None if rest[3] == "-" else rest[3], int(rest[4]))
        else:
            result = child_inference(rest[0])
        print(json.dumps(result))
        return

    import torch

    from luminate.atlas import demo_images

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            images = demo_images(tmp / "imgs", args.scale, size=(160, 240), skimage=True)
            here = run_child("scale", str(images), str(tmp / "one"), "-", threads=2)
            there = run_child("scale", str(images), str(tmp / "two"), "local", threads=1)
            rate = lambda r: r["images"] / r["seconds"]  # noqa: E731
            print(f"whole model ({here['layers']} layers of {MODEL}), {here['images']} images: in-process "
                  f"(2 threads) {rate(here):.1f} img/s, peak {here['peak_mib']:.0f} MiB; Ray Data (2 actors x 1 "
                  f"thread) {rate(there):.1f} img/s once started ({there['startup']:.1f}s start-up), driver peak "
                  f"{there['peak_mib']:.0f} MiB: {rate(there) / rate(here):.2f}x in-process (target >= 0.8x)")
            # a Microscope chunk of 8 units is one batch of 48 images (positive, negative, 4 diverse per unit)
            step = run_child("render", "48", "8", device, "steady", threads=2)["seconds_per_step"]
            print(f"render on {device}: a chunk of 8 units (48 images, 128 px) {step:.3f} s/step: "
                  f"{3600 * 8 / (256 * step):.0f} units/hour at 256 steps")
        return
    n = 24 if args.quick else 100
    steps = 8 if args.quick else 16
    shard = str(max(8, n // 4))   # four shards of the small set: work for two Ray workers
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); shared machines make absolute times noisy")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "render" not in args.skip:
            target = 3 if device.startswith("cuda") else 8
            for phase in ("steady", "redirect"):
                one = run_child("render", "1", str(steps), device, phase)["seconds_per_step"]
                many = run_child("render", "16", str(steps), device, phase)["seconds_per_step"]
                label = "steady-state steps" if phase == "steady" else "first 16 steps (redirected ReLU)"
                print(f"render on {device}, {label}: 1 unit {one:.3f} s/step, 16 units {many:.3f} s/step: "
                      f"{many / one:.1f}x (target <= {target}x; 16x would be no gain from batching)")
        small = demo_images(tmp / "small", n, size=(160, 320), skimage=True)
        if "collect" not in args.skip:
            plain = run_child("inference", str(small))
            peaks = run_child("collect", str(small), str(tmp / "c1"), "0", "-", shard)
            attributed = run_child("collect", str(small), str(tmp / "c2"), "256", "-", shard)
            rate = lambda r: r["images"] / r["seconds"]  # noqa: E731
            print(f"collection: plain inference {rate(plain):.1f} img/s, peaks {rate(peaks):.1f} img/s "
                  f"({rate(peaks) / rate(plain):.2f}x, target >= 0.9x); with class attribution of 8 units "
                  f"{rate(attributed):.1f} img/s ({rate(attributed) / rate(plain):.2f}x)")
        if "memory" not in args.skip:
            large = demo_images(tmp / "large", 10 * n, size=(160, 320), seed=1, skimage=True)
            a = run_child("collect", str(small), str(tmp / "m1"), "0", "-", shard)
            b = run_child("collect", str(large), str(tmp / "m2"), "0", "-", shard)
            print(f"peak memory: {n} images {a['peak_mib']:.0f} MiB, {10 * n} images {b['peak_mib']:.0f} MiB "
                  f"({b['peak_mib'] / a['peak_mib']:.2f}x; flat is 1x)")
        if "ray" not in args.skip:
            single = run_child("collect", str(small), str(tmp / "r1"), "0", "-", shard)
            on_ray = run_child("collect", str(small), str(tmp / "r2"), "0", "local", shard)
            print(f"Ray: 2 workers x 1 thread {on_ray['seconds']:.1f}s vs one process x 1 thread "
                  f"{single['seconds']:.1f}s ({single['seconds'] / on_ray['seconds']:.2f}x speed-up, Ray start-up "
                  f"included; on 2 shared cores expect none: the point is identical shards and scale-out)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
