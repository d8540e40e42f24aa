"""``luminate circuit``: the attribution graph of one photo's decision, as a page (and its JSON)."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    from luminate.cli.common import add_model_args

    p = sub.add_parser(
        "circuit", help="an attribution graph: the units that carry a photo's decision, layer to layer",
        description="Trace which units of a few layers carry the model's score for TARGET on PHOTO and how they feed "
                    "each other (gradient x activation scores; edges are attributions through the next layer's "
                    "units), prune to the nodes and edges that carry most of it, check the kept units by removing "
                    "them (next to as many random units), and write a page: the photo, the layers left to right, "
                    "each unit as its feature visualization, click a unit to remove or amplify it.",
        epilog="example: luminate circuit efficientnet_lite0 dog.jpg --target 'Labrador retriever - tiger cat' "
               "-o circuit.html --json circuit.json")
    add_model_args(p)
    p.add_argument("photo", help="the photo (any image file)")
    p.add_argument("--target", default=None,
                   help="a class name or index, or a difference 'a - b' (default: the photo's top class)")
    p.add_argument("--layers", default=None,
                   help="comma-separated hidden layers (default: 4 layers spread through the network)")
    p.add_argument("--features", default=None, metavar="SITE",
                   help="a features site (luminate features): its layer's nodes are the dictionary's features")
    p.add_argument("--groups", type=int, default=0, metavar="N",
                   help="nodes are N neuron groups (NMF factors of this photo) per layer instead of units")
    p.add_argument("--site", default=None, metavar="MICROSCOPE",
                   help="a Microscope site of the same model: unit nodes link to its unit pages")
    p.add_argument("--method", choices=("gradient", "integrated"), default="gradient",
                   help="node scores: gradient x activation, or integrated gradients of each layer")
    p.add_argument("--max-nodes", type=int, default=16, help="most nodes kept per layer")
    p.add_argument("--node-share", type=float, default=0.8, help="share of a layer's influence the kept nodes cover")
    p.add_argument("--edge-share", type=float, default=0.98, help="share of the edges' weight the kept edges cover")
    p.add_argument("--icon-size", type=int, default=64, help="side of the node visualizations in pixels")
    p.add_argument("--icon-steps", type=int, default=64, help="optimization steps of the node visualizations")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the graph as JSON")
    p.add_argument("--cache", default=None, help="render cache folder (default: $LUMINATE_CACHE/renders)")
    p.add_argument("-o", "--output", default="circuit.html")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_circuit)


def run_circuit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from luminate.circuits import CircuitSettings, trace
    from luminate.circuits.icons import ICON_SETTINGS, node_images
    from luminate.cli.common import load_model
    from luminate.views.circuits import circuit_page
    from luminate.views.html import write

    start = time.perf_counter()
    model = load_model(args)
    settings = CircuitSettings(method=args.method, max_nodes=args.max_nodes, node_share=args.node_share,
                               edge_share=args.edge_share, seed=args.seed)
    basis = args.features or ("groups" if args.groups else "units")
    graph = trace(model, args.photo, args.target, layers=args.layers, basis=basis, settings=settings,
                  groups=args.groups or 6)
    traced = time.perf_counter() - start
    data = graph.to_json()
    if args.json:
        Path(args.json).write_text(__import__("json").dumps(data, indent=1), encoding="utf-8")
    icons = node_images(graph, ICON_SETTINGS.replace(size=args.icon_size, steps=args.icon_steps, seed=args.seed),
                        args.cache, progress=not args.quiet)
    links = node_links(graph, args.site, args.features, Path(args.output).parent)
    write(args.output, circuit_page(data, icons, graph.image[0].cpu(), links))
    deepest = graph.layers[-1]
    f = graph.faithfulness.get(deepest, {})
    print(f"{args.output}: {graph.target.label} = {graph.score:.2f}; {sum(len(n.kept) for n in graph.nodes)} nodes, "
          f"{len(graph.edges)} edges; removing the {f.get('kept', 0)} kept units of {deepest} drops it by "
          f"{f.get('kept_drop', 0):.2f} (as many random units: {f.get('random_drop', 0):.2f}); traced in "
          f"{traced:.1f}s, {time.perf_counter() - start:.1f}s in all")
    return 0


def node_links(graph, site: str | None, features: str | None, out_dir) -> dict[str, str]:
    """``{node id: relative url}``: unit nodes to a Microscope site's unit pages, feature nodes to the features
    site's pages, where the site wrote that page (not every unit of a Microscope layer has one)."""
    import os
    from pathlib import Path

    links = {}
    for nodes in graph.nodes:
        root = features if nodes.kind == "feature" else site if nodes.kind == "unit" else None
        if not root:
            continue
        for unit in nodes.kept:
            page = node_page(Path(root), nodes.kind, nodes.layer, unit)
            if page.is_file():
                links[f"{nodes.layer}/{unit}"] = Path(os.path.relpath(page, out_dir)).as_posix()
    return links


def node_page(root, kind: str, layer: str, index: int):
    """Where a site writes the page of one node, by the sites' own naming: a Microscope site's unit page
    (:func:`luminate.views.microscope.layer_dir` / :func:`~luminate.views.microscope.unit_file`) or a features
    site's feature page (:func:`luminate.views.features.feature_file`), in the layer's folder
    (:func:`luminate.data.store.layer_key`)."""
    from luminate.data.store import layer_key
    from luminate.views.features import feature_file
    from luminate.views.microscope import layer_dir, unit_file

    if kind == "feature":
        return root / layer_key(layer) / feature_file(index)
    return root / layer_dir(layer_key(layer)) / unit_file(index)
