"""Weighted sums of raw images: shared components across a batch (Lucid's aligned interpolation, ActivationGrid).

Lucid builds its shared parameterizations by adding tensors before one ``to_valid_rgb``:

* aligned interpolation (``neuron_interaction`` / ``aligned_interpolation`` notebooks): a unique ``fft_image`` per
  frame plus ``lowres_tensor`` terms shared by all frames or interpolated between two, at 6 scales;
* ActivationGrid: ``to_valid_rgb(0.7 * unique_fft[i] + 0.5 * sum_j groups[i, j] * group_fft[j], decorrelate=True)``.

:class:`Combined` is that sum as a module: item ``i`` of the output is ``sum_k (W_k @ part_k)[i]``, where each term's
weight ``W_k`` is a number (the part has the full batch, or batch 1 and is shared by every item) or a matrix
``[batch, part.batch]`` mixing the part's items. Raw images build it with ordinary arithmetic::

    raw = 0.7 * FourierImage(size, batch=n) + 0.5 * (groups @ FourierImage(size, batch=g))
    param = ImageParam(raw, decorrelate=True)   # one final decorrelate + sigmoid
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from .base import Index, RawImage, Size, as_index, as_size, check_positive, module_device
from .color import ImageParam
from .lowres import LowResTensor
from .spatial import FourierImage

Weight = Union[float, Tensor]
Term = Union[RawImage, tuple[RawImage, Weight]]

#: Lucid's shared low-resolution terms for aligned interpolation at 128 px, as (batch, divisor of the image size):
#: (1,64,64), (1,32,32), (1,16,16), (2,16,16), (1,8,8), (2,8,8).
ALIGNED_SHARED_TERMS: tuple[tuple[int, int], ...] = ((1, 2), (1, 4), (1, 8), (2, 8), (1, 16), (2, 16))


def _as_weight(weight: object) -> Weight:
    if isinstance(weight, Tensor) and weight.ndim == 0:
        return float(weight)
    if isinstance(weight, numbers.Real):
        return float(weight)
    matrix = torch.as_tensor(weight, dtype=torch.float32) if not isinstance(weight, Tensor) else weight
    if matrix.ndim != 2:
        raise ValueError(f"a term weight is a number or a [batch, part.batch] matrix, got shape {tuple(matrix.shape)}")
    return matrix.detach().float()


def _flatten(terms: Sequence[Term]) -> list[tuple[RawImage, Weight]]:
    """Normalise terms to (part, weight) pairs, expanding nested :class:`Combined` s into their parts."""
    flat: list[tuple[RawImage, Weight]] = []
    for term in terms:
        part, weight = (term, 1.0) if isinstance(term, RawImage) else term
        if not isinstance(part, RawImage):
            raise TypeError(f"a Combined term is a RawImage or (RawImage, weight), got {type(part).__name__}")
        weight = _as_weight(weight)
        if not isinstance(part, Combined):
            flat.append((part, weight))
            continue
        for inner, w in part.terms():
            if isinstance(weight, float):
                flat.append((inner, weight * w))
            elif isinstance(w, Tensor):  # matrix of a matrix
                flat.append((inner, weight.to(w) @ w))
            elif inner.batch == 1 and part.batch != 1:  # inner part broadcast over the Combined's items
                flat.append((inner, w * weight.sum(dim=1, keepdim=True)))
            else:
                flat.append((inner, w * weight))
    return flat


class Combined(RawImage):
    """Weighted sum of raw images; item ``i`` is ``sum_k (W_k @ part_k)[i]`` (see the module docstring).

    ``terms``: raw images (weight 1) or ``(raw image, weight)`` pairs, the weight a number or a ``[batch,
    part.batch]`` tensor. Every part has the same channels and size. ``batch`` defaults to the largest part batch
    (or matrix row count); parts with batch 1 and a number weight are broadcast. Nested ``Combined`` s are flattened.
    A part that appears in several terms is one module (reset once, computed once per forward). Submodules
    ``parts``; matrix weights are buffers ``weight_k``.
    """

    def __init__(self, terms: Sequence[Term], batch: int | None = None) -> None:
        flat = _flatten(list(terms))
        if not flat:
            raise ValueError("Combined needs at least one term")
        first = flat[0][0]
        for part, _ in flat:
            if (part.channels, part.size) != (first.channels, first.size):
                raise ValueError(f"all parts must share channels and size: {type(first).__name__} has "
                                 f"{first.channels} x {first.size}, {type(part).__name__} has "
                                 f"{part.channels} x {part.size}")
        batches = {w.shape[0] if isinstance(w, Tensor) else part.batch for part, w in flat}
        n = check_positive("batch", batch) if batch is not None else max(batches)
        for part, w in flat:
            if isinstance(w, Tensor):
                if tuple(w.shape) != (n, part.batch):
                    raise ValueError(f"mixing matrix for a {type(part).__name__} with batch {part.batch} must be "
                                     f"[{n}, {part.batch}], got {list(w.shape)}")
            elif part.batch not in (1, n):
                raise ValueError(f"a {type(part).__name__} with batch {part.batch} cannot be added to batch {n}: "
                                 f"give it batch {n} or 1, or mix it with a [{n}, {part.batch}] weight matrix")
        super().__init__(n, first.channels, first.size)
        self.parts = nn.ModuleList()
        self._terms: list[tuple[int, float | str]] = []
        for k, (part, w) in enumerate(flat):
            j = next((i for i, p in enumerate(self.parts) if p is part), None)
            if j is None:
                self.parts.append(part)
                j = len(self.parts) - 1
            if isinstance(w, Tensor):
                self.register_buffer(f"weight_{k}", w.clone(), persistent=False)
                self._terms.append((j, f"weight_{k}"))
            else:
                self._terms.append((j, w))

    def terms(self) -> list[tuple[RawImage, Weight]]:
        """The (part, weight) pairs, weights as numbers or ``[batch, part.batch]`` tensors."""
        return [(self.parts[j], getattr(self, w) if isinstance(w, str) else w) for j, w in self._terms]

    def forward(self, index: Index = None) -> Tensor:
        idx = as_index(index, self.batch, module_device(self))
        n = self.batch if idx is None else idx.numel()
        full: dict[int, Tensor] = {}
        picked: dict[int, Tensor] = {}

        def whole(j: int) -> Tensor:
            if j not in full:
                full[j] = self.parts[j]()
            return full[j]

        out: Tensor | None = None
        for j, w in self._terms:
            part = self.parts[j]
            if isinstance(w, str):
                matrix = getattr(self, w)
                x = whole(j)
                x = torch.einsum("nb,bchw->nchw", (matrix if idx is None else matrix[idx]).to(x), x)
            else:
                if part.batch == 1 or idx is None:
                    x = whole(j)
                else:
                    if j not in picked:
                        picked[j] = full[j][idx] if j in full else part(idx)
                    x = picked[j]
                x = x if w == 1.0 else x * w
            out = x if out is None else out + x
        assert out is not None
        return out if out.shape[0] == n else out.expand(n, -1, -1, -1)

    def extra_repr(self) -> str:
        weights = [f"[{getattr(self, w).shape[0]}x{getattr(self, w).shape[1]}]" if isinstance(w, str) else f"{w:g}"
                   for _, w in self._terms]
        return f"{super().extra_repr()}, weights=({', '.join(weights)})"


def aligned_interpolation(size: Size, frames: int = 6, channels: int = 3, sd: float = 0.01,
                          decay_power: float = 1.0,
                          shared: Sequence[tuple[int, int]] = ALIGNED_SHARED_TERMS) -> ImageParam:
    """Lucid's aligned-interpolation parameterization: ``[frames, channels, H, W]`` in [0, 1].

    Each frame has its own :class:`FourierImage`; the frames also share low-resolution terms that are constant
    across frames (``b = 1``) or interpolate linearly from the first frame to the last (``b = 2``), so neighbouring
    frames line up. ``shared`` lists ``(b, d)``: a ``(b, H // d, W // d)`` :class:`LowResTensor`; the default is
    Lucid's six terms, (1,64,64), (1,32,32), (1,16,16), (2,16,16), (1,8,8), (2,8,8) at 128 px. Use it with an
    interpolating objective (``channel_interpolate``).
    """
    h, w = as_size(size)
    raw: RawImage = FourierImage((h, w), frames, channels, sd=sd, decay_power=decay_power)
    for b, d in shared:
        raw = raw + LowResTensor((h, w), (b, max(1, h // d), max(1, w // d)), frames, channels, sd=sd)
    return ImageParam(raw, decorrelate=channels == 3)


def shared_groups(size: Size, weights: Tensor, unique: float = 0.7, shared: float = 0.5, channels: int = 3,
                  sd: float = 0.01, decay_power: float = 1.0) -> ImageParam:
    """ActivationGrid's shared parameterization: image ``i`` is
    ``to_valid_rgb(unique * fft_i + shared * sum_j weights[i, j] * group_fft_j, decorrelate=True)``.

    ``weights`` ``[N, G]`` (Lucid: NMF group strengths per position, each column divided by its max); output
    ``[N, channels, H, W]`` in [0, 1]. Raw parts: ``param.raw.parts[0]`` (unique, batch ``N``) and
    ``param.raw.parts[1]`` (groups, batch ``G``). ``param(index=...)`` computes only a minibatch of the ``N`` images
    (Lucid optimizes random minibatches of 64).
    """
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.ndim != 2:
        raise ValueError(f"weights must be [N images, G groups], got shape {tuple(weights.shape)}")
    n, g = weights.shape
    own = FourierImage(size, n, channels, sd=sd, decay_power=decay_power)
    groups = FourierImage(size, g, channels, sd=sd, decay_power=decay_power)
    return ImageParam(unique * own + shared * (weights @ groups), decorrelate=channels == 3)
