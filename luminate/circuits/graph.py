"""The graph :func:`luminate.circuits.trace` returns: nodes, edges, interventions and the JSON of a page.

Interventions rerun the network on the photo with nodes scaled (0 removes a unit, or a feature's component
``z_k D_k`` at every position, a token layer's class token included; ``k`` multiplies it) through
:func:`luminate.circuits.positions.replace_positions`, many
intervention sets as one batch; the hooks end with the call, so the network is exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from luminate.circuits.positions import patch_grid, replace_positions
from luminate.models.base import Model

NodeRef = tuple[str, Any]
INPUT, TARGET = "input", "target"


@dataclass
class LayerNodes:
    """One layer's nodes: every node's ``scores`` ``[K]``, the ``kept`` ones (indices, strongest first), codes
    ``[K, h, w]`` over the layer's positions (the activation for units; ``[K, 1, T]`` for a token layer), score
    maps ``contributions`` ``[K, h, w]``, ``total`` (the layer's ``Σ a · g``) and, for kept nodes, ``inflow``
    (the sum of the edges into the node from every node below)."""

    layer: str
    kind: str
    scores: torch.Tensor
    kept: list[int]
    codes: torch.Tensor
    contributions: torch.Tensor
    total: float
    inflow: dict[int, float] = field(default_factory=dict)


@dataclass
class Edge:
    """``source`` -> ``target`` (each ``(layer, unit)``, unit ``None`` for the input and the target): ``weight``
    is the source's attribution to the target through the target node; ``map`` its spread over the source's
    positions ``[h, w]``."""

    source: NodeRef
    target: NodeRef
    weight: float
    map: torch.Tensor | None = None


def node_id(layer: str, unit) -> str:
    return layer if unit is None else f"{layer}/{unit}"


@dataclass
class Graph:
    """An attribution graph of one photo and target (see :mod:`luminate.circuits`)."""

    model: Model
    image: torch.Tensor
    target: Any
    layers: list[str]
    nodes: list[LayerNodes]
    edges: list[Edge]
    bases: dict
    score: float
    logits: torch.Tensor
    settings: Any
    faithfulness: dict = field(default_factory=dict)
    effects: dict = field(default_factory=dict)

    # ----- lookups --------------------------------------------------------------------------------------------
    def layer_nodes(self, layer: str) -> LayerNodes:
        for nodes in self.nodes:
            if nodes.layer == layer:
                return nodes
        raise KeyError(f"layer {layer!r} is not in this graph; its layers: {', '.join(self.layers)}")

    def kept(self, layer: str) -> list[int]:
        """The kept nodes (unit or feature indices) of ``layer``, strongest first."""
        return list(self.layer_nodes(layer).kept)

    def _parse(self, nodes: Iterable) -> dict[str, list[int]]:
        by_layer: dict[str, list[int]] = {}
        for node in nodes:
            if isinstance(node, str):
                layer, _, unit = node.rpartition("/")
                if not layer or not unit.isdigit():
                    raise ValueError(f"node {node!r}: name nodes as 'layer/unit' (e.g. 'head/17') or (layer, unit)")
                node = (layer, int(unit))
            layer, unit = node
            size = self.bases[self.layer_nodes(layer).layer].size
            if not 0 <= int(unit) < size:
                raise IndexError(f"node {unit} is out of range for layer {layer!r} ({size} nodes: 0..{size - 1})")
            by_layer.setdefault(layer, []).append(int(unit))
        return by_layer

    # ----- interventions --------------------------------------------------------------------------------------
    def run(self, interventions: Sequence[dict[str, dict[int, float]]]) -> torch.Tensor:
        """Logits ``[B, classes]`` of the photo under each of ``interventions`` (``{layer: {node: factor}}``;
        factor 0 removes the node, 2 doubles it), run as batches of ``settings.batch``."""
        out = []
        step = self.settings.batch
        for start in range(0, len(interventions), step):
            chunk = interventions[start:start + step]
            factors = {}
            for i, spec in enumerate(chunk):
                for layer, units in spec.items():
                    table = factors.setdefault(layer, torch.ones(len(chunk), self.bases[layer].size))
                    for unit, factor in units.items():
                        table[i, unit] = factor
            with contextlib.ExitStack() as stack, torch.no_grad():
                stack.enter_context(self.model.frozen())
                for layer, table in factors.items():
                    basis, table = self.bases[layer], table.to(self.image.device)
                    stack.enter_context(replace_positions(self.model, layer,
                                                          lambda a, b=basis, t=table: b.scale(a, t)))
                out.append(self.model(self.image.expand(len(chunk), *self.image.shape[1:])).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def _result(self, logits: torch.Tensor) -> dict:
        probs = logits.softmax(-1)
        score = float(self.target.score(logits[None])[0])
        top = probs.topk(min(self.settings.top, probs.numel()))
        classes = list(dict.fromkeys([*top.indices.tolist(), *self.target.classes]))
        return {"score": score, "drop": self.score - score,
                "probabilities": {self.model.class_name(c): float(probs[c]) for c in classes}}

    def ablate(self, nodes: Iterable) -> dict:
        """Rerun with ``nodes`` (``"layer/unit"`` or ``(layer, unit)``) removed: ``{"score", "drop",
        "probabilities"}`` (the target's score, its drop from the photo's, the top classes' probabilities)."""
        return self.amplify(nodes, 0.0)

    def amplify(self, nodes: Iterable, k: float) -> dict:
        """Rerun with ``nodes`` multiplied by ``k`` (as :meth:`ablate`)."""
        spec = {layer: {u: float(k) for u in units} for layer, units in self._parse(nodes).items()}
        return self._result(self.run([spec])[0])

    def check(self) -> None:
        """Compute the faithfulness figures of every layer and each kept node's ablate / amplify effect."""
        s = self.settings
        rng = random.Random(s.seed)
        specs: list[dict] = [{}]
        plan: list[tuple[str, str]] = []
        for nodes in self.nodes:
            kept = nodes.kept
            if not kept:
                continue
            others = [u for u in range(len(nodes.scores)) if u not in set(kept)]
            n = min(len(kept), len(others))
            least = torch.argsort(nodes.scores.abs(), stable=True).tolist()[:len(kept)]
            specs.append({nodes.layer: {u: 0.0 for u in kept}}); plan.append((nodes.layer, "kept"))
            specs.append({nodes.layer: {u: 0.0 for u in least}}); plan.append((nodes.layer, "least"))
            for _ in range(s.draws if n else 0):
                specs.append({nodes.layer: {u: 0.0 for u in rng.sample(others, n)}}); plan.append((nodes.layer, "random"))
            for u in kept:
                specs.append({nodes.layer: {u: 0.0}}); plan.append((node_id(nodes.layer, u), "ablate"))
                specs.append({nodes.layer: {u: float(s.amplify)}}); plan.append((node_id(nodes.layer, u), "amplify"))
        logits = self.run(specs)
        self._record(plan, logits)

    def _record(self, plan: list[tuple[str, str]], logits: torch.Tensor) -> None:
        base = logits[0]
        self.faithfulness, self.effects = {}, {}
        for (name, kind), row in zip(plan, logits[1:]):
            if kind in ("ablate", "amplify"):
                result = self._result(row)
                if kind == "ablate":   # the classes this node raises most: those that lose most without it
                    result["raises"] = [self.model.class_name(c) for c in (base - row).topk(3).indices.tolist()]
                self.effects.setdefault(name, {})[kind] = result
                continue
            figures = self.faithfulness.setdefault(name, {"kept": len(self.kept(name)), "random_drops": []})
            drop = self.score - float(self.target.score(row[None])[0])
            if kind == "random":
                figures["random_drops"].append(drop)
            else:
                figures[f"{kind}_drop"] = drop
        for figures in self.faithfulness.values():
            drops = sorted(figures["random_drops"])
            figures["random_drop"] = drops[len(drops) // 2] if drops else 0.0

    # ----- serialization --------------------------------------------------------------------------------------
    def to_json(self, maps: bool = True) -> dict:
        """The documented JSON of the graph (``docs/circuits.md``): target, layers, nodes, edges, faithfulness."""
        probs = self.logits.softmax(-1)
        nodes = [{"id": INPUT, "layer": INPUT, "unit": None, "kind": "input", "score": None}]
        for layer in self.nodes:
            nodes += [self._node_json(layer, u, maps) for u in layer.kept]
        nodes.append({"id": TARGET, "layer": TARGET, "unit": None, "kind": "target", "score": self.score})
        top = probs.topk(min(self.settings.top, probs.numel())).indices.tolist()
        return {
            "model": self.model.name, "target": self.target.label, "classes": list(self.target.classes),
            "score": self.score, "method": self.settings.method,
            "probabilities": {self.model.class_name(c): float(probs[c])
                              for c in dict.fromkeys([*top, *self.target.classes])},
            "layers": [INPUT, *self.layers, TARGET],
            "bases": {layer: self.bases[layer].describe() for layer in self.layers},
            "totals": {n.layer: {"gradient_x_activation": n.total, "nodes": float(n.scores.sum()),
                                 "kept": float(n.scores[n.kept].sum()) if n.kept else 0.0,
                                 "count": len(n.scores)} for n in self.nodes},
            "nodes": nodes,
            "edges": [{"source": node_id(*e.source), "target": node_id(*e.target), "weight": e.weight}
                      for e in self.edges],
            "faithfulness": self.faithfulness,
            "settings": self.settings.as_dict(),
        }

    def _node_json(self, layer: LayerNodes, unit: int, maps: bool) -> dict:
        name = node_id(layer.layer, unit)
        out = {"id": name, "layer": layer.layer, "unit": int(unit), "kind": layer.kind,
               "score": float(layer.scores[unit]), "inflow": layer.inflow.get(unit),
               "share": float(layer.scores[unit].abs() / layer.scores.abs().sum().clamp_min(1e-12))}
        out.update(self.effects.get(name, {}))
        if maps:
            size = tuple(self.image.shape[-2:])
            (codes, prefix), (contributions, prefix_contributions) = (
                patch_grid(self.model, layer.layer, t[unit], size) for t in (layer.codes, layer.contributions))
            out["map"], out["attribution"] = _rounded(codes), _rounded(contributions)
            if prefix is not None:   # a token layer's class / register tokens, which have no place on the photo
                out["prefix"] = [float(f"{v:.4g}") for v in prefix.tolist()]
                out["prefix_attribution"] = [float(f"{v:.4g}") for v in prefix_contributions.tolist()]
        return out

    def save_json(self, path: str | Path, maps: bool = True) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(maps), indent=1), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        kept = ", ".join(f"{n.layer}: {len(n.kept)}" for n in self.nodes)
        return (f"Graph({self.model.name}, target={self.target.label!r}, score={self.score:.3f}, nodes {{{kept}}}, "
                f"{len(self.edges)} edges)")


def _rounded(t: torch.Tensor) -> list:
    return [[float(f"{v:.4g}") for v in row] for row in t.float().tolist()]
