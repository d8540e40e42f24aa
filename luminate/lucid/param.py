"""Lucid's ``lucid.optvis.param``: Luminate's parameterizations under Lucid's module name.

``param.image(128, fft=False, decorrelate=False)`` is the same call as in Lucid; where Lucid's ``param_f`` returned
a TF tensor, here it returns a :class:`~luminate.param.Parameterization` module."""

from luminate.param import *  # noqa: F401,F403
from luminate.param import __all__ as _param_all

__all__ = list(_param_all)
