"""``luminate features``: a sparse dictionary of a layer, with a site of feature pages like the Microscope's."""

from __future__ import annotations

import argparse
import logging
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    from luminate.cli.common import add_model_args

    p = sub.add_parser(
        "features", help="a sparse dictionary of a layer's activations, with a page per feature",
        description="Collect the activations of LAYER at every position of every image under IMAGES, learn a "
                    "dictionary of N directions whose codes are sparse (a TopK sparse autoencoder by default), measure "
                    "it on held-out images (R², L0, dead features, stability across two seeds) and write a folder of "
                    "static pages: an index with the figures and every feature (sortable by firing frequency), and a "
                    "page per chosen feature with its visualization, top images, quantile samples, histogram, classes, "
                    "neurons and similar features. Interrupt it and rerun the same command: collection and training "
                    "continue where they stopped; a rerun of a finished site changes no file.",
        epilog="example: luminate features efficientnet_lite0 photos/ --layer blocks.10 --features 256 --k 16 -o site/")
    add_model_args(p)
    p.add_argument("images", help="a folder of images (searched recursively), or an activation store folder")
    p.add_argument("-o", "--output", required=True, help="site folder to create or continue")
    p.add_argument("--layer", required=True, help="a convolutional layer (list them with `luminate layers MODEL`)")
    p.add_argument("--features", type=int, default=256, help="dictionary size N (default 256)")
    p.add_argument("--k", type=int, default=16, help="active codes per position for topk / batchtopk (default 16)")
    p.add_argument("--method", choices=("topk", "batchtopk", "nmf"), default="topk",
                   help="topk (TopK sparse autoencoder, default), batchtopk, or nmf (scikit-learn baseline)")
    p.add_argument("--dictionary", default=None, metavar="PATH",
                   help="show this dictionary instead of learning one: a SAELens folder (cfg.json and "
                        "sae_weights.safetensors) or a Luminate dictionary.safetensors")
    p.add_argument("--top", type=int, default=9, help="dataset examples per feature (default 9)")
    p.add_argument("--pages", default="0:64", help="features given pages and visualizations: a slice like 0:64 "
                                                   "(default), a list like 3,7,9, or 'all'")
    p.add_argument("--steps", type=int, default=256, help="optimization steps per visualization (default 256)")
    p.add_argument("--size", type=int, default=96, help="visualization side in pixels (default 96)")
    p.add_argument("--train-steps", type=int, default=3000, help="training steps of the dictionary (default 3000)")
    p.add_argument("--unguided", action="store_true",
                   help="show only the unguided visualizations: no guided image from the feature's top photos first "
                        "(faster; the pages then carry no held-out path scores)")
    p.add_argument("--no-stability", action="store_true",
                   help="skip the second seed (the stability figure); halves training time")
    p.add_argument("--microscope", default=None, metavar="SITE",
                   help="a Microscope site of the same model: neuron lists link to its unit pages")
    p.add_argument("--cache", default=None, help="render cache folder (default: $LUMINATE_CACHE/renders)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_features)


def run_features(args: argparse.Namespace) -> int:
    from luminate.cli.checks import UsageError, at_least
    from luminate.cli.common import load_model
    from luminate.data.store import site_lock

    start = time.perf_counter()
    for option, value in (("--features", args.features), ("--k", args.k), ("--top", args.top),
                          ("--steps", args.steps), ("--train-steps", args.train_steps)):
        at_least(option, value, 1)   # before any collection, and before the output folder is made
    if args.method != "nmf" and args.k > args.features:
        raise UsageError(f"--k {args.k}: more active codes than the {args.features} features; give --k <= --features")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    model = load_model(args)
    with site_lock(args.output):   # one run per site folder: a second run into it is refused (exit 2)
        return _build_and_write(args, model, start)


def _build_and_write(args: argparse.Namespace, model, start: float) -> int:
    from luminate.features import FeatureSettings, build
    from luminate.views.features import write_site

    pages = None if args.pages.strip().lower() == "all" else args.pages
    settings = FeatureSettings().replace(n_features=args.features, k=args.k, method=args.method, top_k=args.top,
                                         pages=pages, steps=args.steps, size=args.size, seed=args.seed,
                                         train_steps=args.train_steps, stability=not args.no_stability,
                                         guided=not args.unguided)
    site = build(model, args.images, args.output, args.layer, settings=settings, microscope=args.microscope,
                 cache_dir=args.cache, progress=not args.quiet, dictionary=args.dictionary)
    index = write_site(site, progress=not args.quiet)
    m = site.dictionary.metrics
    stab = f", stability {m['stability']:.3f}" if m.get("stability") is not None else ""
    print(f"{index}: {site.dictionary.n_features} features of {site.layer} ({site.dictionary.method}, k = {site.dictionary.k}): "
          f"held-out R² {m['r2']:.3f}, L0 {m['l0']:.1f}, dead {100 * m['dead']:.1f}%{stab}; {len(site.pages)} pages "
          f"({time.perf_counter() - start:.1f}s)")
    if site.skipped:
        from luminate.cli.atlas import skipped_line

        print(skipped_line(site.skipped), file=sys.stderr)
    return 0
