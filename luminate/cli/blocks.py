"""``luminate dictionary``, ``grid``, ``attribute``, ``groups`` and ``explain``: the Building Blocks as HTML pages."""

from __future__ import annotations

import argparse
import time

from luminate.analysis.lucid_attribution import N_STEPS  # the one step default of every integrated method
from luminate.cli.common import add_model_args, load_model

LAYER_HELP = ("layer name, e.g. blocks.9 or blocks.12 (list them with `luminate layers MODEL`); default: the "
              "layer `luminate explain` uses for this model (blocks.10 for EfficientNet-Lite)")
CLASSES_HELP = ("class names or indices to explain, e.g. --classes daisy bee (quote names with spaces: "
                "'sea anemone'); default: the top predicted classes")


METHODS_HELP = ("saliency, integrated_gradients, smoothgrad, deeplift, occlusion, gradient_shap, input_x_gradient "
                "(pixel maps of the image), or gradcam, layer_integrated_gradients, layer_gradient_x_activation (maps "
                "of --layer, with channel attribution); default: layer_integrated_gradients (from zero activation; "
                "layer_gradient_x_activation is Lucid's linear approximation)")
LINEAR_GONE = "--method layer_gradient_x_activation"


def _method(name: str) -> str:
    from luminate.analysis.attribution import check_method

    try:
        return check_method(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Removed(argparse.Action):
    """A flag that was removed: giving it is an error naming what replaced it (hidden from --help)."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} was removed: use {self.replacement}")


def _method_flag(p: argparse.ArgumentParser, what: str) -> None:
    """The one way to choose the attribution method: ``--method`` (``--linear`` says so)."""
    p.add_argument("--method", default="layer_integrated_gradients", type=_method, metavar="METHOD",
                   help=f"attribution method {what} (Captum's): " + METHODS_HELP)
    p.add_argument("--linear", action=_Removed, replacement=LINEAR_GONE)


def _common(p: argparse.ArgumentParser, output: str) -> None:
    add_model_args(p)
    p.add_argument("image", help="image file (any size: it is cropped and resized as the model expects)")
    p.add_argument("-o", "--output", default=output, help=f"HTML file to write (default {output})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _icons(p: argparse.ArgumentParser, size: int, steps: int, cache: bool = True) -> None:
    p.add_argument("--icon-size", type=int, default=size, help=f"icon size in pixels (default {size})")
    p.add_argument("--icon-steps", type=int, default=steps,
                   help=f"optimization steps per icon batch (default {steps}; fewer is faster and rougher)")
    if cache:
        p.add_argument("--cache", default=None, metavar="DIR",
                       help="render cache folder for channel icons (default $LUMINATE_CACHE/renders, "
                            "~/.cache/luminate/renders); icons rendered once are reused")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands, each from its own function, in the order `luminate --help` lists them."""
    _register_dictionary(sub)
    _register_grid(sub)
    _register_attribute(sub)
    _register_groups(sub)
    _register_explain(sub)


def _register_dictionary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dictionary", help="semantic dictionary: the top channels at each position, as icons (HTML)",
        description="For every spatial position of LAYER, find the K channels that fire most on IMAGE and show them "
                    "as feature visualizations. Hover a cell of the photo in the page to see them, with bars "
                    "proportional to their activation. Icons are rendered once and cached.",
        epilog="example: luminate dictionary efficientnet_lite0 flower.jpg --layer blocks.9 -o dictionary.html")
    _common(p, "dictionary.html")
    p.add_argument("--layer", default=None, help=LAYER_HELP)
    p.add_argument("-k", type=int, default=4, help="channels per position (default 4, as Lucid)")
    _icons(p, 64, 256)
    p.set_defaults(func=run_dictionary)


