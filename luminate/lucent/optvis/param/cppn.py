"""Lucent's ``param.cppn``: a compositional pattern-producing network of the pixel coordinates (Luminate's
:class:`~luminate.param.CPPN`: ``num_layers`` 1x1 convolutions, the last one zero, weights ``N(0, sqrt(1 / fan_in))``,
biases zero)."""

from __future__ import annotations

import torch
from torch import nn

from luminate.lucent.optvis.param.spatial import drawn
from luminate.param import CPPN, ImageParam


class CompositeActivation(nn.Module):
    """``atan`` then ``[a / 0.67, a**2 / 0.6]`` (doubles the channels), the CPPN's default activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.atan(x)
        return torch.cat([a / 0.67, a * a / 0.6], 1)


def cppn(size: int, num_output_channels: int = 3, num_hidden_channels: int = 24, num_layers: int = 8,
         activation_fn=CompositeActivation, normalize: bool = False):
    """``(params, image_f)`` with ``image_f()`` ``[1, num_output_channels, size, size]`` in [0, 1] (a sigmoid of the
    last layer). Lucent optimizes it with Adam at lr 0.005 and no transforms."""
    if activation_fn is not CompositeActivation:
        raise NotImplementedError(f"cppn(activation_fn={getattr(activation_fn, '__name__', activation_fn)}): only "
                                  "CompositeActivation is supported; see luminate.param.cppn for Luminate's "
                                  "activations")
    if num_layers < 2:
        raise ValueError(f"num_layers = {num_layers}: a CPPN needs at least 2 layers")
    raw = CPPN(size, 1, num_output_channels, num_hidden_channels, num_layers - 1, "composite", normalize)
    module = drawn(ImageParam(raw, decorrelate=False))
    return list(module.parameters()), module


__all__ = ["CompositeActivation", "cppn"]
