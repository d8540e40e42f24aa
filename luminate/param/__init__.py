"""Image parameterizations: modules whose ``forward()`` returns ``[B, C, H, W]`` images in [0, 1].

Start with :func:`image` (Lucid's ``param.image``: Fourier + decorrelated colour + sigmoid). Building blocks are
:class:`RawImage` s (unbounded, pre-squash): :class:`FourierImage`, :class:`PixelImage`, :class:`LowResTensor`,
:class:`LaplacianPyramid`, :class:`CPPN`. They add up (``a + b``, ``0.7 * a``, ``weights @ a``) into a
:class:`Combined`, and :class:`ImageParam` squashes one raw image into a valid one. Ready-made shared
parameterizations: :func:`aligned_interpolation`, :func:`shared_groups`; from a photo: :func:`from_image`.
"""

from .base import Parameterization, RawImage, as_size
from .color import (COLOR_CORRELATION_SVD_SQRT, COLOR_MEAN, Grayscale, ImageParam, clip_projected, color_correlation,
                    decorrelate_color, decorrelate_color_inverse, from_valid_rgb, to_valid_rgb)
from .composite import ALIGNED_SHARED_TERMS, Combined, aligned_interpolation, shared_groups
from .cppn import CPPN, cppn
from .lowres import LaplacianPyramid, LowResTensor, interpolation_matrix
from .maco import MACO_LR, MacoImage, MacoParam, maco, magnitude_from_images, natural_magnitude
from .photo import from_image
from .spatial import (NATURAL_CHROMA, FourierImage, PixelImage, fft_scale, grayscale, image, image_to_spectrum, random_image,
                      rfft2d_freqs, spectrum_to_image)

__all__ = [
    "Parameterization", "RawImage", "as_size",
    "COLOR_CORRELATION_SVD_SQRT", "COLOR_MEAN", "Grayscale", "ImageParam", "clip_projected", "color_correlation",
    "decorrelate_color", "decorrelate_color_inverse", "from_valid_rgb", "to_valid_rgb",
    "ALIGNED_SHARED_TERMS", "Combined", "aligned_interpolation", "shared_groups",
    "CPPN", "cppn",
    "LaplacianPyramid", "LowResTensor", "interpolation_matrix",
    "MACO_LR", "MacoImage", "MacoParam", "maco", "magnitude_from_images", "natural_magnitude",
    "from_image",
    "NATURAL_CHROMA", "FourierImage", "PixelImage", "fft_scale", "grayscale", "image", "image_to_spectrum", "random_image",
    "rfft2d_freqs", "spectrum_to_image",
]
