"""Directions at a layer, rendered one way: a unit is a one-hot direction, a feature a dictionary direction, an atlas
cell an average activation, a neuron group a factor.

:func:`render_directions` is the one renderer behind channel icons (:mod:`luminate.analysis.sprites`), atlas icons
(:mod:`luminate.atlas.icons`), Microscope units (:mod:`luminate.microscope.render`), feature pages
(:mod:`luminate.features.render`) and the live toolbox (:mod:`luminate.serve.worker`). A chunk of ``n`` directions
is one batch of ``T n`` images under one vectorized objective, ``T`` the tiles per direction
(:attr:`RenderSettings.tiles`):

* items ``0..n-1`` follow the directions (the **positive**): a unit (``Directions.kind == "unit"``) maximizes its
  channel's mean over positions (:func:`~luminate.objectives.channels`); any other direction follows
  ``dot x max(0.1, cos)^cossim_pow`` (:func:`~luminate.objectives.directions`) at every position, or at the
  centre (``at_centre``, atlas icons), whitened as ``v @ S`` when the directions carry a whitening matrix;
* with ``negative``, the next ``n`` minimize the same objective;
* with ``diversity = D``, the last ``D n`` are ``D`` images per direction following it while Lucid's diversity
  term, computed within each direction's group only (:func:`grouped_diversity`), pushes their styles apart;
* with ``boundary_width``, every item also pays :func:`~luminate.objectives.penalize_boundary_complexity`;
* with ``attempts > 1`` the batch is rendered again with other seeds and each direction keeps the attempt whose
  final, untransformed positive image scores highest.

The settings value **is** the cache key: every field of :class:`RenderSettings` goes into it (the transforms as
the ``repr`` of what runs, the batch size as used), with the model's name and weights fingerprint, the layer, the
objective and the direction's float32 values, so a key cannot drift from what ran. Each direction is one entry of
:class:`luminate.cache.RenderCache` holding its ``T`` tiles (and its score); a damaged or incomplete entry counts
as missing and is rendered again. Keys changed when this module replaced the four renderers it unifies: entries
written before are simply not found and rendered once more.

A direction shares its batch's random transforms with its batch-mates (and, with ``content_seeds``, a seed derived
from their keys), so its picture can depend on which directions were rendered with it; the key records the batch
size. With ``batch=1`` (the default on a CPU, :func:`luminate.fold.units_per_batch`) a picture depends on nothing
but its own direction and the settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

import luminate
from luminate import objectives as obj
from luminate import param as P
from luminate.activations import LayerTap
from luminate.cache import RenderCache, dequantize, quantize
from luminate.fold import units_per_batch
from luminate.models.base import Model, as_model
from luminate.progress import bar as progress_bar, units as progress_units
from luminate.render import render
from luminate.transforms import Transform, atlas_transforms, compose, default_transforms, standard_transforms

#: bumped when the rendering of directions changes, so old cache entries stop matching
FORMAT = 1

#: the transform sets a :class:`RenderSettings` can name
TRANSFORMS = {"default": lambda size: default_transforms(), "standard": lambda size: standard_transforms(),
              "atlas": atlas_transforms}

CacheArg = Union[RenderCache, str, os.PathLike, None, bool]


@dataclass(frozen=True)
class Directions:
    """``K`` directions in the activation space of one layer.

    Attributes:
        layer: the layer (``"blocks.10"``).
        vectors: ``[K, C]`` float32 on the CPU, one direction per row.
        names: ``K`` names (``"unit 7"``, ``"feature 3"``, ...), for messages.
        kind: ``"unit"`` (one-hot: rendered with the channel objective), ``"feature"``, ``"cell"``, ``"group"`` or
            ``"vector"``.
        whitening: ``[C, C]`` or None: the directions are followed as ``v @ S`` (atlas icons).
    """

    layer: str
    vectors: Tensor
    names: tuple[str, ...]
    kind: str = "vector"
    whitening: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"directions are [K, C], one per row; got shape {tuple(self.vectors.shape)}")
        if len(self.names) != self.vectors.shape[0]:
            raise ValueError(f"{len(self.names)} names for {self.vectors.shape[0]} directions")
        if not bool(torch.isfinite(self.vectors).all()):
            raise ValueError("directions contain NaN or infinite values")

    @classmethod
    def for_units(cls, layer: str, units: Sequence[int], channels: int) -> "Directions":
        """One-hot directions of ``units`` of a layer with ``channels`` channels (``[K, channels]``)."""
        units = [int(u) for u in units]
        bad = [u for u in units if not 0 <= u < channels]
        if bad:
            raise ValueError(f"unit {bad[0]} is out of range: {layer} has {channels} channels (0..{channels - 1})")
        vectors = torch.zeros(len(units), int(channels))
        vectors[torch.arange(len(units)), torch.tensor(units, dtype=torch.long)] = 1.0
        return cls(layer, vectors, tuple(f"unit {u}" for u in units), "unit")

    @classmethod
    def for_vectors(cls, layer: str, vectors, kind: str = "vector", names: Sequence[str] | None = None,
                    whitening=None) -> "Directions":
        """Directions from ``vectors`` ``[K, C]`` (tensor or array): features, atlas cells, groups."""
        v = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, Tensor) else vectors)
        v = v.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if v.ndim != 2:
            raise ValueError(f"directions must be [K, C] (one direction per row), got shape {tuple(v.shape)}")
        names = tuple(names) if names is not None else tuple(f"{kind} {i}" for i in range(v.shape[0]))
        S = None if whitening is None else torch.as_tensor(np.asarray(whitening), dtype=torch.float32)
        return cls(layer, v, names, kind, S)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def units(self) -> list[int]:
        """The unit of each one-hot direction (``kind == "unit"``)."""
        return self.vectors.argmax(1).tolist()


@dataclass(frozen=True)
class Guide:
    """Natural photos that guide each direction's image along their path (VITAL-style, :mod:`luminate.priors`).

    Each direction's image is also pulled, at ``layers`` (default: the model's blocks below the direction's layer),
    towards the channel means of ``top_k`` of the photos that drive the direction most (ranked by the unit's channel
    mean, or the dot product of the direction with the channel means: ranks ``0, stride, 2 stride, ...``; with
    ``stride=2`` the other half of its top photos is left to score the image on), with the spread of all the photos,
    weighted by ``weight``: the objective is ``direction_i - weight * natural_statistics_i``. The key records the
    photos' fingerprint (SHA-256 of their 8-bit values) with ``weight``, ``top_k``, ``stride`` and ``layers``.

    Attributes:
        photos: ``[N, 3, H, W]`` in [0, 1] (CPU, at least 4). fingerprint: filled in from ``photos``.
    """

    photos: Tensor = field(repr=False, compare=False)
    weight: float = 30.0
    top_k: int = 4
    layers: tuple[str, ...] | None = None
    stride: int = 1
    fingerprint: str = ""

    def __post_init__(self) -> None:
        photos = self.photos
        if not isinstance(photos, Tensor) or photos.ndim != 4 or photos.shape[1] != 3 or photos.shape[0] < 4:
            raise ValueError(f"a guide needs at least 4 RGB photos [N, 3, H, W] in [0, 1], got "
                             f"{tuple(photos.shape) if isinstance(photos, Tensor) else type(photos).__name__}")
        photos = photos.detach().float().cpu().clamp(0, 1)
        object.__setattr__(self, "photos", photos)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if not self.fingerprint:
            data = quantize(photos).numpy().tobytes()
            digest = hashlib.sha256(f"{tuple(photos.shape)}:".encode() + data).hexdigest()
            object.__setattr__(self, "fingerprint", digest)

    def key(self) -> str:
        """What enters the cache key."""
        return (f"Guide({self.fingerprint}, weight={self.weight:g}, top_k={self.top_k}, stride={self.stride}, "
                f"layers={self.layers})")

    def targets(self, model: Model, directions: "Directions") -> list[Tensor]:
        """Each direction's guiding photos: indices into ``photos`` (ranks ``0, stride, ...`` of its top photos)."""
        with torch.no_grad(), LayerTap(model, [directions.layer], check_inputs=False) as tap:
            pooled = torch.cat([tap(part.to(model.device))[directions.layer].float().flatten(2).mean(2).cpu()
                                for part in self.photos.split(16)])                        # [N, C]
        drive = pooled @ directions.vectors.T                                              # [N, K]
        stride = max(1, int(self.stride))
        k = max(1, min(int(self.top_k), self.photos.shape[0] // (2 * stride)))
        return [drive[:, i].argsort(descending=True)[:k * stride:stride] for i in range(len(directions))]

    def objective(self, model: Model, directions: "Directions") -> obj.Objective:
        """``natural_statistics`` with each direction's guiding photos as its target (one item per direction)."""
        from luminate.priors import blocks_below, natural_statistics

        layers = list(self.layers) if self.layers is not None else blocks_below(model, directions.layer)
        targets = [self.photos[t] for t in self.targets(model, directions)]
        return natural_statistics(model, self.photos, layers, targets=targets)


@dataclass(frozen=True)
class RenderSettings:
    """Everything a direction's images depend on besides model, weights, layer and direction; the cache key.

    Attributes:
        size: image side in pixels. steps, lr, seed: the optimization (:func:`luminate.render.render`).
        transforms: ``"default"`` (render's box + mirror), ``"standard"`` (Lucid's), ``"atlas"``
            (:func:`~luminate.transforms.atlas_transforms` of ``size``), or transforms (their repr is keyed).
        negative: also an image minimizing the objective. diversity: ``D`` diverse images per direction (0: none),
            ``diversity_weight`` Lucid's weight of the diversity term.
        cossim_pow: directions follow ``dot x max(0.1, cos)^cossim_pow`` (0: the plain dot product); units ignore it.
        at_centre: directions are followed at the centre position only (else the mean over positions).
        boundary_width: ``penalize_boundary_complexity(w)`` on every item (0: none).
        attempts: renders per direction; each keeps its best (by its final positive score).
        content_seeds: each batch's seed derives from ``seed``, the attempt and its directions' keys (atlas icons:
            attempt ``k`` is the same render whatever ``attempts`` is); else every batch uses ``seed``.
        redirect_relu_steps: see :func:`luminate.render.render`.
        batch: directions per render batch; None: :func:`luminate.fold.units_per_batch` of the model's device.
        guide: a :class:`Guide` (natural photos each direction's image is pulled towards; positive tiles only).
        mean_colour: the image gets a free mean colour (``param.image(mean_colour=True)``), so a guide can give it
            the photos' colour. chroma: the colour contrast of ``param.image`` (1: Lucid's colour matrix).
    """

    size: int = 96
    steps: int = 256
    lr: float = 0.05
    seed: int = 0
    transforms: str | Transform | tuple = "default"
    negative: bool = False
    diversity: int = 0
    diversity_weight: float = 1e2
    cossim_pow: float = 0.0
    at_centre: bool = False
    boundary_width: int = 0
    attempts: int = 1
    content_seeds: bool = False
    redirect_relu_steps: int = 16
    batch: int | None = None
    guide: Guide | None = None
    mean_colour: bool = False
    chroma: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"the image size must be at least 8 pixels, got {self.size}")
        if self.steps < 1 or self.attempts < 1 or (self.batch is not None and self.batch < 1):
            raise ValueError(f"steps ({self.steps}), attempts ({self.attempts}) and batch ({self.batch}) must be at "
                             "least 1")
        if self.diversity < 0:
            raise ValueError(f"diversity is a number of images per direction, got {self.diversity}")
        if isinstance(self.transforms, str) and self.transforms not in TRANSFORMS:
            raise ValueError(f"transforms {self.transforms!r}: choose one of {', '.join(TRANSFORMS)} or give "
                             "transforms")
        if isinstance(self.transforms, list):
            object.__setattr__(self, "transforms", tuple(self.transforms))
        if self.guide is not None and (self.negative or self.diversity):
            raise ValueError("a guide pulls positive images towards their top photos; render guided images without "
                             "negative or diversity tiles")

    def replace(self, **changes) -> "RenderSettings":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @property
    def tiles(self) -> tuple[str, ...]:
        """The images of each direction, in order: ``positive``, ``negative`` (with ``negative``), ``diversity i``."""
        return (("positive",) + (("negative",) if self.negative else ())
                + tuple(f"diversity {i + 1}" for i in range(self.diversity)))

    def transform(self) -> Transform:
        """The transform that runs."""
        t = self.transforms
        if isinstance(t, str):
            return compose(TRANSFORMS[t](self.size))
        return compose(list(t)) if isinstance(t, tuple) else t

    def batch_for(self, model: Model) -> int:
        """The batch size used on ``model``'s device."""
        return self.batch if self.batch is not None else units_per_batch(model.device)

    def key_fields(self, model: Model) -> dict:
        """The settings as they enter the key: every field, the transforms as run, the batch as used."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(transforms=repr(self.transform()), batch=self.batch_for(model),
                      param=repr(self.param(1)).replace("\n", " "), format=FORMAT,
                      luminate=luminate.__version__, guide=None if self.guide is None else self.guide.key())
        if not self.mean_colour and self.chroma == 1.0 and self.guide is None:
            for name in ("guide", "mean_colour", "chroma"):   # keys of images made before these fields stay valid
                fields.pop(name)
        return fields

    def param(self, batch: int) -> P.Parameterization:
        """The image parameterization of a batch."""
        return P.image(self.size, batch=batch, mean_colour=self.mean_colour, chroma=self.chroma)

    @property
    def kind(self) -> str:
        """``"guided"`` (by natural photos) or ``"unguided"``, for captions."""
        return "unguided" if self.guide is None else "guided"


#: the guided unit images pages show first (the Microscope; the sanity check's default): 128 px, 256 steps, a free
#: mean colour and twice Lucid's colour contrast (``param.NATURAL_CHROMA``), guided by :func:`unit_guide`
GUIDED_UNIT_IMAGES = RenderSettings(size=128, steps=256, mean_colour=True, chroma=P.NATURAL_CHROMA)


def unit_guide(photos: Tensor) -> Guide:
    """The guide of :data:`GUIDED_UNIT_IMAGES`: each unit's top photos among ``photos`` at ranks 0, 2, 4, 6 (the
    others are left to score the image on), weight 30."""
    return Guide(photos, weight=30.0, top_k=4, stride=2)


def direction_keys(model: Model, directions: Directions, settings: RenderSettings) -> list[str]:
    """The cache key of each direction (SHA-256 hex): the settings, model, weights, layer, objective, whitening and
    the direction's float32 values."""
    S = directions.whitening
    base = {**settings.key_fields(model), "layer": directions.layer,
            "objective": "channel" if directions.kind == "unit" else "direction",
            "whitening": None if S is None else hashlib.sha256(S.numpy().tobytes()).hexdigest()}
    base = {**base, "model": model.name, "weights": model.weights_fingerprint()}
    rows = directions.vectors.numpy().astype("<f4")
    return [RenderCache.key(base, f"{row.shape[0]}:".encode() + row.tobytes()) for row in rows]


