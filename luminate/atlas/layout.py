"""Atlas layouts: whitening, 2-D (or 1-D) embeddings, normalization, grid binning, class filtering.

The recipe (Lucid's activation-atlas notebooks): embed the activation vectors in 2-D (UMAP, cosine),
normalize the layout into [0, 1]², cut it into a ``grid_size``² grid, keep cells with more than
``min_count`` points, and give each kept cell the mean activation of its points (the direction its
icon will visualize, whitened with ``S = inv(AᵀA/N)``). A class atlas first keeps the rows that matter
for one class (:func:`class_filter`); a two-class comparison puts the attribution difference on the x
axis and a 1-D embedding on the y axis (:func:`comparison_layout`).

Embedding methods (``method=``):

* ``"umap"``: umap-learn, ``n_components``, ``metric="cosine"``, ``n_neighbors=20``, ``min_dist=0.01``
  (the notebooks' values; Lucid's ``activation_atlas`` recipe used 50 and 0.05 on 100k points).
  Its first call in a process spends ~35 s compiling.
* ``"tsne"``: rows L2-normalized (so Euclidean distance ranks like cosine distance), PCA to 50
  dimensions, then scikit-learn's Barnes-Hut t-SNE (``perplexity=min(50, (N-1)/3)``, PCA init,
  ``learning_rate="auto"``; Lucid's suggested ``learning_rate=10`` belongs to another implementation's
  scale).
* ``"pca"``: rows L2-normalized for ``metric="cosine"``, then the top principal components.
* ``"auto"`` (default): PCA below 10 points; t-SNE below 3000 points (fast there, and it spares UMAP's
  compilation); UMAP when umap-learn is installed; t-SNE up to 20,000 points without it; PCA beyond.

The method used is logged (logger ``luminate.atlas``) and returned with the coordinates.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from luminate.data.store import ActivationStore

logger = logging.getLogger("luminate.atlas")

METHODS = ("auto", "umap", "tsne", "pca")
_CHUNK = 1 << 16


# ----- whitening -----------------------------------------------------------------------------------


def whitening_matrix(acts: np.ndarray, ridge: float = 0.0, rcond: float = 1e-6) -> np.ndarray:
    """``S = inv(AᵀA / N)`` for activations ``acts`` ``[N, C]``: Lucid's uncentred whitening, ``[C, C]``.

    Computed in float64 from the eigendecomposition of ``C = AᵀA/N``: eigenvalues below
    ``rcond * max`` count as zero (a pseudo-inverse, so fewer rows than channels or dead channels do
    not blow up), and ``ridge > 0`` adds ``ridge * mean eigenvalue`` before inverting (a regularised
    inverse). Icon directions are ``v @ S``. Rows are read in chunks, so ``acts`` may be memory-mapped.
    """
    acts = _as_2d(acts, "acts")
    n, c = acts.shape
    if n == 0:
        raise ValueError("cannot whiten an empty set of activations")
    cov = np.zeros((c, c), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        block = np.asarray(acts[start:start + _CHUNK], dtype=np.float64)
        cov += block.T @ block
    cov /= n
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 0, None)
    keep = w > rcond * max(w.max(), np.finfo(np.float64).tiny)
    inv = np.zeros_like(w)
    inv[keep] = 1.0 / (w[keep] + ridge * w[keep].mean())
    return ((v * inv) @ v.T).astype(np.float32)


# ----- embeddings ----------------------------------------------------------------------------------


def choose_method(n_points: int) -> str:
    """What ``method="auto"`` picks for ``n_points`` (see the module docstring)."""
    if n_points < 10:
        return "pca"
    if n_points < 3000:
        return "tsne"
    if importlib.util.find_spec("umap") is not None:
        return "umap"
    return "tsne" if n_points <= 20000 else "pca"


def embed(acts: np.ndarray, n_components: int = 2, method: str = "auto", *, n_neighbors: int = 20,
          min_dist: float = 0.01, metric: str = "cosine", perplexity: float = 50.0, seed: int = 0
          ) -> tuple[np.ndarray, str]:
    """Embed ``acts`` ``[N, C]`` in ``n_components`` dimensions: ``(coords [N, n_components], method used)``.

    Raw coordinates (not normalized; see :func:`normalize_layout`). Deterministic for a given ``seed``.
    """
    acts = np.asarray(_as_2d(acts, "acts"), dtype=np.float32)
    n = acts.shape[0]
    if method not in METHODS:
        raise ValueError(f"unknown layout method {method!r}; choose one of {', '.join(METHODS)}")
    if n < 2:
        raise ValueError(f"need at least 2 points to make a layout, got {n}")
    used = choose_method(n) if method == "auto" else method
    with _few_threads(n):
        coords, detail = _embed(acts, n_components, used, n_neighbors, min_dist, metric, perplexity, seed)
    logger.info("layout: %s of %d points in %d-D%s", detail, n, n_components,
                " (auto)" if method == "auto" else "")
    return coords.astype(np.float32), used


def _embed(acts, n_components, used, n_neighbors, min_dist, metric, perplexity, seed) -> tuple[np.ndarray, str]:
    n = acts.shape[0]
    if used == "umap":
        coords = _umap(acts, n_components, n_neighbors, min_dist, metric, seed)
        detail = f"UMAP(n_neighbors={min(n_neighbors, n - 1)}, min_dist={min_dist}, metric={metric})"
    elif used == "tsne":
        coords, perp = _tsne(acts, n_components, metric, perplexity, seed)
        detail = f"t-SNE(perplexity={perp:.3g}) after PCA-50" + (" of L2-normalized rows" if metric == "cosine" else "")
    else:
        coords = pca(_for_metric(acts, metric), n_components)
        detail = f"PCA-{n_components}" + (" of L2-normalized rows" if metric == "cosine" else "")
    return coords, detail


def _few_threads(n_points: int):
    """One BLAS/OpenMP thread for small layouts: thread start-up and spin-waiting cost more than the work
    there (a 40-point t-SNE: 0.35 s on one thread, 2-5 s on two busy cores)."""
    if n_points >= 5000:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def pca(x: np.ndarray, n_components: int) -> np.ndarray:
    """Project ``x`` ``[N, D]`` (centred) on its top ``n_components`` principal axes, ``[N, k]``.

    Signs are fixed (each axis's largest loading is positive) so results are reproducible.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    k = min(n_components, x.shape[1])
    w, v = np.linalg.eigh(centred.T @ centred)
    axes = v[:, np.argsort(w)[::-1][:k]]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    out = centred @ axes
    if k < n_components:
        out = np.pad(out, ((0, 0), (0, n_components - k)))
    return out


def _for_metric(acts: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        norms = np.linalg.norm(acts, axis=1, keepdims=True)
        return acts / np.where(norms > 0, norms, 1)
    if metric == "euclidean":
        return acts
    raise ValueError(f"t-SNE and PCA layouts support metric='cosine' or 'euclidean', not {metric!r}")


def _tsne(acts, n_components, metric, perplexity, seed) -> tuple[np.ndarray, float]:
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise ImportError("t-SNE layouts need scikit-learn: pip install 'luminate[atlas]' "
                          "(or use method='pca')") from exc
    x = _for_metric(acts, metric)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = pca(x, 50)
    n = x.shape[0]
    perp = float(max(1.0, min(perplexity, (n - 1) / 3)))
    tsne = TSNE(n_components=n_components, perplexity=perp, init="pca", learning_rate="auto",
                random_state=seed, method="barnes_hut" if n_components < 4 else "exact")
    return tsne.fit_transform(np.asarray(x, dtype=np.float32)), perp


def _umap(acts, n_components, n_neighbors, min_dist, metric, seed) -> np.ndarray:
    try:
        import umap
    except ImportError as exc:
        raise ImportError("UMAP layouts need umap-learn: pip install 'luminate[atlas]' (or use method='tsne' "
                          "or 'pca')") from exc
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, acts.shape[0] - 1),
                        min_dist=min_dist, metric=metric, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")  # seeded UMAP runs single-threaded; it says so
        return reducer.fit_transform(acts)


def normalize_layout(layout: np.ndarray, min_percentile: float = 1, max_percentile: float = 99,
                     relative_margin: float = 0.1) -> np.ndarray:
    """Clip each axis of ``layout`` ``[N, D]`` (or ``[N]``) to its 1st–99th percentiles widened by a 10%
    margin, then rescale each axis to exactly [0, 1].

    Lucid widened the upper bound by 10% of the already-widened range (its margin was asymmetric);
    here both sides get ``relative_margin`` of the percentile range. A constant axis maps to 0.5.
    """
    layout = np.asarray(layout, dtype=np.float64)
    lo = np.percentile(layout, min_percentile, axis=0)
    hi = np.percentile(layout, max_percentile, axis=0)
    span = hi - lo
    clipped = np.clip(layout, lo - relative_margin * span, hi + relative_margin * span)
    low, high = clipped.min(axis=0), clipped.max(axis=0)
    width = high - low
    out = np.where(width > 0, (clipped - low) / np.where(width > 0, width, 1), 0.5)
    return out.astype(np.float32)


@dataclass
class Layout:
    """Points laid out in [0, 1]²: ``coords`` ``[N, 2]`` (x, y), the ``method`` that made them, and the
    store ``rows`` they stand for (None: all rows, in order)."""

    coords: np.ndarray
    method: str
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.coords)


