"""``luminate accentuate`` and ``luminate sanity``: feature accentuation and the visualization sanity check."""

from __future__ import annotations

import argparse
import time

from luminate.cli.common import MODEL_HELP, load_model_arg


def _units(text: str) -> list[int]:
    """``"0:4"`` -> [0, 1, 2, 3]; ``"3,7,11"`` -> [3, 7, 11]; ``"5"`` -> [5]."""
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":", 1))
            if stop <= start:
                raise ValueError
            return list(range(start, stop))
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"units must look like 0:4 (0 to 3), 3,7,11 or 5; got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accentuate", help="feature accentuation: grow an objective out of a photo (a sheet of strengths)",
        description="Start from PHOTO and raise OBJECTIVE (a channel like blocks.9:7, a class like class:daisy, or an "
                    "expression), while a penalty keeps the image's activations at an earlier layer close to the "
                    "photo's (Hamblin et al. 2024). Writes one image: the photo, then one image per strength, "
                    "increasing to the right.",
        epilog="example: luminate accentuate efficientnet_lite0 china.jpg blocks.9:7 --steps 64 -o accent.png")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("photo")
    p.add_argument("objective")
    p.add_argument("-o", "--output", default="accentuate.png", help="image file to write (the sheet)")
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="objective weights, one image each (default 0.003 0.01 0.03 0.1; the regularizer weighs 1)")
    p.add_argument("--layer", default=None, help="layer held near the photo (default: halfway to the objective's)")
    p.add_argument("--steps", type=int, default=64, help="optimizer steps (default 64)")
    p.add_argument("--size", type=int, default=None, help="work at this size (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_accentuate)

    p = sub.add_parser(
        "sanity", help="sanity check of feature visualizations against natural images (HTML)",
        description="For each unit, render its feature visualization and compare its path through the layers below "
                    "with the path of its top natural examples among IMAGES (Geirhos et al. 2024); flag units whose "
                    "visualization takes a route natural images do not. IMAGES is a folder of photos (with few photos, "
                    "random crops are added).",
        epilog="example: luminate sanity efficientnet_lite0 photos --layer blocks.9 --units 0:4 -o sanity.html")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", help="folder of natural photos")
    p.add_argument("--layer", required=True, help="layer of the units, e.g. blocks.9")
    p.add_argument("--units", type=_units, required=True, help="channels: 0:4 (0 to 3), 3,7,11 or 5")
    p.add_argument("-o", "--output", default="sanity.html", help="HTML page to write")
    p.add_argument("--steps", type=int, default=256, help="render steps per visualization (default 256)")
    p.add_argument("--size", type=int, default=128, help="visualization size (default 128)")
    p.add_argument("--param", choices=("fourier", "maco", "pixel"), default="fourier",
                   help="parameterization of the visualizations (default fourier)")
    p.add_argument("--top", type=int, default=4, help="top natural examples per unit (default 4)")
    p.add_argument("--threshold", type=float, default=0.5, help="flag path scores below this (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_sanity)


def run_accentuate(args: argparse.Namespace) -> int:
    from luminate.analysis.accentuate import DEFAULT_STRENGTHS, accentuate

    start = time.perf_counter()
    model = load_model_arg(args.model)
    result = accentuate(model, args.photo, args.objective, strengths=args.strengths or DEFAULT_STRENGTHS,
                        layer=args.layer, steps=args.steps, size=args.size, seed=args.seed, progress=not args.quiet)
    path = result.save(args.output)
    values = ", ".join(f"{s:g}: {v:.3g}" for s, v in zip(result.strengths, result.objective_values.tolist()))
    print(f"{path}: {result.objective} from {result.photo_value:.3g} (photo) to {values}, held at {result.layer} "
          f"in {time.perf_counter() - start:.0f}s")
    return 0


def run_sanity(args: argparse.Namespace) -> int:
    from luminate.analysis.sanity import sanity_scores
    from luminate.views.sanity import sanity_view

    start = time.perf_counter()
    model = load_model_arg(args.model)
    report = sanity_scores(model, args.layer, args.units, args.images, top_k=args.top, threshold=args.threshold,
                           steps=args.steps, size=args.size, param=args.param, seed=args.seed,
                           progress=not args.quiet)
    path = sanity_view(report).save(args.output)
    for i, unit in enumerate(report.units):
        verdict = "UNRELIABLE" if bool(report.flagged[i]) else "ok"
        print(f"{args.layer}:{unit}  path score {float(report.path_score[i]):.2f}  "
              f"ratio {float(report.ratio[i]):.2f}  {verdict}")
    print(f"{path}: sanity check of {len(report.units)} units in {time.perf_counter() - start:.0f}s")
    return 0
