"""Atlas-guided adversarial patches: read a weakness off a comparison atlas, then check it by its flip rate.

The activation-atlas article found, by looking at the atlas of two classes, features that push one class
toward the other (a few noodles turn a frying pan into a wok; a baseball turns a grey whale into a shark) and
pasted them onto photos as patches. :func:`atlas_patches` does the same end to end:

1. **Collect** a layer's activations and their attributions over the images (:func:`luminate.atlas.collect`;
   resumable, kept in ``work_dir``).
2. **Compare** the two classes in an atlas (:func:`luminate.atlas.compare_atlas`: x is the attribution to the
   target minus the source), and **rank its cells** by how much their points raise the target over the source
   (mean attribution difference of the cell's points).
3. **Candidates**: the icons of the best ``n_cells`` cells, and, as a baseline, the feature visualization of the
   target class (its logit maximized).
4. **Paste** each candidate at ``positions x positions`` places onto every image the model calls the source
   class, and count how often the top-1 class becomes the target: the **flip rate**. The **control** is the
   same patch with its pixels shuffled (same size, same colours, no structure): what a patch of those colours
   does by merely hiding part of the photo.
5. **Refine** the best atlas candidate: a raw icon is drawn for one layer's direction, not for the logits, and
   rarely flips a photo on its own. The refinement optimizes the candidate's pixels directly for the target class
   on the source images (random sizes around ``size`` and random places, Adam on the pixels' logits), starting
   from the candidate found through the atlas: the atlas says where to start, the optimization finishes the job.
   The refined patch is evaluated like the others, at fixed grid positions
   and at every size in ``sizes``, against its own shuffled pixels. The refinement sees the very images it is
   evaluated on (at other, random places): the flip rate says the model *can* be flipped by such a patch, not
   that it would transfer to new photos.

>>> report = atlas_patches("efficientnet_lite0", "daisies/", "daisy", "bee", work_dir="patch-work")
>>> print(report.line())                        # flip rate: patch 85%, control 4%
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from luminate import images as imageio
from luminate.atlas.atlas import Atlas, AtlasCell, compare_atlas
from luminate.atlas.collect import collect
from luminate.data.inputs import image_set
from luminate.cache import RenderCache
from luminate.images import UnreadableImageError
from luminate.models.base import Model, as_model
from luminate.progress import bar as progress_bar
from luminate.recipes import class_visualization

logger = logging.getLogger("luminate.atlas")

__all__ = ["atlas_patches", "flip_rate", "photo_crops", "paste", "grid_positions", "shuffle_pixels", "refine_patch",
           "source_images", "rank_cells", "FlipRate", "PatchSettings", "PatchCandidate", "PatchExample", "PatchReport",
           "DEFAULT_SIZE", "DEFAULT_SIZES"]

#: patch side as a fraction of the image side (0.3: 9% of the image's area)
DEFAULT_SIZE = 0.3
#: the sizes the report measures
DEFAULT_SIZES = (0.2, 0.3, 0.4)


# ----- bookkeeping: paste, control, flip rate ---------------------------------------------------------


def patch_pixels(size: float, image_side: int) -> int:
    """The patch side in pixels for ``size`` (a fraction of the image side in (0, 1])."""
    if not 0 < size <= 1:
        raise ValueError(f"patch size is a fraction of the image side in (0, 1], got {size}")
    return max(1, round(size * image_side))


def grid_positions(image_hw: tuple[int, int], side: int, per_side: int = 3) -> list[tuple[int, int]]:
    """``per_side`` x ``per_side`` top-left corners ``(y, x)`` of a ``side`` px patch, evenly spread from the
    top-left to the bottom-right corner (per_side 1: the centre)."""
    h, w = image_hw
    if side > min(h, w):
        raise ValueError(f"a {side} px patch does not fit a {h}x{w} image")
    if per_side < 1:
        raise ValueError(f"positions per side must be at least 1, got {per_side}")
    if per_side == 1:
        return [((h - side) // 2, (w - side) // 2)]
    ys = [round(k * (h - side) / (per_side - 1)) for k in range(per_side)]
    xs = [round(k * (w - side) / (per_side - 1)) for k in range(per_side)]
    return [(y, x) for y in ys for x in xs]


def paste(images: Tensor, patch: Tensor, y: int | Sequence[int], x: int | Sequence[int]) -> Tensor:
    """``images`` ``[N, 3, H, W]`` with ``patch`` ``[3, p, p]`` (or ``[1, 3, p, p]``) pasted with its top-left
    corner at ``(y, x)`` (one place for all, or one per image). Differentiable in ``patch``."""
    patch = patch[0] if patch.ndim == 4 else patch
    n = images.shape[0]
    ys = [int(y)] * n if isinstance(y, (int, np.integer)) else [int(v) for v in y]
    xs = [int(x)] * n if isinstance(x, (int, np.integer)) else [int(v) for v in x]
    ph, pw = patch.shape[-2:]
    mask = torch.zeros(n, 1, *images.shape[-2:], device=images.device, dtype=images.dtype)
    canvas = torch.zeros_like(images)
    for i, (yy, xx) in enumerate(zip(ys, xs)):
        if yy < 0 or xx < 0 or yy + ph > images.shape[-2] or xx + pw > images.shape[-1]:
            raise ValueError(f"a {ph}x{pw} patch at ({yy}, {xx}) falls outside a {tuple(images.shape[-2:])} image")
        mask[i, :, yy:yy + ph, xx:xx + pw] = 1
        canvas[i, :, yy:yy + ph, xx:xx + pw] = patch
    return images * (1 - mask) + canvas * mask


def resize_patch(patch: Tensor, side: int) -> Tensor:
    """``[3, p, p]`` -> ``[3, side, side]`` (bilinear, antialiased), values kept in [0, 1]."""
    patch = patch[0] if patch.ndim == 4 else patch
    if tuple(patch.shape[-2:]) == (side, side):
        return patch
    out = F.interpolate(patch[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)


def shuffle_pixels(patch: Tensor, seed: int = 0) -> Tensor:
    """The control patch: the same pixels (RGB triples) as ``patch`` ``[3, p, p]`` in a random order."""
    patch = patch[0] if patch.ndim == 4 else patch
    c, h, w = patch.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return patch.reshape(c, h * w)[:, order.to(patch.device)].reshape(c, h, w)


@dataclass
class FlipRate:
    """Flip rates of one patch at one size.

    Attributes:
        size: patch side as a fraction of the image side; ``side``: in pixels.
        patch, control: fraction of (image, position) trials whose top-1 class became the target, with the patch
            and with its shuffled pixels.
        patch_flips, control_flips: ``[n_images, n_positions]`` bool, each trial's outcome.
        positions: the ``(y, x)`` top-left corners used.
        control_patch: ``[3, side, side]`` the control as pasted (the patch's pixels shuffled).
    """

    size: float
    side: int
    patch: float
    control: float
    patch_flips: Tensor
    control_flips: Tensor
    positions: list[tuple[int, int]]
    control_patch: Tensor | None = None

    @property
    def trials(self) -> int:
        return int(self.patch_flips.numel())

    def __repr__(self) -> str:
        return (f"FlipRate(size {self.size:g} ({self.side} px): patch {100 * self.patch:.0f}%, control "
                f"{100 * self.control:.0f}% of {self.trials} trials)")


def _top1(model: Model, images: Tensor, batch_size: int) -> Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out.append(model(images[start:start + batch_size].to(model.device)).argmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def flip_rate(model: Model | torch.nn.Module | str, images: Tensor, patch: Tensor, target: int | str,
              size: float = DEFAULT_SIZE, positions: int = 3, control_seed: int = 0, batch_size: int = 32) -> FlipRate:
    """Paste ``patch`` (``[3, p, p]`` in [0, 1], resized to ``size`` of the image side) at ``positions`` x
    ``positions`` places on every image of ``images`` ``[N, 3, H, W]`` and count the trials whose top-1 class is
    ``target``; the same with the patch's pixels shuffled (the control). ``images`` should be those the model calls
    the source class (:func:`source_images`)."""
    model = as_model(model)
    target_index = model.class_index(target) if isinstance(target, str) else int(target)
    if images.shape[0] == 0:
        raise ValueError("no images to paste the patch on")
    side = patch_pixels(size, min(images.shape[-2:]))
    small = resize_patch(patch.detach().cpu(), side)
    control = shuffle_pixels(small, control_seed)
    places = grid_positions(tuple(images.shape[-2:]), side, positions)
    flips = {}
    for name, p in (("patch", small), ("control", control)):
        pasted = torch.cat([paste(images, p, y, x) for y, x in places])  # position-major: [P * N, 3, H, W]
        hits = _top1(model, pasted, batch_size) == target_index
        flips[name] = hits.reshape(len(places), images.shape[0]).T.contiguous()
    return FlipRate(size, side, flips["patch"].float().mean().item(), flips["control"].float().mean().item(),
                    flips["patch"], flips["control"], places, control)


def photo_crops(photo, folder: str | os.PathLike, n: int = 24, seed: int = 2, side: int = 256,
                min_crop: int = 300, max_crop: int = 420) -> Path:
    """Write ``n`` random square crops of ``photo`` (each ``min_crop``..``max_crop`` px, resized to ``side``) into
    ``folder`` as ``f00.jpg``, ``f01.jpg``, ...: a small image set of one subject (crops of scikit-learn's
    ``flower.jpg``, several of which EfficientNet-Lite0 calls daisy)."""
    import random

    from PIL import Image

    image = imageio.to_pil(imageio.load_image(photo))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    for k in range(n):
        s = min(rnd.randint(min_crop, max_crop), image.width, image.height)
        x, y = rnd.randint(0, image.width - s), rnd.randint(0, image.height - s)
        image.crop((x, y, x + s, y + s)).resize((side, side), Image.BICUBIC).save(folder / f"f{k:02d}.jpg")
    return folder


def load_images(model: Model, images, log: Callable[[str], None] | None = None) -> tuple[Tensor, list[str]]:
    """Every readable image of ``images`` (folder, paths, Dataset, batch) preprocessed for ``model``:
    ``([N, 3, H, W], names)``; unreadable ones are skipped and named through ``log``."""
    imageset = image_set(images)
    loaded, names, bad = [], [], []
    for i in range(len(imageset)):
        try:
            loaded.append(imageset.load(i, model.contract))
            names.append(imageset.name(i))
        except UnreadableImageError as exc:
            bad.append(f"{imageset.name(i)} ({exc})")
    if bad and log is not None:
        log(f"skipped {len(bad)} unreadable image(s): {', '.join(bad[:10])}")
    if not loaded:
        raise ValueError(f"none of the {len(imageset)} images could be read")
    return torch.stack(loaded), names


def source_images(model: Model | torch.nn.Module | str, images: Tensor, source: int | str, batch_size: int = 32
                  ) -> tuple[Tensor, Tensor]:
    """The images among ``images`` ``[N, 3, H, W]`` whose top-1 class is ``source``: ``(indices [M], top1 [N])``.
    Raises, naming the classes the model does see, when there is none."""
    model = as_model(model)
    index = model.class_index(source) if isinstance(source, str) else int(source)
    top1 = _top1(model, images, batch_size)
    chosen = torch.nonzero(top1 == index).flatten()
    if len(chosen) == 0:
        seen = torch.bincount(top1).topk(min(3, int((torch.bincount(top1) > 0).sum()))).indices.tolist()
        names = [model.class_name(c) for c in seen]
        raise ValueError(f"the model calls none of the {len(images)} images {model.class_name(index)!r} (their top "
                         f"classes are mostly {', '.join(repr(n) for n in names)}); give photos of the source class")
    return chosen, top1


# ----- refinement ---------------------------------------------------------------------------------------


def refine_patch(model: Model | torch.nn.Module | str, images: Tensor, patch: Tensor, target: int | str,
                 size: float = DEFAULT_SIZE, steps: int = 40, lr: float = 0.1, batch_size: int = 8,
                 jitter: float = 0.2, resolution: int = 64, seed: int = 0, progress: bool = True) -> Tensor:
    """Optimize ``patch`` ``[3, p, p]`` so that pasting it makes ``model`` call ``images`` ``[N, 3, H, W]``
    ``target``: Adam on the pixels' logits (``resolution`` px a side), maximizing the target's mean log-probability
    over ``batch_size`` images per step, each with the patch at a random place and at a random size within
    ``size x (1 ± jitter)``. Returns the refined patch ``[3, resolution, resolution]`` in [0, 1]."""
    model = as_model(model)
    target_index = model.class_index(target) if isinstance(target, str) else int(target)
    generator = torch.Generator().manual_seed(seed)
    start = resize_patch(patch.detach().cpu().float(), resolution).clamp(0.01, 0.99)
    logits = torch.logit(start).to(model.device).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    images = images.to(model.device)
    h, w = images.shape[-2:]
    was_training = model.training
    model.eval()
    bar = progress_bar(steps, "refine patch", enabled=progress and steps > 0)
    try:
        for _ in range(steps):
            pick = torch.randperm(images.shape[0], generator=generator)[:batch_size]
            scale = 1 + jitter * (2 * float(torch.rand((), generator=generator)) - 1)
            side = min(min(h, w), max(4, round(size * scale * min(h, w))))
            ys = torch.randint(0, h - side + 1, (len(pick),), generator=generator).tolist()
            xs = torch.randint(0, w - side + 1, (len(pick),), generator=generator).tolist()
            current = F.interpolate(torch.sigmoid(logits)[None], size=(side, side), mode="bilinear",
                                    align_corners=False, antialias=True)[0]
            batch = paste(images[pick.to(images.device)], current, ys, xs)
            loss = -model(batch).log_softmax(-1)[:, target_index].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(p_target=f"{float(torch.exp(-loss.detach())):.3f}")
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return torch.sigmoid(logits).detach().cpu()


# ----- the pipeline ---------------------------------------------------------------------------------------


@dataclass
class PatchCandidate:
    """One candidate patch: ``name``, ``kind`` (``"atlas cell"``, ``"class visualization"`` or ``"refined"``),
    ``patch`` ``[3, p, p]``, its ``rate`` at the default size, and for atlas cells the ``cell`` and its ``gain``
    (mean attribution to the target minus the source over the cell's points)."""

    name: str
    kind: str
    patch: Tensor
    rate: FlipRate
    cell: AtlasCell | None = None
    gain: float = float("nan")


@dataclass
class PatchExample:
    """One source image before and after the patch: ``before`` / ``after`` ``[3, H, W]``, and each one's top-5
    ``[(class name, probability)]``."""

    name: str
    before: Tensor
    after: Tensor
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]


@dataclass
class PatchReport:
    """What :func:`atlas_patches` found.

    Attributes:
        model_name, layer, source, target: the run.
        atlas: the comparison atlas (source left, target right); ``gains`` ``[n_cells]`` each cell's mean
            attribution to the target minus the source; ``chosen`` the indices of the cells turned into patches.
        candidates: every candidate at the default size (cells, the class visualization, the refined patch).
        best: the candidate the report leads with: the refined patch (the best raw candidate without refinement).
        by_size: the best patch's :class:`FlipRate` at each size.
        examples: a few source images before and after the best patch.
        n_images, n_source: images read, and how many the model calls the source class.
        settings: every setting; ``seconds``: wall time.
    """

    model_name: str
    layer: str
    source: str
    target: str
    atlas: Atlas
    gains: np.ndarray
    chosen: list[int]
    candidates: list[PatchCandidate]
    best: PatchCandidate
    by_size: list[FlipRate]
    examples: list[PatchExample]
    n_images: int
    n_source: int
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """``flip rate: patch N%, control M%`` for the best candidate at the default size."""
        return f"flip rate: patch {100 * self.best.rate.patch:.0f}%, control {100 * self.best.rate.control:.0f}%"

    def __repr__(self) -> str:
        return (f"PatchReport({self.model_name} {self.layer}, {self.source} -> {self.target}, {self.n_source} "
                f"source images, best {self.best.name!r}: {self.line()})")


def rank_cells(atlas: Atlas, store, source: int, target: int) -> np.ndarray:
    """Each atlas cell's gain ``[n_cells]``: the mean over its points of (attribution to ``target`` minus
    attribution to ``source``), read from the activation store."""
    gains = np.zeros(len(atlas.cells), dtype=np.float64)
    for k, cell in enumerate(atlas.cells):
        attr = np.asarray(store.attributions(atlas.layer, np.sort(cell.rows)), dtype=np.float64)
        gains[k] = float((attr[:, target] - attr[:, source]).mean()) if len(attr) else float("nan")
    return gains


@dataclass(frozen=True)
class PatchSettings:
    """What an :func:`atlas_patches` run depends on besides the model, images, classes and layer.

    Attributes:
        size: the default patch side, a fraction of the image side; ``sizes``: those measured for the report.
        positions: places per side (``positions²`` places per image) for the best patch; ``screen_positions``: the
            same for screening the raw candidates.
        n_cells: atlas cells turned into candidates. positions_per_image: atlas rows per image.
        icon_size, icon_steps: the atlas icons; ``class_steps``: the class visualization.
        refine_steps, refine: the refinement of the best atlas candidate (:func:`refine_patch`); the refined patch
            is the report's best. Without refinement the best raw candidate (class visualization included) is.
        n_examples: before/after examples kept.
        seed: seeds collection, icons, refinement and the control's shuffle.
    """

    size: float = DEFAULT_SIZE
    sizes: tuple[float, ...] = DEFAULT_SIZES
    positions: int = 3
    screen_positions: int = 2
    n_cells: int = 3
    positions_per_image: int = 4
    icon_size: int = 64
    icon_steps: int = 48
    class_steps: int = 64
    refine_steps: int = 40
    refine: bool = True
    n_examples: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(float(s) for s in self.sizes))
        patch_pixels(self.size, 2)  # validates the fraction


