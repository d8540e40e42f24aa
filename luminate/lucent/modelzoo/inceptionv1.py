"""Lucent's ``modelzoo.inceptionv1``: Luminate's InceptionV1 (:mod:`luminate.models.inception`) answering to
Lucent's layer names.

The network takes inputs in (-117, 138) (``render_vis(preprocess=True)`` converts [0, 1] images) and returns the
probabilities ``softmax2``. Lucent's names and what they are:

=========================================  ==========================================================
Lucent                                     Luminate module
=========================================  ==========================================================
``conv2d0``, ``conv2d0_pre_relu_conv``     ``conv2d0``, ``conv2d0.pre_relu``
``mixed4a`` (post-ReLU, 508 channels)      ``mixed4a``
``mixed4a_3x3``, ``_3x3_pre_relu_conv``    ``mixed4a.conv_3x3``, ``mixed4a.conv_3x3.pre_relu``
``mixed4a_pool``, ``mixed4a_pool_reduce``  ``mixed4a.pool``, ``mixed4a.pool_reduce``
``maxpool0`` ... ``maxpool10``             the same
``softmax2_pre_activation_matmul``         ``softmax2`` (the logits)
``softmax2``                               ``probabilities`` (the softmax)
=========================================  ==========================================================

Lucid's names (``mixed4a_pre_relu``) are accepted too. Deliberate differences: local response normalization uses
the TensorFlow graph's constants (Lucent's port used ``size=9, k=1``), and the final average pool is global, so
every input size runs to the end.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from luminate.models.inception import MIXED, InceptionV1 as _Network
from luminate.models.inception import convert_checkpoint_keys, load_weights, lucid_layer, weights_path

#: Lucent's branch names inside a mixed block, in Lucent's order, and Luminate's child for each.
_BRANCHES = (("1x1", "conv_1x1"), ("3x3_bottleneck", "conv_3x3_bottleneck"),
             ("5x5_bottleneck", "conv_5x5_bottleneck"), ("pool_reduce", "pool_reduce"), ("3x3", "conv_3x3"),
             ("5x5", "conv_5x5"))


def _lucent_names() -> "OrderedDict[str, str]":
    """Lucent's layer names, in Lucent's order (its convolutions, then its activations), -> module paths."""
    convs = OrderedDict((f"conv2d{i}_pre_relu_conv", f"conv2d{i}.pre_relu") for i in range(3))
    acts = OrderedDict([("conv2d0", "conv2d0"), ("maxpool0", "maxpool0"), ("conv2d1", "conv2d1"),
                        ("conv2d2", "conv2d2"), ("maxpool1", "maxpool1")])
    for block, *_ in MIXED:
        for lucent, child in _BRANCHES:
            convs[f"{block}_{lucent}_pre_relu_conv"] = f"{block}.{child}.pre_relu"
        if block in ("mixed4a", "mixed5a"):
            pool = "maxpool4" if block == "mixed4a" else "maxpool10"
            acts[pool] = pool
        acts[f"{block}_pool"] = f"{block}.pool"
        for lucent, child in _BRANCHES:
            acts[f"{block}_{lucent}"] = f"{block}.{child}"
        acts[block] = block
    convs["softmax2_pre_activation_matmul"] = "softmax2"
    acts["softmax2"] = "probabilities"
    return OrderedDict(list(convs.items()) + list(acts.items()))


LUCENT_LAYERS: Mapping[str, str] = _lucent_names()


class InceptionV1(_Network):
    """InceptionV1 for inputs in (-117, 138), returning ``softmax2`` probabilities ``[N, 1008]``; layers by Lucent's
    names (:data:`LUCENT_LAYERS`). ``redirected_ReLU``: render with ReLU gradients redirected (Lucid's rule, for the
    first 16 steps of a render)."""

    def __init__(self, pretrained: bool = False, progress: bool = True, redirected_ReLU: bool = True,
                 weights: str | Path | None = None):
        super().__init__()
        self.probabilities = nn.Softmax(dim=1)
        self.redirected_relu = bool(redirected_ReLU)
        if pretrained:
            load_weights(self, weights_path() if weights is None else weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(super().forward(x))

    def lucent_layers(self) -> Mapping[str, str]:
        """Lucent's layer names -> module paths."""
        return LUCENT_LAYERS

    def lucent_layer(self, name: str) -> str | None:
        """The module path of a Lucent (or Lucid) layer name, None when it is neither."""
        if name in LUCENT_LAYERS:
            return LUCENT_LAYERS[name]
        try:
            return lucid_layer(name)
        except KeyError:
            return None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Lucent's checkpoint (``inception5h.pth``, Lucent's key names) or Luminate's."""
        return super().load_state_dict(convert_checkpoint_keys(state_dict), strict=strict, assign=assign)


def inceptionv1(pretrained: bool = False, progress: bool = True, redirected_ReLU: bool = True,
                weights: str | Path | None = None) -> InceptionV1:
    """Lucent's ``inceptionv1``. ``pretrained=True`` loads the converted Lucid weights Lucent downloads
    (``inception5h.pth``) from ``weights=PATH`` or Luminate's cache (:func:`luminate.models.inception.weights_path`);
    a missing file raises ``FileNotFoundError`` saying where to put it. Call ``.eval()`` as in Lucent."""
    return InceptionV1(pretrained, progress, redirected_ReLU, weights)


__all__ = ["InceptionV1", "LUCENT_LAYERS", "inceptionv1"]
