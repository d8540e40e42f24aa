"""Semantic dictionary (Building Blocks): at each position of a layer, the channels that fire most, with their icons.

Lucid's ``SemanticDictionary`` notebook keeps, for every spatial position of ``mixed4d``, the top 4 channels by
activation and shows each as a sprite from a precomputed spritemap. Here the icons come from the local sprite cache
(:func:`luminate.analysis.sprites.channel_icons`), which renders only the channels that are missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from luminate.analysis.perception import image_input, layer_activations
from luminate.analysis.sprites import channel_icons
from luminate.images import ImageLike
from luminate.models.base import Model, as_model


@dataclass
class SemanticDictionary:
    """A layer's top channels at every position of one image.

    Attributes:
        image: ``[1, 3, H, W]`` in [0, 1], the input the model saw (CPU).
        layer: the layer.
        activations: ``[C, h, w]``.
        top_channels: ``[h, w, k]`` int64, channels by descending activation at each position.
        top_values: ``[h, w, k]`` their activations.
        icons: ``{channel: [3, s, s]}`` feature visualizations of every channel in ``top_channels``.
        model_name: the model's name.
    """

    image: torch.Tensor
    layer: str
    activations: torch.Tensor
    top_channels: torch.Tensor
    top_values: torch.Tensor
    icons: dict[int, torch.Tensor]
    model_name: str

    @property
    def strongest_position(self) -> tuple[int, int]:
        """``(row, column)`` of the largest activation (Lucid's initial cursor)."""
        w = self.top_values.shape[1]
        return divmod(int(self.top_values[..., 0].argmax()), w)

    def __repr__(self) -> str:
        h, w, k = self.top_channels.shape
        return (f"SemanticDictionary({self.model_name}, {self.layer}, {h}x{w} positions, top {k}, "
                f"{len(self.icons)} icons)")


def top_channels(acts: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, h, w]`` -> (channels ``[h, w, k]`` int64, values ``[h, w, k]``), by descending activation."""
    if acts.ndim != 3:
        raise ValueError(f"expected activations [C, h, w], got shape {tuple(acts.shape)}")
    if not 1 <= k <= acts.shape[0]:
        raise ValueError(f"k must be between 1 and the layer's {acts.shape[0]} channels, got {k}")
    top = acts.permute(1, 2, 0).topk(k, dim=-1)
    return top.indices, top.values


def semantic_dictionary(model: Model | str, image: ImageLike, layer: str, k: int = 4, icon_size: int = 64,
                        icon_steps: int = 256, cache_dir: str | os.PathLike | None = None,
                        progress: bool = True) -> SemanticDictionary:
    """The top ``k`` channels (Lucid: 4) of ``layer`` at each position of ``image``, with an icon for each.

    ``image``: a path, PIL image or array (through ``model.preprocess``) or a ``[1, 3, H, W]`` tensor in [0, 1]
    (used as is). Icons: :func:`~luminate.analysis.sprites.channel_icons` (``icon_size`` px, ``icon_steps`` steps,
    cached under ``cache_dir``).
    """
    model = as_model(model)
    x = image_input(model, image)
    acts = layer_activations(model, x, layer)
    channels, values = top_channels(acts, k)
    wanted = sorted(set(channels.flatten().tolist()))
    icons = channel_icons(model, layer, wanted, size=icon_size, steps=icon_steps, cache_dir=cache_dir,
                          progress=progress)
    return SemanticDictionary(image=x.detach().cpu(), layer=layer, activations=acts, top_channels=channels,
                              top_values=values, icons=icons, model_name=model.name)