def atlas_patches(model: Model | str, images, source: str | int, target: str | int, layer: str = "blocks.10",
                  work_dir: str | os.PathLike | None = None, settings: PatchSettings = PatchSettings(), *,
                  progress: bool = True, log: Callable[[str], None] | None = None, **fields) -> PatchReport:
    """Find a patch that turns ``source`` photos into ``target`` through a comparison atlas (module docstring).

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name.
        images: a folder, a list of paths, a Dataset or a batch; the patch is measured on those the model calls
            ``source``.
        source, target: class names or indices.
        layer: the atlas layer.
        work_dir: where the activation store and, in the render cache's format, the class visualization and the
            refined patch are kept (a rerun with the same settings reuses them and optimizes nothing again); default:
            a temporary folder, removed afterwards.
        settings: :class:`PatchSettings`; ``fields`` override its fields (``icon_steps=24, refine=False``).
        progress, log: progress bars; a function for one-line progress messages.
    """
    settings = dataclasses.replace(settings, **fields) if fields else settings
    say = log or (lambda message: None)
    began = time.perf_counter()
    model = as_model(model)
    source_index = model.class_index(source) if isinstance(source, str) else int(source)
    target_index = model.class_index(target) if isinstance(target, str) else int(target)
    if source_index == target_index:
        raise ValueError(f"source and target are the same class ({model.class_name(source_index)!r})")
    all_images, names = load_images(model, images, say)
    chosen_images, top1 = source_images(model, all_images, source_index)
    src = all_images[chosen_images]
    say(f"{len(src)} of {len(all_images)} images are called {model.class_name(source_index)!r}")
    atlas, gains = _comparison(model, images, source_index, target_index, layer, work_dir, settings, progress, say)
    chosen = [int(k) for k in np.argsort(-np.nan_to_num(gains, nan=-np.inf), kind="stable")][:settings.n_cells]
    cache = RenderCache(Path(work_dir) / "patches") if work_dir is not None else None

    def measure(patch: Tensor, at: float = settings.size, per_side: int = settings.positions) -> FlipRate:
        return flip_rate(model, src, patch, target_index, at, per_side, control_seed=settings.seed)

    candidates = []
    for k in chosen:
        cell = atlas.cells[k]
        rate = measure(atlas.icons[k], per_side=settings.screen_positions)
        candidates.append(PatchCandidate(f"atlas cell ({cell.i}, {cell.j})", "atlas cell", atlas.icons[k], rate,
                                         cell, float(gains[k])))
        say(f"candidate {candidates[-1].name} (gain {gains[k]:+.3g}): {rate}")
    say(f"class visualization of {model.class_name(target_index)!r} (the baseline candidate)")
    side, steps = max(settings.icon_size, 96), settings.class_steps
    vis = _cached(cache, model, {"kind": "class visualization", "class": target_index, "size": side, "steps": steps,
                                 "seed": settings.seed},
                  lambda: class_visualization(model, target_index, size=side, steps=steps, seed=settings.seed,
                                              progress=progress).image[0])
    candidates.append(PatchCandidate(f"feature visualization of {model.class_name(target_index)}",
                                     "class visualization", vis, measure(vis, per_side=settings.screen_positions)))
    say(f"candidate {candidates[-1].name}: {candidates[-1].rate}")
    best = max(candidates, key=_merit)
    if settings.refine and settings.refine_steps > 0:
        best = _refined(model, src, candidates, target_index, settings, cache, progress, say, measure)
        candidates.append(best)
    if best.rate.positions != grid_positions(tuple(src.shape[-2:]), best.rate.side, settings.positions):
        best.rate = measure(best.patch)
    by_size = [best.rate if abs(s - settings.size) < 1e-9 else measure(best.patch, s) for s in settings.sizes]
    examples = _examples(model, src, [names[int(i)] for i in chosen_images], best, settings.n_examples)
    record = {"layer": layer, **{k: v for k, v in dataclasses.asdict(settings).items() if k != "refine"},
              "sizes": list(settings.sizes), "refine_steps": settings.refine_steps if settings.refine else 0,
              "work_dir": None if work_dir is None else str(work_dir)}
    return PatchReport(model.name, layer, model.class_name(source_index), model.class_name(target_index), atlas, gains,
                       chosen, candidates, best, by_size, examples, len(all_images), len(src), record,
                       time.perf_counter() - began)


