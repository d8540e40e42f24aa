"""Tracing a graph: node scores, edges and pruning for one photo and one target (definitions in the package doc).

One forward pass keeps every chosen layer's activation in the autograd graph (each layer's output is captured,
read as positions by :func:`luminate.circuits.positions.replace_positions`, and passed on as a copy, so an
in-place activation after it cannot overwrite what was captured). One backward pass gives every layer's gradient
of the target; the edges into the kept nodes of a layer then take one batched backward pass per layer pair
(``is_grads_batched``: every kept node's cotangent at once).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch

from luminate.circuits.basis import Directions, Units, dictionary_basis, groups_basis
from luminate.circuits.graph import Edge, Graph, LayerNodes
from luminate.circuits.positions import replace_positions
from luminate.circuits.settings import CircuitSettings
from luminate.circuits.target import Target, parse_target
from luminate.models.base import Model, as_model
from luminate.models.defaults import circuit_layers

INPUT, TARGET = "input", "target"


def trace(model: Model | str, image, target=None, layers: Sequence[str] | None = None, basis="units",
          settings: CircuitSettings | None = None, groups: int = 6,
          on_stage: Callable[[float, str], None] | None = None) -> Graph:
    """The attribution graph of ``target`` for one ``image``, from the input through ``layers`` to the target.

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name (image models).
        image: a path, PIL image, array or ``[1, 3, H, W]`` tensor in [0, 1] (as :meth:`Model.as_batch`).
        target: a class name or index, ``"a - b"`` (a logit difference), or ``None`` for the top class.
        layers: hidden layers (any order; sorted into forward order). Default: 4 layers spread through the
            network (:func:`luminate.models.defaults.circuit_layers`).
        basis: ``"units"``; ``"groups"`` (``groups`` NMF neuron groups of this photo at each layer); a
            :class:`luminate.features.Dictionary` or a features site folder (its dictionary's layer is read in
            features, the other layers in units; the layer is added when missing); or ``{layer: basis}``.
        settings: scoring, pruning and checking (:class:`CircuitSettings`).
        on_stage: called with ``(share of the work done, the stage starting)`` as the trace goes on (the toolbox's
            progress).

    Returns a :class:`Graph` with its faithfulness figures computed.
    """
    model = as_model(model)
    settings = settings or CircuitSettings()
    stage = on_stage or (lambda done, name: None)
    _check_image_model(model)
    x = model.as_batch(image, single=True).detach()
    tgt = parse_target(model, target, x)
    layers, bases_spec = _layers_and_bases(model, layers, basis)
    with model.frozen(), torch.enable_grad():
        stage(0.05, "forward pass")
        acts, x_leaf, logits, order = _capture(model, x, layers)
        layers = sorted(layers, key=order.index)
        score = tgt.score(logits)[0]
        stage(0.15, "gradients")
        grads = _gradients(model, x, tgt, layers, acts, score, settings)
        bases = {layer: _basis(bases_spec.get(layer, "units"), acts[layer], groups, settings.seed) for layer in layers}
        nodes = [_layer_nodes(layer, acts[layer], grads[layer], bases[layer], settings) for layer in layers]
        stage(0.35, "edges")
        edges = _edges(x_leaf, layers, acts, grads, bases, nodes)
    edges = prune_edges(edges + _target_edges(nodes), settings.edge_share)
    graph = Graph(model=model, image=x, target=tgt, layers=layers, nodes=nodes, edges=edges, bases=bases,
                  score=float(score.detach()), logits=logits.detach()[0].cpu(), settings=settings)
    stage(0.55, "faithfulness and interventions")
    graph.check()
    stage(1.0, "done")
    return graph


def _check_image_model(model: Model) -> None:
    if getattr(model, "is_text", False):
        raise TypeError(f"{model.name} is a text model: attribution graphs are built for image models (a photo "
                        "through layers of units to a class). Use an image model such as efficientnet_lite0")


def _layers_and_bases(model: Model, layers, basis) -> tuple[list[str], dict]:
    spec: dict = {}
    if isinstance(basis, dict):
        spec = dict(basis)
    elif isinstance(basis, str) and basis in ("units", "groups"):
        pass
    else:
        dictionary = _dictionary(model, basis)
        spec = {dictionary.layer: dictionary}
    if layers is None:
        layers = circuit_layers(model, 4)
        layers = layers + [name for name in spec if name not in layers]
    elif isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("no layers given: name at least one hidden layer (luminate.models.layers(model) lists them)")
    for name in spec:
        if name not in layers:
            raise ValueError(f"basis given for layer {name!r}, which is not among the graph's layers {layers}")
    for name in layers:
        if name in (INPUT, TARGET, "output"):
            raise ValueError(f"{name!r} is always part of the graph; layers= names hidden layers only")
        _check_layer(model, name)
    if isinstance(basis, str) and basis == "groups":
        spec = {name: "groups" for name in layers}
    return layers, spec


def _dictionary(model: Model, basis):
    from pathlib import Path

    from luminate.features import Dictionary, load_dictionary
    from luminate.features.dictionary import FILE

    if isinstance(basis, Dictionary):
        dictionary = basis
    elif isinstance(basis, str):   # a features site keeps its one dictionary in data/<layer>/
        found = sorted(Path(basis).expanduser().glob(f"data/*/{FILE}"))
        dictionary = load_dictionary(found[0] if len(found) == 1 else basis, model=model)
    else:
        raise TypeError(f"basis must be 'units', 'groups', a features Dictionary, a features site folder or "
                        f"{{layer: basis}}, got {type(basis).__name__}")
    dictionary.check(model)
    return dictionary


def _check_layer(model: Model, name: str) -> None:
    info = model.layer_info(name)      # unknown names raise with the closest names
    if len(info.shape) not in (1, 3):
        hint = (" If it is a token sequence [T, C], declare it with luminate.models.wrap(..., layout='tokens')."
                if len(info.shape) == 2 else "")
        raise ValueError(f"layer {name!r} of {model.name} outputs shape {info.shape}, which has no channel axis of "
                         f"units ([C, H, W] or [C]), so it cannot hold circuit nodes.{hint} Choose another layer "
                         "(luminate.models.layers(model) lists them)")


def _basis(spec, acts: torch.Tensor, groups: int, seed: int):
    if isinstance(spec, (Units, Directions)):
        return spec
    if spec == "units":
        return Units(acts.shape[1])
    if spec == "groups":
        return groups_basis(acts, groups, seed)
    basis = dictionary_basis(spec) if hasattr(spec, "directions") else None
    if basis is None:
        raise TypeError(f"unknown basis {spec!r}: use 'units', 'groups' or a features Dictionary")
    if basis.channels != acts.shape[1]:
        raise ValueError(f"the dictionary has {basis.channels} channels; its layer has {acts.shape[1]}")
    return basis


def _capture(model: Model, x: torch.Tensor, layers: Sequence[str]):
    """One forward pass with ``x`` a leaf and every layer's output kept: ``(acts, x_leaf, logits, order)``."""
    acts: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def keep(name: str):
        def fn(a: torch.Tensor) -> torch.Tensor:
            acts[name] = a
            order.append(name)
            return a.clone()   # what runs on is a copy: an in-place op downstream leaves `a` as it was
        return fn

    x_leaf = x.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        for name in layers:
            stack.enter_context(replace_positions(model, name, keep(name)))
        logits = model(x_leaf)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"{model.name} does not output [N, classes] logits, so it has no class to trace to")
    missing = [name for name in layers if name not in acts]
    if missing:
        raise ValueError(f"layers {missing} did not run in a forward pass of {model.name}")
    dead = [name for name in layers if not acts[name].requires_grad]
    if dead:
        raise ValueError(f"layers {dead} do not depend on the input of {model.name}: no attribution reaches them")
    return acts, x_leaf, logits, order


