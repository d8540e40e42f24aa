"""``luminate patch``, ``luminate hinton``, ``luminate caricature`` and ``luminate style``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from luminate.cli.common import add_model_args, load_model


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands, each from its own function, in the order `luminate --help` lists them."""
    _register_patch(sub)
    _register_hinton(sub)
    _register_caricature(sub)
    _register_style(sub)


def _register_patch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch", help="find an adversarial patch through a comparison atlas and measure its flip rate",
        description="Collect LAYER over the images, build the comparison atlas of SOURCE vs TARGET, rank its cells "
                    "by how much they raise TARGET over SOURCE, and turn the best cells' icons (and the feature "
                    "visualization of TARGET, as a baseline) into patches. Each patch is pasted at a grid of places "
                    "onto the images the model calls SOURCE; its flip rate (share of trials whose top-1 class "
                    "becomes TARGET) is measured against a control: the same pixels shuffled. The best atlas "
                    "candidate is then refined by optimizing it for TARGET on those images. Prints one line, "
                    "'flip rate: patch N%, control M%', for the best patch at the default size, and writes an "
                    "HTML report.",
        epilog="example: luminate patch efficientnet_lite0 daisies/ --source daisy --target bee -o patch.html")
    add_model_args(p)
    p.add_argument("images", help="a folder of images (searched recursively); the patch is measured on those the "
                                  "model calls SOURCE")
    p.add_argument("--source", required=True, help="the class the photos are (name or index), e.g. daisy")
    p.add_argument("--target", required=True, help="the class the patch should turn them into, e.g. bee")
    p.add_argument("-o", "--output", default="patch.html", help="HTML report to write (default patch.html)")
    p.add_argument("--layer", default="blocks.10", help="atlas layer (default blocks.10)")
    p.add_argument("--work", default=None,
                   help="folder for the activation store and icon cache, reused by a rerun (default: OUTPUT "
                        "without .html + '-work')")
    p.add_argument("--size", type=float, default=0.3,
                   help="default patch side as a fraction of the image side (default 0.3)")
    p.add_argument("--sizes", type=float, nargs="+", default=[0.2, 0.3, 0.4],
                   help="patch sides measured in the report (default 0.2 0.3 0.4)")
    p.add_argument("--positions", type=int, default=3, help="places per side: N x N places per image (default 3)")
    p.add_argument("--cells", type=int, default=3, help="atlas cells turned into candidates (default 3)")
    p.add_argument("--refine-steps", type=int, default=40,
                   help="optimization steps refining the best atlas candidate; 0: no refinement (default 40)")
    p.add_argument("--icon-steps", type=int, default=48, help="optimization steps per atlas icon (default 48)")
    p.add_argument("--class-steps", type=int, default=64,
                   help="optimization steps of the target class's visualization, the baseline candidate (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seeds collection, icons, refinement and control (default 0)")
    p.add_argument("--save-patch", default=None, help="also save the best patch as an image file")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    p.set_defaults(func=run_patch)


