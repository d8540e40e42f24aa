"""Channel icons: feature visualizations of a layer's channels, rendered in batches and cached on disk.

Lucid's Building Blocks notebooks read precomputed "spritemaps" (one JPEG per layer, channel ``n`` at slot ``n``)
from a Google Cloud bucket that no longer exists, and making them "takes a few hours of GPU time". Here
:func:`channel_icons` renders the icons it needs through the one renderer of directions
(:func:`luminate.units.render_directions`: a channel is a one-hot direction, rendered with the channel objective,
many channels per batch) and keeps each in the render cache (:class:`~luminate.cache.RenderCache`), keyed by the
model name, a fingerprint of its weights, the layer, the channel and every render setting
(:class:`~luminate.units.RenderSettings`: size, steps, lr, seed, transforms as run, batch, ...), so new weights or
settings never reuse stale icons and a second call renders nothing.

Icons are stored as 8-bit PNG, so returned icons are always quantized to multiples of 1/255 (also on the call that
rendered them), and a cache hit returns exactly what the first call returned. An icon depends on the seed and on the
other channels in its render batch (the batch shares one random transform per step); ``batch_size=1`` makes each
icon depend on its channel alone. Every icon is an equally valid visualization of its channel either way.

Default cache folder: the render cache, ``$LUMINATE_CACHE/renders`` (``~/.cache/luminate/renders``).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

from luminate.models.base import Model, as_model
from luminate.transforms import Transform
from luminate.units.render import Directions, RenderSettings, render_directions

#: Channels rendered together in one batch (one image per channel).
DEFAULT_BATCH = 32


def icon_settings(size: int = 64, steps: int = 256, lr: float = 0.05, seed: int = 0,
                  transforms: Sequence[Transform] | Transform | None = None,
                  batch_size: int = DEFAULT_BATCH) -> RenderSettings:
    """The render settings of channel icons (the cache key): one positive image per channel, render's default
    transforms unless ``transforms`` are given."""
    return RenderSettings(size=int(size), steps=int(steps), lr=float(lr), seed=int(seed),
                          transforms="default" if transforms is None else transforms, batch=int(batch_size))


def channel_icons(model: Model | str, layer: str, channels: Sequence[int] | None = None, size: int = 64,
                  steps: int = 256, cache_dir: str | os.PathLike | bool | None = None, progress: bool = True, *,
                  seed: int = 0, lr: float = 0.05, batch_size: int = DEFAULT_BATCH,
                  transforms: Sequence[Transform] | Transform | None = None,
                  callback: Callable[[int, torch.Tensor, torch.Tensor], bool | None] | None = None
                  ) -> dict[int, torch.Tensor]:
    """Feature visualizations of channels of ``layer``: ``{channel: [3, size, size]}`` in [0, 1] (CPU).

    Each missing channel is rendered once (``batch_size`` channels per batch, the objective
    ``channels(layer, batch)``, Fourier + decorrelated image, render's default transforms, Adam ``lr``, ReLU
    redirection for 16 steps) and stored in the render cache; cached channels are read back without rendering.

    Args:
        channels: channel indices (default: every channel of the layer). Dead channels are rendered like any other.
        size: icon side in pixels.
        steps: optimization steps per icon batch.
        cache_dir: the render cache folder (``None``: ``$LUMINATE_CACHE/renders``, see :mod:`luminate.cache`);
            ``False``: no cache.
        progress: a progress bar over icons. Ctrl-C stops after caching the batches already finished.
        seed, lr, transforms: render settings (``transforms=None``: :func:`~luminate.transforms.default_transforms`).
        callback: passed to every batch's :func:`~luminate.render.render` (``callback(step, images, scores)``
            after each step), e.g. to report progress; returning True stops the render (KeyboardInterrupt, that
            batch not cached).
    """
    model = as_model(model)
    info = model.layer_info(layer)
    if len(info.shape) != 3:
        raise ValueError(f"layer {layer!r} of {model.name} has output shape {info.shape}; channel icons need a "
                         "convolutional layer [C, H, W]")
    n_channels = info.channels
    wanted = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    for c in wanted:
        model.check_channel(layer, c)
    wanted = list(dict.fromkeys(c % n_channels for c in wanted))
    settings = icon_settings(size, steps, lr, seed, transforms, batch_size)
    icons = render_directions(model, Directions.for_units(layer, wanted, n_channels), settings,
                              cache=cache_dir, progress=progress, callback=callback)
    return dict(zip(wanted, icons))