def render_directions(model: Model | str, directions: Directions, settings: RenderSettings = RenderSettings(),
                      cache: CacheArg = None, *, progress: bool = True,
                      callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
                      scores: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Feature visualizations of ``directions`` (see the module docstring), read from the cache or rendered.

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name.
        directions: :class:`Directions` of one layer (``Directions.for_units`` / ``Directions.for_vectors``).
        settings: :class:`RenderSettings`, the cache key.
        cache: ``None``: the render cache (``$LUMINATE_CACHE/renders``); a folder or a
            :class:`~luminate.cache.RenderCache`; ``False``: no cache.
        progress: a progress bar over directions. callback: passed to every batch's :func:`luminate.render.render`
            (``callback(step, images, scores)``); returning True stops it (KeyboardInterrupt, nothing cached).
        scores: also return each direction's final positive objective ``[K]`` (computed with ``attempts > 1`` or
            ``content_seeds``; NaN otherwise).

    Returns:
        ``[K, 3, S, S]`` in [0, 1] (CPU, 8-bit steps, as cached) when ``settings.tiles`` is just the positive, else
        ``[K, T, 3, S, S]`` with the tiles in ``settings.tiles`` order; with ``scores``, ``(images, scores)``.
        A cache hit and a fresh render give the same tensor.
    """
    model = as_model(model)
    _check(model, directions)
    tiles, size = settings.tiles, settings.size
    store = None if cache is False else cache if isinstance(cache, RenderCache) else RenderCache(
        None if cache is True else cache)
    keys = direction_keys(model, directions, settings)
    images = torch.zeros(len(directions), len(tiles), 3, size, size)
    best = torch.full((len(directions),), float("nan"))
    todo = []
    for k, key in enumerate(keys):
        hit = _cached(store, key, len(tiles), size)
        if hit is None:
            todo.append(k)
        else:
            images[k], best[k] = hit
    # attempt k of a batch seeded by content is the same render whatever the number of attempts
    seed_keys = direction_keys(model, directions, settings.replace(attempts=1)) if settings.content_seeds else keys
    noun = "feature" if directions.kind == "feature" else "icon"
    progress_units(cached=len(directions) - len(todo), unit=noun)
    batch = settings.batch_for(model)
    bar = progress_bar(len(todo), f"render {directions.layer}", unit=noun, enabled=progress and bool(todo))
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            fresh, fresh_scores = render_batch(model, _subset(directions, chunk), settings, callback,
                                               [seed_keys[k] for k in chunk])
            images[chunk], best[chunk] = fresh, fresh_scores
            if store is not None:   # after every batch: an interrupted run keeps what it made
                for k, tiles_k, score in zip(chunk, fresh, fresh_scores):
                    extra = {} if torch.isnan(score) else {"scores": {0: float(score)}}
                    store.put(keys[k], tiles_k, settings={"layer": directions.layer, "name": directions.names[k],
                                                          **_jsonable(settings)}, cols=len(tiles), **extra)
            progress_units(rendered=len(chunk), unit=noun)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    out = images[:, 0] if len(tiles) == 1 else images
    return (out, best) if scores else out


def read_cached(model: Model, directions: Directions, settings: RenderSettings,
                cache: RenderCache | str | os.PathLike | None = None) -> list[Tensor | None]:
    """Each direction's cached tiles ``[T, 3, S, S]``, or None where its entry is missing, damaged or incomplete
    (renders nothing)."""
    store = cache if isinstance(cache, RenderCache) else RenderCache(cache)
    found = [_cached(store, key, len(settings.tiles), settings.size)
             for key in direction_keys(model, directions, settings)]
    return [None if hit is None else hit[0] for hit in found]


def render_batch(model: Model, directions: Directions, settings: RenderSettings,
                 callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
                 keys: Sequence[str] = ()) -> tuple[Tensor, Tensor]:
    """One batch, uncached: ``([n, T, 3, S, S], scores [n])`` (8-bit steps), the best of ``settings.attempts``
    renders per direction. Scores (the positive objective of the final image) are computed with ``attempts > 1`` or
    ``content_seeds``, else NaN. ``keys``: the directions' keys that seed the batch with ``content_seeds``."""
    n, tiles = len(directions), settings.tiles
    objective, score_fn = chunk_objective(directions, settings)
    if settings.guide is not None:
        objective = objective - settings.guide.weight * settings.guide.objective(model, directions)
    transform = settings.transform()
    best_images = best_scores = None
    for attempt in range(settings.attempts):
        seed = _batch_seed(settings.seed, attempt, keys) if settings.content_seeds else settings.seed + attempt
        param = settings.param(len(tiles) * n)
        if model.contract.channels != 3:   # a grey or multispectral model: its own channel count, one sigmoid each
            param = P.image(settings.size, batch=len(tiles) * n, channels=model.contract.channels)
        result = render(model, objective, param, transforms=transform,
                        steps=settings.steps, lr=settings.lr, seed=seed, progress=False, callback=callback,
                        redirect_relu_steps=settings.redirect_relu_steps)
        if result.interrupted:   # half-optimized images must not enter the cache
            raise KeyboardInterrupt(f"rendering {', '.join(directions.names)} of {directions.layer} was interrupted")
        images = _by_direction(dequantize(quantize(result.image[:, :3])), n, settings)
        if settings.attempts == 1 and not settings.content_seeds:
            return images, torch.full((n,), float("nan"))
        found = final_scores(model, directions.layer, score_fn, images[:, 0])
        if best_images is None:
            best_images, best_scores = images, found
        else:
            better = found > best_scores
            best_images = torch.where(better[:, None, None, None, None], images, best_images)
            best_scores = torch.where(better, found, best_scores)
    return best_images, best_scores


