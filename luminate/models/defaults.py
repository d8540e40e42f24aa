"""The default-layer policy: which layer an analysis uses when none is given (the one place it is decided).

Zoo models declare their layers (``Model.layer_defaults``, set in :mod:`luminate.models.zoo`, as timm's and
torchvision's model metadata do; ``wrap(..., layer_defaults={...})`` declares them for your own network). For any
other network the policy inspects the network itself, one probe forward pass of a random image:

* ``"visualization"``: the repeated block (:func:`block_layers`) 60% of the way through;
* ``"attribution"``: the last spatial layer (the most semantic map that still has positions, as Grad-CAM);
* ``"groups"`` and ``"dictionary"``: a layer whose outputs are non-negative (post-activation: after a ReLU-family
  function), because NMF factorizes only non-negative values: the last such layer computed inside the block
  75% (groups) or 60% (dictionary) of the way through, else the nearest one after it, else before it. Linear
  bottleneck outputs (MobileNetV2, EfficientNet) are signed and never chosen.

Errors name the network's own layers (:func:`nonnegative_layers` lists the candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from luminate.models.base import LayerInfo, Model

#: How far through the repeated blocks each purpose's default layer sits (inspected networks).
LAYER_DEPTH: dict[str, float] = {"visualization": 0.6, "dictionary": 0.6, "attribution": 0.75, "groups": 0.75}
LAYER_PURPOSES = tuple(LAYER_DEPTH)
#: Purposes whose layer must be non-negative (they factorize activations with NMF).
NONNEGATIVE_PURPOSES = ("groups", "dictionary")


@dataclass(frozen=True)
class LayerSign:
    """One layer's output on the probe image: its name, shape (without batch) and value range."""

    name: str
    shape: tuple[int, ...]
    low: float
    high: float

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1

    @property
    def nonnegative(self) -> bool:
        return self.low >= 0 and self.high > 0


def default_layer(model: "Model", purpose: str = "visualization") -> str:
    """The layer ``model`` uses for ``purpose`` (one of :data:`LAYER_PURPOSES`) when none is given: the model's
    declared ``layer_defaults`` entry, else the inspected choice described in this module."""
    if purpose not in LAYER_PURPOSES:
        raise ValueError(f"unknown layer purpose {purpose!r}; one of {', '.join(LAYER_PURPOSES)}")
    declared = getattr(model, "layer_defaults", None) or {}
    if declared.get(purpose):
        return declared[purpose]
    blocks = block_layers(model)
    if not blocks:
        raise ValueError(f"{model.name} has no layer with a spatial [C, H, W] output, so there is no default layer "
                         f"for {purpose}; pass a layer by name (luminate.models.layers(model) lists them)")
    if purpose == "attribution":
        return blocks[-1]
    target = blocks[int(LAYER_DEPTH[purpose] * (len(blocks) - 1))]
    if purpose not in NONNEGATIVE_PURPOSES:
        return target
    return _nonnegative_near(model, target, purpose)


def circuit_layers(model: "Model", n: int = 4) -> list[str]:
    """The ``n`` layers an attribution graph (:mod:`luminate.circuits`) spans when none are given, in forward order.

    The deepest is the model's declared ``layer_defaults["circuit"]``, else the last spatial post-activation layer
    (non-negative outputs, the map the classifier pools: EfficientNet-Lite's ``head``, InceptionV1's ``mixed5b``),
    else the last repeated block. The other ``n - 1`` are the repeated blocks before it at ``1/n, 2/n, ...`` of the
    way through (EfficientNet-Lite0: ``blocks.4``, ``blocks.8``, ``blocks.11``, ``head``).
    """
    if n < 1:
        raise ValueError(f"a circuit needs at least one layer, got n={n}")
    blocks = block_layers(model)
    if not blocks:
        raise ValueError(f"{model.name} has no layer with a spatial [C, H, W] output, so there are no default circuit "
                         "layers; pass layers= by name (luminate.models.layers(model) lists them)")
    declared = (getattr(model, "layer_defaults", None) or {}).get("circuit")
    if declared:
        deepest = declared
    else:
        signs = [s for s in layer_signs(model) if s.spatial]
        deepest = signs[-1].name if signs and signs[-1].nonnegative else blocks[-1]
    order = [s.name for s in layer_signs(model)]
    where = order.index(deepest) if deepest in order else len(order)
    before = [b for b in blocks if b != deepest and not deepest.startswith(b + ".")
              and (b not in order or order.index(b) < where)]
    picks = [before[round((len(before) - 1) * k / n)] for k in range(1, n)] if before else []
    return list(dict.fromkeys(picks + [deepest]))