def _gradients(model: Model, x: torch.Tensor, tgt: Target, layers, acts, score, settings: CircuitSettings):
    """``{layer: gradient of the target [1, C, ...]}``: at the photo, or averaged along the integrated path."""
    tensors = [acts[name] for name in layers]
    grads = torch.autograd.grad(score, tensors, retain_graph=True, allow_unused=True)
    out = {name: (torch.zeros_like(t) if g is None else g) for name, t, g in zip(layers, tensors, grads)}
    if settings.method == "integrated":
        for name in layers:
            out[name] = integrated_gradient(model, x, tgt, name, acts[name].detach(), settings.steps)
    return out


def integrated_gradient(model: Model, x: torch.Tensor, tgt: Target, layer: str, a: torch.Tensor,
                        steps: int) -> torch.Tensor:
    """The target's gradient with respect to ``layer`` averaged over ``a`` scaled by ``(k + 1/2) / steps``
    (``k < steps``, one batched pass): times ``a``, it sums to ``score(a) - score(0 at the layer)`` up to the
    midpoint rule's error."""
    alphas = (torch.arange(steps, device=a.device, dtype=a.dtype) + 0.5) / steps
    value = alphas.view(-1, *[1] * (a.ndim - 1)) * a
    leaf = value.detach().requires_grad_(True)
    with replace_positions(model, layer, lambda _: leaf):
        logits = model(x.expand(steps, *x.shape[1:]))
    (grad,) = torch.autograd.grad(tgt.score(logits).sum(), leaf)
    return grad.mean(0, keepdim=True)


def keep_by_share(weights: torch.Tensor, share: float, limit: int | None = None) -> list[int]:
    """Indices of the fewest entries whose ``|weight|`` covers ``share`` of the total, largest first (at most
    ``limit``; zero weights never)."""
    magnitude = weights.detach().abs().double().flatten()
    total = float(magnitude.sum())
    if total <= 0:
        return []
    order = torch.argsort(magnitude, descending=True, stable=True)
    covered = torch.cumsum(magnitude[order], 0) / total
    count = int(torch.searchsorted(covered, torch.tensor(share, dtype=covered.dtype) - 1e-12)) + 1
    count = min(count, int((magnitude > 0).sum()), limit if limit is not None else count)
    return order[:count].tolist()