def chunk_objective(directions: Directions, settings: RenderSettings) -> tuple[obj.Objective, obj.Objective]:
    """``(objective of the whole batch of T n items, the positives' objective alone)`` (module docstring)."""
    layer, n, d = directions.layer, len(directions), settings.diversity
    repeats = [1] + ([1] if settings.negative else []) + ([d] if d else [])
    signs = [1.0] * n + ([-1.0] * n if settings.negative else []) + [1.0] * (d * n)
    if directions.kind == "unit":
        units = directions.units
        items = units + (units if settings.negative else []) + [u for u in units for _ in range(d)]
        positives = obj.channels(layer, units)
        follow = positives if len(repeats) == 1 else sum(
            sign * obj.channel(layer, unit, batch=i) for i, (unit, sign) in enumerate(zip(items, signs)))
    else:
        v = directions.vectors
        rows = torch.cat([v] + ([v] if settings.negative else []) + ([v.repeat_interleave(d, 0)] if d else []))
        common = dict(cossim_pow=settings.cossim_pow, S=directions.whitening, all_positions=not settings.at_centre)
        positives = obj.directions(layer, v, **common)
        follow = obj.directions(layer, rows, **common) if len(repeats) > 1 else positives
        if settings.negative:
            follow = _signed(follow, torch.tensor(signs))
    if d:   # Lucid averages the channel over the D images of a diversity batch; per item that is weight x D
        follow = follow - (settings.diversity_weight * d) * grouped_diversity(layer, n * (len(repeats) - 1), n, d)
    if settings.boundary_width > 0:
        follow = follow + obj.penalize_boundary_complexity(w=settings.boundary_width)
    return follow, positives


