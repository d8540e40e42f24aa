"""Activation atlases from a collected store: layout -> grid cells -> one icon per cell -> canvas.

>>> store = luminate.atlas.collect("efficientnet_lite0", "photos/", "blocks.10", "store/")
>>> atlas = luminate.atlas.activation_atlas(store)              # every row of the store
>>> atlas.save_png("atlas.png"); atlas                           # a notebook shows the canvas
>>> luminate.atlas.class_atlas(store, "daisy")                  # rows that matter for one class
>>> luminate.atlas.compare_atlas(store, "snorkel", "scuba diver")  # x: attribution difference

The three pipelines follow Lucid's notebooks (REFERENCE §8, §11):

* :func:`activation_atlas` (``activation-atlas-simple``): whiten with ``S = inv(AᵀA/N)`` (by default only when
  the store has at least 10 rows per channel: see ``whiten``), embed every row in 2-D
  (UMAP, or t-SNE/PCA for small stores: :func:`luminate.atlas.embed`), grid 20×20, keep cells with more than 10
  points, one icon (80 px, ``cossim_pow=4``) per kept cell from its mean activation.
* :func:`class_atlas` (``class-activation-atlas``): only the rows whose top attribution class is the class plus
  the 3000 rows with the highest positive attribution to it; grid 8×8, cells with more than 4 points, 2 attempts.
* :func:`compare_atlas` (the snorkel-vs-scuba-diver comparison): the 2000 top rows of each class; x is the
  attribution difference (right class minus left class, scaled by its 99th-percentile magnitude, in [-1, 1]), y a
  1-D embedding in [0, 1]; grid 10×10.

**Small stores.** Lucid's grid sizes and thresholds assume 100,000+ points (250 per cell on average). With
``grid_size=None`` / ``min_count=None`` (the defaults) both adapt to the number ``n`` of laid-out points:
``grid = clip(round(sqrt(n / 4)), 3, cap)`` (about four points per cell; 240 points give 8×8) and
``min_count = clip(round(0.04 · n / grid²), 1, cap)`` (a cell needs at least two points; 100,000 points on a
20×20 grid give Lucid's 10). The caps are Lucid's values: grid 20 / 8 / 10 and ``min_count`` 10 / 4 / 4 for the
whole / class / comparison atlas. Pass numbers to use them as they are.

**Canvas orientation.** The canvas is laid out like a scatter plot, as the ``activation-atlas-simple`` notebook's
canvas: the first layout coordinate (x, cell column ``i``) runs left to right and the second (y, cell row ``j``)
runs **bottom to top**: cell ``(i, j)`` is drawn at pixel row ``(G - 1 - j) · S`` and column ``i · S``. (Lucid's
``activation_atlas`` recipe's ``make_canvas`` put ``x`` on rows instead, a transposed picture.) Empty cells are
white.

Each cell records its count, mean activation, member rows, the classes its points' positions add most to (mean
logit attribution over its points, from the store) and a few typical points (closest to the mean in cosine
similarity, distinct images) whose images the HTML view shows as thumbnails.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from luminate import images as imageio
from luminate.atlas.icons import render_icons
from luminate.atlas.layout import atlas_layout, bin_layout, class_filter, comparison_layout, whitening_matrix
from luminate.data.store import ActivationStore
from luminate.cache import RenderCache
from luminate.models.base import Model, as_model
from luminate.models.contract import InputContract

logger = logging.getLogger("luminate.atlas")

__all__ = ["Atlas", "AtlasCell", "activation_atlas", "class_atlas", "compare_atlas", "auto_grid", "auto_min_count",
           "demo_images"]

KINDS = ("all", "class", "compare")
#: Lucid's (grid size, min_count) per kind: the caps of the automatic choice
LUCID_GRID = {"all": (20, 10), "class": (8, 4), "compare": (10, 4)}
#: ``whiten=None`` whitens when the store has at least this many rows per channel
WHITEN_MIN_ROWS_PER_CHANNEL = 10


def auto_grid(n_points: int, cap: int = 20) -> int:
    """Cells per side for ``n_points`` laid-out points: about four points per cell, between 3 and ``cap``."""
    return int(min(cap, max(3, round(math.sqrt(max(n_points, 0) / 4)))))


def auto_min_count(n_points: int, grid_size: int, cap: int = 10) -> int:
    """A cell is kept with **more than** this many points: ``0.04 · n / grid²`` clipped to ``[1, cap]``."""
    return int(min(cap, max(1, round(0.04 * n_points / grid_size ** 2))))


@dataclass
class AtlasCell:
    """One kept grid cell: column ``i`` (x bin), row ``j`` (y bin, 0 = bottom), ``count`` points, their ``mean``
    activation ``[C]`` (the icon's direction), the store ``rows`` of its points, ``top_classes``
    ``[(class index, name, mean attribution)]`` best first, ``samples`` (store rows of a few typical points, from
    distinct images) and ``score``, the icon's final direction objective."""

    i: int
    j: int
    count: int
    mean: np.ndarray
    rows: np.ndarray
    top_classes: list[tuple[int, str, float]] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    score: float = float("nan")


@dataclass
class Atlas:
    """An activation atlas: a ``grid_size`` × ``grid_size`` grid of icons.

    Attributes:
        kind: ``"all"`` (every row), ``"class"`` (one class's rows) or ``"compare"`` (two classes).
        grid_size: cells per side ``G``.
        cells: the kept cells (:class:`AtlasCell`), ordered by ``(i, j)``.
        icons: ``[n_cells, 3, S, S]`` in [0, 1], one per cell, in the order of ``cells``.
        layout: ``[M, 2]`` the laid-out points (x, y) within ``extent``.
        rows: ``[M]`` the store row of each laid-out point.
        labels: the classes the atlas is about: ``[]``, ``[class]`` or ``[left class, right class]``.
        extent: ``((x0, x1), (y0, y1))`` of the grid in layout coordinates.
        model_name, layer, method: what made it (``method``: the layout embedding used).
        store_path: the activation store (the HTML view reads sample images through it).
        top_source: what ``top_classes`` come from: ``"attribution"`` or ``"image top-1"`` (stores collected
            without attributions).
        settings: everything else (grid, min_count, steps, attempts, cossim_pow, seed, whitening, ...).
        contract: the model's input contract (the view crops sample images the way the model saw them).
    """

    kind: str
    grid_size: int
    cells: list[AtlasCell]
    icons: Tensor
    layout: np.ndarray
    rows: np.ndarray
    labels: list[str] = field(default_factory=list)
    extent: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 1.0), (0.0, 1.0))
    model_name: str = ""
    layer: str = ""
    method: str = ""
    store_path: str | None = None
    top_source: str = "attribution"
    settings: dict[str, Any] = field(default_factory=dict)
    contract: InputContract | None = None

    @property
    def icon_size(self) -> int:
        return int(self.icons.shape[-1]) if self.icons.ndim == 4 else 0

    def __len__(self) -> int:
        return len(self.cells)

    def cell_at(self, i: int, j: int) -> AtlasCell | None:
        """The kept cell in column ``i``, row ``j`` (0 = bottom), or None."""
        return next((c for c in self.cells if c.i == i and c.j == j), None)

    def sample_images(self, cell: AtlasCell, store: ActivationStore | None = None
                      ) -> list[tuple[str, Path | None, tuple[int, int]]]:
        """``(image name, file path or None, (row, column) in the layer's grid)`` of each of ``cell``'s samples,
        read from ``store`` (default: the store at :attr:`store_path`)."""
        if not cell.samples:
            return []
        store = store if store is not None else ActivationStore(self.store_path)
        names = store.image_names()
        images = store.meta(cell.samples)["image"]
        positions = store.positions(self.layer, cell.samples)
        return [(names[int(i)], store.image_path(int(i)), (int(yx[0]), int(yx[1])))
                for i, yx in zip(images, positions)]

    def canvas_position(self, cell: AtlasCell) -> tuple[int, int]:
        """``(pixel row, pixel column)`` of ``cell``'s icon on :meth:`canvas` (y runs bottom to top)."""
        s = self.icon_size
        return (self.grid_size - 1 - cell.j) * s, cell.i * s

    def canvas(self, background: float = 1.0) -> Tensor:
        """``[3, G*S, G*S]``: icons on a white canvas, x to the right and y **up** (see the module docstring)."""
        s, g = self.icon_size, self.grid_size
        out = torch.full((3, g * s, g * s), float(background))
        for cell, icon in zip(self.cells, self.icons):
            r, c = self.canvas_position(cell)
            out[:, r:r + s, c:c + s] = icon[:3]
        return out

    def save_png(self, path: str | os.PathLike) -> Path:
        """Write :meth:`canvas` as an image file (PNG by its extension)."""
        return imageio.save_image(self.canvas()[None], path)

    def title(self) -> str:
        what = {"all": "Activation atlas", "class": f"Class activation atlas: {', '.join(self.labels)}",
                "compare": f"Comparison atlas: {' vs '.join(self.labels)}"}[self.kind]
        return f"{what} of {self.model_name} {self.layer}"

    def description(self) -> str:
        """One line: points, cells, layout, icon settings."""
        s = self.settings
        return (f"{len(self.rows)} points laid out by {self.method}, {self.grid_size}x{self.grid_size} grid, "
                f"{len(self.cells)} cells with more than {s.get('min_count')} points; icons {self.icon_size} px, "
                f"{s.get('steps')} steps, {s.get('attempts')} attempt(s), cossim_pow {s.get('cossim_pow')}"
                + (", whitened" if s.get("whiten") else ""))

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.canvas()[None])

    def _repr_html_(self) -> str:
        from html import escape

        side = min(720, self.grid_size * max(self.icon_size, 1))
        return (f'<figure style="margin:0"><img src="{imageio.data_url(self.canvas()[None])}" width="{side}" '
                f'alt="{escape(self.title())}"><figcaption style="font-size:12px;color:#555">'
                f"{escape(self.title())}: {escape(self.description())}</figcaption></figure>")

    def __repr__(self) -> str:
        return (f"Atlas({self.kind!r}, {self.model_name} {self.layer}, {self.grid_size}x{self.grid_size}, "
                f"{len(self.cells)} cells, {len(self.rows)} points)")


