"""Colour decorrelation and the final squash into [0, 1] (Lucid's ``param/color.py``).

Lucid optimizes images in a decorrelated colour space: the raw channels are mixed by the square root of the ImageNet
colour covariance (from its SVD), normalised by the largest column norm, then squashed by a sigmoid.
:func:`to_valid_rgb` does that; :func:`from_valid_rgb` inverts it (used to start from a photo);
:class:`ImageParam` is the module that applies it to a :class:`~luminate.param.base.RawImage`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Index, Parameterization, RawImage, Size

#: Lucid's ``color_correlation_svd_sqrt``; rows are the R, G, B outputs, columns the decorrelated inputs.
COLOR_CORRELATION_SVD_SQRT: tuple[tuple[float, ...], ...] = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)
#: Seed of the generator :class:`ImageParam` draws its initial values from at construction (no global RNG).
INIT_SEED = 0
#: ImageNet mean colour, added on the clip (``sigmoid=False``) path only, as in Lucid.
COLOR_MEAN: tuple[float, float, float] = (0.48, 0.46, 0.41)


def color_correlation(normalized: bool = True, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None, chroma: float = 1.0) -> Tensor:
    """The ``[3, 3]`` colour matrix; ``normalized`` divides it by its largest column norm (0.46195), as Lucid does.

    ``chroma`` multiplies the two colour-difference columns (1 and 2; column 0 is the luminance): with Adam every raw
    value moves about as fast, so the image's colour contrast relative to its light-dark contrast scales with it
    (1: Lucid's matrix). Computed in float32 (Lucid's precision) and then cast, so every dtype uses the same matrix.
    """
    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
    if normalized:
        matrix = matrix / matrix.norm(dim=0).max()
    if chroma != 1.0:
        matrix = matrix * torch.tensor([1.0, float(chroma), float(chroma)])
    return matrix.to(dtype=dtype, device=device)


def _mix_channels(t: Tensor, matrix: Tensor) -> Tensor:
    """``out[:, r] = sum_k matrix[r, k] * t[:, k]`` for ``t`` of shape ``[B, 3, ...]``."""
    if t.ndim < 2 or t.shape[1] != 3:
        raise ValueError(f"colour decorrelation needs 3 channels in dim 1 ([B, 3, H, W]), got shape {tuple(t.shape)}; "
                         "use decorrelate=False for other channel counts")
    return torch.einsum("rk,bk...->br...", matrix.to(t), t)


def decorrelate_color(t: Tensor, matrix: Tensor | None = None) -> Tensor:
    """Map decorrelated colour ``[B, 3, H, W]`` to (unsquashed) RGB with Lucid's normalised matrix."""
    return _mix_channels(t, color_correlation(device=t.device) if matrix is None else matrix)


def decorrelate_color_inverse(rgb: Tensor) -> Tensor:
    """Inverse of :func:`decorrelate_color`: unsquashed RGB ``[B, 3, H, W]`` back to the decorrelated space."""
    inverse = torch.linalg.inv(color_correlation(dtype=torch.float64, device=rgb.device))
    return _mix_channels(rgb, inverse)


class _ClipProjected(torch.autograd.Function):
    """Clamp to [0, 1]; the gradient passes inside, and outside only where a descent step points back inside."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # A minimizer steps along -grad: above 1 that points inside when grad > 0, below 0 when grad < 0.
        keep = ((x >= 0) & (x <= 1)) | ((x > 1) & (grad > 0)) | ((x < 0) & (grad < 0))
        return grad * keep


def clip_projected(x: Tensor) -> Tensor:
    """``x.clamp(0, 1)`` with Lucid's projected gradient (``constrain_L_inf``): values stuck outside can come back."""
    return _ClipProjected.apply(x)


def to_valid_rgb(t: Tensor, decorrelate: bool = False, sigmoid: bool = True, matrix: Tensor | None = None,
                 mean: Tensor | None = None) -> Tensor:
    """Lucid's ``to_valid_rgb``: raw ``[B, 3, H, W]`` to an image in [0, 1].

    ``decorrelate`` mixes the channels with the normalised colour matrix; ``sigmoid`` squashes with a sigmoid,
    otherwise the ImageNet mean colour is added (when decorrelating) and the values are clipped to [0, 1] with a
    projected gradient. ``matrix`` / ``mean`` pass precomputed buffers (:class:`ImageParam` does).
    """
    if decorrelate:
        t = decorrelate_color(t, matrix)
        if not sigmoid:
            mean = torch.tensor(COLOR_MEAN, device=t.device) if mean is None else mean
            t = t + mean.to(t).view(1, 3, *([1] * (t.ndim - 2)))
    return torch.sigmoid(t) if sigmoid else clip_projected(t)


