"""Lucid's ``lucid.optvis.param``: Luminate's parameterizations under Lucid's module name, plus Lucid's low-level
pieces with Lucid's NHWC shapes.

``param.image(128, fft=False, decorrelate=False)`` is the same call as in Lucid (``image(w, h)``: Lucid's order,
kept here only); where Lucid's ``param_f`` returned a TF tensor, it returns a
:class:`~luminate.param.Parameterization` module. The low-level pieces:

* ``fft_image((b, h, w, ch), sd=None, decay_power=1)`` and ``lowres_tensor((b, h, w, ch), (b0, h0, w0, ch))`` return
  raw, unbounded images (``[B, C, H, W]`` modules);
* ``to_valid_rgb(raw, decorrelate=False, sigmoid=True)`` squashes one into a valid image, as in Lucid
  (``lambda: param.to_valid_rgb(param.fft_image((1, 64, 64, 3)), decorrelate=True)``); given an NHWC tensor it
  returns an NHWC tensor;
* raw images add up before that one ``to_valid_rgb``, as Lucid's tensors do: ``unique + sum(shared)``,
  ``0.7 * a - b / 2``, ``weights @ a`` (see :class:`RawParam`).

Used directly as ``param_f`` (Lucid fed the raw values to the network), a raw image is clipped to [0, 1] with a
projected gradient (Lucid's ``to_valid_rgb(sigmoid=False)``), because Luminate's models check the [0, 1] contract.
"""

from __future__ import annotations

from typing import Sequence

import torch

from luminate import param as _native
from luminate.param import *  # noqa: F401,F403
from luminate.param import __all__ as _param_all
from luminate.param import ImageParam, LowResTensor, RawImage
from luminate.param.spatial import FourierImage


class RawParam(ImageParam):
    """A raw Lucid image used as an image: clipped to [0, 1] (projected gradient); ``.raw`` is the raw module.

    Raw images add up as Lucid's tensors do, before one ``to_valid_rgb``: ``a + b``, ``a - b``, ``-a``, ``k * a``,
    ``a / k``, ``weights @ a`` and ``sum([a, b, ...])`` (Python's ``sum`` starts from 0) give a new ``RawParam`` of the
    combined raw image (:class:`~luminate.param.Combined`), sharing the operands' modules.
    """

    def __init__(self, raw: RawImage, keep_values: bool = False) -> None:
        kept = {k: v.clone() for k, v in raw.state_dict().items()} if keep_values else None
        super().__init__(raw, decorrelate=False, sigmoid=False)
        if kept is not None:   # a combination shares its operands' modules: their values stay as they are
            raw.load_state_dict(kept)

    def _combine(self, result):
        return NotImplemented if result is NotImplemented else RawParam(result, keep_values=True)

    def __add__(self, other):
        return self._combine(self.raw.__add__(_raw(other)))

    def __radd__(self, other):
        return self._combine(self.raw.__radd__(_raw(other)))

    def __sub__(self, other):
        return self._combine(self.raw.__sub__(_raw(other)))

    def __rsub__(self, other):
        other = _raw(other)
        return self._combine(other.__sub__(self.raw)) if isinstance(other, RawImage) else NotImplemented

    def __neg__(self):
        return RawParam(-self.raw, keep_values=True)

    def __mul__(self, k):
        return self._combine(self.raw.__mul__(k))

    __rmul__ = __mul__

    def __truediv__(self, k):
        return self._combine(self.raw.__truediv__(k))

    def __rmatmul__(self, weights):
        return self._combine(self.raw.__rmatmul__(weights))


def _raw(x):
    """The raw image of a :class:`RawParam`; anything else as it is."""
    return x.raw if isinstance(x, RawParam) else x


def _nhwc(shape: Sequence[int], what: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{what} takes Lucid's NHWC shape (batch, height, width, channels), got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def fft_image(shape: Sequence[int], sd: float | None = None, decay_power: float = 1.0) -> RawParam:
    """Lucid's ``fft_image``: a raw image of NHWC ``shape`` parameterized by its scaled spectrum."""
    b, h, w, ch = _nhwc(shape, "fft_image")
    return RawParam(FourierImage((h, w), batch=b, channels=ch, sd=0.01 if sd is None else sd,
                                 decay_power=decay_power))


def lowres_tensor(shape: Sequence[int], underlying_shape: Sequence[int], offset=None,
                  sd: float | None = None) -> RawParam:
    """Lucid's ``lowres_tensor``: a small NHWC variable ``underlying_shape`` upsampled bilinearly to ``shape``."""
    b, h, w, ch = _nhwc(shape, "lowres_tensor")
    b0, h0, w0, ch0 = _nhwc(underlying_shape, "lowres_tensor's underlying_shape")
    if ch0 != ch:
        raise ValueError(f"lowres_tensor: the underlying shape has {ch0} channels, the output {ch}; Luminate "
                         "interpolates batch and space only, so they must match")
    if offset is not None:
        raise NotImplementedError("lowres_tensor(offset=...) has no Luminate equivalent (Lucid's pixel offsets of "
                                  "the upsampling); leave it out")
    return RawParam(LowResTensor((h, w), (b0, h0, w0), batch=b, channels=ch, sd=0.01 if sd is None else sd))


def to_valid_rgb(t, decorrelate: bool = False, sigmoid: bool = True):
    """Lucid's ``to_valid_rgb``: a raw image (``fft_image`` / ``lowres_tensor``, or a sum of raw images) becomes a
    valid image parameterization; an NHWC tensor becomes an NHWC tensor in [0, 1]."""
    if isinstance(t, ImageParam):
        t = t.raw
    if isinstance(t, RawImage):
        return ImageParam(t, decorrelate=decorrelate, sigmoid=sigmoid)
    if isinstance(t, torch.Tensor) and t.ndim == 4:
        return _native.to_valid_rgb(t.permute(0, 3, 1, 2), decorrelate, sigmoid).permute(0, 2, 3, 1)
    raise TypeError(f"to_valid_rgb takes a raw image (fft_image, lowres_tensor) or an NHWC tensor, got "
                    f"{type(t).__name__}")


def __getattr__(name: str):
    raise AttributeError(f"Lucid's param.{name} has no Luminate equivalent in luminate.lucid.param; available: "
                         f"{', '.join(sorted(__all__))} (docs/lucid.md)")


__all__ = [n for n in _param_all if n != "to_valid_rgb"] + ["fft_image", "lowres_tensor", "to_valid_rgb"]