def grouped_diversity(layer: str, start: int, groups: int, size: int) -> obj.Objective:
    """Lucid's diversity term within each group of ``size`` consecutive items from ``start`` (``groups`` groups);
    other items contribute 0. Item ``i`` of a group contributes ``Σ_{j≠i} <G_i, G_j> / size`` with ``G`` the
    normalized Gram matrices (see :func:`luminate.objectives.diversity`); use it with a negative weight."""
    def fn(acts) -> Tensor:
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


def final_scores(model: Model, layer: str, objective: obj.Objective, images: Tensor) -> Tensor:
    """``objective`` of each finished (untransformed) image ``[B, 3, S, S]``: ``[B]`` (CPU)."""
    with torch.no_grad(), LayerTap(model, [layer], check_inputs=False) as tap:
        acts = tap(images.to(model.device))
    return objective(acts).detach().float().cpu()


# ----- internals -------------------------------------------------------------------------------------


def _check(model: Model, directions: Directions) -> None:
    info = model.layer_info(directions.layer)   # unknown layers raise with close names
    if len(info.shape) != 3:
        raise ValueError(f"layer {directions.layer!r} of {model.name} has output shape {info.shape}; rendering "
                         "directions needs a convolutional layer [C, H, W]")
    if len(directions) and directions.vectors.shape[1] != info.channels:
        raise ValueError(f"the directions have {directions.vectors.shape[1]} entries but layer "
                         f"{directions.layer!r} of {model.name} has {info.channels} channels")