# ----- pipelines -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasSettings:
    """How an atlas is made from a store (the layout, the grid, the icons); every pipeline takes one.

    Attributes:
        grid_size, min_count: ``None`` adapts them to the number of points (module docstring); Lucid: 20 and 10.
        icon_size, steps, attempts, cossim_pow, batch_size, seed: see :func:`render_icons`. ``steps=128`` is
            Lucid's recipe value (its notebook used 512): a useful atlas in minutes on a CPU. ``attempts=None``:
            the pipeline's own (1 for the whole atlas, 2 for class and comparison atlases, as Lucid).
        whiten: render icons for ``v @ S`` with ``S = inv(AᵀA/N)`` over all of the store's rows (Lucid's notebook).
            ``None`` (default): whiten when the store has at least ``10 · C`` rows (``C`` channels). From fewer
            rows the inverse covariance mostly amplifies noise: on 240 rows of ``blocks.10`` (112 channels) the
            whitened icons came out as similar high-frequency textures, the raw ones as distinct objects.
        layout_method: ``"auto"``, ``"umap"``, ``"tsne"`` or ``"pca"`` (:func:`luminate.atlas.embed`).
        top_n: rows kept per class by the class (default 3000) and comparison (default 2000) atlases.
        cache_dir: icon cache folder; ``None``: the render cache (``$LUMINATE_CACHE/renders``, see
            :mod:`luminate.cache`); ``False``: no cache.
        progress: progress bars.
        n_samples: typical points kept per cell (thumbnails in the HTML view).
        n_top: top classes kept per cell.
    """

    grid_size: int | None = None
    icon_size: int = 80
    min_count: int | None = None
    steps: int = 128
    attempts: int | None = None
    cossim_pow: float = 4.0
    whiten: bool | None = None
    layout_method: str = "auto"
    top_n: int | None = None
    batch_size: int = 32
    seed: int = 0
    cache_dir: str | os.PathLike | None | bool = None
    progress: bool = True
    n_samples: int = 6
    n_top: int = 3


