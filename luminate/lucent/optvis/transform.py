"""Lucent's ``lucent.optvis.transform``: the transforms with Lucent's arguments, made by Luminate's
(:mod:`luminate.transforms`).

Each is callable as Lucent's one-argument function (``jitter(8)(images)``; its random choices then come from torch's
global generator, so :func:`luminate.lucent.util.set_seed` repeats them) and as Luminate's ``(images, generator)``
transform, which is how :func:`~luminate.lucent.optvis.render.render_vis` calls them: every choice of a render comes
from the render's own seeded generator.

Deliberate differences from Lucent (kornia), each Luminate's documented transform: ``jitter(d)`` crops ``d`` pixels at
a random offset in ``0..d`` (Lucid's jitter; Lucent translated by ``0..d-1`` pixels towards the bottom right and
filled the uncovered border with black); ``random_scale`` resizes to ``int(s * size)`` with half-pixel centres and
no padding (Lucent: ``ceil``, corner-aligned, then zero padding of a smaller image); ``random_rotate`` samples
bilinearly and fills the corners with the pad colour 0.5 (Lucent: black).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from luminate import transforms as _native
from luminate.lucid.render import lucid_transform

#: torchvision's ImageNet statistics (Lucent's ``normalize()``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def global_generator() -> torch.Generator:
    """A CPU generator seeded from torch's global generator (so ``set_seed`` repeats what it draws)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))


class LucentTransform:
    """A transform callable as ``t(images)`` (Lucent) or ``t(images, generator)`` (Luminate)."""

    def __init__(self, transform: Callable[[Tensor, torch.Generator], Tensor], text: str):
        self.transform = transform
        self.text = text

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.transform(images, generator if generator is not None else global_generator())

    def __repr__(self) -> str:
        return self.text


def jitter(d: int) -> LucentTransform:
    """A random crop of ``d`` pixels (``[B, C, H, W] -> [B, C, H - d, W - d]``)."""
    if not d > 1:
        raise ValueError(f"jitter parameter d must be more than 1, got {d}")
    return LucentTransform(_native.jitter(d), f"jitter({d})")


def pad(w: int, mode: str = "reflect", constant_value: float = 0.5) -> LucentTransform:
    """Pad ``w`` pixels on every side (``mode="constant"`` with ``constant_value``, or ``"reflect"``...)."""
    native = _native.pad(w, mode=mode, value=constant_value if mode == "constant" else 0.0)
    return LucentTransform(native, f"pad({w}, mode={mode!r}, constant_value={constant_value})")


def random_scale(scales: Sequence[float]) -> LucentTransform:
    """Resize by a scale drawn from ``scales``."""
    return LucentTransform(_native.random_scale(scales), f"random_scale({list(scales)})")


def random_rotate(angles: Sequence[float], units: str = "degrees") -> LucentTransform:
    """Rotate by an angle drawn from ``angles`` (``units``: degrees or radians)."""
    return LucentTransform(_native.random_rotate(angles, units=units), f"random_rotate({list(angles)}, {units!r})")


def engine_transform(t: Callable) -> Callable[[Tensor, torch.Generator], Tensor]:
    """``t`` as Luminate's ``(images, generator)`` transform: Lucent's one-argument functions and modules
    (``torch.nn.Upsample``) are called with the images only."""
    if isinstance(t, nn.Module):
        return lambda images, generator=None, _t=t: _t(images)
    return lucid_transform(t)


def compose(transforms: Iterable[Callable]) -> LucentTransform:
    """Apply ``transforms`` in order; each may be Lucent's one-argument function or a Luminate transform."""
    steps = [engine_transform(t) for t in transforms]
    return LucentTransform(_native.compose(steps), f"compose({steps})")


def _affine(scale: Sequence[float], shift: Sequence[float]) -> Callable[[Tensor, torch.Generator], Tensor]:
    def apply(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        s = torch.tensor(scale, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        b = torch.tensor(shift, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return images * s + b
    return apply


def normalize() -> LucentTransform:
    """torchvision's ImageNet normalization ``(x - mean) / std`` (what ``render_vis(preprocess=True)`` assumes of a
    network that is not InceptionV1)."""
    return LucentTransform(_affine([1 / s for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]),
                           "normalize()")


def preprocess_inceptionv1() -> LucentTransform:
    """``255 x - 117``: InceptionV1's input range (-117, 138)."""
    return LucentTransform(_affine([255.0] * 3, [-117.0] * 3), "preprocess_inceptionv1()")


def upsample(size: int | tuple[int, int]) -> LucentTransform:
    """Bilinear resize to ``size`` with aligned corners (the ``torch.nn.Upsample`` Lucent's ``render_vis`` appends
    for images under 224 px)."""
    def resize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return F.interpolate(images, size=size, mode="bilinear", align_corners=True)
    return LucentTransform(resize, f"upsample({size})")


#: Lucent's (and Lucid's) standard transforms: pad 12 (constant 0.5), jitter 8, scale 0.90..1.10, rotate -10..10
#: degrees (0 weighted 6 times), jitter 4.
standard_transforms = [
    pad(12, mode="constant", constant_value=0.5),
    jitter(8),
    random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
]

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LucentTransform", "compose", "engine_transform", "jitter", "normalize", "pad",
           "preprocess_inceptionv1", "random_rotate", "random_scale", "standard_transforms", "upsample"]
