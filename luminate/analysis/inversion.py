"""Caricatures (feature inversion) and style transfer: images optimized to match a photo's activations.

**Caricature** (Lucid's ``recipes/caricature.py`` and the ``feature_inversion_caricatures`` notebook): starting
from noise, optimize an image whose activations at a layer have the largest dot product with the photo's
(:func:`dot_compare`), with a little blur each step. What comes out is what the layer keeps of the photo,
exaggerated: early layers keep edges and colours in place, late layers keep the objects' parts but not where they
were. Several layers are optimized in one batch, one image per layer, and shown side by side. The photo rides in
the same batch as item 0, so every random transform moves it together with the images that copy it.

**Style transfer** (Lucid's ``style_transfer_2d`` notebook): the batch is ``[image, content photo, style photo]``;
the image matches the content photo's activations at one layer (mean absolute difference) and the style photo's
Gram matrices (channel correlations, normalized by the number of positions) at several layers, in the Fourier,
colour-decorrelated parameterization with the standard transforms. Objective:
``-(content_weight * content + style)``; Lucid's notebook used a content weight of 100 (on InceptionV1), the default
here is 10 (see :func:`style_transfer`).

Deliberate difference from Lucid: with ``cossim_pow > 0``, :func:`dot_compare` weights the dot product by the true
cosine similarity (both norms), clamped below at 0.1; Lucid divided by one norm only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from luminate import images as imageio
from luminate import objectives as obj
from luminate import param as P
from luminate import transforms as T
from luminate.activations import activations
from luminate.models.base import Model, as_model, block_layers
from luminate.param.base import Parameterization
from luminate.render import RenderResult, render

__all__ = ["caricature", "style_transfer", "dot_compare", "gram", "activation_match", "default_style_layers",
           "Caricature", "StyleTransfer", "StackedParam", "caricature_transforms"]


def caricature_transforms() -> list:
    """The ``feature_inversion_caricatures`` notebook's transforms: pad 8 (constant 0.5), jitter 8, scale
    {0.9, 0.95, 1.05, 1.1} or 1 (half the time), rotate -5..4 degrees or 0 (a third of the time), jitter 2."""
    return [T.pad(8, mode="constant", value=0.5), T.jitter(8), T.random_scale([0.9, 0.95, 1.05, 1.1] + [1] * 4),
            T.random_rotate(list(range(-5, 5)) + [0] * 5), T.jitter(2)]


class StackedParam(Parameterization):
    """Fixed images first, then a parameterization's images: ``[K + B, C, H, W]``. The fixed images (photos to
    compare with) go through the same transforms as the optimized ones but are never changed."""

    def __init__(self, param: Parameterization, fixed: Tensor):
        if tuple(fixed.shape[1:]) != (param.channels, *param.size):
            raise ValueError(f"fixed images of shape {tuple(fixed.shape)} do not match the parameterization's "
                             f"{param.channels}x{param.size[0]}x{param.size[1]}")
        super().__init__(param.batch + fixed.shape[0], param.channels, param.size)
        self.param = param
        self.register_buffer("fixed", fixed.detach().clone())

    def forward(self, index=None) -> Tensor:
        out = torch.cat([self.fixed, self.param()])
        return out if index is None else out[index]


def dot_compare(layer: str, batch: int = 1, reference: int = 0, cossim_pow: float = 0.0) -> obj.Objective:
    """Lucid's caricature objective: the dot product of item ``batch``'s activations at ``layer`` with item
    ``reference``'s (the photo's), times ``max(0.1, cosine)^cossim_pow``. Returns ``[B]`` with the value at
    ``batch``."""
    def fn(acts) -> Tensor:
        a = acts[layer]
        ref = a[reference].detach()
        dot = (a[batch] * ref).sum()
        value = dot
        if cossim_pow:
            cos = dot / (a[batch].norm() * ref.norm() + 1e-6)
            value = dot * cos.clamp_min(0.1) ** cossim_pow
        out = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
        return out.index_put((torch.tensor([batch], device=a.device),), value.reshape(1))
    name = f"dot_compare({layer}, batch={batch}" + (f", cossim_pow={cossim_pow:g}" if cossim_pow else "") + ")"
    return obj.Objective(fn, [layer], name)


def activation_match(model: Model, images: Tensor, photo: Tensor, layer: str) -> Tensor:
    """``[N]`` cosine similarity between each image's activations at ``layer`` and the photo's (images and photo
    ``[N, 3, H, W]`` / ``[1, 3, H, W]`` at the same size): how well a caricature matches its photo."""
    model = as_model(model)
    a = activations(model, images, layer).flatten(1)
    b = activations(model, photo, layer).flatten(1)
    return torch.nn.functional.cosine_similarity(a, b.expand_as(a), dim=1)


def _photo(model: Model, image, size: int | None) -> Tensor:
    """The photo as the model sees it (evaluation crop and size), or resized so that its longer side is ``size``."""
    if size is None:
        return model.as_batch(image, single=True).cpu()
    x = imageio.load_image(image)
    h, w = x.shape[-2:]
    k = size / max(h, w)
    return imageio.resize(x, (max(8, round(h * k)), max(8, round(w * k))))


@dataclass
class Caricature:
    """Caricatures of one photo: ``photo`` ``[1, 3, H, W]``, ``images`` ``[L, 3, H, W]`` (one per layer),
    ``layers``, ``match`` ``[L]`` (cosine similarity of each image's activations to the photo's at its layer) and
    ``start_match`` (the same for the noise each started from), and the render ``result``."""

    photo: Tensor
    images: Tensor
    layers: list[str]
    match: Tensor
    start_match: Tensor
    result: RenderResult

    def sheet(self) -> Tensor:
        """``[1, 3, H', W']``: the photo, then each caricature, side by side."""
        return imageio.make_grid(torch.cat([self.photo, self.images]), ncol=len(self.layers) + 1)[None]

    def save(self, path: str | Path) -> Path:
        """One layer: its caricature; several: the sheet with the photo first."""
        return imageio.save_image(self.images if len(self.layers) == 1 else self.sheet(), path)

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.sheet())

    def __repr__(self) -> str:
        pairs = ", ".join(f"{layer}: {s:.2f} (from {s0:.2f})"
                          for layer, s, s0 in zip(self.layers, self.match.tolist(), self.start_match.tolist()))
        return f"Caricature(match {pairs})"


def caricature(model: Model | str, photo, layers: str | Sequence[str], steps: int = 512,
               cossim_pow: float = 0.0, blur_weight: float = 1.0, size: int | None = None, seed: int | None = 0,
               progress: bool = True, lr: float = 0.05) -> Caricature:
    """What ``layers`` keep of ``photo``: one image per layer, optimized from noise to maximize
    :func:`dot_compare` with the photo at that layer, minus ``blur_weight`` times
    :func:`~luminate.objectives.blur_input_each_step` (Lucid: 512 steps, ``cossim_pow`` 0, weight 1).

    The photo is taken at the model's input size (its evaluation crop), or resized so its longer side is ``size``.
    ``steps``, ``lr``, ``seed``, ``progress``: as in :func:`~luminate.render.render`.
    """
    model = as_model(model)
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("give at least one layer, e.g. 'blocks.9'")
    target = _photo(model, photo, size)
    h, w = target.shape[-2:]
    param = StackedParam(P.image(w, h, batch=len(layers)), target)
    objective = obj.Objective.sum([dot_compare(layer, batch=k + 1, cossim_pow=cossim_pow)
                                   for k, layer in enumerate(layers)])
    if blur_weight:
        objective = objective - blur_weight * obj.blur_input_each_step()
    result = render(model, objective, param, transforms=caricature_transforms(), steps=steps, thresholds=(0, steps),
                    lr=lr, seed=seed, progress=progress)
    start, final = result.images[0][1:], result.image[1:]
    match = torch.stack([activation_match(model, final[k:k + 1], target, layer)[0] for k, layer in enumerate(layers)])
    start_match = torch.stack([activation_match(model, start[k:k + 1], target, layer)[0]
                               for k, layer in enumerate(layers)])
    return Caricature(target, final, layers, match, start_match, result)


def gram(a: Tensor) -> Tensor:
    """Gram matrices ``[B, C, C]`` of activations ``[B, C, H, W]``: channel correlations summed over positions
    and divided by the number of positions (Lucid's ``gram_style``)."""
    flat = a.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def default_style_layers(model: Model) -> tuple[list[str], str]:
    """``(style layers, content layer)`` for a model by its repeated blocks: five style layers from early to the
    middle (as Lucid's conv2d2 .. mixed4c on InceptionV1) and a content layer a third of the way in."""
    blocks = block_layers(model)
    if not blocks:
        raise ValueError(f"{model.name} has no repeated blocks to choose style layers from; pass style_layers= "
                         "and content_layer= (`luminate layers MODEL` lists the names)")
    n = len(blocks) - 1
    style = list(dict.fromkeys(blocks[round(f * n)] for f in (0.05, 0.2, 0.35, 0.5, 0.65)))
    return style, blocks[round(0.35 * n)]


@dataclass
class StyleTransfer:
    """``image`` ``[1, 3, H, W]`` in the style of ``style`` with the content of ``content``; the ``result`` of the
    render and the layers used."""

    image: Tensor
    content: Tensor
    style: Tensor
    style_layers: list[str]
    content_layer: str
    result: RenderResult

    def sheet(self) -> Tensor:
        """Content, style and result side by side."""
        return imageio.make_grid(torch.cat([self.content, self.style, self.image]), ncol=3)[None]

    def save(self, path: str | Path) -> Path:
        return imageio.save_image(self.image, path)

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.sheet())

    def __repr__(self) -> str:
        return f"StyleTransfer(style {', '.join(self.style_layers)}; content {self.content_layer})"


