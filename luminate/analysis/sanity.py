"""A sanity check for feature visualizations (Geirhos, Zimmermann, Bilodeau, Brendel and Kim, ICML 2024, "Don't
trust your eyes: on the (un)reliability of feature visualizations").

A feature visualization is only evidence about what a unit does on natural images if the network processes it
*the way it processes natural images that drive the unit*. Geirhos et al. built "fooling circuits" that make a
unit's visualization show anything while its natural-image behaviour stays the same, and found that even in
ordinary networks visualizations often take a different path through the layers below the unit than natural
images do. Their proposed check compares the two paths layer by layer; this module computes it.

For each unit ``u`` of ``layer`` (a channel, its activation averaged over positions):

* **top examples** ``T``: the ``top_k`` images of the given set that drive ``u`` most; **others** ``R``: the rest;
* at every **path layer** ``l`` (the model's blocks below ``layer``, then ``layer``), each image becomes its
  activation vector averaged over positions and centred on the mean over the natural images;
* ``s_l`` = mean cosine similarity of the visualization to ``T``; ``n_l`` = mean similarity among ``T`` (what a
  natural top example looks like from another); ``b_l`` = mean similarity between ``T`` and ``R`` (unrelated
  natural images);
* **path score** = the mean over the layers below ``layer`` of ``(s_l - b_l) / (n_l - b_l)``, each clipped to
  [0, 1] (``layer`` itself is shown but not scored: the visualization is made to drive it): 1 where
  the visualization travels with the natural top examples, 0 where it is no closer to them than unrelated images;
* **activation ratio** = ``u(visualization) / max u(natural)``: whether it out-activates the best natural example.

A unit is **flagged** when its path score is below ``threshold`` (default 0.5): its visualization reaches the unit
by a route natural images do not take, so the picture may not show what the unit responds to in the world. A ratio
below 1 is reported too (the visualization is not even a stronger stimulus than the photos).

:func:`sanity_scores` is the one entry point (the Microscope's unit pages call it with their own renders through
``visualizations=``); :mod:`luminate.views.sanity` draws the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from luminate.activations import activations
from luminate.images import load_image, to_tensor
from luminate.models.base import Model, as_model
from luminate.priors import blocks_below

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class SanityReport:
    """What :func:`sanity_scores` measured; every tensor on the CPU, rows in the order of ``units``.

    Attributes:
        model_name, layer, units: what was checked.
        path_layers: the layers compared (the blocks below ``layer``, then ``layer``), ``L`` of them.
        similarity: ``[U, L]`` visualization vs top examples (``s_l``); ``natural``: ``[U, L]`` among top examples
            (``n_l``); ``baseline``: ``[U, L]`` top examples vs the other images (``b_l``).
        path_score: ``[U]`` in [0, 1]; ``ratio``: ``[U]`` visualization activation / best natural activation.
        visualization_activation, natural_activation: ``[U]`` the unit on its visualization and its best photo.
        flagged: ``[U]`` bool, path score below ``threshold``.
        visualizations: ``[U, 3, H, W]``; top_examples: ``[U, k]`` indices into ``images``; images: ``[N, 3, h, w]``
            the natural images (as the model saw them).
    """

    model_name: str
    layer: str
    units: list[int]
    path_layers: list[str]
    similarity: Tensor
    natural: Tensor
    baseline: Tensor
    path_score: Tensor
    ratio: Tensor
    visualization_activation: Tensor
    natural_activation: Tensor
    flagged: Tensor
    threshold: float
    visualizations: Tensor
    top_examples: Tensor
    images: Tensor
    settings: dict = field(default_factory=dict)

    def reasons(self, i: int) -> list[str]:
        """Plain-words reasons unit row ``i`` is suspicious (empty when it passes)."""
        out = []
        if bool(self.flagged[i]):
            out.append(f"its visualization's path through the layers below is unlike its top photos' "
                       f"(path score {float(self.path_score[i]):.2f} < {self.threshold:g})")
        if float(self.ratio[i]) < 1:
            out.append(f"the visualization does not out-activate the best photo (ratio {float(self.ratio[i]):.2f})")
        return out

    def score(self, unit: int) -> dict:
        """``{"path_score", "ratio", "flagged"}`` for one unit (by unit number), for pages that show one unit."""
        i = self.units.index(int(unit))
        return {"path_score": float(self.path_score[i]), "ratio": float(self.ratio[i]),
                "flagged": bool(self.flagged[i])}

    def __repr__(self) -> str:
        return (f"SanityReport({self.model_name} {self.layer}, units {self.units}, path scores "
                f"{[round(float(s), 2) for s in self.path_score]}, flagged {int(self.flagged.sum())})")


def load_images(model: Model, images, min_images: int = 16, seed: int = 0) -> Tensor:
    """Natural images ``[N, 3, H, W]`` at the model's input size from a folder, paths, PIL images or a tensor.

    Paths and PIL images go through ``model.preprocess``; a tensor ``[N, 3, H, W]`` in [0, 1] is resized to the model's
    size. When there are fewer than ``min_images``, random crops (40-90% of the side, seeded) of the images are added
    until there are: the check needs a few top examples and a few others.
    """
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        paths = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {images}")
        images = paths
    size = tuple(model.size)
    if isinstance(images, Tensor):
        batch = images if images.ndim == 4 else images[None]
        batch = F.interpolate(batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        full = list(batch)
        sources = full
    else:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no natural images given: pass a folder, paths or a tensor [N, 3, H, W]")
        full = [model.preprocess(item).cpu()[0] for item in items]
        sources = [(load_image(item) if isinstance(item, (str, Path)) else to_tensor(item))[0] for item in items]
    out = list(full)
    generator = torch.Generator().manual_seed(seed)
    k = 0
    while len(out) < min_images:
        src = sources[k % len(sources)]
        k += 1
        h, w = src.shape[-2:]
        side = int(min(h, w) * (0.4 + 0.5 * torch.rand((), generator=generator).item()))
        y = int(torch.randint(0, h - side + 1, (), generator=generator))
        x = int(torch.randint(0, w - side + 1, (), generator=generator))
        crop = src[:, y:y + side, x:x + side][None]
        out.append(F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


def path_layers_below(model: Model, layer: str) -> list[str]:
    """The model's blocks computed before ``layer`` (:func:`luminate.priors.blocks_below`), then ``layer``."""
    return blocks_below(model, layer) + [layer]


