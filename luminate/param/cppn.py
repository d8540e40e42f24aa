"""Compositional pattern-producing network (CPPN) parameterization (Lucid's ``param/cppn.py`` and the ``xy2rgb``
notebook).

The image is a small network of 1x1 convolutions applied to the pixel coordinates: ``(x, y)`` each
``linspace(-sqrt(3), sqrt(3))`` (standard deviation 1), ``layers`` hidden layers of ``hidden_channels`` with the
composite activation ``atan -> [a / 0.67, a**2 / 0.6]`` (channel count doubles), and a zero-initialised output layer,
so the image starts uniform grey (sigmoid(0) = 0.5). Weights are ``N(0, sqrt(1 / fan_in))`` (the notebook's untruncated
variance scaling), biases zero (the notebook's ``slim.conv2d`` default; Lucid's library version draws ``N(0, 0.1)``:
pass ``bias_sd=0.1``). Because the network is a function of continuous coordinates, the same weights render at any
resolution: ``param(size=(800, 800))``. Lucid optimizes it with Adam at lr 0.005 and no transforms.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Index, RawImage, Size, as_index, as_size, check_positive, normal
from .color import ImageParam

SQRT3 = math.sqrt(3.0)


def _composite(x: Tensor) -> Tensor:
    a = torch.atan(x)
    return torch.cat([a / 0.67, a * a / 0.6], dim=1)


def _composite_unbiased(x: Tensor) -> Tensor:
    a = torch.atan(x)
    return torch.cat([a / 0.67, (a * a - 0.45) / 0.396], dim=1)


def _relu_normalized(x: Tensor) -> Tensor:
    return (torch.relu(x) - 0.40) / 0.58


#: name -> (function, channel multiplier). ``composite``: Lucid's default; the coefficients make each half have an
#: RMS near 1 for unit-normal input.
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], int]] = {
    "composite": (_composite, 2),
    "composite_unbiased": (_composite_unbiased, 2),
    "relu_normalized": (_relu_normalized, 1),
}


def coordinates(size: Size) -> Tensor:
    """CPPN input ``[1, 2, H, W]``: channel 0 is ``x`` (varies along W), channel 1 is ``y`` (along H), each
    ``linspace(-sqrt(3), sqrt(3))``."""
    h, w = as_size(size)
    ys = torch.linspace(-SQRT3, SQRT3, h)
    xs = torch.linspace(-SQRT3, SQRT3, w)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y])[None]


class Conv1x1(nn.Module):
    """A 1x1 convolution ``[B, in, H, W] -> [B, out, H, W]`` created with zeros (``nn.Conv2d`` would draw its own
    initial values from the global RNG); :meth:`CPPN.reset_parameters` fills it."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"


class CPPN(RawImage):
    """A CPPN's output logits ``[batch, channels, H, W]`` (pre-sigmoid); every batch item shares the weights.

    ``forward(index=None, size=None)``: ``size`` (int or ``(H, W)``) renders at another resolution. Submodules
    ``hidden`` (``nn.ModuleList`` of :class:`Conv1x1`) and ``output``; buffer ``coords`` for the default size.
    """

    resizable = True

    def __init__(self, size: Size, batch: int = 1, channels: int = 3, hidden_channels: int = 24, layers: int = 8,
                 activation: str = "composite", normalize: bool = False, bias_sd: float = 0.0) -> None:
        super().__init__(batch, channels, size)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown CPPN activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.normalize = bool(normalize)
        self.bias_sd = float(bias_sd)
        hidden_channels = check_positive("hidden_channels", hidden_channels)
        width = hidden_channels * ACTIVATIONS[activation][1]
        ins = [2] + [width] * (check_positive("layers", layers) - 1)
        self.hidden = nn.ModuleList(Conv1x1(i, hidden_channels) for i in ins)
        self.output = Conv1x1(width, self.channels)
        self.register_buffer("coords", coordinates(self.size), persistent=False)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Hidden weights ``N(0, sqrt(1 / fan_in))`` and biases ``N(0, bias_sd)`` (zero by default) from
        ``generator``; the output layer is zero."""
        for conv in self.hidden:
            conv.weight.copy_(normal(generator, conv.weight.shape, math.sqrt(1.0 / conv.in_channels)))
            conv.bias.copy_(normal(generator, conv.bias.shape, self.bias_sd))
        self.output.weight.zero_()
        self.output.bias.zero_()

    def forward(self, index: Index = None, size: Size | None = None) -> Tensor:
        idx = as_index(index, self.batch, self.coords.device)
        if size is None or as_size(size) == self.size:
            x = self.coords
        else:
            x = coordinates(size).to(self.coords)
        act = ACTIVATIONS[self.activation][0]
        for conv in self.hidden:
            x = conv(x)
            if self.normalize:
                x = F.instance_norm(x)
            x = act(x)
        x = self.output(x)
        return x.expand(self.batch if idx is None else idx.numel(), -1, -1, -1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}, normalize={self.normalize}"


def cppn(size: Size, batch: int = 1, channels: int = 3, hidden_channels: int = 24, layers: int = 8,
         activation: str = "composite", normalize: bool = False, bias_sd: float = 0.0) -> ImageParam:
    """Lucid's ``cppn``: ``[batch, channels, H, W]`` = sigmoid of a :class:`CPPN` (no colour decorrelation).

    ``param(size=...)`` re-renders the same weights at another resolution.
    """
    raw = CPPN(size, batch, channels, hidden_channels, layers, activation, normalize, bias_sd)
    return ImageParam(raw, decorrelate=False)
