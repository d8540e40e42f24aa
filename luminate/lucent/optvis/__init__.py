"""Lucent's ``lucent.optvis``: ``render``, ``objectives``, ``param`` and ``transform``."""

from luminate.lucent.optvis import objectives, param, render, transform

__all__ = ["objectives", "param", "render", "transform"]