def _settings(settings: AtlasSettings | None, options: dict, attempts: int, top_n: int | None) -> AtlasSettings:
    """``settings`` with ``options`` set and the pipeline's own defaults where left at None."""
    from luminate.data.settings import with_options

    s = with_options(settings, AtlasSettings, options)
    return replace(s, attempts=attempts if s.attempts is None else s.attempts,
                   top_n=top_n if s.top_n is None else s.top_n)


def activation_atlas(store: ActivationStore | str | os.PathLike, model: Model | str | None = None,
                     layer: str | None = None, settings: AtlasSettings | None = None, **options) -> Atlas:
    """The atlas of every row of ``store`` (Lucid's ``activation-atlas-simple`` notebook).

    Args:
        store: an :class:`ActivationStore` or its folder.
        model: the model that made it (default: loaded from the zoo by the store's model name). Icons are rendered
            through it; a model whose weights differ from the collection's is warned about.
        layer: which collected layer (may be left out when the store holds one).
        settings: :class:`AtlasSettings` (grid, icons, layout, cache); ``options``: any of its fields by name.
    """
    s = _settings(settings, options, attempts=1, top_n=None)
    store = _open(store)
    layer = store.layer_info(layer)["name"]
    acts = store.activations(layer)
    if len(acts) < 2:
        raise ValueError(f"{store.path} holds {len(acts)} row(s); an atlas needs at least 2 (collect more images)")
    rows = np.arange(len(acts), dtype=np.int64)
    layout = atlas_layout(acts, s.layout_method, seed=s.seed, rows=rows)
    points = _Points("all", [], rows, layout.coords, layout.method, ((0.0, 1.0), (0.0, 1.0)), acts, acts)
    return _build(store, points, model, layer, s)