def _register_grid(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid", help="activation grid: one feature visualization per position (HTML)",
        description="Optimize one image per spatial position of LAYER to produce that position's activation vector "
                    "on IMAGE (Lucid's activation grid, with shared NMF-group parameters so neighbours stay "
                    "coherent). The page shows the photo and the grid side by side; hover either.",
        epilog="example: luminate grid efficientnet_lite0 flower.jpg --layer blocks.9 -o grid.html")
    _common(p, "grid.html")
    p.add_argument("--layer", default=None, help=LAYER_HELP)
    p.add_argument("--cell-size", type=int, default=48, help="pixels per cell (default 48)")
    p.add_argument("--groups", type=int, default=6, help="NMF groups sharing image content (default 6)")
    p.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    p.add_argument("--minibatch", type=int, default=64, help="positions optimized per step (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_grid)


def _register_attribute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute", help="attribution: where in the image each class comes from, and which channels (HTML)",
        description="Attribute the logits of CLASSES to the positions and channels of LAYER: the page lights up the "
                    "photo where each class's evidence lies (Lucid's orange/blue hint compares the first two), shows "
                    "the numbers at the hovered position, and lists the channels that raise or lower each class with "
                    "their icons. Integrated gradients from zero activation by default (--method "
                    "layer_gradient_x_activation: activation x gradient, Lucid's AttrSpatial).",
        epilog="example: luminate attribute efficientnet_lite0 flower.jpg --layer blocks.12 --classes daisy bee "
               "-o attribution.html")
    _common(p, "attribution.html")
    p.add_argument("--layer", default=None, help=LAYER_HELP)
    p.add_argument("--classes", nargs="+", default=None, help=CLASSES_HELP)
    p.add_argument("--top", type=int, default=3, help="without --classes: how many top classes (default 3)")
    p.add_argument("--steps", type=int, default=N_STEPS, help="integrated-gradients steps (or noise samples)")
    _method_flag(p, "")
    p.add_argument("--channels", type=int, default=3,
                   help="top positive and negative channels shown per class (default 3)")
    p.add_argument("--no-icons", action="store_true", help="do not render channel icons")
    p.add_argument("--unit", type=int, default=None,
                   help="text models (char_rnn, minilm_l6; IMAGE is then a text or a .txt file): the unit of --layer "
                        "whose activation at its peak is attributed to the tokens; without --layer, char_rnn's next "
                        "character (--classes C) after the text")
    _icons(p, 64, 128)
    p.set_defaults(func=run_attribute)


def _register_groups(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "groups", help="neuron groups: NMF factors of a layer with icons, masks and class attribution (HTML)",
        description="Factorize LAYER's activations on IMAGE into GROUPS groups of neurons that fire together (NMF). "
                    "Each group gets a feature visualization, a red mask of where it fires, and its attribution to "
                    "each class. Hover a group or a position in the page.",
        epilog="example: luminate groups efficientnet_lite0 flower.jpg --layer head --groups 6 -o groups.html")
    _common(p, "groups.html")
    p.add_argument("--layer", default=None,
                   help="layer with non-negative activations, as NMF needs (EfficientNet-Lite: head or "
                        "blocks.N.depthwise, not the signed block outputs blocks.N); default: per model (head)")
    p.add_argument("--groups", type=int, default=6, help="number of groups (default 6)")
    p.add_argument("--classes", nargs="+", default=None, help=CLASSES_HELP)
    _icons(p, 80, 256, cache=False)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_groups)


def _register_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="explain one photo: every Building Block on one page (HTML)",
        description="Compute everything for one photo and write one self-contained page: the top-5 classes; where in "
                    "the image each top class comes from (spatial attribution overlaid on the photo) and which "
                    "channels carry it; which neuron groups carry it (icons, red masks, attribution); a semantic "
                    "dictionary; and the layer-by-layer perception strip. Default layers are chosen per model "
                    "(EfficientNet-Lite: blocks.10, groups at head). With the defaults it takes about 1.5 minutes on 2 "
                    "idle CPU cores the first time (about 90 channel icons are rendered); icons are cached, so later "
                    "runs are faster. --icon-steps 256 gives finer icons in about twice the time.",
        epilog="example: luminate explain efficientnet_lite0 flower.jpg -o flower.html")
    _common(p, "explain.html")
    p.add_argument("--layer", default=None,
                   help="layer for attribution, and for the dictionary unless --dictionary-layer is given (default: "
                        "per model, blocks.10 for EfficientNet-Lite)")
    p.add_argument("--groups-layer", default=None,
                   help="layer for the neuron groups; its activations must be non-negative for NMF (default: per "
                        "model, head for EfficientNet-Lite)")
    p.add_argument("--dictionary-layer", default=None, help="layer for the semantic dictionary (default: per model)")
    p.add_argument("--classes", nargs="+", default=None, help=CLASSES_HELP)
    p.add_argument("--top", type=int, default=3, help="without --classes: how many top classes to explain (default 3)")
    p.add_argument("--groups", type=int, default=6, help="neuron groups (default 6)")
    p.add_argument("-k", type=int, default=4, help="dictionary channels per position (default 4)")
    _icons(p, 64, 128)
    p.add_argument("--group-steps", type=int, default=None, help="steps for the group icons (default: --icon-steps)")
    p.add_argument("--attribution-steps", type=int, default=N_STEPS,
                   help="integrated-gradients steps (or noise samples)")
    _method_flag(p, "of the attribution section")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_explain)


def _load(args: argparse.Namespace):
    from luminate.analysis.perception import image_input

    model = load_model(args)
    return model, image_input(model, args.image)


