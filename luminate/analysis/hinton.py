"""Data for Hinton diagrams: a layer's activations (channels x positions) or weights, pooled when large.

A Hinton diagram draws a matrix as squares whose area is proportional to each value's magnitude and whose
shade gives its sign. This module makes the matrices; :mod:`luminate.views.hinton` draws them.

* :func:`activation_matrix`: one photo's activations at a layer, ``[channels, positions]`` (the spatial grid
  read row by row). Large layers are pooled by block means: positions to a grid of at most ``max_cols`` cells,
  channels into at most ``max_rows`` consecutive groups.
* :func:`weight_matrix`: a layer's weights, ``[out, in]``. A convolution's kernel is summed over its spatial
  extent (the response of each output channel to a uniform input channel); a depthwise convolution (one input
  channel per output) shows its kernel taps instead, ``[channels, kh*kw]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luminate.activations import activations
from luminate.models.base import Model, as_model

__all__ = ["HintonData", "activation_matrix", "weight_matrix", "pool_matrix", "weighted_module"]


@dataclass
class HintonData:
    """A matrix for a Hinton diagram.

    Attributes:
        values: ``[rows, cols]`` float array.
        row_labels, col_labels: one label per row / column (``"ch 4"``, ``"ch 0-3"``, ``"(2, 5)"``).
        title: what it shows; ``description``: how it was made (pooling included).
        row_name, col_name: what rows and columns are (``"channel"``, ``"position"``, ``"output"``, ``"input"``).
    """

    values: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    title: str
    description: str = ""
    row_name: str = "row"
    col_name: str = "column"
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def __repr__(self) -> str:
        return f"HintonData({self.title!r}, {self.shape[0]}x{self.shape[1]})"


def _groups(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ``[start, end)`` ranges covering ``0..n`` as evenly as adaptive pooling does."""
    return [(math.floor(i * n / k), math.ceil((i + 1) * n / k)) for i in range(k)]


def _range_label(prefix: str, start: int, end: int) -> str:
    return f"{prefix} {start}" if end - start == 1 else f"{prefix} {start}-{end - 1}"


def pool_matrix(values: torch.Tensor, max_rows: int, max_cols: int) -> tuple[torch.Tensor, list[tuple[int, int]],
                                                                              list[tuple[int, int]]]:
    """Block means of ``values`` ``[R, C]`` down to at most ``max_rows x max_cols``: ``(pooled, row ranges,
    column ranges)`` with each output row/column's ``[start, end)`` in the input."""
    r, c = values.shape
    rows, cols = min(r, max_rows), min(c, max_cols)
    pooled = F.adaptive_avg_pool2d(values[None, None].float(), (rows, cols))[0, 0]
    return pooled, _groups(r, rows), _groups(c, cols)