def from_valid_rgb(rgb: Tensor, decorrelate: bool = False, sigmoid: bool = True, eps: float = 0.01) -> Tensor:
    """Inverse of :func:`to_valid_rgb`: the raw ``[B, 3, H, W]`` whose image is ``rgb`` clamped to [eps, 1 - eps].

    The clamp keeps the logit finite (sigmoid path); ``to_valid_rgb(from_valid_rgb(x, d, s), d, s)`` equals
    ``x.clamp(eps, 1 - eps)`` up to float error.
    """
    x = rgb.clamp(eps, 1.0 - eps)
    if sigmoid:
        x = torch.logit(x)
    elif decorrelate:
        x = x - torch.tensor(COLOR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, *([1] * (x.ndim - 2)))
    return decorrelate_color_inverse(x) if decorrelate else x


class ImageParam(Parameterization):
    """A valid image from a raw one: ``to_valid_rgb`` on the colour channels, a sigmoid on the rest.

    * RGB (``decorrelate=True``): the raw image has 3 channels (4 with ``alpha``); channels 0-2 go through the colour
      matrix and the sigmoid, the alpha channel through the sigmoid only (Lucid's ``param.image(alpha=True)``).
    * ``decorrelate=False``: every channel is squashed independently (Lucid's ``channels=k``; any ``k``).
    * ``sigmoid=False``: clip to [0, 1] with a projected gradient instead (Lucid's ``to_valid_rgb`` clip path).

    Construction draws the raw image's initial values from a generator seeded with :data:`INIT_SEED` (raw images
    themselves start at zero), so a new parameterization is usable and deterministic at once; ``render`` re-draws
    them from its own seed with ``reset_parameters``.

    ``forward(index=None, size=None)`` returns ``[B, C, H, W]`` in [0, 1]; ``size`` re-renders at another
    resolution when the raw image supports it (only :class:`~luminate.param.cppn.CPPN`).
    """

    def __init__(self, raw: RawImage, decorrelate: bool = True, alpha: bool = False, sigmoid: bool = True,
                 chroma: float = 1.0) -> None:
        if not isinstance(raw, RawImage):
            raise TypeError(f"ImageParam wraps a RawImage (FourierImage, PixelImage, Combined, ...), got {type(raw)}")
        super().__init__(raw.batch, raw.channels, raw.size)
        color = raw.channels - int(alpha)
        if decorrelate and color != 3:
            raise ValueError(f"decorrelate=True needs 3 colour channels (+1 with alpha), but the raw image has "
                             f"{raw.channels} channels with alpha={alpha}; use decorrelate=False for other counts")
        if alpha and raw.channels < 2:
            raise ValueError("alpha=True needs at least one colour channel plus the alpha channel")
        self.raw = raw
        self.decorrelate = bool(decorrelate)
        self.alpha = bool(alpha)
        self.sigmoid = bool(sigmoid)
        if not float(chroma) > 0:
            raise ValueError(f"chroma scales the colour-difference columns of the colour matrix and must be > 0, "
                             f"got {chroma!r}")
        self.chroma = float(chroma)
        self.register_buffer("color_matrix", color_correlation(chroma=self.chroma), persistent=False)
        self.register_buffer("color_mean", torch.tensor(COLOR_MEAN), persistent=False)
        self.reset_parameters(torch.Generator().manual_seed(INIT_SEED))

    def forward(self, index: Index = None, size: Size | None = None) -> Tensor:
        if size is None:
            t = self.raw(index)
        elif getattr(self.raw, "resizable", False):
            t = self.raw(index, size=size)
        else:
            raise ValueError(f"{type(self.raw).__name__} renders only at its own size {self.size}; "
                             "only a CPPN can be rendered at another size (call without size=)")
        if not self.decorrelate:
            return torch.sigmoid(t) if self.sigmoid else clip_projected(t)
        rgb = to_valid_rgb(t[:, :3], True, self.sigmoid, self.color_matrix, self.color_mean)
        if not self.alpha:
            return rgb
        a = t[:, 3:]
        return torch.cat([rgb, torch.sigmoid(a) if self.sigmoid else clip_projected(a)], dim=1)

    def extra_repr(self) -> str:
        chroma = f", chroma={self.chroma:g}" if self.chroma != 1.0 else ""
        return f"decorrelate={self.decorrelate}, alpha={self.alpha}, sigmoid={self.sigmoid}{chroma}"


class Grayscale(Parameterization):
    """A 1-channel parameterization repeated to 3 identical channels (Lucid's ``grayscale_image_rgb``)."""

    def __init__(self, param: Parameterization) -> None:
        if param.channels != 1:
            raise ValueError(f"Grayscale needs a 1-channel parameterization, got {param.channels} channels")
        super().__init__(param.batch, 3, param.size)
        self.param = param

    def forward(self, index: Index = None) -> Tensor:
        return self.param(index).expand(-1, 3, -1, -1)