def _nonnegative_near(model: "Model", target: str, purpose: str) -> str:
    signs = layer_signs(model)
    order = [s.name for s in signs]
    candidates = [s.name for s in signs if s.spatial and s.nonnegative]
    if not candidates:
        signed = ", ".join([s.name for s in signs if s.spatial][:8])
        raise ValueError(f"{purpose} factorizes activations with NMF, which needs non-negative (post-activation) "
                         f"values, and no spatial layer of {model.name} has them on a test image (its spatial "
                         f"layers: {signed}). Pass layer= yourself, or split signs with "
                         f"luminate.analysis.factorization.posneg(acts)")
    inside = [n for n in candidates if n == target or n.startswith(target + ".")]
    if inside:
        return inside[-1]
    where = order.index(target) if target in order else len(order)
    after = [n for n in candidates if order.index(n) > where]
    return after[0] if after else candidates[-1]


def nonnegative_layers(model: "Model") -> list[str]:
    """Spatial layers of ``model`` whose outputs are non-negative (post-activation), in forward order: the layers
    NMF-based analyses (neuron groups, semantic dictionaries) can factorize. A layer computed in place by a later
    activation (``Sequential(conv, bn, ReLU(inplace=True))``) is listed once, by its outermost name."""
    return [s.name for s in layer_signs(model) if s.spatial and s.nonnegative]


def layer_signs(model: "Model") -> list[LayerSign]:
    """Every layer's output range on one seeded random image at the model's size, in the order the layers finish
    (a container after its children). Layers that return the very tensor of a later one (in-place activations)
    appear once, under the name that finished last (the outermost, but never a container of the blocks), with the
    final values. Memoized per weights."""
    key = (model.weights_fingerprint(), tuple(model.size))
    memo = model.__dict__.get("_layer_signs")
    if memo is not None and memo[0] == key:
        return memo[1]
    records: dict[int, tuple[int, str, tuple[int, ...], float, float]] = {}
    alive: list[torch.Tensor] = []   # keeps every output alive during the pass, so ids stay unique
    blocks = block_layers(model)
    # containers of the blocks ("features" around "features.0" ...) would take the name of their last block
    seen: set[str] = {b.rsplit(".", 1)[0] for b in blocks if "." in b}
    step = [0]

    def hook_for(name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or name in seen or not output.is_floating_point():
                return
            seen.add(name)
            alive.append(output)
            step[0] += 1
            values = output.detach()
            records[id(output)] = (step[0], name, tuple(output.shape[1:]), float(values.min()), float(values.max()))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.network.named_modules() if n]
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, model.contract.channels, *model.size, generator=generator).to(model.device)
    try:
        with torch.no_grad(), model.frozen():
            model(image)
    finally:
        for h in handles:
            h.remove()
    signs = [LayerSign(name, shape, low, high) for _, name, shape, low, high in sorted(records.values())]
    model.__dict__["_layer_signs"] = (key, signs)
    return signs


def block_layers(model: "Model") -> list[str]:
    """The network's repeated spatial blocks (``blocks.0`` ... ``blocks.15``): the children of its Sequential /
    ModuleList containers with ``[C, H, W]`` outputs of more than one position, in forward order. Models without
    such containers give their top-level spatial layers, and failing that every spatial layer."""
    spatial = [info for info in top_level_layers(model) if len(info.shape) == 3 and info.shape[1] * info.shape[2] > 1]
    blocks = [info.name for info in spatial if "." in info.name]
    return blocks or [info.name for info in spatial] or [info.name for info in model.layers() if len(info.shape) == 3]


def top_level_layers(model: "Model", size=None) -> list["LayerInfo"]:
    """Layers worth listing first: named children and the blocks of containers (``blocks.0``, ...)."""
    infos = model.layers(size)
    keep = []
    for info in infos:
        depth = info.name.count(".")
        parent = model.network.get_submodule(info.name.rsplit(".", 1)[0]) if depth else model.network
        if depth == 0 or (depth == 1 and isinstance(parent, (nn.Sequential, nn.ModuleList))):
            keep.append(info)
    return keep
