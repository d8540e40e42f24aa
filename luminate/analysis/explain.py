"""Explain one photo: the computations behind the Building Blocks pages.

:func:`explain` computes everything one page shows (top classes, spatial and channel attribution, neuron groups, a
semantic dictionary, the layer-by-layer strip) and returns an :class:`Explanation`;
:func:`luminate.views.blocks.explain_view` draws it. :func:`attribution_maps` computes the attribution of classes to
one layer's positions and channels (:class:`AttributionMaps`, drawn by :func:`luminate.views.blocks.attribution_view`)
and :func:`add_channel_icons` renders the icons of the channels such a page shows. Default layers come from
:meth:`Model.default_layer <luminate.models.Model.default_layer>` (see :func:`explain_layers`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from luminate.analysis import attribution as A
from luminate.analysis.attribution import ClassLike
from luminate.analysis.dictionary import semantic_dictionary
from luminate.analysis.groups import explain_groups
from luminate.analysis.perception import image_input, layer_by_layer
from luminate.analysis.sprites import channel_icons
from luminate.images import ImageLike
from luminate.models.base import Model, as_model

#: The purposes :func:`explain` picks a layer for (see :meth:`luminate.models.Model.default_layer`).
EXPLAIN_PURPOSES = ("attribution", "groups", "dictionary")


def explain_layers(model: Model) -> dict[str, str]:
    """Default layers ``{"attribution": ..., "groups": ..., "dictionary": ...}`` of :func:`explain` and the
    single-block commands: :meth:`Model.default_layer <luminate.models.Model.default_layer>` for each purpose
    (EfficientNet-Lite: attribution and dictionary at ``blocks.10``, groups at ``head``; InceptionV1: ``mixed4d``;
    other models: the block 75% of the way through for attribution and groups, 60% for the dictionary)."""
    model = as_model(model)
    return {purpose: model.default_layer(purpose) for purpose in EXPLAIN_PURPOSES}


# ------------------------------------------------------------------------------------------ attribution
@dataclass
class AttributionMaps:
    """Attribution of class logits to the positions and channels of one layer, for one image.

    Attributes:
        image: ``[1, 3, H, W]`` in [0, 1], the input the model saw (CPU).
        layer: the layer.
        classes: class names (``K`` of them); ``class_indices`` their indices.
        spatial: ``[K, h, w]`` attribution per position (summed over channels).
        channel: ``[K, C]`` attribution per channel (summed over positions).
        probabilities: ``[K]`` the model's softmax probability of each class.
        icons: ``{channel: [3, s, s]}`` feature visualizations of the channels shown (may be empty).
        method: the attribution method (a name of :data:`luminate.analysis.attribution.ATTRIBUTION_METHODS`).
    """

    image: torch.Tensor
    layer: str
    classes: list[str]
    class_indices: list[int]
    spatial: torch.Tensor
    channel: torch.Tensor | None
    probabilities: torch.Tensor
    model_name: str
    method: str = "layer_integrated_gradients"
    icons: dict[int, torch.Tensor] = field(default_factory=dict)

    def shown_channels(self, n: int = 3) -> list[int]:
        """Every channel the channel-attribution section of the page shows (top ``n`` positive and negative per
        row of :meth:`channel_rows`)."""
        if self.channel is None:   # pixel-space methods attribute to the image, not to channels
            return []
        return sorted({c for _, values in self.channel_rows() for side in self.extremes(values, n) for c in side})

    def channel_rows(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, channel attribution [C])`` per class, and for the difference of the first two classes' logits
        (as Lucid's AttrChannel)."""
        rows = [(name, self.channel[k]) for k, name in enumerate(self.classes)]
        if len(self.classes) >= 2:
            rows.append((f"{self.classes[0]} \u2212 {self.classes[1]}", self.channel[0] - self.channel[1]))
        return rows

    @staticmethod
    def extremes(values: torch.Tensor, n: int) -> tuple[list[int], list[int]]:
        """The ``n`` most positive channels of ``values`` ``[C]`` (those above 0, largest first) and the ``n`` most
        negative (below 0, most negative first)."""
        order = values.argsort(descending=True).tolist()
        return [c for c in order[:n] if values[c] > 0], [c for c in reversed(order[-n:]) if values[c] < 0]

    def __repr__(self) -> str:
        h, w = self.spatial.shape[1:]
        return f"AttributionMaps({self.model_name}, {self.layer}, {h}x{w}, classes {self.classes}, {self.method})"