def _cover(image: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resize ``image`` to cover ``hw`` and centre-crop to it."""
    h, w = image.shape[-2:]
    k = max(hw[0] / h, hw[1] / w)
    scaled = imageio.resize(image, (max(hw[0], round(h * k)), max(hw[1], round(w * k))))
    top, left = (scaled.shape[-2] - hw[0]) // 2, (scaled.shape[-1] - hw[1]) // 2
    return scaled[..., top:top + hw[0], left:left + hw[1]]


def style_transfer(model: Model | str, content, style, style_layers: Sequence[str] | None = None,
                   content_layer: str | None = None, content_weight: float = 10.0, steps: int = 512,
                   size: int | None = None, seed: int | None = 0, progress: bool = True,
                   lr: float = 0.05) -> StyleTransfer:
    """Paint ``content`` in the style of ``style`` (module docstring).

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name.
        content, style: photos (path, PIL, array, tensor). The content photo sets the size: the model's input
            crop, or its longer side resized to ``size``; the style photo is resized to cover it and centre-cropped.
        style_layers, content_layer: default :func:`default_style_layers`.
        content_weight: weight of the content term. Lucid used 100 on InceptionV1; on EfficientNet-Lite0 that
            keeps little style (china.jpg in flower.jpg's style, 96 steps), 1 little content, 10 balances both.
        steps, lr, seed, progress: as in :func:`~luminate.render.render` (Lucid: 512 steps).
    """
    model = as_model(model)
    if style_layers is None or content_layer is None:
        default_style, default_content = default_style_layers(model)
        style_layers = list(style_layers) if style_layers is not None else default_style
        content_layer = content_layer or default_content
    style_layers = list(style_layers)
    content_image = _photo(model, content, size)
    h, w = content_image.shape[-2:]
    style_image = _cover(imageio.load_image(style), (h, w))
    param = StackedParam(P.image(w, h), torch.cat([content_image, style_image]))
    # batch: [content photo, style photo, image]

    def content_term(acts) -> Tensor:
        a = acts[content_layer]
        return (a[2] - a[0].detach()).abs().mean()

    def style_term(acts) -> Tensor:
        total = 0.0
        for layer in style_layers:
            g = gram(acts[layer])
            total = total + (g[2] - g[1].detach()).abs().mean()
        return total

    objective = (-content_weight * obj.Objective(content_term, [content_layer], f"content({content_layer})")
                 - obj.Objective(style_term, style_layers, f"style({', '.join(style_layers)})"))
    result = render(model, objective, param, steps=steps, lr=lr, seed=seed, progress=progress)
    return StyleTransfer(result.image[2:], content_image, style_image, style_layers, content_layer, result)
