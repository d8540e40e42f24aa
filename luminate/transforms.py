"""Random, differentiable, seeded image transforms for feature visualization (Lucid's ``optvis.transform``).

A transform is a value: a small frozen dataclass called as ``t(x, generator)`` with ``x`` of shape
``[B, C, H, W]`` (any device, any floating dtype) that returns ``[B, C, H', W']``, differentiable with respect
to ``x``. Transforms print like the call that made them, compare equal when their settings are equal, and chain
with :func:`compose`::

    >>> t = compose(standard_transforms())
    >>> t
    compose([pad(12, mode='constant', value=0.5), jitter(8), random_scale([0.9, 0.92, 0.94, 0.96, 0.98, 1, 1.02,
    1.04, 1.06, 1.08, 1.1]), random_rotate([-10..10, 0*5]), jitter(4)])
    >>> y = t(x, torch.Generator().manual_seed(0))

Randomness
    Every random choice is drawn from the ``torch.Generator`` passed in, which must be a CPU generator: choices
    are drawn with ``torch.randint(..., generator=g)`` on the CPU and read with ``.item()`` there, so a transform
    never waits for the GPU. Random noise tensors (``collapse_alpha_random``) are drawn on the CPU and copied to
    the image's device without blocking. The same generator state makes the same choices on any device.

Batches
    As in Lucid, one random choice per call is shared by the whole batch (one crop offset, one scale, one angle).
    ``jitter``, ``random_rotate`` and ``pad(value="uniform")`` take ``per_item=True`` to draw one choice per batch
    item instead. ``random_scale`` cannot: items of different sizes do not make a batch.

Lucid quirks fixed on purpose (documented on each transform)
    * ``random_rotate`` converts degrees with the true pi (Lucid used 3.14, so its 10 degrees were 9.995), samples
      bilinearly (Lucid: nearest) and fills the uncovered corners with the pad colour 0.5 (Lucid: zeros, which after
      ``pad(12, constant 0.5)`` put black corners into the image). ``mode="nearest", fill=0.0`` restores Lucid.
    * ``random_scale`` resizes with half-pixel centres (PyTorch ``align_corners=False``); TF1's ``resize_bilinear``
      used the legacy corner mapping that shifts the image by up to half a pixel. Output sizes match Lucid exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Iterable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from luminate.param.base import normal
from luminate.param.color import color_correlation, to_valid_rgb
from luminate.param.spatial import fft_scale, spectrum_to_image

__all__ = [
    "Transform", "compose", "Compose", "pad", "Pad", "jitter", "Jitter", "random_scale", "RandomScale",
    "random_rotate", "RandomRotate", "normalize_gradient", "NormalizeGradient", "crop_or_pad_to", "CropOrPadTo",
    "collapse_alpha_random", "CollapseAlphaRandom", "fit_to", "FitTo", "end_at_size", "standard_transforms", "atlas_transforms",
    "atlas_notebook_transforms", "random_crop_resize", "RandomCropResize", "add_noise", "AddNoise", "maco_transforms",
    "random_flip", "RandomFlip", "default_transforms",
]

Transform = Callable[[Tensor, torch.Generator], Tensor]
"""``[B, C, H, W]`` image batch and a CPU generator -> ``[B, C, H', W']``, differentiable with respect to the image."""


# --------------------------------------------------------------------------------------------------------------------
# shared machinery


def _format_values(values: Sequence[float]) -> str:
    """Short readable form of a list of choices: integer runs as ``a..b``, repeats as ``v*n``, long float lists
    elided (``[0.9608, 0.9589, 0.957, ..., 0.9234] (20 values)``)."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        parts, i, vals = [], 0, [int(v) for v in values]
        while i < len(vals):
            j = i
            while j + 1 < len(vals) and vals[j + 1] == vals[j]:
                j += 1
            if j > i:
                parts.append(f"{vals[i]}*{j - i + 1}")
                i = j + 1
                continue
            while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
                j += 1
            if j - i >= 2:
                parts.append(f"{vals[i]}..{vals[j]}")
            else:
                parts.extend(str(v) for v in vals[i:j + 1])
            i = j + 1
        return "[" + ", ".join(parts) + "]"
    text = [f"{float(v):.4g}" for v in values]
    if len(text) <= 12:
        return "[" + ", ".join(text) + "]"
    return "[" + ", ".join(text[:3]) + ", ..., " + text[-1] + f"] ({len(text)} values)"


def _check_generator(generator: torch.Generator | None, who: object) -> torch.Generator:
    if generator is None:
        raise TypeError(f"{who!r} is random: pass a CPU torch.Generator, e.g. t(x, torch.Generator().manual_seed(0))")
    if generator.device.type != "cpu":
        raise ValueError(f"{who!r} draws its random choices on the CPU (so it never waits for the GPU): pass a CPU "
                         f"torch.Generator, not one on {generator.device}")
    return generator


def _check_image(x: Tensor, who: object) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who!r} expects an image batch [B, C, H, W]; got {shape}. Add a batch axis with x[None].")


