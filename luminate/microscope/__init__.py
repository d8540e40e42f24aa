"""The Microscope: every unit of a model with its dataset examples and feature visualizations.

>>> site = luminate.microscope.build("efficientnet_lite0", "photos/", "site/", layers=["blocks.10"], units="0:16")
>>> luminate.views.microscope.write_site(site)                     # site/index.html
>>> luminate.microscope.top_examples("site", "blocks.10", 3)     # [{"image", "value", "y", "x", ...}], best first
"""

from luminate.microscope.collect import (Examples, collect_examples, merge_top_k, open_examples, parse_units, peaks,
                                         summarize, top_examples, unit_attribution)
from luminate.microscope.render import render_units
from luminate.microscope.site import Site, build

__all__ = ["Site", "build", "render_units", "Examples", "collect_examples", "merge_top_k", "open_examples", "parse_units", "peaks", "summarize",
           "top_examples", "unit_attribution"]