def attribution_maps(model: Model | str, image: ImageLike, layer: str,
                     classes: Sequence[ClassLike] | ClassLike | None = None, *, top: int = 3,
                     n_steps: int = A.N_STEPS, method: str = "layer_integrated_gradients") -> AttributionMaps:
    """Spatial ``[K, h, w]`` and channel ``[K, C]`` attribution of ``classes`` for one image, by ``method`` (a name of
    :data:`luminate.analysis.attribution.ATTRIBUTION_METHODS`; :func:`luminate.analysis.attribution.class_maps`).

    Layer methods map ``layer``; pixel methods map the image (8 x 8-pixel cells, no channel attribution).
    ``n_steps`` is the path length (or sample count) of the methods that have one.

    The default, ``"layer_integrated_gradients"``, integrates gradients in the layer's activation space from zero
    activation (``n_steps`` left Riemann steps), so each class's attributions sum to about ``logit(image) -
    logit(zero activation)``. **Differs from Lucid's AttrSpatial**, which used the linear approximation ``acts *
    grad`` (``"layer_gradient_x_activation"``): at EfficientNet's residual block outputs (signed activations) the
    linear sum over channels comes out *negative* on the object (measured on flower.jpg, ``daisy``, ``blocks.10``:
    mean -0.025 on the flower vs +0.001 elsewhere; ``blocks.12``: -0.05 vs -0.02), while the integrated map is
    positive and concentrated on it (``blocks.10``: 0.06 vs 0.019; ``blocks.12``: 0.26 vs 0.08). For layers that
    feed the logits linearly (``head`` of EfficientNet, after the last ReLU6) both methods agree.

    ``image``: a path / PIL image / array (through ``model.preprocess``) or a ``[1, 3, H, W]`` tensor (as is).
    ``classes``: names or indices; ``None``: the ``top`` predicted classes.
    """
    model = as_model(model)
    method = A.check_method(method)
    x = model.as_batch(image, single=True)
    indices = A.resolve_classes(model, classes, x, top)
    spatial, channel = A.class_maps(model, x, indices, method, layer, n_steps=n_steps)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0, indices].cpu()
    return AttributionMaps(image=x.detach().cpu(), layer=layer if method in A.LAYER_METHODS else "input",
                           classes=[model.class_name(i) for i in indices], class_indices=indices,
                           spatial=spatial, channel=channel, probabilities=probs, model_name=model.name,
                           method=method)


def method_label(method: str, n_steps: int) -> str:
    """How a page names an attribution method (the two layer methods of Lucid's pages in words)."""
    return {"layer_integrated_gradients": f"integrated gradients, {n_steps} steps",
            "layer_gradient_x_activation": "activation x gradient"}.get(method, method)


def add_channel_icons(model: Model, maps: AttributionMaps, n: int, size: int, steps: int,
                      cache_dir: str | os.PathLike | None, progress: bool) -> AttributionMaps:
    """Render (or read from the render cache) icons for every channel the channel-attribution section shows
    (:meth:`AttributionMaps.shown_channels`); they are added to ``maps.icons``."""
    missing = [c for c in maps.shown_channels(n) if c not in maps.icons]
    if missing:
        maps.icons.update(channel_icons(model, maps.layer, missing, size=size, steps=steps, cache_dir=cache_dir,
                                        progress=progress))
    return maps


# --------------------------------------------------------------------------------------------- explain
@dataclass
class Explanation:
    """Everything :func:`explain` computed for one photo (CPU tensors); :func:`luminate.views.blocks.explain_view`
    draws the page."""

    image: torch.Tensor
    model_name: str
    predictions: list[tuple[str, float]]
    attribution: AttributionMaps
    groups: Any
    dictionary: Any
    layers: list
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExplainSettings:
    """What an explain page depends on besides the model, the photo and the layers (one value, passed whole).

    Attributes:
        method: the attribution method of the attribution section (a name of
            :data:`luminate.analysis.attribution.ATTRIBUTION_METHODS`; default: layer integrated gradients from zero
            activation, see :func:`attribution_maps`).
        attribution_steps: its path length or sample count.
        n_classes: the classes explained when none are given (the top predictions).
        top: the predicted classes listed.
        n_channels: the top positive and negative channels shown with icons per class.
        n_groups: neuron groups; k: semantic-dictionary channels per position.
        icon_size, icon_steps: channel icons (pixels, optimization steps); group_steps: the group icons' steps
            (``None``: ``icon_steps``).
        seed: seeds the neuron groups' factorization and icons.
    """

    method: str = "layer_integrated_gradients"
    attribution_steps: int = A.N_STEPS
    n_classes: int = 3
    top: int = 5
    n_channels: int = 3
    n_groups: int = 6
    k: int = 4
    icon_size: int = 64
    icon_steps: int = 128
    group_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", A.check_method(self.method))


