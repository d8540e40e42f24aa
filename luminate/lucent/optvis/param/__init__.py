"""Lucent's ``lucent.optvis.param``: each parameterization returns ``(params, image_f)`` as in Lucent.

``params`` is the list of tensors to optimize and ``image_f()`` returns ``[B, C, H, W]``: in [0, 1] for
:func:`image` and :func:`cppn`, raw (unbounded) for :func:`pixel_image`, :func:`fft_image` and
:func:`lowres_tensor` until :func:`to_valid_rgb` squashes it. ``image_f`` is a Luminate module
(:mod:`luminate.param`), so the render loop runs it directly; raw ones add up before one ``to_valid_rgb``
(``to_valid_rgb(fft_f + lowres_f, decorrelate=True)``). Initial values are drawn from torch's global generator, as
in Lucent (:func:`luminate.lucent.util.set_seed` repeats them).
"""

from luminate.lucent.optvis.param import color, gan, images, lowres, spatial  # noqa: F401
from luminate.lucent.optvis.param.color import to_valid_rgb
from luminate.lucent.optvis.param.cppn import CompositeActivation, cppn
from luminate.lucent.optvis.param.gan import upconvGAN
from luminate.lucent.optvis.param.images import image
from luminate.lucent.optvis.param.lowres import lowres_tensor
from luminate.lucent.optvis.param.spatial import fft_image, pixel_image, rfft2d_freqs

__all__ = ["CompositeActivation", "color", "cppn", "fft_image", "gan", "image", "images", "lowres", "lowres_tensor",
           "pixel_image", "rfft2d_freqs", "spatial", "to_valid_rgb", "upconvGAN"]