def _comparison(model: Model, images, source: int, target: int, layer: str, work_dir, settings: PatchSettings,
                progress: bool, say: Callable[[str], None]) -> tuple[Atlas, np.ndarray]:
    """The comparison atlas of ``source`` and ``target`` over ``images`` and each cell's gain; the activation store
    goes to ``work_dir/store`` (a temporary folder when None)."""
    temporary = None
    if work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="luminate-patch-")
        work_dir = temporary.name
    try:
        work = Path(work_dir)
        say(f"collecting {layer} into {work / 'store'}")
        store = collect(model, images, layer, work / "store", positions_per_image=settings.positions_per_image,
                        seed=settings.seed, progress=progress, num_workers=0)
        say("comparison atlas")
        atlas = compare_atlas(store, source, target, model=model, icon_size=settings.icon_size,
                              steps=settings.icon_steps, attempts=1, seed=settings.seed, progress=progress)
        return atlas, rank_cells(atlas, store, source, target)
    finally:
        if temporary is not None:
            temporary.cleanup()


def _refined(model: Model, src: Tensor, candidates: list[PatchCandidate], target: int, settings: PatchSettings,
             cache: RenderCache | None, progress: bool, say: Callable[[str], None],
             measure: Callable[[Tensor], FlipRate]) -> PatchCandidate:
    """The best atlas candidate refined for ``target`` on the source images (:func:`refine_patch`), measured."""
    from_atlas = [c for c in candidates if c.kind == "atlas cell"]
    start = max(from_atlas or candidates, key=_merit)
    say(f"refining {start.name} for {model.class_name(target)!r} on the {len(src)} source images")
    refined = _cached(cache, model, {"kind": "refined", "class": target, "size": settings.size,
                                     "steps": settings.refine_steps, "seed": settings.seed,
                                     "start": _digest(start.patch), "images": _digest(src)},
                      lambda: refine_patch(model, src, start.patch, target, size=settings.size,
                                           steps=settings.refine_steps, seed=settings.seed, progress=progress))
    candidate = PatchCandidate(f"{start.name}, refined", "refined", refined, measure(refined), start.cell, start.gain)
    say(f"candidate {candidate.name}: {candidate.rate}")
    return candidate


