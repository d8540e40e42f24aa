"""Objectives: what feature visualization maximizes, and how objectives combine.

An :class:`Objective` reads activations and returns a **per-batch-item contribution vector** ``[B]`` whose sum is
exactly the scalar Lucid's objective of the same name computes. The render loop maximizes ``objective(acts).sum()``
and records the vector, so each image of a batch has its own score.

The package has three parts, all re-exported here (``from luminate.objectives import channel`` or
``from luminate import objectives as obj; obj.channel(...)``):

* :mod:`~luminate.objectives.core`: :class:`Objective` and its algebra (``+ - * /``, ``sum``, products of totals);
* :mod:`~luminate.objectives.catalogue`: Lucid's catalogue (``channel``, ``neuron``, ``direction``, ``class_logit``,
  penalties, schedules ...), with :func:`channels` / :func:`directions` for many units in one batch;
* :mod:`~luminate.objectives.parse`: :func:`parse` (``"-blocks.10:7 + 0.5*blocks.10:11"``) and :func:`as_objective`.
"""

from luminate.objectives.catalogue import (L1, L2, alignment, blur, blur_alpha_each_step, blur_input_each_step,
                                           channel, channel_interpolate, channels, class_logit, decay, deepdream,
                                           direction, direction_cossim, direction_neuron, directions, diversity,
                                           input_diff, neuron, only_after, penalize_boundary_complexity, schedule,
                                           tensor_direction, total_variation)
from luminate.objectives.core import SPECIAL_LAYERS, Acts, Objective
from luminate.objectives.parse import ObjectiveSyntaxError, as_objective, parse

__all__ = [
    "Objective", "ObjectiveSyntaxError", "L1", "L2", "alignment", "as_objective", "blur", "blur_alpha_each_step",
    "blur_input_each_step", "channel", "channel_interpolate", "channels", "class_logit", "decay", "deepdream",
    "direction", "direction_cossim", "direction_neuron", "directions", "diversity", "input_diff", "neuron",
    "only_after", "parse", "penalize_boundary_complexity", "schedule", "tensor_direction", "total_variation",
]
