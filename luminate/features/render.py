"""Feature visualizations of dictionary directions: a positive image and four diverse ones per feature, many
features per batch, in Luminate's render cache.

A feature is a direction, rendered by the one renderer of directions (:func:`luminate.units.render_directions` with
:data:`FEATURE_IMAGES`): a chunk of ``n`` features is one batch of ``5 n`` images; item ``i < n`` follows feature
``f_i``'s direction (:func:`luminate.objectives.directions`, every position, ``dot x cos`` with ``cossim_pow``), and
the last ``4 n`` items are four images per feature following the same direction while a grouped diversity term
pushes each group's styles apart. The cache key holds the direction's values, so a feature is rendered once per
direction, model weights and settings, whichever dictionary or site it belongs to.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from luminate.units.render import Directions, RenderSettings, render_directions

#: images per feature: one positive, four diverse
TILES = ("positive", "diversity 1", "diversity 2", "diversity 3", "diversity 4")

#: a feature's images (render's default transforms, as they always ran)
FEATURE_IMAGES = RenderSettings(size=96, steps=256, cossim_pow=1.0, diversity=4, diversity_weight=1e2, batch=8)


def feature_settings(size: int = 96, steps: int = 256, seed: int = 0, lr: float = 0.05, cossim_pow: float = 1.0,
                     diversity_weight: float = 1e2, per_batch: int = 8) -> RenderSettings:
    """Everything a feature's images depend on besides model, weights, layer and direction (the cache key)."""
    return FEATURE_IMAGES.replace(size=int(size), steps=int(steps), seed=int(seed), lr=float(lr),
                                  cossim_pow=float(cossim_pow), diversity_weight=float(diversity_weight),
                                  batch=max(1, int(per_batch)))


def render_features(model, layer: str, directions: torch.Tensor, features: Sequence[int], *,
                    settings: RenderSettings = FEATURE_IMAGES, cache_dir: str | os.PathLike | bool | None = None,
                    progress: bool = True, callback=None, **fields) -> dict[int, dict[str, torch.Tensor]]:
    """Visualizations of ``features`` (rows of ``directions`` ``[N, C]``) at ``layer``:
    ``{feature: {"positive": [3,S,S], "diversity": [4,3,S,S]}}``, rendered ``settings.batch`` features at a time
    into the render cache (``cache_dir``: default ``$LUMINATE_CACHE/renders``; ``False``: none); cached ones are read
    back. ``callback``: see :func:`luminate.render.render`. ``fields`` override fields of ``settings``
    (``size=64, steps=128``; :class:`~luminate.units.RenderSettings`).
    """
    settings = settings.replace(**fields) if fields else settings
    features = [int(f) for f in features]
    chosen = Directions.for_vectors(layer, torch.as_tensor(directions)[features], kind="feature",
                                    names=[f"feature {f}" for f in features])
    images = render_directions(model, chosen, settings, cache=cache_dir, progress=progress, callback=callback)
    images = images[:, None] if images.ndim == 4 else images
    return {f: {"positive": images[i, 0], "diversity": images[i, 1:]} for i, f in enumerate(features)}
