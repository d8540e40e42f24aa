"""Feature accentuation (Hamblin, Fel, Saha, Konkle and Alvarez, 2024): what a unit or class responds to *in this
photo*.

Start from a real photo, raise an objective (a channel, a class, any :mod:`luminate.objectives` expression), and
keep the image on the photo's own processing path with a penalty on how far its activations at an **earlier
layer** move from the photo's. A sheet of increasing strengths shows the feature growing out of the photo:

    loss_i = - strength_i * objective(image_i) + weight * |a(image_i) - a(photo)|^2 / |a(photo)|^2

where ``a`` is the activation at the regularization layer (mean over its elements). The photo travels in the
same batch as the accentuated images, so every random transform (jitter, scale, rotation) moves it exactly as it
moves them, and the activations are compared position by position. The images are a Fourier parameterization
started at the photo (:func:`luminate.param.from_image`), as in the paper.

Objective values are each image's own (the objective on that image alone), so a channel objective means the same
for any number of strengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from luminate import images as imageio
from luminate.activations import LayerTap, activations
from luminate.models.base import Model, as_model, block_layers
from luminate.objectives import Objective, as_objective
from luminate.param import Parameterization, from_image
from luminate.render import render

#: Objective weights of the default sheet, the regularizer weighing 1. Calibrated on EfficientNet-Lite0 (channel
#: means of a few units, logits of tens): on china.jpg, ``blocks.9:7`` goes 1.05 -> 1.7, 4.9, 13, 19 and the
#: relative activation distance at ``blocks.4`` 0.06 -> 0.64 (128 px, 48 steps). Scale them for other objectives.
DEFAULT_STRENGTHS = (0.003, 0.01, 0.03, 0.1)


@dataclass
class Accentuation:
    """What :func:`accentuate` made.

    Attributes:
        photo: ``[1, 3, H, W]`` the starting photo (as the model saw it).
        images: ``[S, 3, H, W]`` one accentuated image per strength, in order.
        strengths: the objective weights.
        objective_values: ``[S]`` the objective on each final image (untransformed); ``photo_value`` on the photo.
        distances: ``[S]`` relative activation distance to the photo at ``layer`` (the regularizer's term).
        layer: the regularization layer; ``objective``: the objective's name.
    """

    photo: Tensor
    images: Tensor
    strengths: list[float]
    objective_values: Tensor
    photo_value: float
    distances: Tensor
    layer: str
    objective: str
    settings: dict = field(default_factory=dict)

    def sheet(self) -> Tensor:
        """``[S + 1, 3, H, W]``: the photo followed by the images, for a one-row grid."""
        return torch.cat([self.photo, self.images])

    def save(self, path: str | Path) -> Path:
        """The sheet as one image, photo first, strengths increasing to the right."""
        return imageio.save_image(self.sheet(), path, ncol=len(self.strengths) + 1)

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.sheet())

    def __repr__(self) -> str:
        values = ", ".join(f"{s:g}: {v:.3g}" for s, v in zip(self.strengths, self.objective_values.tolist()))
        return f"Accentuation({self.objective} at strengths {values}; photo {self.photo_value:.3g}; layer {self.layer})"


class _WithPhoto(Parameterization):
    """``param``'s images followed by a fixed photo: ``[B + 1, 3, H, W]`` (the photo is a buffer, not optimized)."""

    def __init__(self, param: Parameterization, photo: Tensor) -> None:
        super().__init__(param.batch + 1, param.channels, param.size)
        self.param = param
        self.register_buffer("photo", photo.detach().clone(), persistent=False)

    def forward(self, index=None) -> Tensor:
        images = self.param()
        return torch.cat([images, self.photo.to(images)])


def regularization_layer(model: Model, objective: Objective) -> str:
    """The default layer to hold near the photo: the block halfway to the objective's deepest block (for a class
    objective, halfway up the network)."""
    blocks = block_layers(model)
    if not blocks:
        raise ValueError("the model has no repeated blocks to regularize at: pass layer= (see luminate.models.layers)")
    deepest = [blocks.index(name) for name in objective.layers if name in blocks]
    if deepest:
        return blocks[max(0, max(deepest) // 2)]
    owner = [i for i, name in enumerate(blocks) for layer in objective.layers if layer.startswith(name + ".")]
    return blocks[max(0, max(owner) // 2)] if owner else blocks[len(blocks) // 2]


def _item(acts: dict, i: int) -> dict:
    """The activations of batch item ``i`` alone (``acts["step"]`` and other scalars as they are)."""
    return {k: (v[i:i + 1] if isinstance(v, Tensor) and v.ndim > 0 else v) for k, v in acts.items()}


def per_item(objective: Objective, acts: dict, n: int) -> Tensor:
    """``[n]``: the objective evaluated on each of the first ``n`` items alone (independent of batch averaging)."""
    return torch.cat([objective(_item(acts, i)).reshape(-1)[:1] for i in range(n)])


def accentuate(model: Model | str, photo, objective: Objective | str, strengths: Sequence[float] = DEFAULT_STRENGTHS,
               layer: str | None = None, weight: float = 1.0, steps: int = 64, lr: float = 0.05, size: int | None = None,
               seed: int = 0, transforms=None, progress: bool = True) -> Accentuation:
    """Accentuate ``objective`` in ``photo``: one image per strength, each kept near the photo's activations at
    ``layer``.

    Args:
        model: a Model or zoo name.
        photo: a path, PIL image or ``[1, 3, H, W]`` tensor in [0, 1]; paths and PIL images go through
            ``model.preprocess`` (the model's crop and size) unless ``size`` is given (then resized to ``size``).
        objective: an Objective or expression (``"blocks.9:7"``, ``"class:daisy"``).
        strengths: weights of the objective, one image each (increasing makes a sheet).
        layer: the regularization layer (default :func:`regularization_layer`: earlier than the objective's).
        weight: weight of the regularizer (relative squared activation distance).
        steps, lr, seed, transforms, progress: as :func:`luminate.render` (Lucid's standard transforms by default).

    Returns:
        :class:`Accentuation`.
    """
    model = as_model(model)
    objective = as_objective(objective).bind(model)
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ValueError("give at least one strength, e.g. strengths=(1, 4)")
    if isinstance(photo, Tensor) and photo.is_floating_point():
        x = photo if photo.ndim == 4 else photo[None]
        x = x[:1].detach().float()
    else:
        x = model.preprocess(photo).cpu() if size is None else imageio.to_tensor(photo)
    if size is not None:
        x = imageio.resize(x, size)
    model.contract.check(x)
    layer = layer or regularization_layer(model, objective)
    model.layer(layer)  # a clear error (closest names) for a bad layer
    reference = activations(model, x.to(model.device), layer).detach()
    scale = reference.float().square().mean().clamp_min(1e-12)
    n = len(strengths)
    strength = torch.tensor(strengths, device=model.device)

    def score(acts: dict) -> Tensor:
        values = per_item(objective, acts, n)
        a = acts[layer]
        distance = (a[:n] - a[n:n + 1]).float().square().flatten(1).mean(1) / scale
        return torch.cat([strength * values - weight * distance, values.new_zeros(1)])

    combined = Objective(score, set(objective.layers) | {layer}, f"accentuate({objective.name}, layer={layer})")
    param = _WithPhoto(from_image(x.expand(n, -1, -1, -1)), x)
    result = render(model, combined, param=param, transforms=transforms, steps=steps, lr=lr, seed=seed,
                    progress=progress)
    images = result.image[:n]
    with torch.no_grad(), LayerTap(model, sorted((objective.layers | {layer}) - {"input", "step"})) as tap:
        batch = torch.cat([images, x]).to(model.device)
        acts = tap(batch)
        acts["input"] = batch
        acts["step"] = torch.zeros((), dtype=torch.long, device=model.device)
        values = per_item(objective, acts, n + 1).cpu()
        a = acts[layer]
        distances = ((a[:n] - a[n:]).float().square().flatten(1).mean(1) / scale).cpu()
    return Accentuation(photo=x.cpu(), images=images.cpu(), strengths=strengths, objective_values=values[:n],
                        photo_value=float(values[n]), distances=distances, layer=layer, objective=objective.name,
                        settings={**result.settings, "weight": weight})