def _layer_nodes(layer: str, a: torch.Tensor, grad: torch.Tensor, basis, settings: CircuitSettings) -> LayerNodes:
    with torch.no_grad():
        z = basis.codes(a)                                                   # [1, K, h, w]
        contrib = z * basis.along(grad)                                      # [1, K, h, w]
        scores = contrib.flatten(2).sum(2)[0]                                # [K]
        total = float((a.reshape(a.shape[0], a.shape[1], -1) * grad.reshape(a.shape[0], a.shape[1], -1)).sum())
    kept = keep_by_share(scores, settings.node_share, settings.max_nodes)
    return LayerNodes(layer=layer, kind=basis.kind, scores=scores.cpu(), kept=kept, codes=z.detach()[0].cpu(),
                      contributions=contrib.detach()[0].cpu(), total=total)


def _edges(x_leaf: torch.Tensor, layers, acts, grads, bases, nodes: list[LayerNodes]) -> list[Edge]:
    edges: list[Edge] = []
    lower_names = [INPUT] + list(layers[:-1])
    for k, (lower, upper) in enumerate(zip(lower_names, layers)):
        upper_nodes = nodes[k]
        if not upper_nodes.kept:
            continue
        lower_act = x_leaf if lower == INPUT else acts[lower]
        pulled = _pull_back(acts[upper], lower_act, grads[upper], bases[upper], upper_nodes)   # [J, 1, C, h, w]
        with torch.no_grad():
            if lower == INPUT:
                maps = (pulled * x_leaf.detach()).sum(2)[:, 0]                                  # [J, H, W]
                for j, unit in enumerate(upper_nodes.kept):
                    upper_nodes.inflow[unit] = float(maps[j].sum())
                    edges.append(Edge((INPUT, None), (upper, unit), float(maps[j].sum()), maps[j].cpu()))
                continue
            lower_nodes = nodes[k - 1]
            z = lower_nodes.codes.to(pulled)                                                  # [K, h, w]
            contrib = z[None] * bases[lower].along(pulled[:, 0])                              # [J, K, h, w]
            weights = contrib.flatten(2).sum(2)                                               # [J, K]
            for j, unit in enumerate(upper_nodes.kept):
                upper_nodes.inflow[unit] = float(weights[j].sum())
                for i in lower_nodes.kept:
                    edges.append(Edge((lower, i), (upper, unit), float(weights[j, i]), contrib[j, i].cpu()))
    return edges


def _pull_back(upper_act: torch.Tensor, lower_act: torch.Tensor, grad: torch.Tensor, basis,
               upper_nodes: LayerNodes) -> torch.Tensor:
    """For every kept node ``j`` of the upper layer, the gradient of ``Σ_p z_j(p) (D_j · g(p))`` (``g`` held
    fixed, ``z_j`` linearized through the basis' read-out) with respect to the lower activation:
    ``[J, *lower.shape]``, all ``J`` in one batched backward pass."""
    z = upper_nodes.codes.to(grad)[None]                                                     # [1, K, h, w]
    along = basis.along(grad.detach())                                                       # [1, K, h, w]
    onehot = torch.zeros(len(upper_nodes.kept), *along.shape, dtype=along.dtype, device=along.device)
    for j, unit in enumerate(upper_nodes.kept):
        onehot[j, :, unit] = along[:, unit]
    cotangent = basis.pull_back(onehot, z).reshape(len(upper_nodes.kept), *upper_act.shape)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            (pulled,) = torch.autograd.grad(upper_act, lower_act, cotangent, retain_graph=True, allow_unused=True,
                                            is_grads_batched=True)
    except RuntimeError:   # an operation without a vmap rule: the same gradients one node at a time
        rows = [torch.autograd.grad(upper_act, lower_act, c, retain_graph=True, allow_unused=True)[0]
                for c in cotangent]
        pulled = None if rows[0] is None else torch.stack(rows)
    if pulled is None:
        return torch.zeros(len(upper_nodes.kept), *lower_act.shape, dtype=lower_act.dtype, device=lower_act.device)
    return pulled


def _target_edges(nodes: list[LayerNodes]) -> list[Edge]:
    last = nodes[-1]
    return [Edge((last.layer, u), (TARGET, None), float(last.scores[u]),
                 last.contributions[u]) for u in last.kept]


def prune_edges(edges: list[Edge], share: float) -> list[Edge]:
    """The fewest edges whose ``|weight|`` covers ``share`` of the total, in their original order."""
    if not edges:
        return []
    keep = set(keep_by_share(torch.tensor([e.weight for e in edges]), share))
    return [e for k, e in enumerate(edges) if k in keep]