def _register_hinton(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hinton", help="Hinton diagram of a layer's activations on a photo, or of its weights",
        description="Draw a Hinton diagram (SVG in a self-contained page): one square per value, its area "
                    "proportional to the magnitude, white positive and black negative; hover a square for its "
                    "value. Activations: channels x positions of LAYER on IMAGE (positions and channels are "
                    "average-pooled when there are more than --max-cols / --max-rows). --weights: the layer's "
                    "weights, [out, in] (IMAGE is then not needed).",
        epilog="examples: luminate hinton efficientnet_lite0 flower.jpg --layer blocks.2 -o hinton.html\n"
               "          luminate hinton efficientnet_lite0 --weights --layer blocks.2.project.conv -o w.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("image", nargs="?", default=None, help="the photo (not needed with --weights)")
    p.add_argument("--layer", required=True, help="layer name, e.g. blocks.2 (`luminate layers MODEL` lists them)")
    p.add_argument("--weights", action="store_true", help="draw the layer's weights instead of activations")
    p.add_argument("-o", "--output", default="hinton.html", help="HTML page to write (default hinton.html)")
    p.add_argument("--max-rows", type=int, default=64, help="pool to at most this many rows (default 64)")
    p.add_argument("--max-cols", type=int, default=64, help="pool to at most this many columns (default 64)")
    p.set_defaults(func=run_hinton)


def _register_caricature(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caricature", help="feature inversion: what a layer keeps of a photo",
        description="Optimize an image from noise so that its activations at LAYER have the largest dot product "
                    "with the photo's (Lucid's caricature recipe). Several --layer flags make a sheet: the photo, "
                    "then one caricature per layer.",
        epilog="example: luminate caricature efficientnet_lite0 flower.jpg --layer blocks.4 --layer blocks.9 "
               "-o caricature.png")
    add_model_args(p)
    p.add_argument("image", help="the photo")
    p.add_argument("--layer", required=True, action="append", help="layer to match (repeat for a sheet)")
    p.add_argument("-o", "--output", default="caricature.png", help="image file to write (default caricature.png)")
    p.add_argument("--steps", type=int, default=512, help="optimization steps (default 512, as Lucid)")
    p.add_argument("--cossim-pow", type=float, default=0.0,
                   help="weight the dot product by cosine similarity to this power (default 0)")
    p.add_argument("--size", type=int, default=None,
                   help="longer side of the photo in pixels (default: the model's input crop)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_caricature)


def _register_style(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "style", help="style transfer: CONTENT painted in the style of STYLE",
        description="Optimize an image (Fourier parameterization) to match CONTENT's activations at one layer and "
                    "STYLE's Gram matrices (channel correlations) at several layers.",
        epilog="example: luminate style efficientnet_lite0 china.jpg flower.jpg --steps 256 -o style.png")
    add_model_args(p)
    p.add_argument("content", help="the content photo")
    p.add_argument("style", help="the style photo")
    p.add_argument("-o", "--output", default="style.png", help="image file to write (default style.png)")
    p.add_argument("--style-layers", nargs="+", default=None,
                   help="layers whose Gram matrices are matched (default: five blocks from early to the middle)")
    p.add_argument("--content-layer", default=None, help="layer whose activations are matched (default: a block a "
                                                         "third of the way in)")
    p.add_argument("--content-weight", type=float, default=10.0,
                   help="weight of the content term: higher keeps more of CONTENT, lower more style (default 10)")
    p.add_argument("--steps", type=int, default=512, help="optimization steps (default 512, as Lucid)")
    p.add_argument("--size", type=int, default=None,
                   help="longer side of the result in pixels (default: the model's input crop)")
    p.add_argument("--sheet", default=None, help="also save content, style and result side by side")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_style)


def run_patch(args: argparse.Namespace) -> int:
    from luminate.atlas.patches import atlas_patches, save_patch
    from luminate.views.patch import write_patch_report

    output = Path(args.output)
    work = Path(args.work) if args.work else output.with_name(output.stem + "-work")
    model = load_model(args)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    report = atlas_patches(model, args.images, args.source, args.target, layer=args.layer, work_dir=work,
                           size=args.size, sizes=args.sizes, positions=args.positions, n_cells=args.cells,
                           icon_steps=args.icon_steps, class_steps=args.class_steps, refine_steps=args.refine_steps,
                           seed=args.seed,
                           progress=not args.quiet, log=log)
    page = write_patch_report(report, output)
    if args.save_patch:
        save_patch(report.best.patch, args.save_patch)
    print(f"{page}: {report.best.name}, {report.n_source} of {report.n_images} photos called {report.source}, "
          f"{report.seconds:.0f}s")
    print(report.line())
    return 0


def run_hinton(args: argparse.Namespace) -> int:
    from luminate.analysis.hinton import activation_matrix, weight_matrix
    from luminate.views.hinton import write_hinton

    model = load_model(args)
    if args.weights:
        data = weight_matrix(model, args.layer, args.max_rows, args.max_cols)
    else:
        if args.image is None:
            raise ValueError("give an IMAGE for a diagram of activations (or --weights for the layer's weights)")
        data = activation_matrix(model, args.image, args.layer, args.max_rows, args.max_cols)
    path = write_hinton(data, args.output)
    print(f"{path}: {data.title}, {data.shape[0]}x{data.shape[1]} ({data.description})")
    return 0


def run_caricature(args: argparse.Namespace) -> int:
    from luminate.analysis.inversion import caricature

    model = load_model(args)
    result = caricature(model, args.image, args.layer, steps=args.steps, cossim_pow=args.cossim_pow, size=args.size,
                        seed=args.seed, progress=not args.quiet)
    path = result.save(args.output)
    matches = ", ".join(f"{layer} {s0:.2f} -> {s:.2f}" for layer, s, s0 in
                        zip(result.layers, result.match.tolist(), result.start_match.tolist()))
    print(f"{path}: caricature, activation cosine similarity to the photo: {matches} "
          f"({result.result.seconds:.1f}s)")
    return 0


def run_style(args: argparse.Namespace) -> int:
    from luminate.analysis.inversion import style_transfer
    from luminate.images import save_image

    model = load_model(args)
    result = style_transfer(model, args.content, args.style, style_layers=args.style_layers,
                            content_layer=args.content_layer, content_weight=args.content_weight, steps=args.steps,
                            size=args.size, seed=args.seed, progress=not args.quiet)
    path = result.save(args.output)
    if args.sheet:
        save_image(result.sheet(), args.sheet)
    print(f"{path}: style of {args.style} on {args.content}; style layers {', '.join(result.style_layers)}, "
          f"content layer {result.content_layer} ({result.result.seconds:.1f}s)")
    return 0