def class_atlas(store: ActivationStore | str | os.PathLike, class_name: str | int, model: Model | str | None = None,
                layer: str | None = None, settings: AtlasSettings | None = None, **options) -> Atlas:
    """The atlas of the rows that matter for one class (Lucid's ``class-activation-atlas`` notebook).

    Rows: those whose top attribution class is ``class_name``, plus the ``top_n`` rows with the highest positive
    attribution to it (:func:`luminate.atlas.class_filter`). Grid and threshold adapt up to Lucid's 8×8 and
    ``> 4``; 2 attempts per icon. The whitening matrix comes from all of the store's rows. Other arguments as in
    :func:`activation_atlas`.
    """
    s = _settings(settings, options, attempts=2, top_n=3000)
    store = _open(store)
    layer = store.layer_info(layer)["name"]
    index = store.class_index(class_name)
    rows = class_filter(store, index, top_n=s.top_n, layer=layer)
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} row(s) of {store.path} have positive attribution to class "
                         f"{_class_name(store, index)!r}; collect more images (of that class), or pick another class")
    acts = store.activations(layer, rows)
    layout = atlas_layout(acts, s.layout_method, seed=s.seed, rows=rows)
    points = _Points("class", [_class_name(store, index)], rows, layout.coords, layout.method,
                     ((0.0, 1.0), (0.0, 1.0)), acts, None)
    return _build(store, points, model, layer, s)


def compare_atlas(store: ActivationStore | str | os.PathLike, class_a: str | int, class_b: str | int,
                  model: Model | str | None = None, layer: str | None = None, settings: AtlasSettings | None = None,
                  **options) -> Atlas:
    """Two classes side by side (Lucid's snorkel vs scuba diver): ``class_a`` on the left, ``class_b`` on the right.

    Rows: the ``top_n`` positive-attribution rows of each class (default 2000). x: attribution to ``class_b`` minus
    ``class_a``, divided by its 99th-percentile magnitude and clipped to [-1, 1]; y: a 1-D embedding of the
    activations (t-SNE/UMAP/PCA as ``layout_method``) normalized to [0, 1]
    (:func:`luminate.atlas.comparison_layout`). Grid and threshold adapt up to Lucid's 10×10 and ``> 4``.
    Other arguments as in :func:`activation_atlas`.
    """
    s = _settings(settings, options, attempts=2, top_n=2000)
    store = _open(store)
    layer = store.layer_info(layer)["name"]
    cl = comparison_layout(store, class_a, class_b, top_n=s.top_n, layer=layer, method=s.layout_method, seed=s.seed)
    acts = store.activations(layer, cl.rows)
    labels = [_class_name(store, c) for c in cl.classes]
    atlas = _build(store, _Points("compare", labels, cl.rows, cl.coords, cl.method, cl.extent, acts, None), model,
                   layer, s)
    atlas.settings["attribution_scale"] = cl.scale
    return atlas


# ----- the shared back half --------------------------------------------------------------------------


@dataclass
class _Points:
    """The laid-out rows of one atlas: ``kind``, class ``labels``, store ``rows`` ``[n]``, ``coords`` ``[n, 2]``,
    the layout ``method``, its ``extent``, their activations ``acts`` ``[n, C]`` (and ``all_acts`` of the whole
    store when already read)."""

    kind: str
    labels: list[str]
    rows: np.ndarray
    coords: np.ndarray
    method: str
    extent: Any
    acts: np.ndarray
    all_acts: np.ndarray | None


