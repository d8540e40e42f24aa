"""Low-resolution tensors and the Laplacian pyramid (Lucid's ``param/lowres.py`` and ``laplacian_pyramid_image``).

A :class:`LowResTensor` is a small variable ``[b, C, h, w]`` bilinearly upsampled to ``[batch, C, H, W]``. Like
Lucid's ``resize_bilinear_nd``, the resize may also run along the batch dimension (``b`` -> ``batch``), which is how
Lucid's aligned interpolation shares slowly varying terms between neighbouring frames.

Deliberate changes from Lucid (TF1 ``resize_bilinear`` with its legacy corner mapping ``src = dst * in / out``,
which shifts the image by half a low-resolution pixel towards the top-left and leaves a flat band on the right and
bottom edges):

* spatial upsampling uses half-pixel centres (``align_corners=False``, TF2 / torch default): symmetric, edges clamp
  equally on both sides;
* batch interpolation uses ``align_corners=True``: the first and last items equal the first and last underlying
  items and the ones between are linear blends (with Lucid's mapping, 2 -> 6 frames made frames 3-5 identical).

Both are linear and separable, so upsampling space first and mixing the batch second is the same as Lucid's order.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Index, RawImage, Size, as_index, check_positive, normal

Underlying = Union[int, Sequence[int]]


def interpolation_matrix(n_out: int, n_in: int) -> Tensor:
    """Linear interpolation weights ``[n_out, n_in]`` with aligned corners (rows sum to 1).

    Row ``i`` samples position ``i * (n_in - 1) / (n_out - 1)`` of the input; one input is repeated, one output takes
    the first input.
    """
    n_out, n_in = check_positive("n_out", n_out), check_positive("n_in", n_in)
    pos = torch.arange(n_out, dtype=torch.float64) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = pos.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = pos - lo
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    matrix.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, hi), frac, accumulate=True)
    return matrix.float()


def _underlying_shape(underlying: Underlying, batch: int) -> tuple[int, int, int]:
    if isinstance(underlying, numbers.Integral):
        dims: tuple[int, ...] = (batch, int(underlying), int(underlying))
    else:
        dims = tuple(int(d) for d in underlying)
        if len(dims) == 2:
            dims = (batch, *dims)
        if len(dims) != 3:
            raise ValueError(f"underlying shape must be an int (square), (h, w) or (b, h, w), got {underlying!r}")
    if min(dims) < 1:
        raise ValueError(f"underlying shape must be positive, got (b, h, w) = {dims}")
    return dims  # type: ignore[return-value]


class LowResTensor(RawImage):
    """A small variable ``[b, C, h, w]`` (``N(0, sd)``) upsampled bilinearly to ``[batch, C, H, W]``.

    ``underlying`` is an int (square ``h = w``), ``(h, w)`` or ``(b, h, w)``; with ``b != batch`` the batch
    dimension is interpolated too (``b = 1`` is shared by every item). Parameter ``values``; buffer
    ``batch_weights`` ``[batch, b]`` (see :func:`interpolation_matrix`) when ``b != batch``.
    """

    def __init__(self, size: Size, underlying: Underlying, batch: int = 1, channels: int = 3,
                 sd: float = 0.01) -> None:
        super().__init__(batch, channels, size)
        b, h, w = _underlying_shape(underlying, self.batch)
        self.underlying = (b, h, w)
        self.sd = float(sd)
        self.values = nn.Parameter(torch.zeros(b, self.channels, h, w))
        weights = None if b == self.batch else interpolation_matrix(self.batch, b)
        self.register_buffer("batch_weights", weights, persistent=False)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw the small variable ``N(0, sd)`` from ``generator``."""
        self.values.copy_(normal(generator, self.values.shape, self.sd))

    def forward(self, index: Index = None) -> Tensor:
        idx = as_index(index, self.batch, self.values.device)
        values = self.values
        if self.batch_weights is None and idx is not None:
            values = values[idx]  # upsample only the requested items
        if tuple(values.shape[-2:]) != self.size:
            values = F.interpolate(values, size=self.size, mode="bilinear", align_corners=False)
        if self.batch_weights is None:
            return values
        n = self.batch if idx is None else idx.numel()
        if self.underlying[0] == 1:
            return values.expand(n, -1, -1, -1)
        weights = self.batch_weights if idx is None else self.batch_weights[idx]
        return torch.einsum("nb,bchw->nchw", weights.to(values), values)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, underlying={self.underlying}, sd={self.sd}"


class LaplacianPyramid(RawImage):
    """Sum of ``n_levels`` :class:`LowResTensor` s at sizes ``(H // 2**k, W // 2**k)``, ``k = 0 .. n_levels - 1``.

    Lucid's ``laplacian_pyramid_image`` (``n_levels=4``, ``sd=0.01``). Level 0 is full resolution. Submodules
    ``levels``.
    """

    def __init__(self, size: Size, batch: int = 1, channels: int = 3, n_levels: int = 4, sd: float = 0.01) -> None:
        super().__init__(batch, channels, size)
        h, w = self.size
        n_levels = check_positive("n_levels", n_levels)
        self.levels = nn.ModuleList(
            LowResTensor(self.size, (max(1, h // 2**k), max(1, w // 2**k)), self.batch, self.channels, sd)
            for k in range(n_levels))

    def forward(self, index: Index = None) -> Tensor:
        out = self.levels[0](index)
        for level in self.levels[1:]:
            out = out + level(index)
        return out
