"""InceptionV1 (GoogLeNet, TensorFlow's "inception5h" release) with Lucid's layer names.

This is Lucid's model-zoo ``InceptionV1``, the network behind most published feature visualizations
(Distill's Feature Visualization, Building Blocks, Activation Atlas, Circuits). It takes RGB images in
(-117, 138) (``255 x - 117``), is native at 224 px and has 1008 outputs: class 0 is ``"dummy"``,
classes 1..1000 are ImageNet in the ILSVRC-2012 devkit order (``imagenet_comp_graph_label_strings.txt``
of the inception5h release), and outputs 1001..1007 are unused (labelled ``"unused 1001"`` ...).

Layer names
-----------
Top level, in forward order::

    conv2d0 maxpool0 localresponsenorm0 conv2d1 conv2d2 localresponsenorm1 maxpool1
    mixed3a mixed3b maxpool4 mixed4a mixed4b mixed4c mixed4d mixed4e maxpool10 mixed5a mixed5b
    avgpool0 softmax2

A layer name is the post-ReLU activation, as in Lucid; Lucid's ``X_pre_relu`` is ``X.pre_relu``, and
a branch ``mixedNx_B`` of an Inception block is ``mixedNx.conv_B`` (``pool`` and ``pool_reduce`` keep
their names). :func:`lucid_layer` translates any Lucid name.

=======================================  ============================================  ===============
Lucid                                    Luminate                                      shape at 224 px
=======================================  ============================================  ===============
``conv2d0``, ``conv2d0_pre_relu``        ``conv2d0``, ``conv2d0.pre_relu``             [64, 112, 112]
``mixed4a``, ``mixed4a_pre_relu``        ``mixed4a``, ``mixed4a.pre_relu``             [508, 14, 14]
``mixed4a_3x3_bottleneck_pre_relu``      ``mixed4a.conv_3x3_bottleneck.pre_relu``      [96, 14, 14]
``mixed4a_3x3``                          ``mixed4a.conv_3x3``                          [204, 14, 14]
``mixed4a_pool``                         ``mixed4a.pool``                              [480, 14, 14]
``softmax2_pre_activation``              ``softmax2``                                  [1008]
=======================================  ============================================  ===============

A block's output concatenates its branches in the order 1x1, 3x3, 5x5, pool_reduce (mixed4a: channels
0-191, 192-395, 396-443, 444-507); ``mixedNx.pre_relu`` is the same concatenation before the ReLUs.
``softmax2`` gives the logits, not Lucid's probabilities: objectives want logits (Lucid's recipes use
``softmax2_pre_activation``). Every ReLU is an ``nn.ReLU`` module (``X.relu``, same output as ``X``), so
gradient overrides that look for ReLU modules find all of them.

Numerics follow the TensorFlow graph: convolutions and max-pools pad like TF ``"SAME"`` (computed from
the input size, so any input size works: 64 px and non-square inputs included), local response
normalization uses the graph's ``depth_radius=5, bias=2, alpha=1e-4, beta=0.5`` (lucent's port uses
``size=9, k=1``, a known discrepancy, lucent PR #51), and ``avgpool0`` averages globally (the graph's
7x7 VALID pool at 224 px). Lucid's auxiliary heads (``head0_*``, ``nn0``, ``softmax0``, ``head1_*``,
``nn1``, ``softmax1``) are left out: the published PyTorch conversions carry no weights for them.

Weights
-------
The converted Lucid weights (ProGamerGov's ``inception5h.pth``, the state dict lucent and captum.optim
download) are not redistributed with Luminate. ``inception_v1(weights=True)`` loads
``$LUMINATE_CACHE/inception_v1.pth`` (default ``~/.cache/luminate/inception_v1.pth``, see
:func:`luminate.cache.cache_dir`); put the file there,
or run :func:`download_weights` once on a machine with internet access. Both lucent's key names
(``mixed4a_3x3_pre_relu_conv.weight``) and captum.optim's (``mixed4a.conv_3x3.weight``) are converted;
loading is strict.
"""

from __future__ import annotations

import math
import shutil
import urllib.request
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from luminate.cache import atomic_write, cache_dir
from luminate.models.base import Model
from luminate.models.contract import InputContract
from luminate.models.labels import Labels, _read

WEIGHTS_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
WEIGHTS_FILE = "inception_v1.pth"
NUM_CLASSES = 1008

