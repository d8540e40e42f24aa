"""Base classes shared by every parameterization.

Two kinds of module live in :mod:`luminate.param`:

* :class:`RawImage` -- an *unbounded* image tensor ``[B, C, H, W]`` (pixels, a Fourier spectrum, a low-resolution
  grid, a CPPN's logits, ...). Raw images are the building blocks: they compose by ordinary arithmetic
  (``a + b``, ``0.7 * a``, ``weights @ a`` mixes across the batch) into a :class:`~luminate.param.composite.Combined`
  raw image. They live *before* colour decorrelation and the sigmoid.
* :class:`Parameterization` -- what ``render`` optimizes: ``forward()`` returns ``[B, C, H, W]`` in [0, 1].
  :class:`~luminate.param.color.ImageParam` turns one raw image into a valid image with one final
  ``to_valid_rgb`` (decorrelate + sigmoid), so a sum of shared and unique terms is squashed exactly once, as in Lucid.

Both carry ``batch``, ``channels`` and ``size = (H, W)`` and re-draw their initial values with
``reset_parameters(generator)``; the same generator seed gives the same values. ``forward(index=...)`` may be given a
1-D tensor (or list) of batch indices to compute only those items (used to optimize random minibatches of a large
batch, as Lucid's ActivationGrid does); the result then has ``len(index)`` items.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch
from torch import Tensor, nn

Size = Union[int, Sequence[int]]
Index = Union[Tensor, Sequence[int], None]


def as_size(size: Size) -> tuple[int, int]:
    """``size`` as ``(H, W)``: an int is square, a pair is ``(H, W)``; both must be positive."""
    if isinstance(size, numbers.Integral):
        hw = (int(size), int(size))
    else:
        try:
            hw = tuple(int(s) for s in size)
        except TypeError:
            raise TypeError(f"size must be an int or an (H, W) pair, got {size!r}") from None
        if len(hw) != 2:
            raise ValueError(f"size must be an int or an (H, W) pair, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"image size must be positive, got (H, W) = {hw}")
    return hw  # type: ignore[return-value]


def check_positive(name: str, value: int) -> int:
    """``value`` as an int, raising if it is below 1."""
    if int(value) < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def normal(generator: torch.Generator, shape: Sequence[int], sd: float) -> Tensor:
    """``N(0, sd)`` noise of ``shape`` drawn in float32 from ``generator`` on the generator's device.

    Always drawn in float32, so a float64 (or half) module gets the same initial values as a float32 one.
    """
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32) * sd


def as_index(index: Index, batch: int, device: torch.device) -> Tensor | None:
    """A 1-D int64 index tensor on ``device`` (``None`` stays ``None``); raises when an index is out of range."""
    if index is None:
        return None
    idx = torch.as_tensor(index, dtype=torch.long)
    if idx.ndim != 1:
        raise ValueError(f"index must be 1-D (a list of batch items), got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < -batch or int(idx.max()) >= batch):
        raise IndexError(f"batch index out of range: valid items are 0..{batch - 1}, got {idx.tolist()}")
    return idx.to(device)


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU when it has none)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _reset_children(module: nn.Module, generator: torch.Generator) -> None:
    """Reset every resettable child of ``module`` in registration order, looking inside plain containers."""
    for child in module.children():
        if isinstance(child, _Shaped):
            child.reset_parameters(generator)
        elif isinstance(child, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
            _reset_children(child, generator)


class _Shaped(nn.Module):
    """Common part of raw images and parameterizations: shape attributes and a recursive reset."""

    batch: int
    channels: int
    size: tuple[int, int]

    def __init__(self, batch: int, channels: int, size: Size) -> None:
        super().__init__()
        self.batch = check_positive("batch", batch)
        self.channels = check_positive("channels", channels)
        self.size = as_size(size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(batch, channels, H, W)`` of the full output."""
        return (self.batch, self.channels, *self.size)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-draw the initial values from ``generator``.

        The default resets every direct child that can be reset, in registration order, so composites draw their
        parts' values in a fixed sequence from the one generator.
        """
        _reset_children(self, generator)

    def extra_repr(self) -> str:
        return f"batch={self.batch}, channels={self.channels}, size={self.size}"


class RawImage(_Shaped):
    """An unbounded image ``[batch, channels, H, W]``: a building block before decorrelation and the sigmoid.

    Algebra (each returns a :class:`~luminate.param.composite.Combined` raw image sharing the operands' modules):

    * ``a + b``, ``a - b``, ``-a``, ``sum([a, b, c])``: item-wise sums; an operand with batch 1 is broadcast;
    * ``k * a``, ``a * k``, ``a / k`` for numbers ``k``;
    * ``weights @ a`` (``weights`` a ``[N, a.batch]`` tensor): item ``i`` is ``sum_j weights[i, j] * a[j]``.
    """

    def forward(self, index: Index = None) -> Tensor:  # pragma: no cover - abstract
        """``[batch, channels, H, W]`` (or ``[len(index), ...]``) unbounded values."""
        raise NotImplementedError

    # -- algebra ---------------------------------------------------------------------------------------------------
    def _combined(self):
        from .composite import Combined  # composite imports this module

        return Combined

    def __add__(self, other: object):
        if isinstance(other, numbers.Number) and other == 0:
            return self._combined()([self])
        if not isinstance(other, RawImage):
            return NotImplemented
        return self._combined()([self, other])

    def __radd__(self, other: object):
        if isinstance(other, numbers.Number) and other == 0:  # sum([...]) starts at 0
            return self._combined()([self])
        return NotImplemented

    def __neg__(self):
        return self._combined()([(self, -1.0)])

    def __sub__(self, other: object):
        if not isinstance(other, RawImage):
            return NotImplemented
        return self + (-other)

    def __mul__(self, k: object):
        if isinstance(k, Tensor) and k.ndim == 0:
            k = float(k)
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return self._combined()([(self, float(k))])

    __rmul__ = __mul__

    def __truediv__(self, k: object):
        if isinstance(k, Tensor) and k.ndim == 0:
            k = float(k)
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return self * (1.0 / float(k))

    def __rmatmul__(self, weights: object):
        if not isinstance(weights, Tensor):
            return NotImplemented
        return self.mix(weights)

    def mix(self, weights: Tensor):
        """Mix across the batch: item ``i`` of the result is ``sum_j weights[i, j] * self[j]``.

        ``weights`` is ``[N, self.batch]``; the result has batch ``N``. Lucid's ActivationGrid builds its shared
        "group" term this way (``groups @ group_fft``).
        """
        return self._combined()([(self, weights)])


class Parameterization(_Shaped):
    """An image parameterization: ``forward()`` returns ``[batch, channels, H, W]`` in [0, 1].

    ``render`` calls ``reset_parameters(generator)`` once, moves the module to the model's device and optimizes
    ``parameters()``. Parameters are created on the CPU at construction.
    """

    def forward(self, index: Index = None) -> Tensor:  # pragma: no cover - abstract
        """``[batch, channels, H, W]`` (or ``[len(index), ...]``) in [0, 1]."""
        raise NotImplementedError