def _digest(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def _cached(cache: RenderCache | None, model: Model, settings: dict, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` (an image ``[3, H, W]`` in [0, 1]) once per model weights and ``settings``: kept in the render
    cache ``cache`` (None: not kept), so a rerun with the same settings optimizes nothing again. Returned in 8-bit
    steps either way, so a rerun measures the very patch the first run did."""
    from luminate.cache import dequantize, quantize

    if cache is None:
        return dequantize(quantize(compute()))
    key = RenderCache.key({**settings, "for": "luminate.atlas.patches"}, model=model)
    found = cache.get(key, [0])
    if found is not None and 0 in found.images:
        return found.images[0]
    value = dequantize(quantize(compute()))
    cache.put(key, {0: value}, settings=settings)
    return value


def _merit(candidate: PatchCandidate) -> tuple[float, float, float]:
    rate = candidate.rate
    return rate.patch - rate.control, rate.patch, np.nan_to_num(candidate.gain, nan=-np.inf)


def _top5(model: Model, image: Tensor) -> list[tuple[str, float]]:
    with torch.no_grad():
        probs = model(image[None].to(model.device)).softmax(-1)[0].cpu()
    top = probs.topk(min(5, probs.numel()))
    return [(model.class_name(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


def _examples(model: Model, images: Tensor, names: list[str], best: PatchCandidate, n: int) -> list[PatchExample]:
    """Up to ``n`` images, flipped ones first, each with the patch at the place that flipped it (or the first)."""
    rate = best.rate
    small = resize_patch(best.patch, rate.side)
    flipped = rate.patch_flips.any(1)
    order = sorted(range(images.shape[0]), key=lambda i: (not bool(flipped[i]), i))[:n]
    out = []
    for i in order:
        hits = torch.nonzero(rate.patch_flips[i]).flatten()
        y, x = rate.positions[int(hits[0]) if len(hits) else 0]
        after = paste(images[i:i + 1], small, y, x)[0]
        out.append(PatchExample(names[i], images[i], after, _top5(model, images[i]), _top5(model, after)))
    return out


def save_patch(patch: Tensor, path: str | os.PathLike) -> Path:
    """Write a patch ``[3, p, p]`` as an image file."""
    return imageio.save_image(patch[None] if patch.ndim == 3 else patch, path)
