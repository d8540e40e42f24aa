"""The Microscope: every unit of a model with its dataset examples, inputs and feature visualizations.

>>> site = luminate.microscope.build("efficientnet_lite0", "photos/", "site/", layers="all", units=None, render="0:2")
>>> luminate.views.microscope.write_site(site)                     # site/index.html, a page per unit
>>> luminate.microscope.top_examples("site", "blocks.10", 3)     # [{"image", "value", "y", "x", ...}], best first
>>> luminate.microscope.top_examples("site", "blocks.10", 3, which="quantiles")   # samples across the range
>>> luminate.microscope.inputs("site", "blocks.12", 7)           # [{"layer", "unit", "weight"}] of the layer below
>>> luminate.microscope.layers("site")                           # [("stem", 32), ("blocks.0", 16), ...]
"""

from luminate.microscope.circuits import connection_matrix, inputs, outputs
from luminate.microscope.collect import (Examples, collect_examples, layers, merge_top_k, open_examples, parse_units,
                                         peaks, resolve_layers, summarize, top_examples, unit_attribution)
from luminate.microscope.render import render_units
from luminate.microscope.site import Site, build

_image_top_examples = top_examples


def top_examples(site_or_store, layer: str, unit: int, k: int | None = None, **kwargs) -> list[dict]:
    """The examples that excite ``unit`` of ``layer`` most, best first (see :func:`collect.top_examples`); a text
    Microscope (``luminate.text.microscope``) gives ``[{"text", "position", "value", ...}]``."""
    from luminate.text.microscope import is_text_site, top_examples as text_top_examples

    if not isinstance(site_or_store, Examples) and is_text_site(site_or_store):
        return text_top_examples(site_or_store, layer, unit, k, **kwargs)
    return _image_top_examples(site_or_store, layer, unit, k, **kwargs)

__all__ = ["Site", "build", "render_units", "Examples", "collect_examples", "connection_matrix", "inputs", "layers",
           "merge_top_k", "open_examples", "outputs", "parse_units", "peaks", "resolve_layers", "summarize",
           "top_examples", "unit_attribution"]
