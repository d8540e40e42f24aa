"""Units are directions: one way to render "directions at a layer" (and, from ``examples``, one examples pass for
any encoder: the identity for a Microscope's units, a dictionary's ``encode`` for features).

A unit is a one-hot direction, a dictionary feature a learned direction, an atlas cell an average activation, a
neuron group a factor; all of them render through :func:`render_directions`::

    from luminate.units import Directions, RenderSettings, render_directions

    d = Directions.for_units("blocks.10", [0, 7], channels=112)                 # one-hot: the channel objective
    images = render_directions(model, d, RenderSettings(size=64, steps=128))     # [2, 3, 64, 64] in [0, 1]
    d = Directions.for_vectors("blocks.10", vectors, kind="feature")             # vectors [K, C]
    tiles = render_directions(model, d, RenderSettings(diversity=4))             # [K, 5, 3, 96, 96]

``render_directions(model, directions, settings=RenderSettings(), cache=None, *, progress=True, callback=None,
scores=False)`` returns ``[K, 3, S, S]`` (CPU, [0, 1], 8-bit steps) when the settings ask for one image per
direction, else ``[K, T, 3, S, S]`` in ``settings.tiles`` order (positive, negative, diversity 1..D). The frozen
:class:`RenderSettings` is the cache key; ``cache=None`` is the render cache (``$LUMINATE_CACHE/renders``), a
folder or a :class:`~luminate.cache.RenderCache` another one, ``cache=False`` none.
"""

from luminate.units.examples import (Examples, ExamplesWork, examples_pass, open_examples, peaks, ranked, summarize,
                                     top_examples)
from luminate.units.render import Directions, RenderSettings, direction_keys, render_directions

__all__ = ["Directions", "Examples", "ExamplesWork", "RenderSettings", "direction_keys", "examples_pass",
           "open_examples", "peaks", "ranked", "render_directions", "summarize", "top_examples"]
