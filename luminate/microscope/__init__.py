"""The Microscope: every unit of a model with its dataset examples, inputs and feature visualizations.

>>> site = luminate.microscope.build("efficientnet_lite0", "photos/", "site/", layers="all", units=None, render="0:2")
>>> luminate.views.microscope.write_site(site)                     # site/index.html, a page per unit
>>> luminate.microscope.top_examples("site", "blocks.10", 3)     # [{"image", "value", "y", "x", ...}], best first
>>> luminate.microscope.top_examples("site", "blocks.10", 3, which="quantiles")   # samples across the range
>>> luminate.microscope.inputs("site", "blocks.12", 7)           # [{"layer", "unit", "weight"}] of the layer below
>>> luminate.microscope.shown_images("site", "blocks.10", 3)   # [guided, unguided]: the unit page's images
>>> luminate.microscope.layers("site")                           # [("stem", 32), ("blocks.0", 16), ...]
"""

from luminate.data.settings import parse_units, resolve_layers
from luminate.microscope.circuits import connection_matrix, inputs, outputs
from luminate.microscope.collect import ExamplesSettings, collect_examples, unit_attribution
from luminate.microscope.render import render_units
from luminate.microscope.shown import shown_images, shown_scores
from luminate.microscope.site import MicroscopeSettings, Site, build
from luminate.units.examples import (Examples, layers, merge_top_k, open_examples, peaks, summarize,
                                     top_examples)

__all__ = ["Site", "build", "render_units", "Examples", "ExamplesSettings", "MicroscopeSettings", "collect_examples",
           "connection_matrix", "inputs", "layers", "merge_top_k", "open_examples", "outputs", "parse_units", "peaks",
           "resolve_layers", "shown_images", "shown_scores", "summarize", "top_examples", "unit_attribution"]
