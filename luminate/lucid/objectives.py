"""Lucid's ``lucid.optvis.objectives``: Luminate's objectives under Lucid's module name (same factories, same
algebra: ``channel(l, 1) + channel(l, 2)``, ``-obj``, ``0.5 * obj``)."""

from luminate.objectives import *  # noqa: F401,F403
from luminate.objectives import __all__ as _objectives_all
from luminate.objectives import as_objective

__all__ = list(_objectives_all) + ["as_objective"]