def _choice(n: int, generator: torch.Generator) -> int:
    """Uniform index in [0, n), drawn on the CPU generator (no device sync)."""
    return int(torch.randint(n, (), generator=generator).item())


def _choices(n: int, count: int, generator: torch.Generator) -> list[int]:
    return torch.randint(n, (count,), generator=generator).tolist()


class _Base:
    """Readable repr (the factory call) and a per-instance cache of constant tensors keyed by device/dtype."""

    _factory = ""

    def _args(self) -> str:  # overridden
        return ""

    def __repr__(self) -> str:
        return f"{self._factory}({self._args()})"

    def _cached(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        cache = self._cache  # type: ignore[attr-defined]
        value = cache.get(key)
        if value is None:
            value = cache[key] = make()
        return value


def _cache_field():
    return field(default_factory=dict, init=False, repr=False, compare=False, hash=False)


# --------------------------------------------------------------------------------------------------------------------
# compose


@dataclass(frozen=True, eq=True, repr=False)
class Compose(_Base):
    """Apply ``transforms`` in order, passing each the same generator. Iterable, indexable, ``len()``-able."""

    transforms: tuple = ()
    _cache: dict = _cache_field()
    _factory = "compose"

    def __post_init__(self):
        items = tuple(self.transforms)
        for t in items:
            if not callable(t):
                raise TypeError(f"compose() takes transforms (callables t(x, generator)); got {t!r}")
        object.__setattr__(self, "transforms", items)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __iter__(self):
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index):
        return Compose(self.transforms[index]) if isinstance(index, slice) else self.transforms[index]

    def _args(self) -> str:
        return "[" + ", ".join(repr(t) for t in self.transforms) + "]"


def compose(transforms: Iterable[Transform]) -> Compose:
    """One transform applying ``transforms`` in order: ``compose([pad(12), jitter(8)])(x, generator)``."""
    return Compose(tuple(transforms))


# --------------------------------------------------------------------------------------------------------------------
# pad