# Inception blocks: (name, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool_reduce) output channels.
MIXED = (("mixed3a", 64, 96, 128, 16, 32, 32), ("mixed3b", 128, 128, 192, 32, 96, 64),
         ("mixed4a", 192, 96, 204, 16, 48, 64), ("mixed4b", 160, 112, 224, 24, 64, 64),
         ("mixed4c", 128, 128, 256, 24, 64, 64), ("mixed4d", 112, 144, 288, 32, 64, 64),
         ("mixed4e", 256, 160, 320, 32, 128, 128), ("mixed5a", 256, 160, 320, 48, 128, 128),
         ("mixed5b", 384, 192, 384, 48, 128, 128))
# Lucid's branch suffix -> child name in a Mixed block.
BRANCHES = {"1x1": "conv_1x1", "3x3_bottleneck": "conv_3x3_bottleneck", "3x3": "conv_3x3",
            "5x5_bottleneck": "conv_5x5_bottleneck", "5x5": "conv_5x5", "pool": "pool", "pool_reduce": "pool_reduce"}
_MIXED_NAMES = frozenset(m[0] for m in MIXED)
_TOP_LEVEL = ("conv2d0", "maxpool0", "localresponsenorm0", "conv2d1", "conv2d2", "localresponsenorm1", "maxpool1",
              "maxpool4", "maxpool10", "avgpool0", "softmax2", *(m[0] for m in MIXED))


def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow ``"SAME"`` padding ``(left, right, top, bottom)`` for ``x`` ``[N, C, H, W]``: the output
    is ``ceil(size / stride)`` and an odd total puts the extra pixel at the bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class SameConv2d(nn.Conv2d):
    """A biased convolution with TF ``"SAME"`` padding; stride 1 (odd kernels) pads statically."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2 if stride == 1 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = F.pad(x, _same_padding(x, self.kernel_size[0], self.stride[0]))
        return super().forward(x)


class SameMaxPool2d(nn.Module):
    """3x3 max-pool with TF ``"SAME"`` padding (padded cells never win)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return F.max_pool2d(x, 3, 1, padding=1)
        return F.max_pool2d(F.pad(x, _same_padding(x, 3, self.stride), value=float("-inf")), 3, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size=3, stride={self.stride}, padding=SAME"


class LocalResponseNorm(nn.Module):
    """TensorFlow's LRN across channels: ``x_c / (bias + alpha * sum_{|c'-c| <= r} x_c'^2) ** beta``.

    (PyTorch's ``local_response_norm`` divides ``alpha`` by the window size ``2r + 1``; this module
    takes TensorFlow's parameters and converts.)
    """

    def __init__(self, depth_radius: int = 5, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.5):
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 2 * self.depth_radius + 1
        return F.local_response_norm(x, size, alpha=self.alpha * size, beta=self.beta, k=self.bias)

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


class ConvReLU(nn.Module):
    """Convolution then ReLU. The module's output is post-ReLU; ``.pre_relu`` (the convolution) is
    Lucid's ``_pre_relu`` point and ``.relu`` the ReLU module."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.pre_relu = SameConv2d(cin, cout, kernel, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, preactivated: bool = False) -> torch.Tensor:
        """``[N, cin, H, W]`` -> ``[N, cout, H', W']``. ``preactivated=True``: ``x`` is already the
        convolution's output (a Mixed block computes it once for both its pre- and post-ReLU outputs)."""
        return self.relu(x if preactivated else self.pre_relu(x))


class Concat(nn.Module):
    """Concatenates its inputs along channels (a hookable name for a concatenation)."""

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, dim=1)