def activation_matrix(model: Model | nn.Module | str, image, layer: str, max_rows: int = 64, max_cols: int = 64
                      ) -> HintonData:
    """``[channels, positions]`` activations of ``layer`` for one photo (a path or PIL image is preprocessed for the
    model; a float tensor is used as it is, see :meth:`~luminate.models.Model.as_batch`).

    Positions are the layer's spatial grid read row by row; when there are more than ``max_cols`` of them the grid
    is average-pooled to the largest grid of at most ``max_cols`` cells with the layer's aspect ratio. More than
    ``max_rows`` channels are averaged in consecutive groups.
    """
    model = as_model(model)
    act = activations(model, model.as_batch(image, single=True), layer)[0]  # [C, H, W] or [C]
    if act.ndim == 1:
        act = act[:, None, None]
    if act.ndim != 3:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(act.shape)}; a Hinton diagram of "
                         "activations needs [C, H, W] or [C]")
    c, h, w = act.shape
    gh, gw = h, w
    if h * w > max_cols:
        k = math.sqrt(max_cols / (h * w))
        gh, gw = max(1, math.floor(h * k)), max(1, math.floor(w * k))
    spatial = F.adaptive_avg_pool2d(act[None], (gh, gw))[0]  # [C, gh, gw]
    matrix = spatial.reshape(c, gh * gw)
    pooled, row_ranges, _ = pool_matrix(matrix, max_rows, gh * gw)
    ys, xs = _groups(h, gh), _groups(w, gw)
    col_labels = []
    for y0, y1 in ys:
        for x0, x1 in xs:
            col_labels.append(f"({y0}, {x0})" if (y1 - y0, x1 - x0) == (1, 1) else f"({y0}-{y1 - 1}, {x0}-{x1 - 1})")
    notes = []
    if (gh, gw) != (h, w):
        notes.append(f"the {h}x{w} grid average-pooled to {gh}x{gw}")
    if len(row_ranges) != c:
        notes.append(f"{c} channels averaged into {len(row_ranges)} groups")
    description = (f"rows: {c} channels; columns: {h}x{w} positions, row by row"
                   + (f" ({'; '.join(notes)})" if notes else ""))
    return HintonData(pooled.numpy().astype(np.float32), [_range_label("ch", a, b) for a, b in row_ranges],
                      col_labels, f"Activations of {model.name} {layer}", description, "channel", "position",
                      {"layer": layer, "kind": "activations", "grid": (gh, gw), "shape": (c, h, w)})


def weighted_module(model: Model | nn.Module | str, layer: str) -> tuple[str, nn.Module]:
    """``(name, module)``: ``layer`` itself when it has a weight matrix or kernel, else its only weighted
    submodule; several candidates raise an error that lists them."""
    model = as_model(model)
    module = model.layer(layer)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
        return layer, module
    found = [(f"{layer}.{name}", sub) for name, sub in module.named_modules()
             if name and isinstance(getattr(sub, "weight", None), torch.Tensor) and sub.weight.ndim >= 2]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"layer {layer!r} has no weight matrix or kernel (normalization and activation layers "
                         "have none); choose a convolution or linear layer (`luminate layers MODEL`)")
    listed = ", ".join(f"{name} {list(sub.weight.shape)}" for name, sub in found[:12])
    raise ValueError(f"layer {layer!r} holds {len(found)} weighted layers; name one of them: {listed}")


def weight_matrix(model: Model | nn.Module | str, layer: str, max_rows: int = 64, max_cols: int = 64) -> HintonData:
    """The weights of ``layer`` (or its only weighted submodule) as ``[out, in]``, block-mean pooled to at most
    ``max_rows x max_cols`` (see the module docstring for convolutions)."""
    model = as_model(model)
    name, module = weighted_module(model, layer)
    weight = module.weight.detach().float().cpu()
    if weight.ndim == 2:
        matrix, col_name, how = weight, "input", "a linear layer's [out, in] weights"
    elif weight.shape[1] == 1:
        matrix = weight.flatten(1)
        col_name = "kernel tap"
        how = f"a depthwise kernel: one row per channel, its {tuple(weight.shape[2:])} taps row by row"
    else:
        matrix = weight.flatten(2).sum(-1)
        col_name = "input"
        how = (f"a convolution's [out, in] weights" + (f", each {tuple(weight.shape[2:])} kernel summed"
                                                       if weight[0, 0].numel() > 1 else ""))
    pooled, row_ranges, col_ranges = pool_matrix(matrix, max_rows, max_cols)
    notes = []
    if pooled.shape != matrix.shape:
        notes.append(f"{matrix.shape[0]}x{matrix.shape[1]} block-mean pooled to {pooled.shape[0]}x{pooled.shape[1]}")
    prefix_in = "tap" if col_name == "kernel tap" else "in"
    return HintonData(pooled.numpy().astype(np.float32), [_range_label("out", a, b) for a, b in row_ranges],
                      [_range_label(prefix_in, a, b) for a, b in col_ranges], f"Weights of {model.name} {name}",
                      how + (f" ({'; '.join(notes)})" if notes else ""), "output", col_name,
                      {"layer": name, "kind": "weights", "shape": tuple(weight.shape)})
