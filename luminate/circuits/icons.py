"""Each kept node's feature visualization, through the one renderer of directions and its cache
(:func:`luminate.units.render_directions`): a unit as its channel, a feature or a group as its direction."""

from __future__ import annotations

import warnings

import torch

from luminate.circuits.basis import Units
from luminate.circuits.graph import Graph, node_id
from luminate.units import Directions, RenderSettings, render_directions

#: Small icons with a modest step count: a 4-layer graph's 32 icons render in seconds on two CPU cores.
ICON_SETTINGS = RenderSettings(size=64, steps=64, batch=16)


def node_images(graph: Graph, settings: RenderSettings = ICON_SETTINGS, cache=None, progress: bool = True
                ) -> dict[str, torch.Tensor]:
    """``{node id: [3, S, S]}`` for every kept node of ``graph`` (one render batch per layer, cached)."""
    out: dict[str, torch.Tensor] = {}
    for nodes in graph.nodes:
        if not nodes.kept:
            continue
        if len(graph.model.layer_info(nodes.layer).shape) != 3:   # the renderer follows [C, H, W] layers only
            warnings.warn(f"layer {nodes.layer!r} has no positions, so its nodes are shown without a visualization")
            continue
        basis = graph.bases[nodes.layer]
        if isinstance(basis, Units):
            directions = Directions.for_units(nodes.layer, nodes.kept, basis.channels)
        else:
            directions = Directions.for_vectors(nodes.layer, basis.directions[nodes.kept], kind=basis.kind)
        images = render_directions(graph.model, directions, settings, cache, progress=progress)
        out.update({node_id(nodes.layer, u): images[k] for k, u in enumerate(nodes.kept)})
    return out
