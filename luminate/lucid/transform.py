"""Lucid's ``lucid.optvis.transform``: Luminate's transforms under Lucid's module name.

``standard_transforms`` is a list, as in Lucid (``transforms=transform.standard_transforms`` or
``transform.standard_transforms + [transform.jitter(2)]``); Luminate's own API makes it with
:func:`luminate.transforms.standard_transforms`."""

from luminate.transforms import *  # noqa: F401,F403
from luminate.transforms import __all__ as _transforms_all
from luminate.transforms import standard_transforms as _standard_transforms

#: Lucid's list of standard transforms (pad 12, jitter 8, scale, rotate, jitter 4).
standard_transforms = _standard_transforms()

__all__ = [name for name in _transforms_all if name != "standard_transforms"] + ["standard_transforms"]
