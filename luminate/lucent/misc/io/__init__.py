"""Lucent's ``misc.io``: :func:`show` in a notebook, and ``collapse_channels``."""

from luminate.lucent.misc.io.collapse_channels import collapse_channels, hue_to_rgb, sparse_channels_to_rgb
from luminate.lucent.misc.io.showing import image, images, show

__all__ = ["collapse_channels", "hue_to_rgb", "image", "images", "show", "sparse_channels_to_rgb"]
