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
    With ``cache_dir``, each icon is an entry of the render cache (:class:`luminate.cache.RenderCache`, one PNG per
    icon, its score in the entry's index) named by a SHA-256 key of everything it depends on: the model's name and
    weight fingerprint, the layer, the direction's float32 bytes, the whitening matrix's bytes and every setting
    (size, steps, attempts, cossim_pow, lr, transforms, boundary penalty, seed). A later call finds the entry and
    renders nothing for that icon. Icons are returned quantized to 8 bits (what a PNG holds), whether
    they come from the cache or were just rendered, so both give the same tensor. An icon shares its batch's
    random transforms with the other icons of the batch; a batch's seed is derived from ``seed``, the attempt and
    the keys of its icons (without the number of attempts), so the same request renders the same icons, and attempt
    ``k`` is the same render whatever ``attempts`` is: more attempts never give a worse icon.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from luminate.activations import LayerTap
from luminate.cache import RenderCache, dequantize, quantize
from luminate.models.base import Model, as_model
from luminate.objectives import Objective, directions as directions_objective, penalize_boundary_complexity
from luminate.param import image
from luminate.progress import units as progress_units
from luminate.render import render
from luminate.transforms import Transform, atlas_transforms, compose

__all__ = ["render_icons", "icon_keys"]

#: bumped when the icon algorithm changes, so old cache entries stop matching
ICON_VERSION = 1


def render_icons(model: Model | torch.nn.Module | str, layer: str, directions, size: int = 80, steps: int = 128,
                 attempts: int = 1, cossim_pow: float = 4.0, S=None, batch_size: int = 32, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True, *, lr: float = 0.05,
                 boundary_width: int = 5, transforms: Sequence[Transform] | None = None,
                 redirect_relu_steps: int = 16, scores: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Render one icon per direction: ``[N, 3, size, size]`` in [0, 1] (CPU, 8-bit steps).

    Args:
        model: a :class:`~luminate.models.Model`, a zoo name, or a module taking [0, 1] images.
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
        cache_dir: the render cache folder for icons (one entry per icon, named by its content key); None: no
            cache.
        progress: a progress bar over icons.
        lr: Adam learning rate (Lucid: 0.05).
        boundary_width: border width of ``penalize_boundary_complexity`` (Lucid: 5; 0 disables the penalty).
        transforms: default :func:`~luminate.transforms.atlas_transforms` ``(size)``.
        redirect_relu_steps: see :func:`luminate.render.render`.
        scores: also return each icon's final direction objective ``[N]`` (the value that picked the attempt).

    Returns:
        icons ``[N, 3, size, size]``, or ``(icons, scores)`` with ``scores=True``.
    """
    model = as_model(model)
    dirs = _as_directions(directions)
    n = dirs.shape[0]
    if size < 8:
        raise ValueError(f"icon size must be at least 8 pixels, got {size}")
    if steps < 1 or attempts < 1 or batch_size < 1:
        raise ValueError("steps, attempts and batch_size must be at least 1")
    model.layer(layer)  # unknown layers raise with close names before anything else happens
    if n and dirs.shape[1] != model.layer_info(layer).channels:
        raise ValueError(f"the directions have {dirs.shape[1]} entries but layer {layer!r} of {model.name} has "
                         f"{model.layer_info(layer).channels} channels")
    S_t = None if S is None else torch.as_tensor(np.asarray(S), dtype=torch.float32)
    transform = compose(atlas_transforms(size) if transforms is None else transforms)
    settings = {"version": ICON_VERSION, "model": model.name, "weights": model.weights_fingerprint(),
                "layer": layer, "size": size, "steps": steps, "attempts": attempts, "cossim_pow": float(cossim_pow),
                "lr": lr, "boundary_width": boundary_width, "transforms": repr(transform),
                "redirect_relu_steps": redirect_relu_steps, "seed": seed,
                "S": None if S_t is None else hashlib.sha256(S_t.numpy().tobytes()).hexdigest()}
    keys = icon_keys(dirs, settings)
    # batch seeds ignore `attempts`, so attempt k is the same render whatever the number of attempts: more attempts
    # only ever improve on fewer
    seed_keys = icon_keys(dirs, {k: v for k, v in settings.items() if k != "attempts"})
    cache = RenderCache(cache_dir) if cache_dir is not None else None
    hits = cache.get_many(keys, [0]) if cache is not None else {}
    icons = torch.empty(n, 3, size, size)
    best = torch.full((n,), float("nan"))
    todo = []
    for k, key in enumerate(keys):
        hit = hits.get(key)
        if hit is None or 0 not in hit.images or hit.images[0].shape != (3, size, size):
            todo.append(k)
        else:
            icons[k], best[k] = hit.images[0], hit.scores.get(0, float("nan"))
    bar = _progress(n, n - len(todo), progress)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            batch_icons, batch_scores = _render_batch(model, layer, dirs[chunk], S_t, size, steps, attempts,
                                                      cossim_pow, lr, boundary_width, transform,
                                                      redirect_relu_steps, seed, [seed_keys[k] for k in chunk])
            icons[chunk] = batch_icons
            best[chunk] = batch_scores
            progress_units(rendered=len(chunk), unit="icon")
            if cache is not None:
                for k, icon, score in zip(chunk, batch_icons, batch_scores):
                    cache.put(keys[k], {0: icon}, scores={0: float(score)}, settings=settings)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return (icons, best) if scores else icons


def icon_keys(directions, settings: dict) -> list[str]:
    """The cache key of each direction ``[N, C]`` under ``settings`` (a JSON-able dict): SHA-256 hex strings,
    :meth:`RenderCache.key` of the settings and ``"<C>:"`` followed by the direction's float32 bytes."""
    dirs = _as_directions(directions)
    rows = dirs.numpy().astype("<f4")
    return [RenderCache.key(settings, f"{row.shape[0]}:".encode() + row.tobytes()) for row in rows]


# ----- internals -------------------------------------------------------------------------------------


def _as_directions(directions) -> Tensor:
    d = torch.as_tensor(np.asarray(directions) if not isinstance(directions, Tensor) else directions)
    d = d.detach().to(device="cpu", dtype=torch.float32)
    if d.ndim != 2:
        raise ValueError(f"directions must be [N, C] (one direction per icon), got shape {tuple(d.shape)}")
    if not torch.isfinite(d).all():
        raise ValueError("directions contain NaN or infinite values")
    return d.contiguous()


def _batch_seed(seed: int, attempt: int, keys: Sequence[str]) -> int:
    h = hashlib.blake2b(f"luminate.icons:{seed}:{attempt}:".encode() + "".join(keys).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 62) - 1)


def _render_batch(model: Model, layer: str, dirs: Tensor, S: Tensor | None, size: int, steps: int, attempts: int,
                  cossim_pow: float, lr: float, boundary_width: int, transform: Transform, redirect_relu_steps: int,
                  seed: int, keys: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Icons ``[B, 3, size, size]`` (8-bit steps) and their final direction objective ``[B]``: the best of
    ``attempts`` renders of the whole batch, chosen per icon."""
    score_fn = directions_objective(layer, dirs, cossim_pow=cossim_pow, S=S)
    objective: Objective = score_fn
    if boundary_width > 0:
        objective = objective + penalize_boundary_complexity(w=boundary_width)
    best_icons = best_scores = None
    for attempt in range(attempts):
        result = render(model, objective, param=image(size, batch=dirs.shape[0]), transforms=transform, steps=steps,
                        lr=lr, seed=_batch_seed(seed, attempt, keys), progress=False,
                        redirect_relu_steps=redirect_relu_steps)
        icons = dequantize(quantize(result.image[:, :3]))
        scores = _final_scores(model, layer, score_fn, icons)
        if best_icons is None:
            best_icons, best_scores = icons, scores
        else:
            better = scores > best_scores
            best_icons = torch.where(better[:, None, None, None], icons, best_icons)
            best_scores = torch.where(better, scores, best_scores)
    return best_icons, best_scores


def _final_scores(model: Model, layer: str, objective: Objective, icons: Tensor) -> Tensor:
    """The direction objective of each finished (untransformed) icon, ``[B]``."""
    with torch.no_grad(), LayerTap(model, [layer], check_inputs=False) as tap:
        acts = tap(icons.to(model.device))
    return objective(acts).detach().float().cpu()


def _progress(total: int, done: int, enabled: bool):
    progress_units(cached=done, unit="icon")
    if not enabled or total == 0:
        return None
    from luminate.progress import bar

    return bar(total, "icons", unit="icon", initial=done, enabled=enabled)