def _build(store: ActivationStore, points: _Points, model, layer: str, s: AtlasSettings) -> Atlas:
    rows, coords, acts = points.rows, points.coords, points.acts
    grid_cap, count_cap = LUCID_GRID[points.kind]
    n = len(rows)
    grid = auto_grid(n, grid_cap) if s.grid_size is None else int(s.grid_size)
    threshold = auto_min_count(n, grid, count_cap) if s.min_count is None else int(s.min_count)
    if grid < 1:
        raise ValueError(f"grid_size must be at least 1, got {s.grid_size}")
    cells = bin_layout(coords, acts, grid_size=grid, min_count=threshold, extent=points.extent)
    if not cells:
        raise ValueError(f"no cell of the {grid}x{grid} grid has more than {threshold} of the {n} points; use a "
                         f"smaller grid_size or min_count (or collect more images)")
    logger.info("atlas: %d points, %dx%d grid, %d cells with more than %d points", n, grid, grid, len(cells),
                threshold)
    model = _model(store, model)
    S = None
    whiten = s.whiten
    if whiten is None:
        whiten = len(store) >= WHITEN_MIN_ROWS_PER_CHANNEL * store.layer_info(layer)["channels"]
    if whiten:
        S = whitening_matrix(points.all_acts if points.all_acts is not None else store.activations(layer))
    # False: no cache (render_icons reads None as the default cache); a folder as given; None: the render cache's
    cache = False if s.cache_dir is False else Path(s.cache_dir) if s.cache_dir is not None else RenderCache().folder
    directions = np.stack([c.mean for c in cells])
    icons, scores = render_icons(model, layer, directions, size=s.icon_size, steps=s.steps, attempts=s.attempts,
                                 cossim_pow=s.cossim_pow, S=S, batch_size=s.batch_size, seed=s.seed, cache_dir=cache,
                                 progress=s.progress, scores=True)
    tops, source = _top_classes(store, layer, [rows[c.members] for c in cells], s.n_top)
    image_of = store.meta(rows)["image"] if len(rows) else np.zeros(0, np.int64)
    records = []
    for k, cell in enumerate(cells):
        members = cell.members
        samples = _typical(acts[members], cell.mean, image_of[members], s.n_samples)
        records.append(AtlasCell(cell.i, cell.j, cell.count, cell.mean, rows[members], tops[k],
                                 [int(rows[members[j]]) for j in samples], float(scores[k])))
    settings = {"grid_size": grid, "min_count": threshold, "icon_size": s.icon_size, "steps": s.steps,
                "attempts": s.attempts, "cossim_pow": s.cossim_pow, "whiten": whiten, "seed": s.seed,
                "layout_method": points.method, "cache_dir": None if cache is False else str(cache), "points": n}
    return Atlas(points.kind, grid, records, icons, np.asarray(coords, dtype=np.float32),
                 np.asarray(rows, dtype=np.int64), points.labels, tuple(map(tuple, points.extent)), store.model_name,
                 layer, points.method, str(store.path), source, settings, model.contract)


def _open(store) -> ActivationStore:
    return store if isinstance(store, ActivationStore) else ActivationStore(store)


def _model(store: ActivationStore, model) -> Model:
    if model is None:
        from luminate.models.zoo import load

        model = load(store.model_name)
    model = as_model(model)
    expected = store.settings.get("weights")
    if expected and model.weights_fingerprint() != expected:
        warnings.warn(f"the model's weights differ from those that collected {store.path} (fingerprint "
                      f"{model.weights_fingerprint()} vs {expected}); icons may not match the layout", stacklevel=3)
    return model


def _class_name(store: ActivationStore, index: int) -> str:
    labels = store.labels
    return labels[index] if labels is not None else str(index)


