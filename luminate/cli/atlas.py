"""``luminate collect`` and ``luminate atlas``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from luminate.cli.common import LAYERS_HINT, add_model_args, load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="collect activations and attributions over a folder of images (for atlases)",
        description="Run MODEL over every image under IMAGES (recursively) and store, for a few random positions "
                    "per image, the activation vector of LAYER and its attribution to every class, in a sharded "
                    "store folder. Rerunning the same command resumes an interrupted collection. Unreadable files "
                    "are skipped and named at the end.",
        epilog="example: luminate collect efficientnet_lite0 photos/ --layer blocks.10 -o store/")
    add_model_args(p)
    p.add_argument("images", help="a folder of images (searched recursively)")
    p.add_argument("--layer", required=True, action="append",
                   help=f"layer to collect, e.g. blocks.10 (repeat for several); {LAYERS_HINT}")
    p.add_argument("-o", "--output", required=True, help="store folder to create or resume")
    p.add_argument("--positions", type=int, default=1, help="positions (rows) per image (default 1, as Lucid)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--shard-size", type=int, default=1024, help="rows per shard, the unit of resumption (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="seeds the position draws (default 0)")
    p.add_argument("--workers", type=int, default=None, help="image-decoding processes (default min(2, CPUs))")
    p.add_argument("--no-attribute", "--no-attribution", dest="no_attribute", action="store_true",
                   help="store activations only (no class attributions)")
    p.add_argument("--overwrite", action="store_true", help="replace a store collected with other settings")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="collect shards as Ray tasks: 'local' (a bare --ray) starts a local Ray instance, an address "
                        "joins a cluster (needs luminate[ray])")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_collect)

    p = sub.add_parser(
        "atlas", help="render an activation atlas from a collected store into a zoomable HTML page",
        description="Lay out the store's activations in 2-D, cut the layout into a grid, render one feature "
                    "visualization (icon) per populated cell and write a self-contained, zoomable HTML page: "
                    "hover a cell to see its count, top classes and sample images. --class makes the atlas of one "
                    "class's rows, --compare A B puts two classes side by side (x: attribution difference). Grid "
                    "size and cell threshold adapt to the number of points unless given. Icons are cached in "
                    "$LUMINATE_CACHE/renders (~/.cache/luminate/renders), so a rerun renders nothing again.",
        epilog="example: luminate atlas store/ -o atlas.html --png atlas.png")
    p.add_argument("store", help="a store folder made by `luminate collect`")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="class_name", default=None, help="atlas of one class (name or index)")
    which.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                       help="compare two classes: A on the left, B on the right")
    p.add_argument("-o", "--output", default="atlas.html", help="HTML page to write (default atlas.html)")
    p.add_argument("--png", default=None, help="also save the canvas as an image")
    p.add_argument("--layer", default=None, help="which collected layer (when the store holds several)")
    p.add_argument("--grid", type=int, default=None,
                   help="cells per side (default: adapted to the points, at most 20 / 8 class / 10 compare)")
    p.add_argument("--min-count", type=int, default=None,
                   help="keep cells with more than this many points (default: adapted, at most 10 / 4 / 4)")
    p.add_argument("--icon-size", type=int, default=80, help="icon side in pixels (default 80)")
    p.add_argument("--steps", type=int, default=128, help="optimization steps per icon (default 128)")
    p.add_argument("--attempts", type=int, default=None, help="renders per icon, best kept (default 1; 2 for "
                                                              "--class and --compare)")
    p.add_argument("--layout", default="auto", choices=["auto", "umap", "tsne", "pca"],
                   help="2-D embedding (default auto: t-SNE below 3000 points, UMAP above)")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="whiten icon directions with the store's inverse covariance (default: when the store has at "
                        "least 10 rows per channel)")
    p.add_argument("--batch-size", type=int, default=32, help="icons rendered together (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="icon cache folder (default $LUMINATE_CACHE/renders)")
    p.add_argument("--no-cache", action="store_true", help="render every icon, cache nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_atlas)


def run_collect(args: argparse.Namespace) -> int:
    import logging

    from luminate.atlas.collect import CollectSettings, UnreadableImagesWarning, collect
    from luminate.cli.checks import validate_collect
    from luminate.data.settings import PassSettings

    start = time.perf_counter()
    validate_collect(args)   # every option checked before any work (exit 2)
    if not logging.getLogger().handlers:   # damaged shards are named as they are dropped and recollected
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    model = load_model(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImagesWarning)  # reported below, by name
        settings = CollectSettings(positions_per_image=args.positions, shard_size=args.shard_size, seed=args.seed,
                                   attribute=not args.no_attribute)
        run = PassSettings(batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet,
                           ray=args.ray, num_cpus=args.num_cpus)
        store = collect(model, args.images, args.layer, args.output, settings, run=run, overwrite=args.overwrite)
    print("\n".join(store.summary().splitlines()[:2]))  # what was collected; the skipped files follow by name
    print(f"collected in {time.perf_counter() - start:.1f}s")
    if store.skipped:
        print(skipped_line(store.skipped), file=sys.stderr)
    return 0


def skipped_line(skipped: list[tuple[str, str]], limit: int = 20) -> str:
    """``skipped 3 unreadable files: broken.jpg (reason), ...`` (at most ``limit`` named)."""
    shown = ", ".join(f"{name} ({reason})" for name, reason in skipped[:limit])
    more = f", and {len(skipped) - limit} more (listed in the store's manifest.json)" if len(skipped) > limit else ""
    return f"skipped {len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''}: {shown}{more}"


def run_atlas(args: argparse.Namespace) -> int:
    from luminate.atlas import atlas as pipelines
    from luminate.data.store import ActivationStore
    from luminate.views.atlas import write_atlas

    start = time.perf_counter()
    store = ActivationStore(args.store)
    cache = False if args.no_cache else args.cache
    settings = pipelines.AtlasSettings(
        grid_size=args.grid, min_count=args.min_count, icon_size=args.icon_size, steps=args.steps,
        layout_method=args.layout, whiten=args.whiten, batch_size=args.batch_size, seed=args.seed, cache_dir=cache,
        progress=not args.quiet, attempts=args.attempts)
    common = dict(layer=args.layer, settings=settings)
    if args.class_name is not None:
        label = int(args.class_name) if args.class_name.strip().isdigit() else args.class_name
        atlas = pipelines.class_atlas(store, label, **common)
    elif args.compare is not None:
        a, b = (int(c) if c.strip().isdigit() else c for c in args.compare)
        atlas = pipelines.compare_atlas(store, a, b, **common)
    else:
        atlas = pipelines.activation_atlas(store, **common)
    path = write_atlas(atlas, args.output, store)
    print(f"{path}: {atlas.title()}; {atlas.description()} ({path.stat().st_size // 1024} KiB, "
          f"{time.perf_counter() - start:.1f}s)")
    if args.png:
        print(f"{atlas.save_png(args.png)}: the canvas, {atlas.grid_size * atlas.icon_size} px square")
    return 0
