"""Feature visualizations of many units at once: positive, negative and a diversity set per unit.

A unit is a one-hot direction, rendered by the one renderer of directions (:func:`luminate.units.render_directions`
with :data:`UNIT_IMAGES`): a chunk of ``n`` units of one layer is one batch of ``6 n`` images under one vectorized
objective: items ``0..n-1`` maximize unit ``u_i`` (the :func:`~luminate.objectives.channel` mean over positions),
items ``n..2n-1`` minimize it (the negative), and the last ``4 n`` are four images per unit that maximize it while a
diversity penalty, computed within each group of four only, pushes their styles apart (Lucid's
``channel - 1e2 * diversity`` recipe, per group).

Results go to Luminate's render cache (:mod:`luminate.cache`), one entry of six images per unit keyed by model
weights, layer, unit and every render setting, so a unit is rendered once; a chunk whose units are all cached
renders nothing. Chunks are fixed by the sorted unit list and ``units_per_batch``, so an in-process run and a run
split into Ray tasks (one task per chunk, :mod:`luminate.parallel`) render the same batches and write the same cache
entries.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from luminate.cache import RenderCache
from luminate.models.base import as_model
from luminate.units.render import Directions, RenderSettings, read_cached, render_directions

#: images per unit: positive, negative, four diverse positives
TILES = ("positive", "negative", "diversity 1", "diversity 2", "diversity 3", "diversity 4")
DIVERSITY = 4

#: the Microscope's unit images (render's default transforms, as they always ran)
UNIT_IMAGES = RenderSettings(size=96, steps=256, negative=True, diversity=DIVERSITY, diversity_weight=1e2)


def unit_settings(size: int = 96, steps: int = 256, seed: int = 0, lr: float = 0.05,
                  diversity_weight: float = 1e2, units_per_batch: int = 8) -> RenderSettings:
    """Everything a unit's images depend on besides model, weights, layer and unit (the cache key)."""
    return UNIT_IMAGES.replace(size=int(size), steps=int(steps), seed=int(seed), lr=float(lr),
                               diversity_weight=float(diversity_weight), batch=max(1, int(units_per_batch)))


def chunks(units: Sequence[int], units_per_batch: int) -> list[list[int]]:
    units = sorted(dict.fromkeys(int(u) for u in units))
    return [units[i:i + units_per_batch] for i in range(0, len(units), max(1, units_per_batch))]


def render_chunk(model, layer: str, units: Sequence[int], settings: RenderSettings, cache_dir: str | os.PathLike,
                 progress: bool = False) -> list[int]:
    """Render the units of one chunk that are not cached yet (one batch) and cache them. Idempotent."""
    model = as_model(model)
    directions = Directions.for_units(layer, units, model.layer_info(layer).channels)
    render_directions(model, directions, settings, cache=cache_dir, progress=progress)
    return list(units)


def render_units(model, layer: str, units: Sequence[int], *, size: int = 96, steps: int = 256, seed: int = 0,
                 lr: float = 0.05, diversity_weight: float = 1e2, units_per_batch: int = 8,
                 cache_dir: str | os.PathLike | None = None, ray: str | None = None, num_cpus: int | None = None,
                 progress: bool = True) -> dict[int, dict[str, torch.Tensor]]:
    """Positive, negative and four diverse visualizations of each of ``units`` of ``layer``.

    Returns ``{unit: {"positive": [3,S,S], "negative": [3,S,S], "diversity": [4,3,S,S]}}`` (CPU, [0, 1],
    quantized to 8 bits as cached). Missing units are rendered ``units_per_batch`` at a time (``6 x`` as many
    images per batch), in this process or as Ray tasks (``ray="local"`` or an address), and cached in
    ``cache_dir`` (default: the render cache, ``$LUMINATE_CACHE/renders``).
    """
    from luminate.parallel import run_tasks

    model = as_model(model)
    info = model.layer_info(layer)
    if len(info.shape) != 3:
        raise ValueError(f"layer {layer!r} of {model.name} has output shape {info.shape}; unit visualizations need a "
                         "convolutional layer [C, H, W]")
    for u in units:
        model.check_channel(layer, int(u))
    settings = unit_settings(size, steps, seed, lr, diversity_weight, units_per_batch)
    cache = RenderCache(cache_dir)   # a concrete folder: Ray workers may see another $LUMINATE_CACHE
    wanted = sorted(dict.fromkeys(int(u) for u in units))

    def read(chosen: list[int]) -> list[torch.Tensor | None]:
        return read_cached(model, Directions.for_units(layer, chosen, info.channels), settings, cache)

    todo = [c for c in chunks(wanted, settings.batch) if any(found is None for found in read(c))]
    run_tasks(render_chunk, [(model, layer, c, settings, str(cache.folder)) for c in todo], ray=ray,
              num_cpus=num_cpus, progress=progress, desc=f"render {layer}", unit="unit",
              weights=[len(c) for c in todo], shared={"model": model})
    out = {}
    for u, images in zip(wanted, read(wanted)):
        if images is None:
            raise OSError(f"unit {u} of {layer} is missing from the render cache {cache.folder} after rendering")
        out[u] = {"positive": images[0], "negative": images[1], "diversity": images[2:]}
    return out
