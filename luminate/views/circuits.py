"""The page of an attribution graph: the photo, the layers left to right, nodes as feature visualizations, edges by
weight and sign, the faithfulness figures and the precomputed interventions (``assets/circuits.*`` draw and
animate it). It only draws: the graph's JSON (:meth:`luminate.circuits.Graph.to_json`) and the images come in."""

from __future__ import annotations

from typing import Mapping

import torch

from luminate.views.html import asset, esc, img_tag, json_script, page

INTRO = ("Each column is a layer; each node a unit (or feature) that carries this decision, drawn as its feature "
         "visualization, with the classes it raises most (those whose logits fall most when it is removed). A node's "
         "score is its gradient x activation toward the target; an edge from a node to one in the next layer is its "
         "attribution to the target through that node (orange raises the target, blue lowers it; width by weight). "
         "Hover over a node to see where it fires on the photo (bright where it fires, dark where it is quiet); "
         "click it to see the class probabilities with it removed or amplified.")


def circuit_page(graph: Mapping, images: Mapping[str, torch.Tensor], photo: torch.Tensor,
                 links: Mapping[str, str] | None = None, title: str | None = None) -> str:
    """The page as one self-contained HTML document.

    Args:
        graph: the graph's JSON (with node maps). images: ``{node id: [3, S, S]}`` feature visualizations.
        photo: ``[3, H, W]`` in [0, 1], the image as the model saw it. links: ``{node id: url}`` (Microscope or
            feature pages) to link nodes to.
    """
    links = dict(links or {})
    data = {**graph, "nodes": [{**n, "link": links.get(n["id"])} for n in graph["nodes"]]}
    columns = "".join(_column(graph, layer, images, photo) for layer in graph["layers"])
    body = (f'<div class="circuit"><aside><div class="stage">{img_tag(photo, 224, "the photo", "jpeg", attrs="id=photo")}'
            f'<canvas id="heat" width="224" height="224"></canvas></div><div id="readout">{_readout(graph)}</div>'
            f'</aside><div class="graph" id="graph"><svg id="edges"></svg>{columns}</div></div>'
            f'<p class="legend muted">edges:<span style="background:#d0542b"></span>raise the target'
            f'<span style="background:#3b6fb6"></span>lower it</p>'
            f"<h2>Faithfulness</h2>{_faithfulness(graph)}{_totals(graph)}{json_script('circuit-data', data)}")
    title = title or f"{graph['model']}: why {graph['target']}"
    return page(title, body, asset("circuits.css"), asset("circuits.js"), subtitle=esc(INTRO))


def _column(graph: Mapping, layer: str, images: Mapping[str, torch.Tensor], photo: torch.Tensor) -> str:
    nodes = [n for n in graph["nodes"] if n["layer"] == layer]
    basis = graph.get("bases", {}).get(layer, "")
    head = f'<h3>{esc(layer)}<br><small>{esc(basis)}</small></h3>'
    if layer == "input":
        return f'<div class="col">{head}<div class="node" data-id="input">{img_tag(photo, 68, "input", "jpeg")}' \
               f'<span class="cap">the photo</span></div></div>'
    if layer == "target":
        return (f'<div class="col">{head}<div class="node target" data-id="target">{esc(graph["target"])}<br>'
                f'{graph["score"]:.2f}</div></div>')
    cells = []
    for n in nodes:
        sign = "pos" if n["score"] >= 0 else "neg"
        picture = img_tag(images[n["id"]], 68, n["id"]) if n["id"] in images else ""
        raises = ", ".join(n.get("ablate", {}).get("raises", [])[:2])
        cells.append(f'<div class="node {sign}" data-id="{esc(n["id"])}" title="{esc(n["id"])}: score '
                     f'{n["score"]:.3f}; raises {esc(raises)}">{picture}<span class="cap">{n["unit"]} · '
                     f'{n["score"]:+.2f}</span><span class="cap">{esc(raises)}</span></div>')
    return f'<div class="col">{head}{"".join(cells)}</div>'


def _readout(graph: Mapping) -> str:
    rows = "".join(f'<div class="prob"><span class="name" title="{esc(name)}">{esc(name)}</span>'
                   f'<div class="bar" style="width:{100 * p:.1f}px"></div>{100 * p:.1f}%</div>'
                   for name, p in graph["probabilities"].items())
    return (f"<b>{esc(graph['target'])}</b>: {graph['score']:.2f} ({esc(graph['method'])}){rows}"
            '<p class="muted">Click a node to remove or amplify it.</p>')


def _faithfulness(graph: Mapping) -> str:
    rows = []
    for layer, f in graph["faithfulness"].items():
        ratio = f["kept_drop"] / max(abs(f["random_drop"]), 0.05)
        rows.append(f"<tr><td>{esc(layer)}</td><td>{f['kept']}</td><td>{f['kept_drop']:.2f}</td>"
                    f"<td>{f['random_drop']:.2f}</td><td>{f['least_drop']:.2f}</td><td>{ratio:.1f}x</td>"
                    f"<td>{100 * f['kept_drop'] / max(abs(graph['score']), 1e-9):.0f}%</td></tr>")
    return ('<p class="muted">The drop of the target score when a layer\'s kept nodes are removed, next to the median '
            'drop for as many random nodes of the layer and for its least-attributed ones.</p>'
            '<table><tr><th>layer</th><th>kept</th><th>drop (kept)</th><th>drop (random)</th><th>drop (least)</th>'
            f'<th>kept / random</th><th>of the score</th></tr>{"".join(rows)}</table>')


def _totals(graph: Mapping) -> str:
    rows = "".join(f"<tr><td>{esc(layer)}</td><td>{t['count']}</td><td>{t['gradient_x_activation']:.2f}</td>"
                   f"<td>{t['kept']:.2f}</td></tr>" for layer, t in graph.get("totals", {}).items())
    return ('<p class="muted">What the scores add up to: every node of a layer together (Σ gradient x activation, '
            'the first-order estimate of what reaches the target through the layer) and the kept nodes.</p>'
            f'<table><tr><th>layer</th><th>nodes</th><th>all</th><th>kept</th></tr>{rows}</table>')
