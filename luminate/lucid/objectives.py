"""Lucid's ``lucid.optvis.objectives``: Luminate's objectives under Lucid's module name (same factories, same
algebra: ``channel(l, 1) + channel(l, 2)``, ``-obj``, ``0.5 * obj``), with Lucid's meanings where Luminate's differ:

* ``neuron(layer, n, x, y)``: ``x`` is the **row** and ``y`` the column, as in Lucid (Luminate's own ``neuron`` takes
  ``x`` as the column);
* ``class_logit(layer, label)``: Lucid's argument order (Luminate's is ``class_logit(label, layer)``).

A Lucid objective with no Luminate equivalent raises an AttributeError that says so.
"""

from luminate import objectives as _native
from luminate.objectives import *  # noqa: F401,F403
from luminate.objectives import __all__ as _objectives_all
from luminate.objectives import Objective, as_objective


def neuron(layer: str, n: int, x: int | None = None, y: int | None = None, batch: int | None = None) -> Objective:
    """Lucid's ``neuron``: channel ``n`` of ``layer`` at row ``x``, column ``y`` (default: the centre)."""
    return _native.neuron(layer, n, x=y, y=x, batch=batch)


def class_logit(layer: str, label: int | str, batch: int | None = None) -> Objective:
    """Lucid's ``class_logit(layer, label)``: the logit of ``label`` at ``layer`` (``"output"``: the model's output;
    Lucid named the logits layer, e.g. ``"softmax2_pre_activation"``)."""
    return _native.class_logit(label, layer=layer, batch=batch)


def __getattr__(name: str):
    raise AttributeError(f"Lucid's objectives.{name} has no Luminate equivalent in luminate.lucid.objectives; "
                         f"Luminate's objectives are: {', '.join(sorted(_objectives_all))} (docs/lucid.md)")


__all__ = list(_objectives_all) + ["as_objective"]
