"""Channel icons: feature visualizations of a layer's channels, rendered in batches and cached on disk.

Lucid's Building Blocks notebooks read precomputed "spritemaps" (one JPEG per layer, channel ``n`` at slot ``n``)
from a Google Cloud bucket that no longer exists, and making them "takes a few hours of GPU time". Here
:func:`channel_icons` renders the icons it needs, many channels per batch (one batch item per channel, one
vectorized :func:`~luminate.objectives.channels` objective), and keeps them in a local sprite cache:

* one sprite sheet (PNG) per (model, weights, layer, render settings), channel ``n`` at row ``n // cols``, column
  ``n % cols`` (``cols = ceil(sqrt(channels of the layer))``), plus a JSON index listing the channels present and the
  settings that made them;
* the key holds the model name, a fingerprint of its weights (:meth:`Model.weights_fingerprint`), the layer and every render
  setting (size, steps, lr, seed, transforms, parameterization, ReLU redirection, Luminate version), so new weights or
  settings never reuse stale icons;
* only missing channels are rendered; the sheet grows incrementally and a second call renders nothing.

Icons are stored as 8-bit PNG, so returned icons are always quantized to multiples of 1/255 (also on the call that
rendered them), and a cache hit returns exactly what the first call returned. An icon depends on the seed and on the
other channels in its render batch (the batch shares one random transform per step), so it is reproducible for the
same sequence of requests; every icon is an equally valid visualization of its channel either way.

Default cache folder: ``$LUMINATE_CACHE``, else ``$LUMINATE_HOME/sprites``, else ``~/.cache/luminate/sprites``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

import luminate
from luminate import objectives as obj
from luminate import param as P
from luminate.models.base import Model, as_model
from luminate.render import render
from luminate.transforms import Transform, compose, standard_transforms

#: Channels rendered together in one batch (one image per channel).
DEFAULT_BATCH = 32

def default_cache_dir() -> Path:
    """``$LUMINATE_CACHE``, else ``$LUMINATE_HOME/sprites``, else ``~/.cache/luminate/sprites``."""
    if os.environ.get("LUMINATE_CACHE"):
        return Path(os.environ["LUMINATE_CACHE"]).expanduser()
    if os.environ.get("LUMINATE_HOME"):
        return Path(os.environ["LUMINATE_HOME"]).expanduser() / "sprites"
    return Path.home() / ".cache" / "luminate" / "sprites"


def icon_settings(size: int, steps: int, lr: float, seed: int, transforms: Sequence[Transform] | Transform | None,
                  redirect_relu_steps: int = 16) -> dict:
    """The render settings that decide what an icon looks like (part of the cache key)."""
    transform = _transform(transforms)
    return {"objective": "channel", "size": int(size), "steps": int(steps), "lr": float(lr), "seed": int(seed),
            "transforms": repr(transform), "param": repr(P.image(size)).replace("\n", " "),
            "redirect_relu_steps": int(redirect_relu_steps), "luminate": luminate.__version__}


class SpriteSheet:
    """One cached sprite sheet: ``<cache>/<model>-<weights>/<layer>-<settings>.png`` and its ``.json`` index.

    Channel ``n`` sits at row ``n // cols``, column ``n % cols`` of the PNG (``size`` px squares); the index lists the
    channels present. ``load()`` returns ``{channel: [3, size, size]}``; ``add(icons)`` merges icons into the files
    (re-reading them first, so two processes filling one sheet lose nothing but a race's last few icons).
    """

    def __init__(self, root: Path, model: Model, layer: str, n_channels: int, settings: dict):
        self.size = settings["size"]
        self.n_channels = n_channels
        self.cols = max(1, math.ceil(math.sqrt(n_channels)))
        self.settings = {**settings, "model": model.name, "layer": layer, "channels": n_channels}
        self.weights = model.weights_fingerprint()
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = root / f"{_safe(model.name)}-{self.weights}"
        self.png = folder / f"{_safe(layer)}-{digest}.png"
        self.index = self.png.with_suffix(".json")

    def load(self) -> dict[int, torch.Tensor]:
        """The cached icons ``{channel: [3, size, size]}`` (empty when the files are missing or unreadable)."""
        try:
            meta = json.loads(self.index.read_text())
            with Image.open(self.png) as im:
                sheet = np.asarray(im.convert("RGB"))
        except (OSError, ValueError):
            return {}
        if meta.get("settings") != self.settings or meta.get("weights") != self.weights:
            return {}
        s, out = self.size, {}
        for n in meta.get("present", []):
            r, c = divmod(int(n), self.cols)
            tile = sheet[r * s:(r + 1) * s, c * s:(c + 1) * s]
            if tile.shape[:2] == (s, s):
                out[int(n)] = _from_uint8(tile)
        return out

    def add(self, icons: dict[int, torch.Tensor]) -> None:
        """Merge ``icons`` into the sheet and index (atomically replaced files)."""
        merged = {**self.load(), **icons}
        s = self.size
        rows = max(merged) // self.cols + 1
        sheet = np.full((rows * s, self.cols * s, 3), 255, dtype=np.uint8)
        for n, icon in merged.items():
            r, c = divmod(n, self.cols)
            sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = _to_uint8(icon)
        self.png.parent.mkdir(parents=True, exist_ok=True)
        _atomic(self.png, lambda f: Image.fromarray(sheet).save(f, format="PNG"))
        meta = {"settings": self.settings, "weights": self.weights, "cols": self.cols, "present": sorted(merged)}
        _atomic(self.index, lambda f: f.write(json.dumps(meta, indent=1).encode()))


def channel_icons(model: Model | str, layer: str, channels: Sequence[int] | None = None, size: int = 64,
                  steps: int = 256, cache_dir: str | os.PathLike | bool | None = None, progress: bool = True, *,
                  seed: int = 0, lr: float = 0.05, batch_size: int = DEFAULT_BATCH,
                  transforms: Sequence[Transform] | Transform | None = None) -> dict[int, torch.Tensor]:
    """Feature visualizations of channels of ``layer``: ``{channel: [3, size, size]}`` in [0, 1] (CPU).

    Each missing channel is rendered once (``batch_size`` channels per batch, the objective
    ``channels(layer, batch)``, Lucid's defaults: Fourier + decorrelated image, standard transforms, Adam ``lr``,
    ReLU redirection for 16 steps) and stored in the sprite cache; cached channels are read back without rendering.

    Args:
        channels: channel indices (default: every channel of the layer). Dead channels are rendered like any other.
        size: icon side in pixels.
        steps: optimization steps per icon batch.
        cache_dir: the sprite cache folder (``None``: :func:`default_cache_dir`); ``False`` disables caching.
        progress: a progress bar per render batch. Ctrl-C stops after caching the batches already finished.
        seed, lr, transforms: render settings (``transforms=None``: Lucid's standard set).
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
    settings = icon_settings(size, steps, lr, seed, transforms)
    sheet = None
    if cache_dir is not False:
        root = Path(cache_dir).expanduser() if cache_dir not in (None, True) else default_cache_dir()
        sheet = SpriteSheet(root, model, layer, n_channels, settings)
    icons = sheet.load() if sheet is not None else {}
    missing = [c for c in wanted if c not in icons]
    fresh: dict[int, torch.Tensor] = {}
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        result = render(model, obj.channels(layer, chunk), P.image(size, batch=len(chunk)), transforms=transforms,
                        steps=steps, lr=lr, seed=seed, progress=progress)
        if result.interrupted:   # half-optimized icons must not enter the cache
            raise KeyboardInterrupt(f"channel icons of {layer} interrupted after {len(fresh)} new icons")
        for c, icon in zip(chunk, result.image):
            fresh[c] = _from_uint8(_to_uint8(icon))
        if sheet is not None:  # save after every batch: an interrupted run keeps what it made
            sheet.add({c: fresh[c] for c in chunk})
    icons.update(fresh)
    return {c: icons[c] for c in wanted}


def _transform(transforms: Sequence[Transform] | Transform | None) -> Transform:
    if transforms is None:
        transforms = standard_transforms()
    return compose(transforms) if isinstance(transforms, (list, tuple)) else transforms


def _to_uint8(icon: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (icon.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _from_uint8(tile: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, H, W]`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1).float() / 255.0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
