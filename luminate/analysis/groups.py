"""Neuron groups (Building Blocks): a layer's activations factorized into a few groups, each with an icon.

Lucid's ``NeuronGroups`` notebook factorizes the activations of one image with NMF into ``n_groups`` groups: each
group has a spatial factor (where it fires, ``[h, w]``) and a channel factor (which neurons, ``[C]``). It renders
one icon per group, ``sum_i direction(layer, channel_factors[i], batch=i)`` on ``param.image(80, batch=G)`` with
``render_vis`` defaults (standard transforms, ReLU redirection), and attributes class logits to each group.
:func:`explain_groups` puts the factorization (:func:`luminate.analysis.factorization.neuron_groups`), the icons
(:func:`group_icons`) and the attribution together in a :class:`NeuronGroupsView`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from luminate import objectives as obj
from luminate import param as P
from luminate.analysis.factorization import NeuronGroups, neuron_groups
from luminate.analysis.perception import image_input
from luminate.images import ImageLike
from luminate.models.base import Model, as_model
from luminate.render import render


@dataclass
class NeuronGroupsView:
    """Neuron groups of one image at one layer.

    Attributes:
        image: ``[1, 3, H, W]`` in [0, 1], the input the model saw (CPU).
        layer: the layer.
        spatial: ``[G, h, w]`` where each group fires (NMF spatial factors).
        directions: ``[G, C]`` each group's channel factor.
        icons: ``[G, 3, S, S]`` a feature visualization of each group's direction.
        attributions: ``[G, n_classes]`` each group's attribution to each class logit.
        classes: the class names (``n_classes`` of them).
        model_name: the model's name.
        class_indices: the class indices behind ``classes``.
        groups: the :class:`~luminate.analysis.factorization.NeuronGroups` factorization behind the view.
    """

    image: torch.Tensor
    layer: str
    spatial: torch.Tensor
    directions: torch.Tensor
    icons: torch.Tensor
    attributions: torch.Tensor
    classes: list[str]
    model_name: str
    class_indices: list[int] | None = None
    groups: NeuronGroups | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"NeuronGroupsView({self.model_name}, {self.layer}, {self.directions.shape[0]} groups, "
                f"classes {self.classes})")


def group_icons(model: Model | str, layer: str, directions: torch.Tensor, size: int = 80, steps: int = 256,
                seed: int = 0, progress: bool = True) -> torch.Tensor:
    """``[G, 3, size, size]``: image ``i`` maximizes ``direction(layer, directions[i])`` (``directions`` ``[G, C]``).

    One batched render (Lucid's NeuronGroups icons): ``param.image(size, batch=G)``, standard transforms, ReLU
    redirection for the first 16 steps, Adam 0.05. Lucid ran 512 steps; 256 is the default here.
    """
    directions = torch.as_tensor(directions, dtype=torch.float32)
    if directions.ndim != 2:
        raise ValueError(f"directions must be [G groups, C channels], got shape {tuple(directions.shape)}")
    objective = obj.directions(layer, directions, cossim_pow=0, all_positions=True)
    result = render(model, objective, P.image(size, batch=directions.shape[0]), steps=steps, seed=seed,
                    progress=progress)
    return result.image


def explain_groups(model: Model | str, image: ImageLike, layer: str, n_groups: int = 6,
                   classes: Sequence[int | str] | int | str | None = None, size: int = 80, steps: int = 256,
                   seed: int = 0, progress: bool = True, top_classes: int = 3) -> NeuronGroupsView:
    """Factorize ``layer``'s activations for ``image`` into ``n_groups`` neuron groups, render an icon for each and
    attribute ``classes`` (default: the image's ``top_classes`` predicted classes) to each group.

    ``image``: a path, PIL image or array (through ``model.preprocess``) or a ``[1, 3, H, W]`` tensor (as is).
    Groups come from :func:`luminate.analysis.factorization.neuron_groups` (NMF, sorted left to right by the column
    of each spatial factor's peak, as in Lucid), so ``layer`` needs non-negative activations (a post-ReLU layer such
    as ``blocks.9.depthwise`` or ``head`` of EfficientNet-Lite, not a linear block output ``blocks.N``).
    """
    model = as_model(model)
    x = image_input(model, image)
    if classes is None:
        with torch.no_grad():
            logits = model(x)
        if logits.ndim != 2:
            raise ValueError(f"{model.name} does not output class logits [N, classes]; explain_groups needs a "
                             "classifier")
        classes = logits[0].topk(min(top_classes, logits.shape[1])).indices.tolist()
    elif isinstance(classes, (int, str)):
        classes = [classes]
    indices = [model.class_index(c) for c in classes]
    groups = neuron_groups(model, x, layer, n_groups=n_groups, classes=indices)
    icons = group_icons(model, layer, groups.channels, size=size, steps=steps, seed=seed, progress=progress)
    return NeuronGroupsView(image=x.detach().cpu(), layer=layer, spatial=groups.spatial, directions=groups.channels,
                            icons=icons, attributions=groups.attribution, classes=list(groups.class_names),
                            model_name=model.name, class_indices=list(groups.classes), groups=groups)
