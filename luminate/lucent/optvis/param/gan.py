"""Lucent's ``param.gan``: ``upconvGAN``, Dosovitskiy & Brox's image generators (2016) as a prior.

The architectures are Lucent's (``fc6``, ``fc7``, ``fc8``, ``pool5``). Weights are not downloaded: ``pretrained=True``
loads ``upconvGAN_<name>.pt`` (the file Lucent downloads into torch's checkpoint folder) from ``weights=PATH`` or from
Luminate's cache folder (:func:`luminate.cache.cache_dir`), and says where to put it when it is missing.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from luminate.cache import cache_dir

#: BGR means (of the Caffe networks the generators were trained with), added back by :meth:`upconvGAN.visualize`.
RGB_MEAN = (123.0, 117.0, 104.0)
NAMES = ("fc6", "fc7", "fc8", "pool5")

# (name, in, out, kernel, stride, padding) of the transposed convolutions every generator ends with
_UPCONV = (("deconv5", 256, 256, 4, 2, 1), ("conv5_1", 256, 512, 3, 1, 1), ("deconv4", 512, 256, 4, 2, 1),
           ("conv4_1", 256, 256, 3, 1, 1), ("deconv3", 256, 128, 4, 2, 1), ("conv3_1", 128, 128, 3, 1, 1),
           ("deconv2", 128, 64, 4, 2, 1), ("deconv1", 64, 32, 4, 2, 1), ("deconv0", 32, 3, 4, 2, 1))


class View(nn.Module):
    """Reshape to ``shape``."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*self.shape)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.3, inplace=True)


def _layers(name: str) -> list[tuple[str, nn.Module]]:
    if name == "pool5":
        head = [("Rconv6", nn.Conv2d(256, 512, 3, 1, 1)), ("Rrelu6", _leaky()),
                ("Rconv7", nn.Conv2d(512, 512, 3, 1, 1)), ("Rrelu7", _leaky()),
                ("Rconv8", nn.Conv2d(512, 512, 3, 1)), ("Rrelu8", _leaky())]
        first = [("deconv5", nn.ConvTranspose2d(512, 256, 4, 2, 1))]
    else:
        width = 1000 if name == "fc8" else 4096
        head = [("defc7", nn.Linear(width, 4096)), ("relu_defc7", _leaky()),
                ("defc6", nn.Linear(4096, 4096)), ("relu_defc6", _leaky()),
                ("defc5", nn.Linear(4096, 4096)), ("relu_defc5", _leaky()), ("reshape", View(-1, 256, 4, 4))]
        first = [("deconv5", nn.ConvTranspose2d(256, 256, 4, 2, 1))]
    layers = head + first + [("relu_deconv5", _leaky())]
    for layer, cin, cout, k, s, p in _UPCONV[1:]:
        layers.append((layer, nn.ConvTranspose2d(cin, cout, k, s, p)))
        if layer != "deconv0":
            layers.append(("relu_" + layer, _leaky()))
    return layers


def weights_file(name: str) -> Path:
    """Where ``upconvGAN(name, pretrained=True)`` looks for its weights by default."""
    return cache_dir() / f"upconvGAN_{name}.pt"


class upconvGAN(nn.Module):  # noqa: N801 - Lucent's class name
    """A generator ``code -> [B, 3, H, W]`` (BGR-to-RGB swapped, mean not added): ``name`` is ``"fc6"``, ``"fc7"``,
    ``"fc8"`` (codes of 4096, 4096, 1000 values) or ``"pool5"`` (``[B, 256, 6, 6]`` codes). Weights are frozen."""

    def __init__(self, name: str = "fc6", pretrained: bool = True, weights: str | Path | None = None):
        super().__init__()
        if name not in NAMES:
            raise ValueError(f"upconvGAN name {name!r}: choose one of {', '.join(NAMES)}")
        self.name = name
        self.G = nn.Sequential(OrderedDict(_layers(name)))
        first = self.G[0]
        self.codelen = first.in_channels if name == "pool5" else first.in_features
        if pretrained:
            self.load_weights(weights_file(name) if weights is None else weights)
        self.G.requires_grad_(False)

    def load_weights(self, path: str | Path) -> None:
        """Load a state dict file (Lucent's ``upconvGAN_<name>.pt``; its ``.1.`` key infix is dropped)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"upconvGAN {self.name} weights not found at {path}. Put the file Lucent downloads "
                f"(upconvGAN_{self.name}.pt, Binxu Wang's conversion of Dosovitskiy & Brox's generators) there, "
                "pass weights=PATH, or use pretrained=False for random weights.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.G.load_state_dict({k.replace(".1.", "."): v for k, v in state.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.G(x)[:, [2, 1, 0], :, :]

    def visualize(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The image in [0, scale]: the mean colour added back, clamped to 0..255, divided by 255."""
        raw = self(x)
        mean = torch.tensor(RGB_MEAN, dtype=raw.dtype, device=raw.device).view(1, 3, 1, 1)
        return torch.clamp(raw + mean, 0, 255.0) / 255.0 * scale


__all__ = ["RGB_MEAN", "upconvGAN", "weights_file"]
