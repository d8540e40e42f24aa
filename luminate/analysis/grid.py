"""Activation grid (Building Blocks): one feature visualization per spatial position of a layer.

Each position ``(i, j)`` of ``layer`` has an activation vector ``a_ij`` ``[C]``; its cell is an image optimized to
maximize ``direction(layer, a_ij)`` (mean over positions of ``<act, a_ij>``). This is Lucid's
``render_activation_grid_less_naive`` (the notebook function in ``misc/adversarial_activation_grids``):

* **Shared parameterization** against "decoherence" (neighbouring cells drifting to unrelated images): the positions'
  activations are factorized with NMF into ``n_groups`` groups, each group column divided by its max, and cell ``i``
  is ``to_valid_rgb(0.7 * unique_fft[i] + 0.5 * sum_j groups[i, j] * group_fft[j], decorrelate=True)``
  (:func:`luminate.param.shared_groups`), so cells of one group share image content.
* **Minibatches**: each step optimizes a random ``minibatch`` of positions (Lucid: 64), each toward its own vector;
  memory is bounded by the minibatch, not the number of positions.
* Adam (lr 0.05), Lucid's standard transforms, **no** ReLU gradient redirection (Lucid's ``make_vis_T`` default).
* Each cell is rendered at ``cell_size + 4`` px and cropped by 2 px on every side (Lucid's ``[2:-2]``), so
  ``cells`` are ``cell_size`` px. Lucid passed the pre-crop width (``W=42``, 38 px cells).

Differences: positions of a minibatch are distinct (drawn without replacement from a seeded generator); NMF runs on
the positive part of the activations (block outputs of EfficientNet have negative values, which NMF cannot take;
the groups only seed the shared image content); the objectives are scored on the un-transformed images before and
after optimization (``initial_scores``, ``scores``), so you can check every cell improved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from luminate import objectives as obj
from luminate.activations import LayerTap
from luminate.analysis.factorization import ChannelReducer
from luminate.analysis.perception import image_input, layer_activations
from luminate.images import ImageLike, make_grid
from luminate.models.base import Model, as_model
from luminate.param import Parameterization, shared_groups
from luminate.render import render
from luminate.transforms import Transform

#: Lucid's crop of each rendered cell, in pixels per side.
CROP = 2


@dataclass
class ActivationGrid:
    """One icon per spatial position of ``layer`` for one image.

    Attributes:
        image: ``[1, 3, H, W]`` in [0, 1], the input the model saw (CPU).
        layer: the layer.
        activations: ``[C, h, w]``.
        cells: ``[h, w, 3, S, S]`` in [0, 1], the icon of each position (``S = cell_size``).
        model_name: the model's name.
        groups: ``[h, w, G]`` NMF group weights of each position (each group's max is 1).
        initial_scores, scores: ``[h, w]`` each cell's direction objective on its un-transformed image before and
            after optimization.
        settings: the run's settings (steps, minibatch, seed, ...).
    """

    image: torch.Tensor
    layer: str
    activations: torch.Tensor
    cells: torch.Tensor
    model_name: str
    groups: torch.Tensor | None = None
    initial_scores: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def montage(self, padding: int = 0) -> torch.Tensor:
        """The cells tiled in their grid positions, ``[3, h * S, w * S]`` (``padding`` white pixels around cells)."""
        return make_grid(self.cells.flatten(0, 1), ncol=self.cells.shape[1], padding=padding)

    def __repr__(self) -> str:
        h, w, _, s, _ = self.cells.shape
        return f"ActivationGrid({self.model_name}, {self.layer}, {h}x{w} cells of {s} px)"


class Minibatch(Parameterization):
    """A view of a large parameterization that produces only a selection of its items.

    ``forward()`` returns ``inner(index=selection)`` ``[size, C, H, W]``; :meth:`select` sets the selection and
    :meth:`advance` draws a new random one (distinct items, from ``generator``). ``parameters()`` and
    ``reset_parameters`` are the inner parameterization's, so ``render`` optimizes all items, ``size`` at a time.
    """

    def __init__(self, inner: Parameterization, size: int, generator: torch.Generator):
        super().__init__(min(size, inner.batch), inner.channels, inner.size)
        self.inner = inner
        self.generator = generator
        self.index = torch.arange(self.batch)
        self.advance()

    def select(self, indices: Sequence[int] | torch.Tensor) -> None:
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() != self.batch:
            raise ValueError(f"select needs {self.batch} indices, got {idx.numel()}")
        self.index = idx

    def advance(self, *_: Any) -> None:
        """Draw the next random selection (usable as a ``render`` callback)."""
        self.select(torch.randperm(self.inner.batch, generator=self.generator)[:self.batch])

    def forward(self, index=None) -> torch.Tensor:
        idx = self.index if index is None else self.index[torch.as_tensor(index, dtype=torch.long)]
        return self.inner(idx)


def direction_scores(model: Model, images: torch.Tensor, layer: str, vectors: torch.Tensor,
                     batch_size: int = 64) -> torch.Tensor:
    """``[N]``: image ``i``'s ``direction(layer, vectors[i])`` score (mean over positions of ``<act, vectors[i]>``),
    without transforms or gradients. ``images`` ``[N, 3, H, W]`` in [0, 1]; ``vectors`` ``[N, C]``."""
    model = as_model(model)
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    if vectors.ndim != 2 or vectors.shape[0] != images.shape[0]:
        raise ValueError(f"need one [C] vector per image: images {tuple(images.shape)}, vectors "
                         f"{tuple(vectors.shape)}")
    out = []
    with torch.no_grad(), LayerTap(model, [layer], detach=True) as tap:
        for s in range(0, images.shape[0], batch_size):
            score = obj.directions(layer, vectors[s:s + batch_size], cossim_pow=0, all_positions=True)
            out.append(score(tap(images[s:s + batch_size].to(model.device))).cpu())
    return torch.cat(out)


def group_weights(flat: torch.Tensor, n_groups: int) -> torch.Tensor:
    """NMF group strengths ``[N, G]`` of activation vectors ``flat`` ``[N, C]`` (their positive part), each column
    divided by its max (Lucid's ActivationGrid)."""
    n_groups = min(n_groups, *flat.shape)
    if n_groups < 1:
        raise ValueError(f"n_groups must be at least 1, got {n_groups}")
    weights = ChannelReducer(n_groups, "NMF").fit_transform(flat.clamp_min(0).float())     # [N, G]
    return weights / weights.max(0, keepdim=True).values.clamp_min(1e-8)


def activation_grid(model: Model | str, image: ImageLike, layer: str, cell_size: int = 48, n_groups: int = 6,
                    steps: int = 256, minibatch: int = 64, seed: int = 0, progress: bool = True, *,
                    lr: float = 0.05, transforms: Sequence[Transform] | Transform | None = None) -> ActivationGrid:
    """One ``cell_size`` px feature visualization per position of ``layer`` for ``image`` (see the module docstring).

    ``image``: a path, PIL image or array (through ``model.preprocess``) or a ``[1, 3, H, W]`` tensor (as is).
    ``steps`` updates, each of a random ``minibatch`` of positions (Lucid: 1024 steps of 64). ``transforms=None``:
    Lucid's standard set. Cost: ``steps`` forward/backward passes of ``minibatch`` images.
    """
    model = as_model(model)
    x = image_input(model, image)
    acts = layer_activations(model, x, layer)
    c, h, w = acts.shape
    flat = acts.permute(1, 2, 0).reshape(h * w, c)
    groups = group_weights(flat, n_groups)
    param = shared_groups(cell_size + 2 * CROP, groups).to(model.device)

    # the starting images exactly as render will draw them (same seed), to score them
    param.reset_parameters(torch.Generator().manual_seed(seed))
    initial = direction_scores(model, _all_images(param, minibatch), layer, flat, minibatch)

    view = Minibatch(param, minibatch, torch.Generator().manual_seed(seed + 0x5EED))

    def objective(a):
        return obj.directions(layer, flat[view.index], cossim_pow=0, all_positions=True)(a)

    result = render(model, obj.as_objective(objective, layers=[layer]), view, transforms=transforms, steps=steps,
                    lr=lr, seed=seed, progress=progress, callback=view.advance, redirect_relu_steps=0)
    images = _all_images(param, minibatch)
    scores = direction_scores(model, images, layer, flat, minibatch)
    cells = images[:, :, CROP:-CROP, CROP:-CROP].reshape(h, w, 3, cell_size, cell_size)
    settings = {**result.settings, "cell_size": cell_size, "n_groups": groups.shape[1], "minibatch": view.batch,
                "layer": layer, "interrupted": result.interrupted}
    return ActivationGrid(image=x.detach().cpu(), layer=layer, activations=acts, cells=cells, model_name=model.name,
                          groups=groups.reshape(h, w, -1), initial_scores=initial.reshape(h, w),
                          scores=scores.reshape(h, w), settings=settings)


def _all_images(param: Parameterization, chunk: int) -> torch.Tensor:
    """Every item of ``param`` ``[N, C, H, W]`` (CPU), computed ``chunk`` items at a time."""
    with torch.no_grad():
        return torch.cat([param(torch.arange(s, min(s + chunk, param.batch))).cpu()
                          for s in range(0, param.batch, chunk)])