def atlas_layout(acts: np.ndarray, method: str = "auto", *, n_neighbors: int = 20, min_dist: float = 0.01,
                 metric: str = "cosine", seed: int = 0, rows: np.ndarray | None = None) -> Layout:
    """Embed ``acts`` ``[N, C]`` in 2-D (:func:`embed`) and :func:`normalize_layout` it into [0, 1]²."""
    coords, used = embed(acts, 2, method, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, seed=seed)
    return Layout(normalize_layout(coords), used, None if rows is None else np.asarray(rows, dtype=np.int64))


# ----- binning -------------------------------------------------------------------------------------


@dataclass
class Cell:
    """A kept grid cell: column ``i`` (x bin) and row ``j`` (y bin, 0 = smallest y), its ``count``, the
    ``mean`` activation ``[C]`` of its points, their indices ``members`` (into the layout's points) and
    its ``center`` (x, y) in layout coordinates."""

    i: int
    j: int
    count: int
    mean: np.ndarray
    members: np.ndarray
    center: tuple[float, float]


def bin_layout(layout: Layout | np.ndarray, acts: np.ndarray, grid_size: int | tuple[int, int] = 20,
               min_count: int = 10, extent: tuple[tuple[float, float], tuple[float, float]] = ((0, 1), (0, 1))
               ) -> list[Cell]:
    """Cut ``layout`` ``[N, 2]`` into a grid and average ``acts`` ``[N, C]`` per cell.

    ``grid_size`` cells per axis (or ``(nx, ny)``) over ``extent`` ``((x0, x1), (y0, y1))``; a point on
    the far edge (or outside) goes to the border cell, as Lucid's last bin edge was infinite. Cells with
    **more than** ``min_count`` points are kept (Lucid: ``> threshold``; 10 in the simple-atlas notebook,
    5 in the recipe, 4 for class atlases). Cells come ordered by ``(i, j)``. ``acts`` may be
    memory-mapped: it is read in chunks.
    """
    coords = layout.coords if isinstance(layout, Layout) else np.asarray(layout)
    coords = _as_2d(coords, "layout")
    acts = _as_2d(acts, "acts")
    if coords.shape[1] != 2 or len(coords) != len(acts):
        raise ValueError(f"layout must be [N, 2] with one point per activation row; got {coords.shape} and "
                         f"{acts.shape}")
    nx, ny = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    (x0, x1), (y0, y1) = extent
    i = np.clip(np.floor((coords[:, 0] - x0) / (x1 - x0) * nx), 0, nx - 1).astype(np.int64)
    j = np.clip(np.floor((coords[:, 1] - y0) / (y1 - y0) * ny), 0, ny - 1).astype(np.int64)
    cell = i * ny + j
    counts = np.bincount(cell, minlength=nx * ny)
    sums = torch.zeros(nx * ny, acts.shape[1], dtype=torch.float64)
    for start in range(0, len(acts), _CHUNK):
        block = torch.from_numpy(np.asarray(acts[start:start + _CHUNK], dtype=np.float64))
        sums.index_add_(0, torch.from_numpy(cell[start:start + _CHUNK]), block)
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    cells = []
    for c in np.nonzero(counts > min_count)[0]:
        ci, cj = divmod(int(c), ny)
        members = order[bounds[c]:bounds[c + 1]]
        center = (x0 + (ci + 0.5) * (x1 - x0) / nx, y0 + (cj + 0.5) * (y1 - y0) / ny)
        cells.append(Cell(ci, cj, int(counts[c]), (sums[c] / counts[c]).numpy().astype(np.float32), members, center))
    return cells


