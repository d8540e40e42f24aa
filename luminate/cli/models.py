"""``luminate layers`` and ``luminate classify``."""

from __future__ import annotations

import argparse

import torch

from luminate.cli.common import MODEL_HELP, add_model_args, load_model, load_model_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's layers with output shapes and channel counts",
                       description="Print the addressable layers of MODEL (dotted names, as objectives and "
                                   "--layer options take them) with channels and output shape at the model's input "
                                   "size: the top-level layers and blocks, or with --all every nested layer too "
                                   "(blocks.9.depthwise, ...). In Python: luminate.models.layers(model).",
                       epilog="examples: luminate layers efficientnet_lite0\n"
                              "          luminate layers efficientnet_lite0 --all")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--all", action="store_true",
                   help="list every nested layer (e.g. blocks.9.depthwise), not just blocks and top-level layers")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: the model's own)")
    p.set_defaults(func=run_layers)

    p = sub.add_parser("classify", help="top-5 classes of images",
                       description="Classify images with MODEL's evaluation preprocessing and print the top "
                                   "classes with probabilities.")
    add_model_args(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.set_defaults(func=run_classify)


def run_layers(args: argparse.Namespace) -> int:
    from luminate.models.base import top_level_layers
    from luminate.models.table import LayerTable

    model = load_model_arg(args.model, weights=False)  # shapes do not depend on the weights
    every = model.layers(args.size)
    infos = every if args.all else top_level_layers(model, args.size)
    print(LayerTable(infos, title=repr(model)))
    if not args.all and len(every) > len(infos):
        shown = {i.name for i in infos}
        example = next((i.name for i in every if i.name not in shown and i.name.endswith("depthwise")),
                       next(i.name for i in every if i.name not in shown))
        print(f"# {len(every) - len(infos)} nested layers not shown (e.g. {example}): "
              f"luminate layers {args.model} --all")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from luminate.images import UnreadableImageError

    model = load_model(args)
    status = 0
    for path in args.images:
        try:
            x = model.preprocess(path)
        except UnreadableImageError as exc:
            print(f"{path}: skipped: {exc}")
            status = 1
            continue
        with torch.no_grad():
            probs = model(x).softmax(-1)[0]
        values, indices = probs.topk(min(args.top, probs.numel()))
        print(path)
        for p, i in zip(values.tolist(), indices.tolist()):
            print(f"  {p:6.3f}  {model.labels[i] if model.labels else i}")
    return status
