"""Channel icons: feature visualizations of a layer's channels, rendered in batches and cached on disk.

Lucid's Building Blocks notebooks read precomputed "spritemaps" (one JPEG per layer, channel ``n`` at slot ``n``)
from a Google Cloud bucket that no longer exists, and making them "takes a few hours of GPU time". Here
:func:`channel_icons` renders the icons it needs, many channels per batch (one batch item per channel, one
vectorized :func:`~luminate.objectives.channels` objective), and keeps them in a local sprite cache:

* one :class:`~luminate.cache.RenderCache` entry per (model, weights, layer, render settings): a sprite sheet with
  channel ``n`` at row ``n // cols``, column ``n % cols`` (``cols = ceil(sqrt(channels of the layer))``), and its
  index (channels present, the settings that made them);
* the key holds the model name, a fingerprint of its weights (:meth:`Model.weights_fingerprint`), the layer and every
  render setting (size, steps, lr, seed, transforms, parameterization, ReLU redirection, Luminate version), so new
  weights or settings never reuse stale icons;
* only missing channels are rendered; the sheet grows incrementally and a second call renders nothing.

Icons are stored as 8-bit PNG, so returned icons are always quantized to multiples of 1/255 (also on the call that
rendered them), and a cache hit returns exactly what the first call returned. An icon depends on the seed and on the
other channels in its render batch (the batch shares one random transform per step), so it is reproducible for the
same sequence of requests; every icon is an equally valid visualization of its channel either way.

Default cache folder: the render cache, ``$LUMINATE_CACHE/renders`` (``~/.cache/luminate/renders``).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch

import luminate
from luminate import objectives as obj
from luminate import param as P
from luminate.cache import RenderCache, dequantize, quantize
from luminate.models.base import Model, as_model
from luminate.progress import units as progress_units
from luminate.render import render
from luminate.transforms import Transform, compose, standard_transforms

#: Channels rendered together in one batch (one image per channel).
DEFAULT_BATCH = 32


def icon_settings(size: int, steps: int, lr: float, seed: int, transforms: Sequence[Transform] | Transform | None,
                  redirect_relu_steps: int = 16) -> dict:
    """The render settings that decide what an icon looks like (part of the cache key)."""
    transform = _transform(transforms)
    return {"objective": "channel", "size": int(size), "steps": int(steps), "lr": float(lr), "seed": int(seed),
            "transforms": repr(transform), "param": repr(P.image(size)).replace("\n", " "),
            "redirect_relu_steps": int(redirect_relu_steps), "luminate": luminate.__version__}


def channel_icons(model: Model | str, layer: str, channels: Sequence[int] | None = None, size: int = 64,
                  steps: int = 256, cache_dir: str | os.PathLike | bool | None = None, progress: bool = True, *,
                  seed: int = 0, lr: float = 0.05, batch_size: int = DEFAULT_BATCH,
                  transforms: Sequence[Transform] | Transform | None = None,
                  callback: Callable[[int, torch.Tensor, torch.Tensor], bool | None] | None = None
                  ) -> dict[int, torch.Tensor]:
    """Feature visualizations of channels of ``layer``: ``{channel: [3, size, size]}`` in [0, 1] (CPU).

    Each missing channel is rendered once (``batch_size`` channels per batch, the objective
    ``channels(layer, batch)``, Lucid's defaults: Fourier + decorrelated image, standard transforms, Adam ``lr``,
    ReLU redirection for 16 steps) and stored in the sprite cache; cached channels are read back without rendering.

    Args:
        channels: channel indices (default: every channel of the layer). Dead channels are rendered like any other.
        size: icon side in pixels.
        steps: optimization steps per icon batch.
        cache_dir: the render cache folder (``None``: ``$LUMINATE_CACHE/renders``, see :mod:`luminate.cache`);
            ``False`` disables caching.
        progress: a progress bar per render batch. Ctrl-C stops after caching the batches already finished.
        seed, lr, transforms: render settings (``transforms=None``: Lucid's standard set).
        callback: passed to every batch's :func:`~luminate.render.render` (``callback(step, images, scores)``
            after each step), e.g. to report progress; returning True stops the render (KeyboardInterrupt, that
            batch not cached).
    """
    model = as_model(model)
    n_channels = model.layer_info(layer).channels
    if len(model.layer_info(layer).shape) != 3:
        raise ValueError(f"layer {layer!r} of {model.name} has output shape {model.layer_info(layer).shape}; channel "
                         "icons need a convolutional layer [C, H, W]")
    wanted = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    for c in wanted:
        model.check_channel(layer, c)
    wanted = list(dict.fromkeys(c % n_channels for c in wanted))
    settings = {**icon_settings(size, steps, lr, seed, transforms), "model": model.name, "layer": layer,
                "channels": n_channels}
    cache = key = None
    if cache_dir is not False:
        cache = RenderCache(None if cache_dir in (None, True) else cache_dir)
        key = RenderCache.key(settings, model=model)
    hit = cache.get(key) if cache is not None else None
    icons = dict(hit.images) if hit is not None else {}
    missing = [c for c in wanted if c not in icons]
    progress_units(cached=len(wanted) - len(missing), unit="icon")
    fresh: dict[int, torch.Tensor] = {}
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        result = render(model, obj.channels(layer, chunk), P.image(size, batch=len(chunk)), transforms=transforms,
                        steps=steps, lr=lr, seed=seed, progress=progress, callback=callback)
        if result.interrupted:   # half-optimized icons must not enter the cache
            raise KeyboardInterrupt(f"channel icons of {layer} interrupted after {len(fresh)} new icons")
        batch = dict(zip(chunk, dequantize(quantize(result.image[:, :3]))))
        progress_units(rendered=len(chunk), unit="icon")
        fresh.update(batch)
        if cache is not None:  # save after every batch: an interrupted run keeps what it made
            cache.put(key, batch, settings={**settings, "weights": model.weights_fingerprint()},
                      cols=max(1, math.ceil(math.sqrt(n_channels))))
    icons.update(fresh)
    return {c: icons[c] for c in wanted}


def _transform(transforms: Sequence[Transform] | Transform | None) -> Transform:
    if transforms is None:
        transforms = standard_transforms()
    return compose(transforms) if isinstance(transforms, (list, tuple)) else transforms
