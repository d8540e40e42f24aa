"""``luminate microscope``: a static site of every unit of some layers with its dataset examples."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from luminate.cli.common import MODEL_HELP, load_model_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "microscope", help="a static site of units: feature visualizations and the images that excite them",
        description="Stream every image under IMAGES through MODEL once and keep, for each unit (channel) of the "
                    "chosen layers, the top-K images by the unit's maximum activation (with where it is), a histogram "
                    "and how often it fires; render each chosen unit (positive, negative, four diverse images; dead "
                    "and constant units are marked instead); write a folder of static pages: a model page, a "
                    "searchable sprite grid per layer and a page per unit. Interrupt it and rerun the same command: it "
                    "continues where it stopped; a rerun of a finished site changes no file. Unreadable files are "
                    "skipped and named.",
        epilog="example: luminate microscope efficientnet_lite0 photos/ --layers blocks.10 --units 0:16 -o site/")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", help="a folder of images (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="site folder to create or continue")
    p.add_argument("--layers", nargs="+", default=None, metavar="L",
                   help="layers to show, or 'all' for every layer of the model's layer-by-layer list (stem, "
                        "blocks, head) in one pass (default: the model's default layer; list them with "
                        "`luminate layers`); an unknown name stops the run before any work")
    p.add_argument("--units", default="0:64",
                   help="units given pages and visualizations: a slice like 0:64 (default) or a list like 3,7,9; "
                        "'all' for every unit")
    p.add_argument("--render-units", default="auto", metavar="SPEC",
                   help="units visualized (and attributed to classes) among those with pages, per layer: a slice "
                        "like 0:2, a list, 'all' or 'none' (default: every unit when there are at most 64, else the "
                        "first units of each layer within that budget; the log says which)")
    p.add_argument("--circuit-images", type=int, default=8,
                   help="images for each unit's inputs by gradient x activation (default 8; 0: no inputs)")
    p.add_argument("--top", type=int, default=9, help="dataset examples per unit (default 9)")
    p.add_argument("--steps", type=int, default=256, help="optimization steps per visualization (default 256)")
    p.add_argument("--size", type=int, default=96, help="visualization side in pixels (default 96)")
    p.add_argument("--units-per-batch", type=int, default=8,
                   help="units rendered together, six images each (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass when collecting (default 32)")
    p.add_argument("--shard-size", type=int, default=256, help="images per shard, the unit of resumption (default 256)")
    p.add_argument("--attribution-images", type=int, default=256,
                   help="at most this many evenly spaced images for class attribution (default 256; 0: none)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run collection shards and render batches as Ray tasks: 'local' (the default with a bare "
                        "--ray) starts a local Ray instance, an address joins a cluster (needs luminate[ray])")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: the model's)")
    p.add_argument("--cache", default=None, help="render cache folder (default: $LUMINATE_CACHE/renders)")
    p.add_argument("--sanity", action="store_true", help="show a sanity score per unit (when available)")
    p.add_argument("--unguided", action="store_true",
                   help="show only the unguided visualizations: no guided image from the unit's top photos first "
                        "(faster; the pages then carry no held-out path scores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_microscope)


def run_microscope(args: argparse.Namespace) -> int:
    from luminate.cli.atlas import skipped_line
    from luminate.cli.checks import validate_microscope, validate_units
    from luminate.data.settings import PassSettings, resolve_layers
    from luminate.data.store import site_lock
    from luminate.microscope import MicroscopeSettings, build
    from luminate.views.microscope import write_site

    start = time.perf_counter()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    validate_microscope(args)   # every option checked before any work (exit 2, no folder made)
    model = load_model_arg(args.model)
    if getattr(model, "is_text", False) or str(args.images).lower().endswith(".txt"):  # text: luminate.cli.text
        from luminate.cli.text import run_text_microscope

        return run_text_microscope(args, model, start)
    if args.device:
        model = model.to(args.device)
    units = None if args.units.strip().lower() == "all" else args.units
    layers = resolve_layers(model, args.layers)   # a typo stops here, before any folder or work
    for warning in validate_units(model, layers, units):
        print(f"luminate microscope: warning: {warning}", file=sys.stderr)
    with site_lock(args.output):   # one run owns the site from collection to the last page
        settings = MicroscopeSettings(units=units, top_k=args.top, render=args.render_units,
                                      circuit_images=args.circuit_images, steps=args.steps, size=args.size,
                                      seed=args.seed, shard_images=args.shard_size,
                                      attribution_images=args.attribution_images,
                                      units_per_batch=args.units_per_batch, cache_dir=args.cache, sanity=args.sanity,
                                      guided=not args.unguided)
        run = PassSettings(batch_size=args.batch_size, ray=args.ray, num_cpus=args.num_cpus, progress=not args.quiet)
        site = build(model, args.images, args.output, settings, layers=layers, run=run)
        index = write_site(site, progress=not args.quiet)
    n_units = sum(len(layer["units"]) for layer in site.layers)
    print(f"{index}: {n_units} units of {', '.join(l['name'] for l in site.layers)} over "
          f"{site.examples.store.n_images} images ({time.perf_counter() - start:.1f}s)")
    if site.examples.skipped:
        print(skipped_line(site.examples.skipped), file=sys.stderr)
    return 0
