"""Lucent's ``param.spatial``: raw pixel and Fourier images, ``(params, image_f)`` with ``image_f()`` ``[B, C, H, W]``.

Numerics are Luminate's :class:`~luminate.param.FourierImage` (Lucid's spectrum scaling and ``/ 4``; Lucent's
``irfftn(norm="ortho")`` of the unscaled spectrum is the same image). An odd width uses the exact ``W // 2 + 1``
frequencies (Lucent kept one more column and cropped).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from luminate.lucent.optvis.transform import global_generator
from luminate.param import FourierImage, PixelImage, RawImage
from luminate.param import rfft2d_freqs as _freqs


def drawn(module: nn.Module) -> nn.Module:
    """``module`` with its initial values drawn from torch's global generator (Lucent's ``torch.randn``)."""
    module.reset_parameters(global_generator())
    return module


def as_pair(raw: RawImage) -> tuple[list[torch.Tensor], RawImage]:
    """Lucent's ``(params, image_f)`` for a module."""
    return list(raw.parameters()), raw


def _nchw(shape: Sequence[int], what: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{what} takes Lucent's shape (batch, channels, height, width), got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def pixel_image(shape: Sequence[int], sd: float | None = None):
    """Raw pixels of ``shape`` ``(B, C, H, W)``, ``N(0, sd)`` with ``sd`` 0.01 by default."""
    b, c, h, w = _nchw(shape, "pixel_image")
    return as_pair(drawn(PixelImage((h, w), batch=b, channels=c, sd=sd or 0.01)))


def fft_image(shape: Sequence[int], sd: float | None = None, decay_power: float = 1):
    """A raw image of ``shape`` ``(B, C, H, W)`` parameterized by its scaled spectrum (initial sd 0.01)."""
    b, c, h, w = _nchw(shape, "fft_image")
    return as_pair(drawn(FourierImage((h, w), batch=b, channels=c, sd=sd or 0.01, decay_power=decay_power)))


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each ``rfft2`` bin, ``[h, w // 2 + 1]``."""
    return _freqs(h, w).numpy()


__all__ = ["fft_image", "pixel_image", "rfft2d_freqs"]
