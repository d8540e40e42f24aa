"""Feature visualizations of many units at once: positive, negative and a diversity set per unit.

A chunk of ``n`` units of one layer is rendered as one batch of ``6 n`` images with one vectorized objective:
items ``0..n-1`` maximize unit ``u_i`` (the :func:`~luminate.objectives.channel` mean over positions, one unit per
batch item as :func:`~luminate.objectives.channels` does), items ``n..2n-1`` minimize it (the negative), and
the last ``4 n`` are four images per unit that maximize it while a diversity penalty, computed within each group
of four only, pushes their styles apart (Lucid's ``channel - 1e2 * diversity`` recipe, per group).

Results go to Luminate's render cache (:mod:`luminate.cache`), one entry of six images per unit keyed by model
weights, layer, unit and every render setting, so a unit is rendered once; a chunk whose units are all cached
renders nothing. Chunks are fixed by
the sorted unit list and ``units_per_batch``, so an in-process run and a run split into Ray tasks (one task per
chunk, :mod:`luminate.parallel`) render the same batches and write the same cache entries.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

import luminate
from luminate import objectives as obj
from luminate import param as P
from luminate.cache import RenderCache
from luminate.models.base import Model, as_model
from luminate.render import render
from luminate.transforms import compose, standard_transforms

#: images per unit: positive, negative, four diverse positives
TILES = ("positive", "negative", "diversity 1", "diversity 2", "diversity 3", "diversity 4")
DIVERSITY = 4


def unit_settings(size: int = 96, steps: int = 256, seed: int = 0, lr: float = 0.05,
                  diversity_weight: float = 1e2, units_per_batch: int = 8) -> dict:
    """Everything a unit's images depend on besides model, weights, layer and unit (part of the cache key)."""
    from luminate.runtime import budget_steps

    transform = compose(standard_transforms())
    # the steps render() will really take (LUMINATE_TINY caps them), so tiny runs never fill the cache for full ones
    return {"kind": "microscope.units-v1", "size": int(size), "steps": budget_steps(steps), "seed": int(seed), "lr": float(lr),
            "diversity_weight": float(diversity_weight), "units_per_batch": int(units_per_batch),
            "transforms": repr(transform), "param": repr(P.image(size)).replace("\n", " "),
            "luminate": luminate.__version__}


def grouped_diversity(layer: str, start: int, groups: int, size: int = DIVERSITY) -> obj.Objective:
    """Lucid's diversity term within each group of ``size`` consecutive items from ``start`` (``groups`` groups);
    other items contribute 0. Item ``i`` of a group contributes ``Σ_{j≠i} <G_i, G_j> / size`` with ``G`` the
    normalized Gram matrices (see :func:`luminate.objectives.diversity`); use it with a negative weight."""
    def fn(acts) -> torch.Tensor:
        a = acts[layer]
        out = a.new_zeros(a.shape[0])
        block = a[start:start + groups * size].flatten(2)                         # [G*S, C, P]
        g = (block @ block.transpose(1, 2)).flatten(1)                            # [G*S, C*C]
        g = g * torch.rsqrt(g.pow(2).sum(1, keepdim=True).clamp_min(1e-10))
        g = g.reshape(groups, size, -1)
        sims = g @ g.transpose(1, 2)                                              # [G, S, S]
        per_item = (sims.sum(2) - sims.diagonal(dim1=1, dim2=2)) / size           # [G, S]
        return out.index_add(0, torch.arange(start, start + groups * size, device=a.device), per_item.reshape(-1))

    return obj.Objective(fn, [layer], f"grouped_diversity({layer}, {groups}x{size})")


def chunk_objective(layer: str, units: Sequence[int], diversity_weight: float = 1e2) -> obj.Objective:
    """The objective of one render batch of ``6 * len(units)`` items (see the module docstring)."""
    n = len(units)
    items = list(units) + list(units) + [u for u in units for _ in range(DIVERSITY)]
    signs = [1.0] * n + [-1.0] * n + [1.0] * (DIVERSITY * n)
    terms = sum(sign * obj.channel(layer, unit, batch=i) for i, (unit, sign) in enumerate(zip(items, signs)))
    # Lucid averages the channel over the 4 images of a diversity batch; per item that is diversity_weight * 4
    return terms - (diversity_weight * DIVERSITY) * grouped_diversity(layer, 2 * n, n)


