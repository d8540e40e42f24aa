"""Start a parameterization from a photo (DeepDream, caricatures, feature inversion).

:func:`from_image` inverts the whole parameterization -- sigmoid, colour matrix and (for ``fft=True``) the scaled
inverse FFT -- so the first ``forward()`` returns the photo itself, clamped to ``[eps, 1 - eps]`` so the logit
exists. ``reset_parameters`` restores exactly that start; its generator is not used.
"""

from __future__ import annotations

import torch

from ..images import ImageLike, to_tensor
from .color import ImageParam, from_valid_rgb
from .spatial import FourierImage, PixelImage


def from_image(image: ImageLike, fft: bool = True, decorrelate: bool = True, eps: float = 0.01,
               decay_power: float = 1.0) -> ImageParam:
    """A parameterization whose initial output is ``image`` (``[N, 3, H, W]`` in [0, 1], or a path / PIL / array).

    Returns an :class:`ImageParam` over a :class:`FourierImage` (``fft=True``) or :class:`PixelImage` with batch
    ``N``; its output starts at ``image.clamp(eps, 1 - eps)`` (within float error, well below 1e-3).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5) so the photo can be clamped to [eps, 1 - eps], got {eps}")
    photo = to_tensor(image).to(torch.float64)
    raw = from_valid_rgb(photo, decorrelate=decorrelate, sigmoid=True, eps=eps)
    n, c, h, w = photo.shape
    part = FourierImage((h, w), n, c, decay_power=decay_power) if fft else PixelImage((h, w), n, c)
    part.set_initial(raw)
    return ImageParam(part, decorrelate=decorrelate)