def _top_classes(store: ActivationStore, layer: str, cell_rows: list[np.ndarray], n_top: int
                 ) -> tuple[list[list[tuple[int, str, float]]], str]:
    """Per cell, the ``n_top`` classes with the highest positive mean attribution over its rows (read shard by
    shard). Stores without attributions: the most common whole-image top-1 classes, as fractions."""
    n_cells = len(cell_rows)
    cell_of = np.full(len(store), -1, dtype=np.int64)
    for k, r in enumerate(cell_rows):
        cell_of[r] = k
    if store.has_attributions:
        source, key = "attribution", f"attr.{store.layer_info(layer)['key']}"
    else:
        source, key = "image top-1", "top_classes"
    sums = torch.zeros(n_cells, store.n_classes, dtype=torch.float64)
    for offset, fields in store.iter_shards([key]):
        values = fields[key]
        where = cell_of[offset:offset + len(values)]
        hit = np.nonzero(where >= 0)[0]
        if not len(hit):
            continue
        index = torch.from_numpy(where[hit])
        if source == "attribution":
            sums.index_add_(0, index, torch.from_numpy(np.asarray(values[hit], dtype=np.float64)))
        else:
            top1 = torch.from_numpy(np.asarray(values[hit, 0], dtype=np.int64))
            sums.index_put_((index, top1), torch.ones(len(hit), dtype=torch.float64), accumulate=True)
    counts = torch.tensor([max(len(r), 1) for r in cell_rows], dtype=torch.float64)[:, None]
    means = (sums / counts).numpy()
    out = []
    for k in range(n_cells):
        order = np.argsort(-means[k], kind="stable")[:n_top]
        out.append([(int(c), _class_name(store, int(c)), float(means[k, c])) for c in order if means[k, c] > 0])
    return out, source


def _typical(acts: np.ndarray, mean: np.ndarray, images: np.ndarray, n: int) -> list[int]:
    """Indices (into ``acts``) of up to ``n`` points most similar to ``mean`` (cosine), one per image."""
    if n <= 0 or not len(acts):
        return []
    a = np.asarray(acts, dtype=np.float64)
    sims = a @ mean / ((np.linalg.norm(a, axis=1) + 1e-8) * (np.linalg.norm(mean) + 1e-8))
    chosen, seen = [], set()
    for k in np.argsort(-sims, kind="stable"):
        if int(images[k]) in seen:
            continue
        seen.add(int(images[k]))
        chosen.append(int(k))
        if len(chosen) == n:
            break
    return chosen


# ----- demo images -----------------------------------------------------------------------------------

#: files that are not images, for demonstrating (and testing) that collection skips them by name
BAD_FILES = {"broken.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 truncated, not a jpeg", "notes.png": b"just some text",
             "empty.jpg": b""}


#: the colour photos that ship inside scikit-image (``skimage/data``), used by ``demo_images(..., skimage=True)``
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")


def skimage_photo_paths() -> list[Path]:
    """The colour photos bundled with scikit-image (astronaut, cat, coffee, rocket, ...), located without importing
    it; empty when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]


def demo_images(folder: str | os.PathLike, n: int = 240, seed: int = 0, size: tuple[int, int] = (96, 320),
                bad_files: bool = False, skimage: bool = False) -> Path:
    """Write ``n`` varied photos into ``folder`` (made from the photos that ship with scikit-learn, no download):
    random square crops of ``china.jpg`` / ``flower.jpg`` at random scales, resized to a random side in
    ``size``, half of them mirrored, as JPEG and PNG. ``skimage=True`` adds scikit-image's colour photos
    (:data:`SKIMAGE_PHOTOS`: astronaut, cat, coffee, rocket, motorcycle, ...) to the sources. ``bad_files=True``
    adds three unreadable files (:data:`BAD_FILES`: a corrupt JPEG, a text file named ``.png``, an empty file).
    Deterministic for a ``seed``. Returns ``folder``."""
    from PIL import Image

    sources = imageio.sample_image_paths() + (skimage_photo_paths() if skimage else [])
    if not sources:
        raise ImportError("demo images are made from scikit-learn's sample photos: pip install scikit-learn")
    if skimage and not skimage_photo_paths():
        raise ImportError("skimage=True needs scikit-image's bundled photos: pip install scikit-image")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [imageio.open_image(p) for p in sources]   # the one reader: upright, RGB
    for k in range(n):
        im = photos[k % len(photos)]
        side = int(rng.integers(64, min(im.size) + 1))
        x, y = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
        out = int(rng.integers(size[0], size[1] + 1))
        crop = im.crop((x, y, x + side, y + side)).resize((out, out), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(folder / f"demo{k:04d}.{'png' if k % 7 == 0 else 'jpg'}")
    if bad_files:
        for name, data in BAD_FILES.items():
            (folder / name).write_bytes(data)
    return folder