def explain(model: Model | str, image: ImageLike, layer: str | None = None,
            classes: Sequence[ClassLike] | ClassLike | None = None, settings: ExplainSettings | None = None, *,
            groups_layer: str | None = None, dictionary_layer: str | None = None,
            cache_dir: str | os.PathLike | None = None, progress: bool = True,
            log: Callable[[str], None] | None = None) -> Explanation:
    """Explain one photo: everything the Building Blocks show, computed for one page
    (:func:`luminate.views.blocks.explain_view` draws it; ``luminate explain`` does both). ``settings``
    (:class:`ExplainSettings`, default ``ExplainSettings()``) holds the numbers below.

    * the ``top`` (5) predicted classes;
    * where each of ``classes`` (default: the ``n_classes`` top predictions) comes from: spatial attribution at
      ``layer`` overlaid on the photo (:func:`attribution_maps` with ``method`` and ``attribution_steps``), and
      channel attribution with the top ``n_channels`` positive and negative channels as icons;
    * which neuron groups carry them: :func:`luminate.analysis.groups.explain_groups` at ``groups_layer`` with
      ``n_groups`` groups, ``icon_size`` px icons and ``group_steps`` steps (default ``icon_steps``);
    * a semantic dictionary of ``dictionary_layer`` (top ``k`` channels per position);
    * the layer-by-layer strip (:func:`luminate.analysis.perception.layer_by_layer`).

    Layers default to :func:`explain_layers` (EfficientNet-Lite: attribution and dictionary at ``blocks.10``,
    groups at ``head``, whose activations are non-negative as NMF needs; InceptionV1: ``mixed4d``). When ``layer``
    is given, the dictionary defaults to it too. The dictionary's and the channel attribution's icons come from
    the render cache (``cache_dir``, see :func:`luminate.analysis.sprites.channel_icons`): with both on one layer,
    channels are rendered once, and a later run renders only channels no earlier run needed.

    Cost: the channel icons dominate (about 90 for a 14x14 dictionary with ``k=4``, rendered 32 per batch for
    ``icon_steps`` steps); the group icons add one batch of ``n_groups``. Measured for EfficientNet-Lite0 and
    flower.jpg on 2 CPU cores (torch 2 threads, idle machine, empty render cache): 81 s wall with the defaults
    (dictionary 66 s, groups 10 s, attribution 2 s); ``icon_steps=256`` roughly doubles the icon time.
    """
    s = settings or ExplainSettings()
    say = log or (lambda message: None)
    model = as_model(model)
    defaults = explain_layers(model)
    dictionary_layer = dictionary_layer or layer or defaults["dictionary"]
    layer = layer or defaults["attribution"]
    groups_layer = groups_layer or defaults["groups"]
    for name in (layer, groups_layer, dictionary_layer):
        model.layer_info(name)  # unknown names fail here, with the closest names, before any work
    x = image_input(model, image)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise ValueError(f"{model.name} does not output class logits [N, classes]; explain needs a classifier")
    probs = logits.softmax(-1)[0].cpu()
    values, indices = probs.topk(min(s.top, probs.numel()))
    predictions = [(model.class_name(i), float(p)) for i, p in zip(indices.tolist(), values.tolist())]
    wanted = A.resolve_classes(model, classes, x, s.n_classes)
    say(f"top classes: {', '.join(f'{n} {p:.2f}' for n, p in predictions)}")

    say(f"attribution at {layer} for {', '.join(model.class_name(i) for i in wanted)}")
    maps = attribution_maps(model, x, layer, wanted, n_steps=s.attribution_steps, method=s.method)
    lap("attribution")
    say(f"semantic dictionary of {dictionary_layer}")
    dictionary = semantic_dictionary(model, x, dictionary_layer, k=s.k, icon_size=s.icon_size,
                                     icon_steps=s.icon_steps, cache_dir=cache_dir, progress=progress)
    if dictionary_layer == layer:
        maps.icons.update(dictionary.icons)
    lap("dictionary")
    say("channel icons for attribution")
    add_channel_icons(model, maps, s.n_channels, s.icon_size, s.icon_steps, cache_dir, progress)
    lap("channel icons")
    say(f"neuron groups at {groups_layer}")
    groups = explain_groups(model, x, groups_layer, n_groups=s.n_groups, classes=wanted, size=s.icon_size,
                            steps=s.group_steps or s.icon_steps, seed=s.seed, progress=progress)
    lap("groups")
    layers = layer_by_layer(model, x)
    lap("layers")
    shown = {"attribution": f"{maps.layer} ({method_label(maps.method, s.attribution_steps)})",
             "groups": f"{s.n_groups} at {groups_layer}", "dictionary": f"top {s.k} at {dictionary_layer}",
             "icons": f"{s.icon_size} px, {s.icon_steps} steps", "seed": s.seed}
    return Explanation(image=x.detach().cpu(), model_name=model.name, predictions=predictions, attribution=maps,
                       groups=groups, dictionary=dictionary, layers=layers, settings=shown, seconds=seconds)


__all__ = ["AttributionMaps", "ExplainSettings", "Explanation", "add_channel_icons", "attribution_maps", "explain",
           "explain_layers", "method_label"]