def chunks(units: Sequence[int], units_per_batch: int) -> list[list[int]]:
    units = sorted(dict.fromkeys(int(u) for u in units))
    return [units[i:i + units_per_batch] for i in range(0, len(units), max(1, units_per_batch))]


class UnitCache:
    """The units of one layer and settings in Luminate's render cache (:class:`luminate.cache.RenderCache`): one
    entry per unit, keyed by model, weights, layer, unit and settings, holding the six :data:`TILES` as slots."""

    def __init__(self, root: str | os.PathLike | None, model: Model, layer: str, settings: dict):
        self.cache = RenderCache(root)
        self.model = model
        self.layer = layer
        self.settings = settings
        self.size = int(settings["size"])
        self._found: dict[int, dict[str, torch.Tensor]] = {}   # entries read whole and checked, by unit

    def key(self, unit: int) -> str:
        return RenderCache.key({**self.settings, "layer": self.layer, "unit": int(unit)}, model=self.model)

    def has(self, unit: int) -> bool:
        """Whether the unit has a readable, complete entry: the entry is decoded (and kept for :meth:`load`), so a
        damaged file counts as missing and is rendered again instead of failing the run later."""
        return self.load(unit) is not None

    def load(self, unit: int) -> dict[str, torch.Tensor] | None:
        """``{"positive": [3,S,S], "negative": [3,S,S], "diversity": [4,3,S,S]}`` or None when absent, damaged
        (a warning names the file) or incomplete."""
        unit = int(unit)
        if unit in self._found:
            return self._found[unit]
        entry = self.cache.get(self.key(unit))
        if entry is None or sorted(entry.images) != list(range(len(TILES))):
            return None
        if any(tuple(t.shape) != (3, self.size, self.size) for t in entry.images.values()):
            return None
        tiles = torch.stack([entry.images[s] for s in range(len(TILES))])
        self._found[unit] = {"positive": tiles[0], "negative": tiles[1], "diversity": tiles[2:]}
        return self._found[unit]

    def save(self, unit: int, images: torch.Tensor) -> None:
        """Store ``images`` ``[6, 3, S, S]`` (the tiles in :data:`TILES` order) as one entry."""
        self._found.pop(int(unit), None)
        self.cache.put(self.key(unit), images, settings={**self.settings, "layer": self.layer, "unit": int(unit)},
                       cols=len(TILES))


def render_chunk(model, layer: str, units: Sequence[int], settings: dict, cache_dir: str | os.PathLike,
                 progress: bool = False) -> list[int]:
    """Render the units of one chunk that are not cached yet (all of them in one batch) and cache them.
    Idempotent: returns the units it rendered (none when the chunk was cached)."""
    model = as_model(model)
    cache = UnitCache(cache_dir, model, layer, settings)
    if all(cache.has(u) for u in units):
        return []
    units = list(units)
    n = len(units)
    result = render(model, chunk_objective(layer, units, settings["diversity_weight"]),
                    P.image(settings["size"], batch=6 * n), steps=settings["steps"], lr=settings["lr"],
                    seed=settings["seed"], progress=progress)
    if result.interrupted:   # half-optimized images must not enter the cache
        raise KeyboardInterrupt(f"rendering units {units} of {layer} was interrupted")
    images = result.image                                                        # [6n, 3, S, S]
    for i, unit in enumerate(units):
        tiles = torch.cat([images[i:i + 1], images[n + i:n + i + 1],
                           images[2 * n + DIVERSITY * i:2 * n + DIVERSITY * (i + 1)]])
        cache.save(unit, tiles)
    return units


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
    cache_dir = RenderCache(cache_dir).folder   # a concrete folder: Ray workers may see another $LUMINATE_CACHE
    cache = UnitCache(cache_dir, model, layer, settings)
    todo = [c for c in chunks(units, units_per_batch) if not all(cache.has(u) for u in c)]
    run_tasks(render_chunk, [(model, layer, c, settings, str(cache_dir)) for c in todo], ray=ray, num_cpus=num_cpus,
              progress=progress, desc=f"render {layer}", unit="unit", weights=[len(c) for c in todo],
              shared={"model": model})
    out = {}
    for u in units:
        images = cache.load(int(u))
        if images is None:
            raise OSError(f"unit {u} of {layer} is missing from the render cache {cache.cache.folder} after rendering")
        out[int(u)] = images
    return out
