"""``luminate layers`` and ``luminate classify``."""

from __future__ import annotations

import argparse

import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's layers with output shapes and channel counts",
                       description="Print every addressable layer of MODEL (dotted names, as objectives and "
                                   "--layer options take them) with its output shape at the model's input size.")
    p.add_argument("model", help="zoo name, e.g. efficientnet_lite0")
    p.add_argument("--all", action="store_true", help="list every submodule, not just blocks and top-level layers")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: the model's own)")
    p.set_defaults(func=run_layers)

    p = sub.add_parser("classify", help="top-5 classes of images",
                       description="Classify images with MODEL's evaluation preprocessing and print the top "
                                   "classes with probabilities.")
    p.add_argument("model", help="zoo name, e.g. efficientnet_lite0")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.set_defaults(func=run_classify)


def run_layers(args: argparse.Namespace) -> int:
    from luminate import models
    from luminate.models.base import top_level_layers

    model = models.load(args.model, weights=False)  # shapes do not depend on the weights
    infos = model.layers(args.size) if args.all else top_level_layers(model, args.size)
    print(f"# {model!r}")
    print(f"{'layer':<28} {'type':<18} {'channels':>8}  shape")
    for info in infos:
        shape = "x".join(str(s) for s in info.shape)
        print(f"{info.name:<28} {info.kind:<18} {info.channels:>8}  {shape}")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from luminate import models
    from luminate.images import UnreadableImageError

    model = models.load(args.model)
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
