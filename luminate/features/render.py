"""Feature visualizations of dictionary directions: a positive image and four diverse ones per feature, many
features per batch, in Luminate's render cache.

A chunk of ``n`` features is one batch of ``5 n`` images under one vectorized objective: item ``i < n`` follows
feature ``f_i``'s direction (:func:`luminate.objectives.directions`, every position, ``dot x cos`` with
``cossim_pow``), and the last ``4 n`` items are four images per feature following the same direction while the
Microscope's grouped diversity term (:func:`luminate.microscope.render.grouped_diversity`) pushes each group's
styles apart. The cache key holds the direction's values, so a feature is rendered once per direction, model weights
and settings, whichever dictionary or site it belongs to.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

import luminate
from luminate import objectives as obj
from luminate import param as P
from luminate.cache import RenderCache
from luminate.microscope.render import DIVERSITY, chunks, grouped_diversity
from luminate.models.base import Model, as_model
from luminate.render import render
from luminate.transforms import compose, standard_transforms

#: images per feature: one positive, four diverse
TILES = ("positive",) + tuple(f"diversity {i + 1}" for i in range(DIVERSITY))


def feature_settings(size: int = 96, steps: int = 256, seed: int = 0, lr: float = 0.05, cossim_pow: float = 1.0,
                     diversity_weight: float = 1e2, per_batch: int = 8) -> dict:
    """Everything a feature's images depend on besides model, weights, layer and direction (part of the key)."""
    from luminate.runtime import budget_steps

    return {"kind": "features.direction-v1", "size": int(size), "steps": budget_steps(steps), "seed": int(seed),
            "lr": float(lr), "cossim_pow": float(cossim_pow), "diversity_weight": float(diversity_weight),
            "per_batch": int(per_batch), "transforms": repr(compose(standard_transforms())),
            "param": repr(P.image(size)).replace("\n", " "), "luminate": luminate.__version__}


class FeatureCache:
    """Feature renders of one layer and settings in the render cache: one entry per direction (5 slots)."""

    def __init__(self, root: str | os.PathLike | None, model: Model, layer: str, settings: dict):
        self.cache = RenderCache(root)
        self.model, self.layer, self.settings = model, layer, settings

    def key(self, direction: torch.Tensor) -> str:
        return RenderCache.key({**self.settings, "layer": self.layer}, direction.float(), model=self.model)

    def has(self, direction: torch.Tensor) -> bool:
        return self.key(direction) in self.cache

    def load(self, direction: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """``{"positive": [3,S,S], "diversity": [4,3,S,S]}`` or None."""
        entry = self.cache.get(self.key(direction))
        if entry is None or sorted(entry.images) != list(range(len(TILES))):
            return None
        tiles = torch.stack([entry.images[s] for s in range(len(TILES))])
        return {"positive": tiles[0], "diversity": tiles[1:]}

    def save(self, direction: torch.Tensor, images: torch.Tensor) -> None:
        self.cache.put(self.key(direction), images, settings={**self.settings, "layer": self.layer},
                       cols=len(TILES))


def chunk_objective(layer: str, vecs: torch.Tensor, cossim_pow: float, diversity_weight: float) -> obj.Objective:
    """The objective of one batch of ``5 n`` items for the directions ``vecs`` ``[n, C]``."""
    n = vecs.shape[0]
    items = torch.cat([vecs, vecs.repeat_interleave(DIVERSITY, 0)])
    follow = obj.directions(layer, items, cossim_pow=cossim_pow, all_positions=True)
    return follow - (diversity_weight * DIVERSITY) * grouped_diversity(layer, n, n)


def render_features(model, layer: str, directions: torch.Tensor, features: Sequence[int], *, size: int = 96,
                    steps: int = 256, seed: int = 0, lr: float = 0.05, cossim_pow: float = 1.0,
                    diversity_weight: float = 1e2, per_batch: int = 8, cache_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """Visualizations of ``features`` (rows of ``directions`` ``[N, C]``) at ``layer``:
    ``{feature: {"positive": [3,S,S], "diversity": [4,3,S,S]}}``, rendered ``per_batch`` features at a time into
    the render cache (``cache_dir``, default ``$LUMINATE_CACHE/renders``); cached ones are read back."""
    from luminate import progress as progress_module

    model = as_model(model)
    settings = feature_settings(size, steps, seed, lr, cossim_pow, diversity_weight, per_batch)
    cache = FeatureCache(cache_dir, model, layer, settings)
    todo = [c for c in chunks(features, per_batch) if not all(cache.has(directions[f]) for f in c)]
    progress_module.units(cached=len(features) - sum(len(c) for c in todo), unit="feature")
    bar = progress_module.bar(sum(len(c) for c in todo), f"render {layer} features", unit="feature",
                              enabled=progress and bool(todo))
    try:
        for chunk in todo:
            vecs = directions[chunk].float()
            n = len(chunk)
            result = render(model, chunk_objective(layer, vecs, cossim_pow, diversity_weight),
                            P.image(size, batch=(1 + DIVERSITY) * n), steps=settings["steps"], lr=lr, seed=seed,
                            progress=False)
            if result.interrupted:   # half-optimized images must not enter the cache
                raise KeyboardInterrupt(f"rendering features {chunk} of {layer} was interrupted")
            images = result.image
            for i, f in enumerate(chunk):
                tiles = torch.cat([images[i:i + 1], images[n + DIVERSITY * i:n + DIVERSITY * (i + 1)]])
                cache.save(directions[f], tiles)
            progress_module.units(rendered=n, unit="feature")
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    out = {}
    for f in features:
        images = cache.load(directions[f])
        if images is None:
            raise OSError(f"feature {f} of {layer} is missing from the render cache {cache.cache.folder} after "
                          "rendering")
        out[int(f)] = images
    return out