# ----- class atlases -------------------------------------------------------------------------------


def class_filter(source: ActivationStore | np.ndarray, class_index: int | str, top_n: int = 3000,
                 layer: str | None = None) -> np.ndarray:
    """Rows that matter for one class: the sorted union of

    * the rows whose top attribution class is ``class_index`` (Lucid's ``get_winning_indices``), and
    * the ``top_n`` rows by attribution to it, keeping only positive ones (``get_top_indices``).

    ``source`` is a store (with ``layer`` when it holds several; read shard by shard) or an attribution
    array ``[N, n_classes]``. Class names work when the store saved the model's labels.
    """
    c = _class(source, class_index)
    scores, winners = [], []
    for offset, attr in _attribution_chunks(source, layer):
        scores.append(np.asarray(attr[:, c], dtype=np.float32))
        winners.append(offset + np.nonzero(np.asarray(attr).argmax(axis=1) == c)[0])
    score = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    return np.union1d(np.concatenate(winners) if winners else np.zeros(0, np.int64), _top_positive(score, top_n))


@dataclass
class ComparisonLayout:
    """Two-class comparison: store ``rows`` ``[M]``, ``coords`` ``[M, 2]`` with x in [-1, 1]
    (attribution to ``classes[1]`` minus ``classes[0]``, divided by ``scale``, its 99th-percentile
    absolute value, and clipped) and y in [0, 1] (normalized 1-D embedding by ``method``)."""

    rows: np.ndarray
    coords: np.ndarray
    method: str
    scale: float
    classes: tuple[int, int]
    extent: tuple[tuple[float, float], tuple[float, float]] = ((-1.0, 1.0), (0.0, 1.0))

    def __len__(self) -> int:
        return len(self.rows)