def _cached(store: RenderCache | None, key: str, n_tiles: int, size: int) -> tuple[Tensor, float] | None:
    """``([T, 3, S, S], score)`` of a complete, readable entry, else None (a damaged one is named and redone)."""
    if store is None:
        return None
    entry = store.get(key)
    if entry is None or sorted(entry.images) != list(range(n_tiles)):
        return None
    if any(tuple(t.shape) != (3, size, size) for t in entry.images.values()):
        return None
    return torch.stack([entry.images[s] for s in range(n_tiles)]), entry.scores.get(0, float("nan"))


def _subset(directions: Directions, rows: Sequence[int]) -> Directions:
    return dataclasses.replace(directions, vectors=directions.vectors[list(rows)],
                               names=tuple(directions.names[r] for r in rows))


def _by_direction(images: Tensor, n: int, settings: RenderSettings) -> Tensor:
    """A batch's images ``[T n, 3, S, S]`` (positives, negatives, diversity groups) -> ``[n, T, 3, S, S]``."""
    parts = [images[:n, None]]
    rest = images[n:]
    if settings.negative:
        parts.append(rest[:n, None])
        rest = rest[n:]
    if settings.diversity:
        parts.append(rest.reshape(n, settings.diversity, *rest.shape[1:]))
    return torch.cat(parts, 1)


def _signed(objective: obj.Objective, signs: Tensor) -> obj.Objective:
    """``objective`` with item ``i`` weighted by ``signs[i]``."""
    def fn(acts) -> Tensor:
        values = objective(acts)
        return values * signs.to(values.device, values.dtype)

    return obj.Objective(fn, sorted(objective.layers), f"signed({objective.name})")


def _batch_seed(seed: int, attempt: int, keys: Sequence[str]) -> int:
    h = hashlib.blake2b(f"luminate.icons:{seed}:{attempt}:".encode() + "".join(keys).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 62) - 1)


def _jsonable(settings: RenderSettings) -> dict:
    return {f.name: (v if isinstance(v := getattr(settings, f.name), (int, float, str, bool, type(None))) else repr(v))
            for f in dataclasses.fields(settings)}


__all__ = ["Directions", "FORMAT", "GUIDED_UNIT_IMAGES", "Guide", "unit_guide", "RenderSettings", "direction_keys", "final_scores", "grouped_diversity",
           "read_cached", "render_batch", "render_directions"]
