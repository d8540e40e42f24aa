"""Lucent's ``param.color``: Lucid's colour decorrelation and ``to_valid_rgb`` (Luminate's :mod:`luminate.param.color`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from luminate.param import COLOR_CORRELATION_SVD_SQRT, COLOR_MEAN, ImageParam, RawImage
from luminate.param import to_valid_rgb as _to_valid_rgb

color_correlation_svd_sqrt = np.asarray(COLOR_CORRELATION_SVD_SQRT, dtype=np.float32)
max_norm_svd_sqrt = np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0))
color_correlation_normalized = color_correlation_svd_sqrt / max_norm_svd_sqrt
color_mean = list(COLOR_MEAN)


def to_valid_rgb(image_f: Callable[[], torch.Tensor], decorrelate: bool = False):
    """``image_f`` squashed into [0, 1] (decorrelated colour first when asked) by a sigmoid.

    A raw Luminate image (``fft_image``, ``lowres_tensor``, their sums) becomes a
    :class:`~luminate.param.ImageParam` module keeping its current values; any other function of no arguments
    becomes a function.
    """
    if isinstance(image_f, RawImage):
        state = {k: v.clone() for k, v in image_f.state_dict().items()}
        valid = ImageParam(image_f, decorrelate=decorrelate)
        image_f.load_state_dict(state)        # keep the values drawn from torch's generator
        return valid
    if not callable(image_f):
        raise TypeError(f"to_valid_rgb takes the image function of a parameterization, got {type(image_f).__name__}")
    return lambda: _to_valid_rgb(image_f(), decorrelate, True)


__all__ = ["color_correlation_normalized", "color_correlation_svd_sqrt", "color_mean", "max_norm_svd_sqrt",
           "to_valid_rgb"]