@dataclass(frozen=True, eq=True, repr=False)
class Pad(_Base):
    """Pad H and W by ``w`` pixels on every side: ``[B, C, H, W] -> [B, C, H + 2w, W + 2w]``.

    ``mode``: ``"reflect"`` (Lucid's default; mirror without repeating the edge, TF's REFLECT), ``"constant"`` or
    ``"replicate"`` (repeat the edge). Upper case (Lucid's spelling) is accepted. ``value`` is the constant for
    ``mode="constant"``: a number, or ``"uniform"`` for a random constant in U(0, 1) drawn from the generator
    (one per call, or one per item with ``per_item=True``).
    """

    w: int
    mode: str = "reflect"
    value: Union[float, str] = 0.5
    per_item: bool = False
    _cache: dict = _cache_field()
    _factory = "pad"

    def __post_init__(self):
        mode = str(self.mode).lower()
        if mode not in ("constant", "reflect", "replicate"):
            raise ValueError(f"pad mode must be 'constant', 'reflect' or 'replicate'; got {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        if int(self.w) != self.w or self.w < 0:
            raise ValueError(f"pad width must be a non-negative integer; got {self.w!r}")
        object.__setattr__(self, "w", int(self.w))
        if isinstance(self.value, str) and self.value != "uniform":
            raise ValueError(f"pad value must be a number or 'uniform'; got {self.value!r}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        w = self.w
        if w == 0:
            return x
        if self.mode != "constant":
            if self.mode == "reflect" and min(x.shape[-2:]) <= w:
                raise ValueError(f"{self!r}: reflect padding needs H and W > {w}; got {tuple(x.shape[-2:])}. "
                                 "Use mode='replicate' or a smaller width.")
            return F.pad(x, (w, w, w, w), mode=self.mode)
        if self.value != "uniform":
            return F.pad(x, (w, w, w, w), value=float(self.value))
        generator = _check_generator(generator, self)
        if not self.per_item:
            return F.pad(x, (w, w, w, w), value=float(torch.rand((), generator=generator).item()))
        values = torch.rand(x.shape[0], 1, 1, 1, generator=generator).to(x.device, x.dtype, non_blocking=True)
        return F.pad(x - values, (w, w, w, w)) + values

    def _args(self) -> str:
        args = f"{self.w}, mode={self.mode!r}"
        if self.mode == "constant":
            args += f", value={self.value!r}"
        return args + (", per_item=True" if self.per_item else "")


def pad(w: int, mode: str = "reflect", value: float | str = 0.5, per_item: bool = False) -> Pad:
    """See :class:`Pad`. Lucid: ``pad(w, mode="REFLECT", constant_value=0.5)``."""
    return Pad(w, mode, value, per_item)


# --------------------------------------------------------------------------------------------------------------------
# jitter


@dataclass(frozen=True, eq=True, repr=False)
class Jitter(_Base):
    """Random crop ``[B, C, H, W] -> [B, C, H - d, W - d]`` (Lucid's ``jitter``: **the image shrinks by d**; it is a
    crop at a random offset in ``[0, d]`` along each axis, not a roll). One offset per call, or per item with
    ``per_item=True``.
    """

    d: int
    per_item: bool = False
    _cache: dict = _cache_field()
    _factory = "jitter"

    def __post_init__(self):
        if int(self.d) != self.d or self.d < 0:
            raise ValueError(f"jitter distance must be a non-negative integer; got {self.d!r}")
        object.__setattr__(self, "d", int(self.d))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        d = self.d
        h, w = x.shape[-2] - d, x.shape[-1] - d
        if h < 1 or w < 1:
            raise ValueError(f"{self!r} cannot crop a {tuple(x.shape[-2:])} image: it needs H and W > {d}. "
                             "Pad first or use a smaller jitter.")
        if d == 0:
            return x
        generator = _check_generator(generator, self)
        if not self.per_item:
            oy, ox = torch.randint(d + 1, (2,), generator=generator).tolist()
            return x[..., oy:oy + h, ox:ox + w]
        offsets = torch.randint(d + 1, (x.shape[0], 2), generator=generator).tolist()
        return torch.stack([x[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offsets)])

    def _args(self) -> str:
        return f"{self.d}" + (", per_item=True" if self.per_item else "")


def jitter(d: int, per_item: bool = False) -> Jitter:
    """See :class:`Jitter`: a random crop that shrinks the image by ``d`` pixels."""
    return Jitter(d, per_item)


# --------------------------------------------------------------------------------------------------------------------
# random_scale


@dataclass(frozen=True, eq=True, repr=False)
class RandomScale(_Base):
    """Resize by a scale picked uniformly from ``scales`` (repeat a value to weight it):
    ``[B, C, H, W] -> [B, C, int(s*H), int(s*W)]``, bilinear with ``align_corners=False`` (half-pixel centres).

    Sizes are computed in float32 as Lucid (TF) did, so they match Lucid's exactly. A scale that keeps the size is
    the identity. Lucid's TF1 ``resize_bilinear`` mapped pixels with the legacy corner convention (a shift of up to
    half a pixel); this uses half-pixel centres on purpose. One scale per call for the whole batch.
    """

    scales: tuple
    _cache: dict = _cache_field()
    _factory = "random_scale"

    def __post_init__(self):
        scales = tuple(self.scales)
        if not scales or any(not (float(s) > 0) for s in scales):
            raise ValueError(f"random_scale needs a non-empty list of positive scales; got {list(scales)!r}")
        object.__setattr__(self, "scales", scales)
        self._cache["f32"] = [np.float32(s) for s in scales]

    def size_for(self, scale_index: int, height: int, width: int) -> tuple[int, int]:
        """Output (H', W') for ``scales[scale_index]`` on an input of ``height`` x ``width``."""
        s = self._cache["f32"][scale_index]
        return int(s * np.float32(height)), int(s * np.float32(width))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        generator = _check_generator(generator, self)
        h, w = x.shape[-2:]
        size = self.size_for(_choice(len(self.scales), generator), h, w)
        if size == (h, w):
            return x
        if min(size) < 1:
            raise ValueError(f"{self!r} would shrink a {(h, w)} image to {size}: use larger images or scales.")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def _args(self) -> str:
        return _format_values(self.scales)


def random_scale(scales: Iterable[float]) -> RandomScale:
    """See :class:`RandomScale`. ``scales`` may be any iterable (a generator expression as in Lucid's atlas)."""
    return RandomScale(tuple(scales))


# --------------------------------------------------------------------------------------------------------------------
# random_rotate

_ANGLE_UNITS = {"degrees": math.pi / 180.0, "degree": math.pi / 180.0, "deg": math.pi / 180.0,
                "radians": 1.0, "radian": 1.0, "rads": 1.0, "rad": 1.0}


@dataclass(frozen=True, eq=True, repr=False)
class RandomRotate(_Base):
    """Rotate about the image centre by an angle picked uniformly from ``angles`` (repeat a value to weight it).
    ``[B, C, H, W] -> [B, C, H, W]``. Positive angles turn the picture counter-clockwise (as TF's ``rotate`` and
    ``torch.rot90``).

    ``units``: ``"degrees"`` (converted with the true pi; Lucid used 3.14) or ``"radians"``.
    ``mode``: ``"bilinear"`` (default; Lucid sampled ``"nearest"``) or ``"nearest"`` or ``"bicubic"``.
    ``fill``: the colour of the corners the rotated image no longer covers: a number (default 0.5, the colour of
    the standard ``pad``, so rotation adds no black corners as Lucid's zero fill did), or ``"border"`` (repeat the
    edge) or ``"reflection"``. Sampling uses ``affine_grid`` + ``grid_sample`` with the aspect ratio in the grid, so
    non-square images rotate without shear. Angle 0 is the identity (no resampling).
    ``per_item=True`` draws one angle per batch item.
    """

    angles: tuple
    units: str = "degrees"
    mode: str = "bilinear"
    fill: Union[float, str] = 0.5
    per_item: bool = False
    _cache: dict = _cache_field()
    _factory = "random_rotate"

    def __post_init__(self):
        angles = tuple(self.angles)
        if not angles:
            raise ValueError("random_rotate needs a non-empty list of angles")
        object.__setattr__(self, "angles", angles)
        units = str(self.units).lower()
        if units not in _ANGLE_UNITS:
            raise ValueError(f"random_rotate units must be 'degrees' or 'radians'; got {self.units!r}")
        if self.mode not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(f"random_rotate mode must be 'bilinear', 'nearest' or 'bicubic'; got {self.mode!r}")
        if isinstance(self.fill, str) and self.fill not in ("border", "reflection"):
            raise ValueError(f"random_rotate fill must be a number, 'border' or 'reflection'; got {self.fill!r}")
        radians = [float(a) * _ANGLE_UNITS[units] for a in angles]
        self._cache["cos_sin"] = torch.tensor([[math.cos(r), math.sin(r)] for r in radians], dtype=torch.float64)
        self._cache["zero"] = [r == 0.0 for r in radians]

    def _thetas(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Sampling matrices ``[len(angles), 2, 3]`` for ``affine_grid`` on an h x w image (cached per size/device).

        In pixel units centred on the image, the output pixel q samples the input at R q with R = [[c, -s], [s, c]];
        in affine_grid's normalized coordinates (x scaled by 2/W, y by 2/H) that becomes
        [[c, -s*H/W], [s*W/H, c]].
        """
        def make() -> Tensor:
            c, s = self._cache["cos_sin"].unbind(1)
            zero = torch.zeros_like(c)
            theta = torch.stack([torch.stack([c, -s * (h / w), zero], 1), torch.stack([s * (w / h), c, zero], 1)], 1)
            return theta.to(device=device, dtype=dtype)

        return self._cached(("theta", h, w, device, dtype), make)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        generator = _check_generator(generator, self)
        b, _, h, w = x.shape
        if not self.per_item:
            index = _choice(len(self.angles), generator)
            if self._cache["zero"][index]:
                return x
            theta = self._thetas(h, w, x.device, x.dtype)[index:index + 1].expand(b, 2, 3)
        else:
            index = torch.randint(len(self.angles), (b,), generator=generator)
            theta = self._thetas(h, w, x.device, x.dtype)[index.to(x.device, non_blocking=True)]
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        if isinstance(self.fill, str):
            return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.fill, align_corners=False)
        fill = float(self.fill)
        if fill == 0.0:
            return F.grid_sample(x, grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        return F.grid_sample(x - fill, grid, mode=self.mode, padding_mode="zeros", align_corners=False) + fill

    def _args(self) -> str:
        args = _format_values(self.angles)
        if self.units != "degrees":
            args += f", units={self.units!r}"
        if self.mode != "bilinear":
            args += f", mode={self.mode!r}"
        if self.fill != 0.5:
            args += f", fill={self.fill!r}"
        return args + (", per_item=True" if self.per_item else "")


def random_rotate(angles: Iterable[float], units: str = "degrees", mode: str = "bilinear",
                  fill: float | str = 0.5, per_item: bool = False) -> RandomRotate:
    """See :class:`RandomRotate`. Lucid-exact sampling (apart from pi): ``mode="nearest", fill=0.0``."""
    return RandomRotate(tuple(angles), units, mode, fill, per_item)


# --------------------------------------------------------------------------------------------------------------------
# normalize_gradient


class _NormalizeGradientFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scales: Tensor | None) -> Tensor:
        ctx.has_scales = scales is not None
        if scales is not None:
            ctx.save_for_backward(scales)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        norm = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
        factor = 1.0 / norm
        if ctx.has_scales:
            factor = factor * ctx.saved_tensors[0]
        return grad * factor.view(-1, *([1] * (grad.ndim - 1))), None


@dataclass(frozen=True, eq=True, repr=False)
class NormalizeGradient(_Base):
    """Identity in the forward pass; in the backward pass each batch item's gradient is divided by its L2 norm
    (over C, H, W), then multiplied by ``grad_scales[i]`` when given (one number per batch item).
    A zero gradient stays zero (Lucid would give NaN). ``[B, C, H, W] -> [B, C, H, W]``; the generator is unused.
    """

    grad_scales: tuple | None = None
    _cache: dict = _cache_field()
    _factory = "normalize_gradient"

    def __post_init__(self):
        if self.grad_scales is not None:
            object.__setattr__(self, "grad_scales", tuple(float(s) for s in self.grad_scales))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        scales = None
        if self.grad_scales is not None:
            if len(self.grad_scales) != x.shape[0]:
                raise ValueError(f"{self!r} has {len(self.grad_scales)} grad_scales for a batch of {x.shape[0]}: "
                                 "give one scale per batch item.")
            scales = self._cached(("scales", x.device, x.dtype),
                                  lambda: torch.tensor(self.grad_scales, dtype=x.dtype).to(x.device))
        return _NormalizeGradientFn.apply(x, scales)

    def _args(self) -> str:
        return "" if self.grad_scales is None else f"grad_scales={list(self.grad_scales)!r}"


def normalize_gradient(grad_scales: Sequence[float] | None = None) -> NormalizeGradient:
    """See :class:`NormalizeGradient`."""
    return NormalizeGradient(None if grad_scales is None else tuple(grad_scales))


# --------------------------------------------------------------------------------------------------------------------
# crop_or_pad_to


@dataclass(frozen=True, eq=True, repr=False)
class CropOrPadTo(_Base):
    """Centre-crop or pad to ``[B, C, height, width]`` (TF's ``resize_image_with_crop_or_pad``): a larger side is
    cropped from offset ``(H - height) // 2``, a smaller side padded with ``value`` (TF: 0) with ``(height - H) // 2``
    rows before and the rest after. Meant as the last transform for models that need one input size.
    Deterministic: the generator is unused.
    """

    height: int
    width: int
    value: float = 0.0
    _cache: dict = _cache_field()
    _factory = "crop_or_pad_to"

    def __post_init__(self):
        if int(self.height) != self.height or int(self.width) != self.width or self.height < 1 or self.width < 1:
            raise ValueError(f"crop_or_pad_to needs positive integer sizes; got {self.height!r}, {self.width!r}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        h, w = x.shape[-2:]
        th, tw = int(self.height), int(self.width)
        top, left = max((h - th) // 2, 0), max((w - tw) // 2, 0)
        x = x[..., top:top + min(h, th), left:left + min(w, tw)]
        pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=float(self.value))
        return x

    def _args(self) -> str:
        return f"{self.height}, {self.width}" + (f", value={self.value!r}" if self.value != 0.0 else "")


def crop_or_pad_to(height: int, width: int, value: float = 0.0) -> CropOrPadTo:
    """See :class:`CropOrPadTo`."""
    return CropOrPadTo(height, width, value)


# --------------------------------------------------------------------------------------------------------------------
# fit_to


@dataclass(frozen=True, eq=True, repr=False)
class FitTo(_Base):
    """Bring a batch to ``[B, C, height, width]``: a larger image is centre-cropped (pixels keep their scale), a
    smaller one resized up (bilinear, half-pixel centres); the identity at that size. Meant as the last transform
    for models that take one input size only (a ViT with learned position embeddings): the random transforms
    before it change the size, this puts it back. Deterministic: the generator is unused.
    """

    height: int
    width: int
    _cache: dict = _cache_field()
    _factory = "fit_to"

    def __post_init__(self):
        if int(self.height) != self.height or int(self.width) != self.width or self.height < 1 or self.width < 1:
            raise ValueError(f"fit_to needs positive integer sizes; got {self.height!r}, {self.width!r}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        th, tw = int(self.height), int(self.width)
        h, w = x.shape[-2:]
        if (h, w) == (th, tw):
            return x
        if h >= th and w >= tw:
            top, left = (h - th) // 2, (w - tw) // 2
            return x[..., top:top + th, left:left + tw]
        return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)

    def _args(self) -> str:
        return f"{self.height}, {self.width}"


def fit_to(height: int, width: int | None = None) -> FitTo:
    """See :class:`FitTo`."""
    return FitTo(height, height if width is None else width)


def end_at_size(transforms: Sequence[Transform] | Transform, size: tuple[int, int]) -> Compose:
    """``transforms`` followed by :func:`fit_to` ``size`` (for fixed-size models), as one :class:`Compose`."""
    items = list(transforms) if isinstance(transforms, (list, tuple, Compose)) else [transforms]
    if items and isinstance(items[-1], FitTo) and (items[-1].height, items[-1].width) == tuple(size):
        return Compose(tuple(items))
    return Compose(tuple(items) + (fit_to(*size),))


# --------------------------------------------------------------------------------------------------------------------
# collapse_alpha_random

@dataclass(frozen=True, eq=True, repr=False)
class CollapseAlphaRandom(_Base):
    """Composite an RGBA batch over random noise: ``[B, 4, H, W] -> [B, 3, H, W]``,
    ``a * rgb + (1 - a) * noise`` with a fresh noise image per batch item (Lucid's ``collapse_alpha_random``).

    The noise is Lucid's ``image_sample(sd=sd, decay_power=decay_power)`` (:func:`luminate.param.spatial.random_image`
    computes the same on the generator's device): a spectrum ``N(0, sd)`` scaled by Lucid's Fourier scaling, inverse
    real FFT, ``/ 4``, decorrelated colour, sigmoid. Here the spectrum is drawn on the CPU from the generator and
    copied to the image's device without blocking; the FFT runs there, with the scale and colour matrix cached per
    device.
    """

    sd: float = 0.5
    decay_power: float = 1.0
    _cache: dict = _cache_field()
    _factory = "collapse_alpha_random"

    def noise(self, batch: int, h: int, w: int, generator: torch.Generator, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> Tensor:
        """Random decorrelated Fourier noise ``[batch, 3, h, w]`` in (0, 1), drawn from the CPU ``generator``."""
        device = torch.device(device)
        scale = self._cached(("scale", h, w, device), lambda: fft_scale((h, w), self.decay_power).to(device))
        matrix = self._cached(("color", device), lambda: color_correlation(device=device))
        spectrum = normal(generator, (batch, 3, h, w // 2 + 1, 2), self.sd).to(device, non_blocking=True)
        return to_valid_rgb(spectrum_to_image(spectrum, scale, (h, w)), decorrelate=True, matrix=matrix).to(dtype)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        if x.shape[1] != 4:
            raise ValueError(f"{self!r} needs RGBA images [B, 4, H, W]; got {x.shape[1]} channels. Use a "
                             "parameterization with alpha=True, or drop this transform.")
        generator = _check_generator(generator, self)
        rgb, alpha = x[:, :3], x[:, 3:4]
        background = self.noise(x.shape[0], x.shape[2], x.shape[3], generator, x.device, x.dtype)
        return alpha * rgb + (1 - alpha) * background

    def _args(self) -> str:
        args = f"sd={self.sd!r}" if self.sd != 0.5 else ""
        if self.decay_power != 1.0:
            args += (", " if args else "") + f"decay_power={self.decay_power!r}"
        return args


def collapse_alpha_random(sd: float = 0.5, decay_power: float = 1.0) -> CollapseAlphaRandom:
    """See :class:`CollapseAlphaRandom`."""
    return CollapseAlphaRandom(float(sd), float(decay_power))


# --------------------------------------------------------------------------------------------------------------------
# MACO's random crops and noise


@dataclass(frozen=True, eq=True, repr=False)
class RandomCropResize(_Base):
    """A random square-ish box of each item, resized towards ``size`` (default: the input's size):
    ``[B, C, H, W] -> [B, C, h, w]``. MACO's crop transform (Fel et al. 2023) at ``zoom=1``.

    The box side is a fraction ``s`` of the image side drawn uniformly from ``scale``; its centre is
    ``0.5 + N(0, sd)`` of the image (in each axis), moved so the box stays inside. ``flip``: the probability that an
    item's box is also mirrored left-right, in the same sampling (drawn after the boxes, one draw per item).

    ``zoom`` says how far a box is enlarged on the way out, on a log scale: the output side is ``size * s**(1 - zoom)``.

    * ``zoom=1`` (MACO): every box is resized to ``size``, so a half-size box is seen at twice its scale. One box
      side per item; bilinear ``grid_sample`` with half-pixel centres, so the gradient reaches every pixel the box
      covers; the images equal those of this transform followed by ``random_flip(flip)``.
    * ``zoom<1``: a box is shown smaller than ``size`` (``zoom=0``: at its own pixels, a pure crop; ``0.5``: a
      half-size box at 1.41x, 71% of ``size``), so the network does less work on the steps that draw small boxes.
      Output sides are rounded to a multiple of ``multiple`` pixels (the network sees a handful of shapes, and keeps
      its kernels' plans for them) and one box side is drawn per call, shared by the batch (items of different sizes
      do not make a batch), as in Lucid's ``random_scale``. Boxes are whole pixels and resized with bilinear
      ``interpolate`` (half-pixel centres, no antialiasing: a box is enlarged, or shrunk by less than half a
      ``multiple`` where the rounding goes down).
    """

    scale: tuple = (0.5, 1.0)
    sd: float = 0.15
    size: tuple | None = None
    flip: float = 0.0
    zoom: float = 1.0
    multiple: int = 16
    _cache: dict = _cache_field()
    _factory = "random_crop_resize"

    def __post_init__(self):
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"random_crop_resize scale must satisfy 0 < low <= high <= 1 (fractions of the side); "
                             f"got {self.scale!r}")
        object.__setattr__(self, "scale", (lo, hi))
        if not 0 <= float(self.flip) <= 1:
            raise ValueError(f"random_crop_resize flip is a probability in [0, 1]; got {self.flip!r}")
        object.__setattr__(self, "flip", float(self.flip))
        if not 0 <= float(self.zoom) <= 1:
            raise ValueError(f"random_crop_resize zoom must lie in [0, 1] (1: every box resized to the full size, "
                             f"0: boxes kept at their own pixels); got {self.zoom!r}")
        object.__setattr__(self, "zoom", float(self.zoom))
        if int(self.multiple) < 1:
            raise ValueError(f"random_crop_resize multiple is a positive number of pixels; got {self.multiple!r}")
        object.__setattr__(self, "multiple", int(self.multiple))
        if self.size is not None:
            size = (int(self.size), int(self.size)) if isinstance(self.size, (int, float)) else tuple(self.size)
            object.__setattr__(self, "size", tuple(int(v) for v in size))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        generator = _check_generator(generator, self)
        if self.zoom < 1:
            return self._shrunk(x, generator)
        b = x.shape[0]
        lo, hi = self.scale
        side = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)
        centre = self._centres(side[:, None], b, generator)
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = side
        if self.flip:
            mirrored = torch.rand(b, generator=generator) < self.flip
            theta[:, 0, 0] = torch.where(mirrored, -side, side)
        theta[:, 1, 1] = side
        theta[:, 0, 2] = 2 * centre[:, 0] - 1                       # x
        theta[:, 1, 2] = 2 * centre[:, 1] - 1                       # y
        h, w = self.size or tuple(x.shape[-2:])
        theta = theta.to(device=x.device, dtype=x.dtype, non_blocking=True)
        grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _centres(self, side: Tensor, b: int, generator: torch.Generator) -> Tensor:
        """``[b, 2]`` centres (x, y) of boxes of ``side`` (``[b, 1]`` or ``[1, 1]``, fractions of the image), each
        box kept inside."""
        centre = 0.5 + self.sd * torch.randn(b, 2, generator=generator, dtype=torch.float64)
        half = side / 2
        return torch.minimum(torch.maximum(centre, half), 1 - half)

    def _shrunk(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``zoom < 1``: one whole-pixel box side for the batch, each item's box cropped (and mirrored), then
        enlarged to ``size * s**(1 - zoom)`` rounded to ``multiple``."""
        b, _, height, width = x.shape
        lo, hi = self.scale
        side = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
        centre = self._centres(torch.full((1, 1), side, dtype=torch.float64), b, generator)
        mirrored = (torch.rand(b, generator=generator) < self.flip).tolist() if self.flip else [False] * b
        box_h, box_w = max(1, round(side * height)), max(1, round(side * width))
        out_h, out_w = (self._out_side(n, side) for n in (self.size or (height, width)))
        items = []
        for i, ((cx, cy), flip) in enumerate(zip(centre.tolist(), mirrored)):
            top = min(max(round(cy * height - box_h / 2), 0), height - box_h)
            left = min(max(round(cx * width - box_w / 2), 0), width - box_w)
            item = x[i:i + 1, :, top:top + box_h, left:left + box_w]
            items.append(item.flip(-1) if flip else item)
        boxes = items[0] if b == 1 else torch.cat(items)
        if (out_h, out_w) == (box_h, box_w):
            return boxes
        return F.interpolate(boxes, size=(out_h, out_w), mode="bilinear", align_corners=False)

    def _out_side(self, full: int, side: float) -> int:
        step = min(self.multiple, full)
        return int(min(full, max(step, round(full * side ** (1 - self.zoom) / step) * step)))

    def _args(self) -> str:
        size = f", size={self.size}" if self.size else ""
        flip = f", flip={self.flip}" if self.flip else ""
        zoom = f", zoom={self.zoom}" if self.zoom != 1 else ""
        multiple = f", multiple={self.multiple}" if self.multiple != 16 else ""
        return f"scale={self.scale}, sd={self.sd}{size}{flip}{zoom}{multiple}"


def random_crop_resize(scale: tuple[float, float] = (0.5, 1.0), sd: float = 0.15,
                       size: int | tuple[int, int] | None = None, flip: float = 0.0, zoom: float = 1.0,
                       multiple: int = 16) -> RandomCropResize:
    """See :class:`RandomCropResize`: one random box per item (side a fraction in ``scale``), mirrored with
    probability ``flip``, resized to ``size`` (``zoom=1``) or to ``size * side**(1 - zoom)`` (``zoom<1``)."""
    return RandomCropResize(tuple(scale), float(sd), size, float(flip), float(zoom), int(multiple))


@dataclass(frozen=True, eq=True, repr=False)
class AddNoise(_Base):
    """Add Gaussian noise ``N(0, sd)`` and uniform noise ``U(-u/2, u/2)`` to every pixel, then clamp to [0, 1]
    (MACO adds both, with ``sd = u = 0.05``). Noise is drawn on the CPU from the generator."""

    sd: float = 0.05
    uniform: float = 0.05
    _cache: dict = _cache_field()
    _factory = "add_noise"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        generator = _check_generator(generator, self)
        shape = tuple(x.shape)
        noise = self.sd * torch.randn(shape, generator=generator) + self.uniform * (torch.rand(shape, generator=generator)
                                                                                   - 0.5)
        return (x + noise.to(device=x.device, dtype=x.dtype, non_blocking=True)).clamp(0.0, 1.0)

    def _args(self) -> str:
        return f"sd={self.sd}, uniform={self.uniform}"


def add_noise(sd: float = 0.05, uniform: float = 0.05) -> AddNoise:
    """See :class:`AddNoise`."""
    return AddNoise(float(sd), float(uniform))


def maco_transforms(scale: tuple[float, float] = (0.5, 1.0), noise: float = 0.05,
                    size: int | tuple[int, int] | None = None) -> list[Transform]:
    """MACO's transform set: a random crop per item (side ``scale`` of the image, centre ``0.5 + N(0, 0.15)``)
    resized to ``size`` (default: the image's own size), plus Gaussian and uniform noise of amplitude ``noise``.

    Horama takes 6 crops of 20-30% of a 1280 px image per step; Luminate keeps one crop per batch item per step (the
    render loop's batch is the parameterization's) and uses larger boxes, since its images are model-sized."""
    return [random_crop_resize(scale, 0.15, size), add_noise(noise, noise)]


@dataclass(frozen=True, eq=True, repr=False)
class RandomFlip(_Base):
    """Mirror the image left-right with probability ``p`` (one draw per item): ``[B, C, H, W] -> [B, C, H, W]``.
    Photos of most classes occur mirrored, so a visualization that survives it does not rely on one orientation."""

    p: float = 0.5
    _cache: dict = _cache_field()
    _factory = "random_flip"

    def __post_init__(self):
        if not 0 <= float(self.p) <= 1:
            raise ValueError(f"random_flip probability must lie in [0, 1]; got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(x, self)
        generator = _check_generator(generator, self)
        flip = (torch.rand(x.shape[0], generator=generator) < self.p).tolist()
        if not any(flip):
            return x
        if all(flip):
            return x.flip(-1)
        return torch.stack([item.flip(-1) if f else item for item, f in zip(x, flip)])

    def _args(self) -> str:
        return f"p={self.p}"


def random_flip(p: float = 0.5) -> RandomFlip:
    """See :class:`RandomFlip`: a left-right mirror with probability ``p`` per item."""
    return RandomFlip(float(p))


# --------------------------------------------------------------------------------------------------------------------
# the standard sets


def default_transforms(scale: tuple[float, float] = (0.5, 1.0), zoom: float = 0.5) -> list[Transform]:
    """``render``'s default: a random box of each item (side ``s`` 50-100% of the image, centre ``0.5 + N(0, 0.15)``),
    mirrored with probability 0.5, shown at ``s**(1 - zoom)`` of the image's size: with ``zoom=0.5`` a half-size box is
    enlarged 1.41x to 71% of the side, a full box stays as it is (see :class:`RandomCropResize`).

    Measured against Lucid's :func:`standard_transforms` on EfficientNet-Lite0 class images (``docs/quality.md``):
    the images survive random 70-90% crops for a held-out model far better (Lite2 top-5 on 64 crops: 100% vs 69%).
    Enlarging every box back to the full size (``zoom=1``, MACO's way and the default before) keeps the same crop
    figure, but each step then costs a full-size forward and backward; at ``zoom=0.5`` a step costs 0.75 of that on
    average, and keeping boxes at their own pixels (``zoom=0``) lost crops (54-57 of 64)."""
    return [random_crop_resize(scale, 0.15, flip=0.5, zoom=zoom)]


def standard_transforms() -> list[Transform]:
    """Lucid's ``standard_transforms``: pad 12 (constant 0.5), jitter 8, scale 0.90..1.10 in steps of 0.02,
    rotate -10..10 degrees with 0 given extra weight (6/26), jitter 4. A 128 px image comes out at about
    (128 + 24 - 8) * [0.9, 1.1] - 4 px. Rotation is bilinear with true pi and fills with the pad colour (see
    :class:`RandomRotate`)."""
    return [
        pad(12, mode="constant", value=0.5),
        jitter(8),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


def atlas_transforms(size: int, alpha: bool = False) -> list[Transform]:
    """The activation-atlas icon transforms of Lucid's ``render_icons`` ("holy mother of transforms"):
    pad 16 (constant 0.5), jitter 4, 4, 8, 8, 8, scale ``0.998**n`` for n in 20..39, rotate over -20..19, -10..9,
    -5..4 and 0 five times (degrees), jitter 2, then centre crop/pad to ``size`` x ``size``; with ``alpha``,
    :func:`collapse_alpha_random` last (so the input is RGBA and the output RGB)."""
    transforms: list[Transform] = [
        pad(16, mode="constant", value=0.5),
        jitter(4), jitter(4), jitter(8), jitter(8), jitter(8),
        random_scale(0.998 ** n for n in range(20, 40)),
        random_rotate(chain(range(-20, 20), range(-10, 10), range(-5, 5), 5 * [0])),
        jitter(2),
        crop_or_pad_to(size, size),
    ]
    if alpha:
        transforms.append(collapse_alpha_random())
    return transforms


def atlas_notebook_transforms() -> list[Transform]:
    """The transforms of the activation-atlas notebook (``activation-atlas-simple.ipynb``): pad 2 (constant 1),
    jitter 4, 4, 8, 8, 8, scale ``0.995**n`` for n in -5..79 plus ``0.998**n`` for n in 20..39 twice, the atlas
    rotations, jitter 2. No final crop: the model must accept any size."""
    return [
        pad(2, mode="constant", value=1.0),
        jitter(4), jitter(4), jitter(8), jitter(8), jitter(8),
        random_scale([0.995 ** n for n in range(-5, 80)] + [0.998 ** n for n in 2 * list(range(20, 40))]),
        random_rotate(chain(range(-20, 20), range(-10, 10), range(-5, 5), 5 * [0])),
        jitter(2),
    ]
