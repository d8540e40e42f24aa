"""Lucent's ``param.lowres``: ``lowres_tensor``, a small variable bilinearly upsampled (Luminate's
:class:`~luminate.param.LowResTensor`: half-pixel centres in space, aligned corners across the batch; Lucent aligned
corners everywhere)."""

from __future__ import annotations

from typing import Sequence

from luminate.lucent.optvis.param.spatial import _nchw, as_pair, drawn
from luminate.param import LowResTensor


def lowres_tensor(shape: Sequence[int], underlying_shape: Sequence[int], offset=None, sd: float = 0.01):
    """A raw ``shape`` ``(B, C, H, W)`` tensor upsampled from an ``underlying_shape`` variable (``N(0, sd)``)."""
    b, c, h, w = _nchw(shape, "lowres_tensor")
    b0, c0, h0, w0 = _nchw(underlying_shape, "lowres_tensor's underlying_shape")
    if c0 != c:
        raise ValueError(f"lowres_tensor: the underlying shape has {c0} channels and the output {c}; Luminate "
                         "interpolates batch and space only, so give both the same channels")
    if offset is not None:
        raise NotImplementedError("lowres_tensor(offset=...) is not supported (Lucent's reflect-padded shift of the "
                                  "upsampled tensor); leave it out")
    return as_pair(drawn(LowResTensor((h, w), (b0, h0, w0), batch=b, channels=c, sd=sd)))


__all__ = ["lowres_tensor"]
