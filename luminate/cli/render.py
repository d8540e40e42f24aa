"""``luminate render``, ``luminate dream`` and ``luminate gallery``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from luminate.cli.common import LAYERS_HINT, add_model_args, load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", help="feature visualization: optimize an image for an objective",
        description="Optimize an image to maximize OBJECTIVE on MODEL. OBJECTIVE is a shorthand or a small "
                    "expression: 'blocks.9:7' (channel 7 of layer blocks.9), 'class:daisy' (a class logit), "
                    "'blocks.9:7 + blocks.9:11', '-blocks.9:7' (the negative image), "
                    "'blocks.9:7 - 0.5*blocks.9:3', 'class:\"sea anemone\"'. A leading minus needs no `--`. "
                    f"{LAYERS_HINT}. Ctrl-C stops early and saves the image so far.",
        epilog="examples: luminate render efficientnet_lite0 class:daisy --size 224 --steps 256 -o daisy.png\n"
               "          luminate render efficientnet_lite0 \"-blocks.9:7\" -o negative.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("objective", help="what to maximize, e.g. blocks.9:7, class:daisy, \"-blocks.9:7\", "
                                     "\"blocks.9:7 + 0.5*blocks.9:11\"")
    p.add_argument("-o", "--output", default="render.png",
                   help="image file to write: .png, .jpg, .webp, ... (a batch is tiled; default render.png)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--steps", type=int, default=512, help="optimizer steps (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same image (default 0)")
    p.add_argument("--batch", type=int, default=1, help="images optimized together (default 1)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.05; 0.1 with --param maco)")
    p.add_argument("--param", choices=("fourier", "maco", "pixel"), default="fourier",
                   help="image parameterization: fourier (Lucid's, default), maco (fixed natural magnitude spectrum, "
                        "phase optimized, random crops + noise: more natural images) or pixel")
    p.add_argument("--gif", default=None, metavar="FILE.gif", help="also write an animated GIF of the optimization")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_render)

    p = sub.add_parser(
        "dream", help="DeepDream a photo at a layer (any size; octaves, tiles) or at several layers side by side",
        description="Amplify what LAYER sees in IMAGE (DeepDream): normalized gradient ascent on the photo's pixels "
                    "to grow the layer's squared activations, over several octaves (scales), with gradients "
                    "computed in tiles under random shifts so that large photos fit in memory. The output has the "
                    "photo's size. With --layers the same photo is dreamed at each layer and the results are laid "
                    "out side by side (early layers paint textures, late layers object parts).",
        epilog="examples: luminate dream efficientnet_lite0 photo.jpg --layer blocks.9 --octaves 3 -o dream.png\n"
               "          luminate dream efficientnet_lite0 photo.jpg --layers blocks.2 blocks.6 blocks.12 "
               "-o sheet.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("image", help="the photo to dream on (any size)")
    p.add_argument("--layer", default=None,
                   help="layer to amplify, e.g. blocks.4 (shallow) or blocks.12 (deep); default: a middle block")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="dream at each of these layers and write them side by side, the photo first (a sheet)")
    p.add_argument("-o", "--output", default="dream.png", help="image file to write (default dream.png)")
    p.add_argument("--octaves", type=int, default=3, help="number of scales, smallest first (default 3)")
    p.add_argument("--octave-scale", type=float, default=1.4,
                   help="size ratio between neighbouring octaves (default 1.4)")
    p.add_argument("--steps", type=int, default=10, help="gradient steps per octave (default 10)")
    p.add_argument("--lr", "--step-size", dest="lr", type=float, default=0.01,
                   help="step size: mean absolute pixel change per step, pixels in [0, 1] (default 0.01; "
                        "--step-size is its old name)")
    p.add_argument("--tile", type=int, default=512,
                   help="tile side in pixels for the gradient: memory grows with its square (default 512)")
    p.add_argument("--size", type=int, default=None,
                   help="first resize the photo so its longer side is this many pixels (default: its own size)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random shifts (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_dream)

    p = sub.add_parser("gallery", help="render the feature-visualization experiments into an HTML page",
                       description="Render the seven experiments (neuron vs channel, two channels together, "
                                   "interpolation, negative and diverse images, a class, DeepDream) on MODEL and "
                                   "write a self-contained HTML page with the images into DIR. Each image's "
                                   "caption is the `luminate render` objective that reproduces it.",
                       epilog="example: luminate gallery efficientnet_lite0 -o gallery")
    add_model_args(p)
    p.add_argument("-o", "--output", default="gallery", metavar="DIR",
                   help="output folder for index.html and one PNG per experiment (default gallery)")
    p.add_argument("--steps", type=int, default=256, help="optimization steps per experiment (default 256)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--layer", default=None,
                   help=f"layer the experiments use (default: a middle block, blocks.9 on EfficientNet-Lite0); "
                        f"{LAYERS_HINT}")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_gallery)


def run_render(args: argparse.Namespace) -> int:
    from luminate.objectives import parse
    from luminate.render import render

    from luminate.render import parameterization

    objective = parse(args.objective.strip())  # syntax errors before the model loads
    model = load_model(args)
    param, transforms, lr = parameterization(args.param, args.size, args.batch, model.contract.channels)
    result = render(model, objective, param=param, transforms=transforms, steps=args.steps, seed=args.seed,
                    lr=lr if args.lr is None else args.lr, progress=not args.quiet,
                    frames_every=max(1, args.steps // 48) if args.gif else None)
    path = result.save(args.output)
    if args.gif:
        result.save_gif(args.gif)
    if len(result.history):
        first, final = result.history[0].sum().item(), result.history[-1].sum().item()
        print(f"{path}: {objective.name}, objective {first:.4g} -> {final:.4g} in {result.seconds:.1f}s "
              f"(seed {args.seed}; an unguided image: no photos guide it)")
    if result.interrupted:
        print(f"interrupted after {len(result.history)} of {args.steps} steps; the partial image is saved in {path}",
              file=sys.stderr)
        return 130
    return 0


def run_dream(args: argparse.Namespace) -> int:
    from luminate.dream import dream, dream_layers
    from luminate.images import load_image, save_image
    from luminate.recipes import default_layer

    model = load_model(args)
    photo = load_image(args.image)
    kwargs = dict(octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps, lr=args.lr,
                  tile=args.tile, size=args.size, seed=args.seed, progress=not args.quiet)
    if args.layers:
        if args.layer:
            raise ValueError("give either --layer (one dream) or --layers (a sheet of several), not both")
        sheet = dream_layers(model, photo, args.layers, **kwargs)
        path = sheet.save(args.output)
        seconds = sum(r.seconds for r in sheet.results)
        print(f"{path}: DeepDream at {', '.join(args.layers)} side by side, {args.octaves} octave(s) x "
              f"{args.steps} steps each, in {seconds:.1f}s")
        return 0
    layer = args.layer or default_layer(model)
    result = dream(model, photo, layer, **kwargs)
    path = save_image(result.image, args.output)
    h, w = result.image.shape[-2:]
    print(f"{path}: DeepDream at {layer}, {w}x{h}, {args.octaves} octave(s) x {args.steps} steps in "
          f"{result.seconds:.1f}s")
    return 0


def run_gallery(args: argparse.Namespace) -> int:
    from luminate.recipes import gallery
    from luminate.views.gallery import write_gallery

    from luminate.progress import Job

    model = load_model(args)
    with Job("gallery", stages=7, enabled=not args.quiet, unit="experiment") as job:
        experiments = gallery(model, steps=args.steps, size=args.size, seed=args.seed, progress=not args.quiet,
                              layer=args.layer, log=job.log)
    page = write_gallery(model, experiments, Path(args.output))
    print(f"gallery: {page} (unguided images: no photos guide them)")
    return 0
