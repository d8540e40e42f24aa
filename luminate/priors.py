"""Natural-image priors on activations: keep a visualization's statistics at earlier layers near real photos'.

A visualization reaches its unit by any route the optimizer finds; Geirhos et al. (ICML 2024) showed the route is
often unlike the one natural images take, and VITAL (ICCV 2025) made visualizations more faithful by matching their
feature distributions to real images'. :func:`natural_statistics` is the simple form of that idea as an objective
term: at each given layer, the visualization's channel means (over positions) are compared with the distribution
of the same means over natural photos, and the squared z-scores are subtracted:

    penalty_i = mean over layers l, channels c of ((mean_pos a_l(x_i)_c - mu_lc) / sd_lc)^2

>>> prior = natural_statistics(model, photos, ["blocks.2", "blocks.5"])
>>> render(model, obj.channel("blocks.9", 7) - 0.05 * prior, ...)

The photos are read once (no gradient); the term is an ordinary :class:`~luminate.objectives.Objective` (one value
per batch item), so it adds to any objective.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from luminate.activations import activations
from luminate.models.base import Model, as_model, block_layers
from luminate.objectives import Objective


def blocks_below(model: Model, layer: str) -> list[str]:
    """The model's blocks (:func:`~luminate.models.base.block_layers`) computed before ``layer``, in order: the
    layers a natural-path guide and the sanity check compare."""
    blocks = block_layers(model)
    if layer in blocks:
        return blocks[:blocks.index(layer)]
    order = [info.name for info in model.layers()]
    if layer not in order:
        model.layer(layer)  # raises with the closest names
    position = order.index(layer)
    return [b for b in blocks if b in order and order.index(b) < position and not layer.startswith(b + ".")]


def channel_statistics(model: Model, images: Tensor, layers: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """``{layer: (mu [C], sd [C])}``: mean and spread over ``images`` ``[N, 3, H, W]`` of each channel's mean over
    positions (sd floored at 5% of its median so that dead channels do not dominate)."""
    acts = activations(model, images, list(layers), batch_size=16, grid=True)
    out = {}
    for name in layers:
        pooled = acts[name].float().flatten(2).mean(2) if acts[name].ndim > 2 else acts[name].float()
        mu, sd = pooled.mean(0), pooled.std(0) if pooled.shape[0] > 1 else torch.ones(pooled.shape[1])
        out[name] = (mu, sd.clamp_min(0.05 * float(sd.median().clamp_min(1e-6))))
    return out


def natural_statistics(model: Model | str, images: Tensor, layers: Sequence[str],
                       targets: Sequence[Tensor] | None = None) -> Objective:
    """An objective ``[B]``: each item's mean squared z-score of its channel means at ``layers`` against natural
    ``images`` ``[N, 3, H, W]`` in [0, 1] (at least 2). Subtract it (times a weight) from the objective you maximize.

    ``targets``: one ``[k, 3, H, W]`` batch of photos per batch item (e.g. a unit's top examples, VITAL's "real images
    of the class"): item ``i`` is pulled towards the channel means of ``targets[i]`` instead of all photos' mean; the
    spread is still that of ``images``."""
    model = as_model(model)
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("natural_statistics needs at least one layer, e.g. ['blocks.2']")
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"natural_statistics needs a batch of at least 2 photos [N, 3, H, W], "
                         f"got {tuple(images.shape)}")
    stats = channel_statistics(model, images, layers)
    if targets is not None:
        per_item = [channel_statistics(model, t, layers) for t in targets]
        stats = {name: (torch.stack([s[name][0] for s in per_item]), stats[name][1]) for name in layers}
    name = "natural_statistics" if targets is None else "target_statistics"

    def penalty(acts: dict[str, Tensor]) -> Tensor:
        total = 0
        for layer in layers:
            a = acts[layer]
            mu, sd = (t.to(a.device) for t in stats[layer])
            pooled = a.flatten(2).mean(2) if a.ndim > 2 else a
            total = total + (((pooled - mu) / sd) ** 2).mean(1)
        return total / len(layers)

    return Objective(penalty, layers, f"{name}({', '.join(layers)})")
