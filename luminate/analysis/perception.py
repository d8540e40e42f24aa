"""How an image is perceived, layer by layer: activations at every layer with a colour summary of each.

:func:`layer_by_layer` runs one image through the model once and returns, for each spatial layer, its activations
``[C, h, w]`` and a summary image ``[3, h, w]`` in [0, 1]: by default the three leading principal components of the
activation vectors (positions as samples) mapped to red, green and blue, so positions the layer sees alike get alike
colours; ``summary="norm"`` gives the activation norm at each position instead (grey).

:func:`image_input` and :func:`layer_activations` are the shared entry points of the Building Blocks analyses
(semantic dictionary, activation grid, neuron groups): one image in, one layer's ``[C, h, w]`` activations out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from luminate.activations import activations
from luminate.images import ImageLike
from luminate.models.base import Model, as_model


@dataclass
class LayerView:
    """One layer's view of the image.

    Attributes:
        name: the layer.
        activations: ``[C, h, w]`` (CPU).
        summary: ``[3, h, w]`` in [0, 1]: the top-3 principal components as RGB (or the norm map, grey).
        explained: fraction of the activations' variance the three components explain (``nan`` for ``"norm"``).
    """

    name: str
    activations: torch.Tensor
    summary: torch.Tensor
    explained: float = float("nan")


def image_input(model: Model, image: ImageLike) -> torch.Tensor:
    """One image as ``[1, 3, H, W]`` in [0, 1] on the model's device: :meth:`Model.as_batch` with ``single=True``
    (paths, PIL images and arrays through ``model.preprocess``; tensors as they are)."""
    return as_model(model).as_batch(image, single=True)


def layer_activations(model: Model, image: torch.Tensor, layer: str) -> torch.Tensor:
    """Activations ``[C, h, w]`` (CPU) of ``layer`` for one image ``[1, 3, H, W]`` (see :func:`image_input`).

    Raises a clear error for layers without spatial positions (``[C]`` outputs such as logits).
    """
    acts = activations(model, image, layer, grid=True)
    if acts.ndim != 4:
        raise ValueError(f"layer {layer!r} outputs shape {tuple(acts.shape[1:])}, without spatial positions; "
                         "choose a convolutional layer [C, h, w] (see `luminate layers MODEL`)")
    return acts[0]


def default_layers(model: Model, size: tuple[int, int] | None = None) -> list[str]:
    """The layers :func:`layer_by_layer` shows by default: :meth:`Model.default_layers` (stem, each block, head)."""
    return as_model(model).default_layers(size)


def layer_by_layer(model: Model | str, image: ImageLike, layers: Sequence[str] | None = None,
                   summary: str = "pca") -> list[LayerView]:
    """Activations of one image at each of ``layers`` (default :func:`default_layers`), in forward order, each with a
    colour summary (``summary="pca"``: top-3 principal components as RGB; ``"norm"``: activation norm, grey)."""
    if summary not in ("pca", "norm"):
        raise ValueError(f"summary must be 'pca' or 'norm', got {summary!r}")
    model = as_model(model)
    x = image_input(model, image)
    names = list(layers) if layers is not None else default_layers(model, tuple(x.shape[-2:]))
    if not names:
        raise ValueError(f"no layers to show for {model.name}: pass layers=[...] (see `luminate layers MODEL`)")
    acts = activations(model, x, names, stop_early=True, grid=True)
    views = []
    for name in names:
        a = acts[name]
        if a.ndim != 4:
            raise ValueError(f"layer {name!r} outputs shape {tuple(a.shape[1:])}, without spatial positions; "
                             "layer_by_layer shows convolutional layers [C, h, w]")
        a = a[0]
        if summary == "norm":
            views.append(LayerView(name, a, _unit_range(a.norm(dim=0))[None].expand(3, -1, -1).clone()))
        else:
            rgb, explained = pca_rgb(a)
            views.append(LayerView(name, a, rgb, explained))
    return views


def pca_rgb(acts: torch.Tensor, components: int = 3) -> tuple[torch.Tensor, float]:
    """``[C, h, w]`` -> (``[3, h, w]`` in [0, 1], explained variance fraction).

    The positions' activation vectors are centred and projected on their leading principal components (SVD). Each
    component's sign is chosen so that its most extreme value is positive (features show bright), and each channel
    is scaled to [0, 1] between its 1st and 99th percentile. Fewer than 3 components (a layer with 1 or 2 channels,
    or a single position) leave the remaining colour channels at 0.
    """
    c, h, w = acts.shape
    x = acts.reshape(c, h * w).T.double()
    x = x - x.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    k = min(components, s.numel())
    proj = u[:, :k] * s[:k]                                          # [hw, k]
    flip = proj.gather(0, proj.abs().argmax(0, keepdim=True)).sign()
    proj = proj * torch.where(flip == 0, torch.ones_like(flip), flip)
    total = (s ** 2).sum()
    explained = float((s[:k] ** 2).sum() / total) if total > 0 else 0.0
    out = torch.zeros(3, h * w, dtype=torch.float32)
    for i in range(min(k, 3)):
        out[i] = _unit_range(proj[:, i]).float()
    return out.reshape(3, h, w), explained


def _unit_range(v: torch.Tensor, lo_q: float = 0.01, hi_q: float = 0.99) -> torch.Tensor:
    """Scale to [0, 1] between the ``lo_q`` and ``hi_q`` quantiles (all zeros when there is no spread)."""
    flat = v.flatten().double()
    lo, hi = torch.quantile(flat, lo_q), torch.quantile(flat, hi_q)
    if hi - lo <= 1e-12 * max(1.0, float(flat.abs().max())):
        return torch.zeros_like(v, dtype=torch.float32)
    return ((v.double() - lo) / (hi - lo)).clamp(0, 1).to(torch.float32)