class GlobalAvgPool(nn.Module):
    """``[N, C, H, W]`` -> ``[N, C]``, the mean over all positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Mixed(nn.Module):
    """An Inception block: 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max-pool -> 1x1 branches, concatenated.

    Output ``[N, c1x1 + c3x3 + c5x5 + cpool, H, W]`` post-ReLU; ``.pre_relu`` is the concatenation of
    the four branches before their ReLUs (Lucid's ``mixedNx_pre_relu``).
    """

    def __init__(self, cin: int, c1x1: int, c3x3_bottleneck: int, c3x3: int, c5x5_bottleneck: int, c5x5: int,
                 pool_reduce: int):
        super().__init__()
        self.conv_1x1 = ConvReLU(cin, c1x1, 1)
        self.conv_3x3_bottleneck = ConvReLU(cin, c3x3_bottleneck, 1)
        self.conv_3x3 = ConvReLU(c3x3_bottleneck, c3x3, 3)
        self.conv_5x5_bottleneck = ConvReLU(cin, c5x5_bottleneck, 1)
        self.conv_5x5 = ConvReLU(c5x5_bottleneck, c5x5, 5)
        self.pool = SameMaxPool2d(1)
        self.pool_reduce = ConvReLU(cin, pool_reduce, 1)
        self.pre_relu = Concat()
        self.out_channels = c1x1 + c3x3 + c5x5 + pool_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.conv_1x1, self.conv_3x3, self.conv_5x5, self.pool_reduce)
        pre = (self.conv_1x1.pre_relu(x),
               self.conv_3x3.pre_relu(self.conv_3x3_bottleneck(x)),
               self.conv_5x5.pre_relu(self.conv_5x5_bottleneck(x)),
               self.pool_reduce.pre_relu(self.pool(x)))
        self.pre_relu(*pre)  # only for hooks on `.pre_relu`: the output concatenates the post-ReLU branches
        return torch.cat([branch(p, preactivated=True) for branch, p in zip(branches, pre)], dim=1)


class InceptionV1(nn.Module):
    """InceptionV1 / inception5h for ``[N, 3, H, W]`` RGB inputs in (-117, 138); returns logits ``[N, 1008]``.

    Layer names and numerics: see the module docstring.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv2d0 = ConvReLU(3, 64, 7, stride=2)
        self.maxpool0 = SameMaxPool2d(2)
        self.localresponsenorm0 = LocalResponseNorm()
        self.conv2d1 = ConvReLU(64, 64, 1)
        self.conv2d2 = ConvReLU(64, 192, 3)
        self.localresponsenorm1 = LocalResponseNorm()
        self.maxpool1 = SameMaxPool2d(2)
        cin = 192
        for name, *channels in MIXED:
            if name == "mixed4a":
                self.maxpool4 = SameMaxPool2d(2)
            elif name == "mixed5a":
                self.maxpool10 = SameMaxPool2d(2)
            block = Mixed(cin, *channels)
            self.add_module(name, block)
            cin = block.out_channels
        self.avgpool0 = GlobalAvgPool()
        self.softmax2 = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.localresponsenorm0(self.maxpool0(self.conv2d0(x)))
        x = self.maxpool1(self.localresponsenorm1(self.conv2d2(self.conv2d1(x))))
        x = self.maxpool4(self.mixed3b(self.mixed3a(x)))
        x = self.maxpool10(self.mixed4e(self.mixed4d(self.mixed4c(self.mixed4b(self.mixed4a(x))))))
        return self.softmax2(self.avgpool0(self.mixed5b(self.mixed5a(x))))


def lucid_layer(name: str) -> str:
    """The Luminate layer for a Lucid InceptionV1 tensor name: ``"mixed4a_pre_relu"`` -> ``"mixed4a.pre_relu"``,
    ``"mixed4b_3x3_bottleneck"`` -> ``"mixed4b.conv_3x3_bottleneck"``, ``"softmax2_pre_activation"`` -> ``"softmax2"``.

    Lucid's ``softmax2`` (probabilities) also maps to ``softmax2``, which here holds the logits.
    """
    base = name[: -len("_pre_relu")] if name.endswith("_pre_relu") else name
    suffix = ".pre_relu" if base != name else ""
    if base in ("softmax2", "softmax2_pre_activation") and not suffix:
        return "softmax2"
    block, _, branch = base.partition("_")
    if block in _MIXED_NAMES and branch in BRANCHES and not (branch == "pool" and suffix):
        return f"{block}.{BRANCHES[branch]}{suffix}"
    if base in _TOP_LEVEL and not branch and (not suffix or base.startswith(("conv2d", "mixed"))):
        return base + suffix
    hint = (" Lucid's auxiliary heads (head0/head1, nn0/nn1, softmax0/softmax1) are not part of this model."
            if block.startswith(("head", "nn", "softmax")) else "")
    raise KeyError(f"{name!r} is not an InceptionV1 layer name of Lucid's.{hint} "
                   "List Luminate's names with luminate.models.layers('inception_v1').")


# Checkpoint key formats. lucent / ProGamerGov: "mixed4a_3x3_pre_relu_conv.weight",
# "softmax2_pre_activation_matmul.bias". captum.optim: "conv1.weight", "mixed4a.conv_3x3_reduce.weight", "fc.bias".
_LUCENT_SUFFIX = "_pre_relu_conv"
_CAPTUM_TOP = {"conv1": "conv2d0.pre_relu", "conv2": "conv2d1.pre_relu", "conv3": "conv2d2.pre_relu", "fc": "softmax2"}
_CAPTUM_BRANCHES = {"conv_1x1": "conv_1x1", "conv_3x3_reduce": "conv_3x3_bottleneck", "conv_3x3": "conv_3x3",
                    "conv_5x5_reduce": "conv_5x5_bottleneck", "conv_5x5": "conv_5x5", "pool_proj": "pool_reduce"}


def _lucent_module(module: str) -> str | None:
    if module == "softmax2_pre_activation_matmul":
        return "softmax2"
    if not module.endswith(_LUCENT_SUFFIX):
        return None
    try:
        return lucid_layer(module[: -len(_LUCENT_SUFFIX)] + "_pre_relu")
    except KeyError:
        return None


def _captum_module(module: str) -> str | None:
    if module in _CAPTUM_TOP:
        return _CAPTUM_TOP[module]
    block, _, branch = module.partition(".")
    if block in _MIXED_NAMES and branch in _CAPTUM_BRANCHES:
        return f"{block}.{_CAPTUM_BRANCHES[branch]}.pre_relu"
    return None


def convert_checkpoint_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lucent/ProGamerGov or captum.optim InceptionV1 state dict to this module's names.

    A state dict already in this module's names is returned as is. Every source key must be a known
    parameter (``KeyError`` otherwise), so nothing in the file is silently dropped.
    """
    keys = list(state_dict)
    if any(k.endswith(_LUCENT_SUFFIX + ".weight") for k in keys):
        rename, source = _lucent_module, "lucent"
    elif "fc.weight" in state_dict:
        rename, source = _captum_module, "captum.optim"
    else:
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        new = rename(module)
        if new is None or param not in ("weight", "bias"):
            raise KeyError(f"unexpected key {key!r} in a {source}-format InceptionV1 state dict")
        out[f"{new}.{param}"] = value
    return out


def weights_path() -> Path:
    """The file ``inception_v1(weights=True)`` loads."""
    return cache_dir() / WEIGHTS_FILE


def _missing_weights_message(path: Path) -> str:
    return (f"InceptionV1 weights not found at {path}. Put the converted Lucid weights (the inception5h.pth "
            f"state dict that lucent and captum.optim use) there: download {WEIGHTS_URL} and save it as {path}, "
            "or run luminate.models.inception.download_weights() on a machine with internet access. "
            "Set $LUMINATE_CACHE to use another folder, pass weights=PATH to load a file elsewhere, or "
            "weights=False for random weights.")


def download_weights(url: str = WEIGHTS_URL, dest: str | Path | None = None, timeout: float = 60.0) -> Path:
    """Download the weights to ``dest`` (default :func:`weights_path`) unless the file is already there.

    The file is written next to ``dest`` and renamed once complete and loadable, so an interrupted
    download never leaves a broken cache entry. Returns the path.
    """
    dest = Path(dest) if dest is not None else weights_path()
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        load_weights(InceptionV1(), part)  # refuse a file that is not an inception5h state dict
        with open(part, "rb") as checked:
            atomic_write(dest, lambda fh: shutil.copyfileobj(checked, fh))
    finally:
        part.unlink(missing_ok=True)
    return dest


def load_weights(network: InceptionV1, path: str | Path) -> InceptionV1:
    """Load a state dict file (this module's, lucent's or captum.optim's key names) into ``network``, strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_weights_message(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError(f"{path} holds a {type(state).__name__}, not a state dict of InceptionV1 parameters")
    try:
        network.load_state_dict(convert_checkpoint_keys(state), strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"{path} does not match InceptionV1 (inception5h): {exc}") from exc
    return network


def inception_v1_labels() -> Labels:
    """The 1008 output labels: ``"dummy"``, the 1000 ImageNet classes in inception5h's order, ``"unused 1001"``..."""
    entries = _read("inception_v1_labels.txt").entries
    return Labels(entries + [f"unused {i}" for i in range(len(entries), NUM_CLASSES)])


def inception_v1(weights: str | Path | bool | None = True) -> Model:
    """InceptionV1 as a :class:`Model`: 224 px, [0, 1] -> (-117, 138), 1008 labels.

    ``weights=True`` loads :func:`weights_path` (``FileNotFoundError`` saying where to put the file when it
    is missing); a path loads that file; ``False``/``None`` leaves random weights.
    """
    network = InceptionV1()
    if weights:
        load_weights(network, weights_path() if weights is True else weights)
    contract = InputContract(size=(224, 224), value_range=(-117, 138))
    return Model(network.eval(), contract, inception_v1_labels(), "inception_v1")


__all__ = ["BRANCHES", "InceptionV1", "Mixed", "WEIGHTS_URL", "cache_dir", "convert_checkpoint_keys",
           "download_weights", "inception_v1", "inception_v1_labels", "lucid_layer", "load_weights", "weights_path"]
