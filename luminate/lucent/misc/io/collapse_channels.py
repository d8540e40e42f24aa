"""Lucent's (Lucid's) ``collapse_channels``: an array with any number of non-negative channels as RGB, each channel a
hue evenly spaced around the colour wheel."""

from __future__ import annotations

import math

import numpy as np

#: The six hues the wheel passes through: red, yellow, green, cyan, blue, magenta (unit vectors).
_WHEEL = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float64)
_WHEEL = _WHEEL / np.linalg.norm(_WHEEL, axis=1, keepdims=True)


def hue_to_rgb(ang: float, warp: bool = True) -> np.ndarray:
    """The unit RGB vector of hue ``ang`` degrees; ``warp`` eases angles away from the primaries so that evenly spaced
    hues look evenly spaced."""
    ang = ang % 360
    sector = 360 / len(_WHEEL)
    n = int(math.floor(ang / sector))
    frac = (ang - n * sector) / sector
    if warp:
        ease = math.sin(frac * math.pi / 2) if n % 2 == 0 else 1 - math.sin((1 - frac) * math.pi / 2)
        frac = ease
    v = (1 - frac) * _WHEEL[n] + frac * _WHEEL[(n + 1) % len(_WHEEL)]
    return v / np.linalg.norm(v)


def sparse_channels_to_rgb(array: np.ndarray) -> np.ndarray:
    """``[..., K]`` non-negative -> ``[..., 3]``: the hue-weighted sum of channels, greyed by how much other channels
    than the strongest fire, with the norm of the input."""
    array = np.asarray(array)
    if (array < 0).any():
        raise ValueError("sparse_channels_to_rgb needs non-negative values; collapse_channels splits signs first")
    k = array.shape[-1]
    colors = np.stack([hue_to_rgb(360 * i / k) for i in range(k)])              # [K, 3]
    rgb = array @ colors
    rgb = rgb + (array.sum(-1) - array.max(-1))[..., None]
    rgb = rgb / (1e-4 + np.linalg.norm(rgb, axis=-1, keepdims=True))
    return rgb * np.linalg.norm(array, axis=-1, keepdims=True)


def collapse_channels(array: np.ndarray) -> np.ndarray:
    """``[..., K]`` -> ``[..., 3]``; negative values get their own hues (the positive and negative parts become
    ``2K`` channels)."""
    array = np.asarray(array)
    if (array < 0).any():
        array = np.concatenate([np.maximum(0, array), np.maximum(0, -array)], axis=-1)
    return sparse_channels_to_rgb(array)


__all__ = ["collapse_channels", "hue_to_rgb", "sparse_channels_to_rgb"]