def comparison_layout(source: ActivationStore | tuple[np.ndarray, np.ndarray], class_a: int | str,
                      class_b: int | str, top_n: int = 2000, layer: str | None = None, method: str = "auto", *,
                      n_neighbors: int = 20, min_dist: float = 0.01, metric: str = "cosine",
                      perplexity: float = 50.0, seed: int = 0) -> ComparisonLayout:
    """Lay out the rows that matter for two classes side by side (Lucid's snorkel vs scuba diver).

    Rows: the union of the ``top_n`` positive-attribution rows of each class. ``source`` is a store or
    ``(activations [N, C], attributions [N, n_classes])``. Bin the result with
    ``bin_layout(cl.coords, acts[cl.rows], grid_size=10, extent=cl.extent)``.
    """
    a, b = _class(source, class_a), _class(source, class_b)
    if a == b:
        raise ValueError(f"compare two different classes (both are {a})")
    attr_source = source if isinstance(source, ActivationStore) else source[1]
    cols = {a: [], b: []}
    for _, attr in _attribution_chunks(attr_source, layer):
        for c in cols:
            cols[c].append(np.asarray(attr[:, c], dtype=np.float32))
    score_a, score_b = (np.concatenate(cols[c]) if cols[c] else np.zeros(0, np.float32) for c in (a, b))
    rows = np.union1d(_top_positive(score_a, top_n), _top_positive(score_b, top_n))
    if len(rows) < 2:
        raise ValueError(f"fewer than 2 rows have positive attribution to classes {a} and {b}; collect more "
                         "images (or images of these classes)")
    diff = score_b[rows].astype(np.float64) - score_a[rows]
    scale = float(np.percentile(np.abs(diff), 99))
    x = np.clip(diff / scale, -1, 1) if scale > 0 else np.zeros_like(diff)
    acts = source.activations(layer, rows) if isinstance(source, ActivationStore) else np.asarray(source[0])[rows]
    y, used = embed(acts, 1, method, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                    perplexity=perplexity, seed=seed)
    coords = np.stack([x, normalize_layout(y[:, 0])], axis=1).astype(np.float32)
    return ComparisonLayout(rows, coords, used, scale, (a, b))


def _class(source, label: int | str) -> int:
    if isinstance(source, ActivationStore):
        return source.class_index(label)
    if isinstance(label, (int, np.integer)):
        return int(label)
    raise ValueError(f"class {label!r}: give an index (names need an ActivationStore saved with labels)")


def _attribution_chunks(source, layer):
    if isinstance(source, ActivationStore):
        key = f"attr.{source.layer_info(layer)['key']}"
        if not source.has_attributions:
            source.attributions(layer)  # raises the explanatory error
        for offset, fields in source.iter_shards([key]):
            yield offset, fields[key]
    else:
        attr = _as_2d(source, "attributions")
        for start in range(0, len(attr), _CHUNK):
            yield start, attr[start:start + _CHUNK]


def _top_positive(score: np.ndarray, n: int) -> np.ndarray:
    top = np.argsort(-score, kind="stable")[:n]
    return np.sort(top[score[top] > 0]).astype(np.int64)


def _as_2d(x, what: str):
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if len(x.shape) != 2:
        raise ValueError(f"{what} must be a 2-D array [N, C], got shape {tuple(x.shape)}")
    return x
