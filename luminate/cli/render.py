"""``luminate render``, ``luminate dream`` and ``luminate gallery``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", help="feature visualization: optimize an image for an objective",
        description="Optimize an image to maximize OBJECTIVE on MODEL. OBJECTIVE is a shorthand or a small "
                    "expression: 'blocks.9:7' (channel 7 of layer blocks.9), 'class:daisy' (a class logit), "
                    "'blocks.9:7 + blocks.9:11', '-blocks.9:7' (the negative image), "
                    "'blocks.9:7 - 0.5*blocks.9:3'. List layers with `luminate layers MODEL`.",
        epilog="example: luminate render efficientnet_lite0 class:daisy --size 224 --steps 256 -o daisy.png")
    p.add_argument("model")
    p.add_argument("objective")
    p.add_argument("-o", "--output", default="render.png", help="image file to write (PNG/JPEG; a batch is tiled)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--steps", type=int, default=512, help="optimizer steps (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same image (default 0)")
    p.add_argument("--batch", type=int, default=1, help="images optimized together (default 1)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.05; 0.1 with --param maco)")
    p.add_argument("--param", choices=("fourier", "maco", "pixel"), default="fourier",
                   help="image parameterization: fourier (Lucid's, default), maco (fixed natural magnitude spectrum, "
                        "phase optimized, random crops + noise: more natural images) or pixel")
    p.add_argument("--gif", default=None, help="also write an animated GIF of the optimization")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_render)

    p = sub.add_parser("dream", help="DeepDream a photo at a layer",
                       description="Amplify what LAYER sees in IMAGE (DeepDream): the photo is the starting point "
                                   "and the image is optimized to maximize the layer's squared activations.")
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("--layer", required=True, help="layer name, e.g. blocks.4 (shallow) or blocks.12 (deep)")
    p.add_argument("-o", "--output", default="dream.png")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--size", type=int, default=None, help="work at this size (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_dream)

    p = sub.add_parser("gallery", help="render the feature-visualization experiments into an HTML page",
                       description="Render the six experiments (neuron vs channel, two channels together, "
                                   "interpolation, negative and diverse images, a class, DeepDream) on MODEL and "
                                   "write a self-contained HTML page with the images into DIR.")
    p.add_argument("model")
    p.add_argument("-o", "--output", default="gallery", help="output folder (index.html and PNGs)")
    p.add_argument("--steps", type=int, default=256, help="steps per experiment (default 256)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_gallery)


def run_render(args: argparse.Namespace) -> int:
    from luminate import models
    from luminate.objectives import parse
    from luminate.render import render

    from luminate.param.maco import parameterization

    model = models.load(args.model)
    objective = parse(args.objective)
    param, transforms, lr = parameterization(args.param, args.size, args.batch)
    result = render(model, objective, param=param, transforms=transforms, steps=args.steps, seed=args.seed,
                    lr=lr if args.lr is None else args.lr, progress=not args.quiet,
                    frames_every=max(1, args.steps // 48) if args.gif else None)
    path = result.save(args.output)
    if args.gif:
        result.save_gif(args.gif)
    final = result.history[-1].sum().item()
    print(f"{path}: {objective.name}, objective {result.history[0].sum().item():.4g} -> {final:.4g} "
          f"in {result.seconds:.1f}s (seed {args.seed})")
    return 0


def run_dream(args: argparse.Namespace) -> int:
    from luminate import models
    from luminate.images import load_image, save_image
    from luminate.recipes import deepdream

    model = models.load(args.model)
    photo = load_image(args.image)
    result = deepdream(model, photo, args.layer, steps=args.steps, size=args.size, seed=args.seed,
                       progress=not args.quiet)
    path = save_image(result.image, args.output)
    print(f"{path}: DeepDream at {args.layer}, {args.steps} steps in {result.seconds:.1f}s")
    return 0


def run_gallery(args: argparse.Namespace) -> int:
    from luminate import models
    from luminate.recipes import gallery
    from luminate.views.gallery import write_gallery

    model = models.load(args.model)
    experiments = gallery(model, steps=args.steps, size=args.size, seed=args.seed, progress=not args.quiet,
                          log=print)
    page = write_gallery(model, experiments, Path(args.output))
    print(f"gallery: {page}")
    return 0