def _pooled(acts: Tensor) -> Tensor:
    """``[N, C, ...]`` -> ``[N, C]`` mean over positions."""
    return acts.float().flatten(2).mean(2) if acts.ndim > 2 else acts.float()


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise cosine similarity ``[len(a), len(b)]``."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


#: Weight of the natural-path guide (:func:`render_units` ``guide=``) against the unit's mean activation.
GUIDE_WEIGHT = 30.0


def render_units(model: Model, layer: str, units: Sequence[int], size: int | None = None, steps: int = 256,
                 param: str = "fourier", seed: int = 0, progress: bool = False, guide: Tensor | None = None,
                 guide_layers: Sequence[str] | None = None, guide_weight: float = GUIDE_WEIGHT,
                 top_k: int = 4) -> Tensor:
    """One feature visualization per unit, rendered together: ``[U, 3, size, size]``.

    ``guide``: natural photos ``[N, 3, H, W]`` (VITAL-style guidance, Zimmermann et al.'s fix for the path problem):
    each unit's image is also pulled, at ``guide_layers`` (default: the blocks below ``layer``), towards the channel
    means of its ``top_k`` photos (:func:`luminate.priors.natural_statistics` with ``targets``), weighted by
    ``guide_weight``; the image gets a free mean colour (``param.image(mean_colour=True)``) so it can take the
    photos' colour. The objective is then ``sum_i unit_i - guide_weight * penalty_i``."""
    from luminate import objectives as obj
    from luminate.render import parameterization
    from luminate.param.spatial import image
    from luminate.render import render

    size = size or min(model.size)
    if guide is not None and param == "fourier" and guide_layers is None and guide_weight == GUIDE_WEIGHT:
        return _as_pages_show(model, layer, units, size, steps, seed, guide, progress)
    objective = sum(obj.channel(layer, int(u), batch=i) for i, u in enumerate(units))
    p, transforms, lr = parameterization(param, size, batch=len(units))
    if guide is not None:
        from luminate.priors import natural_statistics
        from luminate.transforms import default_transforms

        layers = list(guide_layers) if guide_layers is not None else path_layers_below(model, layer)[:-1]
        drive = _pooled(activations(model, guide, [layer], batch_size=16)[layer])[:, [int(u) for u in units]]
        k = max(1, min(int(top_k), guide.shape[0] // 2))
        targets = [guide[drive[:, i].topk(k).indices] for i in range(len(units))]
        objective = objective - guide_weight * natural_statistics(model, guide, layers, targets=targets)
        if param == "fourier":
            p, transforms = image(size, batch=len(units), mean_colour=True), default_transforms()
    return render(model, objective, param=p, transforms=transforms, lr=lr, steps=steps, seed=seed,
                  progress=progress).image


def _as_pages_show(model: Model, layer: str, units: Sequence[int], size: int, steps: int, seed: int,
                   photos: Tensor, progress: bool) -> Tensor:
    """The guided images unit pages show (:data:`luminate.units.render.GUIDED_UNIT_IMAGES`, one renderer, one
    cache), at ``size`` and ``steps``: ``[U, 3, size, size]``."""
    from luminate.units.render import GUIDED_UNIT_IMAGES, Directions, render_directions, unit_guide

    settings = GUIDED_UNIT_IMAGES.replace(size=int(size), steps=int(steps), seed=int(seed), guide=unit_guide(photos))
    directions = Directions.for_units(layer, units, model.layer_info(layer).channels)
    return render_directions(model, directions, settings, progress=progress)


def sanity_scores(model: Model | str, layer: str, units: Sequence[int], images, *,
                  visualizations: Tensor | None = None, top_k: int = 4, threshold: float = 0.5,
                  path_layers: Sequence[str] | None = None, steps: int = 256, size: int | None = 128,
                  param: str = "fourier", seed: int = 0, min_images: int = 16, progress: bool = False,
                  guide: bool = True) -> SanityReport:
    """Geirhos et al.'s path check for ``units`` of ``layer`` against natural ``images``.

    Args:
        model: a Model or zoo name.
        layer, units: the channels to check.
        images: natural images: a folder, paths, PIL images or ``[N, 3, H, W]`` in [0, 1] (see :func:`load_images`).
        visualizations: ``[U, 3, H, W]`` in [0, 1], one per unit (e.g. the Microscope's renders); default: rendered
            here (:func:`render_units` with ``steps``, ``size``, ``param``, ``seed``; with ``guide`` and the
            Fourier parameterization, the guided images unit pages show first
            (:data:`luminate.units.render.GUIDED_UNIT_IMAGES`: each unit's top photos among ``images`` at ranks 0,
            2, 4, 6 guide it at the blocks below), which the issue-20 and issue-30 measurements found necessary for a
            median path score of 0.7 on lite0 ``blocks.9``: unguided renders score 0.4-0.5. Those guiding photos are
            among the ones scored against here; on held-out photos the pages' images scored 0.89
            (``docs/quality.md``).
        top_k: top examples per unit (at most half the images).
        threshold: path scores below it are flagged.
        path_layers: layers to compare (default :func:`path_layers_below`).

    Returns:
        :class:`SanityReport`.
    """
    model = as_model(model)
    units = [int(u) for u in units]
    if not units:
        raise ValueError("no units to check: give at least one channel, e.g. units=[0, 1]")
    for u in units:
        model.check_channel(layer, u)
    natural = load_images(model, images, min_images=min_images, seed=seed)
    n = natural.shape[0]
    k = max(2, min(int(top_k), n // 2))
    if n < 4:
        raise ValueError(f"the check needs at least 4 natural images (2 top examples and 2 others), got {n}")
    guided = visualizations is None and bool(guide)
    if visualizations is None:
        visualizations = render_units(model, layer, units, size=size, steps=steps, param=param, seed=seed,
                                      progress=progress, guide=natural if guide else None, top_k=k)
    if visualizations.shape[0] != len(units):
        raise ValueError(f"got {visualizations.shape[0]} visualizations for {len(units)} units: give one per unit")
    report = _measure(model, layer, units, natural, visualizations, k, threshold, path_layers)
    report.settings = {"top_k": k, "images": n, "steps": steps, "param": param, "seed": seed, "guided": guided}
    return report


def direction_scores(model: Model | str, layer: str, vectors: Tensor, images, visualizations: Tensor, *,
                     top_k: int = 4, threshold: float = 0.5, path_layers: Sequence[str] | None = None) -> SanityReport:
    """:func:`sanity_scores` for directions of ``layer`` (``vectors`` ``[U, C]``, e.g. a dictionary's features): a
    direction's activation is the dot product of its vector with the layer's channel means, which ranks the photos
    and gives the ratio. ``visualizations``: ``[U, 3, H, W]``, one per direction. The report's ``units`` are the
    rows ``0..U-1``."""
    model = as_model(model)
    vectors = torch.as_tensor(vectors).float().cpu()
    channels = model.layer_info(layer).channels
    if vectors.ndim != 2 or vectors.shape[1] != channels:
        raise ValueError(f"directions of {layer} are [U, {channels}] (one row per direction), got "
                         f"{tuple(vectors.shape)}")
    if visualizations.shape[0] != vectors.shape[0]:
        raise ValueError(f"got {visualizations.shape[0]} visualizations for {vectors.shape[0]} directions: give one "
                         "per direction")
    natural = load_images(model, images, min_images=16)
    n = natural.shape[0]
    if n < 4:
        raise ValueError(f"the check needs at least 4 natural images (2 top examples and 2 others), got {n}")
    k = max(2, min(int(top_k), n // 2))
    report = _measure(model, layer, list(range(vectors.shape[0])), natural, visualizations, k, threshold,
                      path_layers, vectors)
    report.settings = {"top_k": k, "images": n, "directions": True}
    return report


def _measure(model: Model, layer: str, units: list[int], natural: Tensor, visualizations: Tensor, k: int,
             threshold: float, path_layers: Sequence[str] | None, vectors: Tensor | None = None) -> SanityReport:
    """The path scores and ratios of ``visualizations`` (one per row of ``units``, or of ``vectors`` ``[U, C]``
    when given) against ``natural`` ``[N, 3, H, W]``, ``k`` top examples each."""
    visualizations = visualizations.detach().float().cpu()
    n = natural.shape[0]
    layers = list(path_layers) if path_layers is not None else path_layers_below(model, layer)
    if layer not in layers:
        layers.append(layer)
    nat = {name: _pooled(a) for name, a in activations(model, natural, layers, batch_size=16, grid=True).items()}
    vis = {name: _pooled(a) for name, a in activations(model, visualizations, layers, batch_size=16, grid=True).items()}
    if vectors is None:
        unit_nat = nat[layer][:, units]                                # [N, U]
        unit_vis = vis[layer][torch.arange(len(units)), units]         # [U]
    else:
        unit_nat = nat[layer] @ vectors.T                              # [N, U]
        unit_vis = (vis[layer] * vectors).sum(1)                       # [U]
    top = unit_nat.topk(k, dim=0).indices.T                            # [U, k]
    sims = torch.zeros(len(units), len(layers))
    among = torch.zeros_like(sims)
    base = torch.zeros_like(sims)
    for j, name in enumerate(layers):
        mean = nat[name].mean(0, keepdim=True)
        a_nat, a_vis = nat[name] - mean, vis[name] - mean
        for i in range(len(units)):
            t = top[i]
            rest = torch.ones(n, dtype=torch.bool)
            rest[t] = False
            sims[i, j] = _cos(a_vis[i:i + 1], a_nat[t]).mean()
            pair = _cos(a_nat[t], a_nat[t])
            among[i, j] = (pair.sum() - pair.diagonal().sum()) / (k * (k - 1))
            base[i, j] = _cos(a_nat[t], a_nat[rest]).mean()
    spread = (among - base)
    relative = torch.where(spread.abs() > 1e-6, (sims - base) / spread.clamp_min(1e-6), torch.zeros_like(sims))
    below = [j for j, name in enumerate(layers) if name != layer] or list(range(len(layers)))
    path_score = relative[:, below].clamp(0, 1).mean(1)
    best = unit_nat.max(0).values
    ratio = unit_vis / best.abs().clamp_min(1e-6)
    return SanityReport(model_name=model.name, layer=layer, units=units, path_layers=layers, similarity=sims,
                        natural=among, baseline=base, path_score=path_score, ratio=ratio,
                        visualization_activation=unit_vis, natural_activation=best,
                        flagged=path_score < threshold, threshold=float(threshold), visualizations=visualizations,
                        top_examples=top, images=natural)
