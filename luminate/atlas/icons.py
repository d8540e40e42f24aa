"""Atlas icons: one feature visualization per direction, many per batch, cached by content.

:func:`render_icons` is Lucid's ``render_icons`` (activation-atlas recipe and notebooks): every icon ``n``
maximizes ``dot(a, v_n) * max(0.1, cos(a, v_n))^cossim_pow`` at the centre position of ``layer`` (the
direction whitened as ``v_n @ S`` when ``S`` is given), plus ``penalize_boundary_complexity(w=5)`` (plain,
grey-ish borders so neighbouring icons tile), under the atlas transforms, with Adam at learning rate 0.05. All
icons of a batch are optimized together with the batched :func:`~luminate.objectives.directions` objective (one
gather, no Python loop over icons). With ``attempts > 1`` each icon keeps the attempt with the highest final
direction objective.

Deliberate differences from Lucid, each on purpose:

* the final per-icon score that picks the best attempt is the direction objective of the final, *untransformed*
  icon (deterministic); Lucid scored one random transform of it;
* ``cos`` divides by ``|v @ S|`` as well (see :func:`luminate.objectives.directions`);
* ReLU gradients are redirected for the first 16 steps, the one default of :func:`luminate.render.render`
  (Lucid's ``render_icons`` went through ``make_vis_T``, which did not redirect).

The cache
    Icons are rendered by the one renderer of directions (:func:`luminate.units.render_directions`, settings
    :data:`ATLAS_ICONS` with the call's values) and each is an entry of the render cache
    (:class:`luminate.cache.RenderCache`, its score in the entry's index) named by a key of everything it depends
    on: the model's name and weight fingerprint, the layer, the direction's float32 bytes, the whitening matrix and
    every setting (size, steps, attempts, cossim_pow, lr, transforms, boundary penalty, seed, batch). A later call
    finds the entry and renders nothing for that icon. Icons are returned quantized to 8 bits (what a PNG holds),
    whether they come from the cache or were just rendered, so both give the same tensor. An icon shares its
    batch's random transforms with the other icons of the batch; a batch's seed is derived from ``seed``, the
    attempt and the keys of its icons (without the number of attempts), so the same request renders the same
    icons, and attempt ``k`` is the same render whatever ``attempts`` is: more attempts never give a worse icon.
"""

from __future__ import annotations

import os

from torch import Tensor

from luminate.models.base import Model, as_model
from luminate.units.render import Directions, RenderSettings, render_directions

__all__ = ["render_icons", "ATLAS_ICONS"]

#: Lucid's icon recipe: direction x cosine^4 at the centre, plain borders, the atlas transforms, seeds by content
ATLAS_ICONS = RenderSettings(size=80, steps=128, cossim_pow=4.0, at_centre=True, boundary_width=5,
                             transforms="atlas", content_seeds=True, batch=32)


def render_icons(model: Model | str, layer: str, directions, size: int = 80, steps: int = 128,
                 attempts: int = 1, cossim_pow: float = 4.0, S=None, batch_size: int = 32, seed: int = 0,
                 cache_dir: str | os.PathLike | bool | None = None, progress: bool = True, *,
                 settings: RenderSettings = ATLAS_ICONS, scores: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Render one icon per direction: ``[N, 3, size, size]`` in [0, 1] (CPU, 8-bit steps).

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name.
        layer: the layer the directions live in (``blocks.10``).
        directions: ``[N, C]`` (tensor or array), one direction per icon, e.g. atlas cells' mean activations.
        size: icon side in pixels (Lucid: 80 in the notebooks, 96 in the recipe).
        steps: optimizer updates per attempt (Lucid: 512 in the notebooks, 128 in the recipe).
        attempts: independent renders per icon; each icon keeps its best (Lucid: 1, class atlases 2).
        cossim_pow: weight of the cosine similarity (Lucid: 4 with whitening in the notebook, 2 in the recipe;
            0 for the plain dot product).
        S: whitening matrix ``[C, C]`` (``luminate.atlas.whitening_matrix``); directions become ``v @ S``.
        batch_size: icons optimized together (one batch per render call).
        seed: seeds the initial images and transforms (see the module docstring).
        cache_dir: the render cache folder (``None``: ``$LUMINATE_CACHE/renders``); ``False``: no cache.
        progress: a progress bar over icons.
        settings: the rest of the recipe (lr 0.05, ``boundary_width`` 5, the atlas transforms, ReLU redirection
            for 16 steps, see :class:`~luminate.units.RenderSettings`); the arguments above override its fields.
        scores: also return each icon's final direction objective ``[N]`` (the value that picked the attempt).

    Returns:
        icons ``[N, 3, size, size]``, or ``(icons, scores)`` with ``scores=True``.
    """
    model = as_model(model)
    settings = settings.replace(size=int(size), steps=int(steps), attempts=int(attempts), cossim_pow=float(cossim_pow),
                                batch=int(batch_size), seed=int(seed))
    dirs = Directions.for_vectors(layer, directions, kind="cell", whitening=S)
    icons, best = render_directions(model, dirs, settings, cache=cache_dir, progress=progress, scores=True)
    return (icons, best) if scores else icons