def _layer(model, args: argparse.Namespace, role: str) -> str:
    from luminate.analysis.explain import explain_layers

    layer = args.layer or explain_layers(model)[role]
    model.layer_info(layer)  # a clear error (closest names) before any work
    return layer


def _classes(model, args: argparse.Namespace) -> list[int] | None:
    from luminate.analysis.attribution import resolve_classes

    return None if args.classes is None else resolve_classes(model, args.classes)


def _done(path, what: str, start: float) -> int:
    print(f"{path}: {what} in {time.perf_counter() - start:.0f}s")
    return 0


def run_dictionary(args: argparse.Namespace) -> int:
    from luminate.analysis.dictionary import semantic_dictionary
    from luminate.views.blocks import dictionary_view

    from luminate.progress import Job

    start = time.perf_counter()
    model, x = _load(args)
    layer = _layer(model, args, "dictionary")
    with Job("dictionary", stages=1, enabled=not args.quiet) as job:
        job.stage(f"semantic dictionary of {layer}",
                  f"top {args.k} channels per position, one icon per channel "
                  f"({args.icon_size} px, {args.icon_steps} steps; cached icons reused)")
        sd = semantic_dictionary(model, x, layer, k=args.k, icon_size=args.icon_size, icon_steps=args.icon_steps,
                                 cache_dir=args.cache, progress=not args.quiet)
    path = dictionary_view(sd).save(args.output)
    return _done(path, f"semantic dictionary of {layer} ({len(sd.icons)} channel icons)", start)


def run_grid(args: argparse.Namespace) -> int:
    from luminate.analysis.grid import activation_grid
    from luminate.views.blocks import grid_view

    start = time.perf_counter()
    model, x = _load(args)
    layer = _layer(model, args, "dictionary")
    ag = activation_grid(model, x, layer, cell_size=args.cell_size, n_groups=args.groups, steps=args.steps,
                         minibatch=args.minibatch, seed=args.seed, progress=not args.quiet)
    path = grid_view(ag).save(args.output)
    h, w = ag.cells.shape[:2]
    return _done(path, f"activation grid of {layer} ({h}x{w} cells)", start)


def run_attribute(args: argparse.Namespace) -> int:
    from luminate.analysis.explain import add_channel_icons, attribution_maps
    from luminate.views.blocks import attribution_view

    start = time.perf_counter()
    model = load_model(args)
    if getattr(model, "is_text", False):  # token attribution, drawn as coloured text (luminate.cli.text)
        from luminate.cli.text import run_text_attribute

        return run_text_attribute(args, model, start)
    from luminate.analysis.perception import image_input

    x = image_input(model, args.image)
    layer = _layer(model, args, "attribution")
    maps = attribution_maps(model, x, layer, _classes(model, args), top=args.top, n_steps=args.steps,
                            method=args.method)
    if not args.no_icons:
        add_channel_icons(model, maps, args.channels, args.icon_size, args.icon_steps, args.cache, not args.quiet)
    view = attribution_view(maps, n_channels=args.channels)
    path = view.save(args.output)
    return _done(path, f"attribution ({maps.method}) at {maps.layer} for {', '.join(maps.classes)}", start)


def run_groups(args: argparse.Namespace) -> int:
    from luminate.analysis.groups import explain_groups
    from luminate.views.blocks import groups_view

    start = time.perf_counter()
    model, x = _load(args)
    layer = _layer(model, args, "groups")
    ngv = explain_groups(model, x, layer, n_groups=args.groups, classes=_classes(model, args), size=args.icon_size,
                         steps=args.icon_steps, seed=args.seed, progress=not args.quiet)
    path = groups_view(ngv).save(args.output)
    return _done(path, f"{ngv.spatial.shape[0]} neuron groups of {layer} for {', '.join(ngv.classes)}", start)


def run_explain(args: argparse.Namespace) -> int:
    from luminate.analysis.explain import ExplainSettings, explain
    from luminate.progress import Job
    from luminate.views.blocks import explain_view

    start = time.perf_counter()
    model, x = _load(args)
    classes = _classes(model, args)
    with Job("explain", stages=5, enabled=not args.quiet) as job:
        settings = ExplainSettings(method=args.method, attribution_steps=args.attribution_steps, n_classes=args.top,
                                   n_groups=args.groups, k=args.k, icon_size=args.icon_size,
                                   icon_steps=args.icon_steps, group_steps=args.group_steps, seed=args.seed)
        result = explain(model, x, args.layer, classes, settings, groups_layer=args.groups_layer,
                         dictionary_layer=args.dictionary_layer, cache_dir=args.cache, progress=not args.quiet,
                         log=job.log)
    path = explain_view(result).save(args.output)
    best, p = result.predictions[0]
    return _done(path, f"{model.name} sees {best} ({p:.0%}); explained {', '.join(result.attribution.classes)}", start)
