"""Lucent's ``param.images``: :func:`image`, the default parameterization."""

from __future__ import annotations

from luminate.lucent.optvis.param.spatial import drawn
from luminate.param import ImageParam
from luminate.param import image as _image


def image(w: int, h: int | None = None, sd: float | None = None, batch: int | None = None, decorrelate: bool = True,
          fft: bool = True, channels: int | None = None):
    """``(params, image_f)`` with ``image_f()`` ``[batch, channels or 3, h, w]`` in [0, 1]: a Fourier (``fft``) or
    pixel image, decorrelated colour (RGB only) and a sigmoid; initial sd 0.01."""
    module: ImageParam = _image(w, h or w, batch=batch or 1, sd=sd or 0.01, decorrelate=decorrelate, fft=fft,
                                channels=channels)
    drawn(module)
    return list(module.parameters()), module


__all__ = ["image"]
