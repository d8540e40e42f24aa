"""Attribution Captum lacks, from Lucid's notebooks: one module used by the analyses, the atlas and the Microscope.

* :func:`layer_ig_from_zero` -- integrated gradients in the activation space of a layer from *zero activation*
  (Lucid's AttrChannel; Captum's ``LayerIntegratedGradients`` starts at a baseline image's activations instead).
* :func:`spatial_attribution` ``[N, H, W]`` and :func:`channel_attribution` ``[N, C]`` (Lucid's AttrSpatial and
  AttrChannel), linear (``acts * grad``) or integrated from zero activation.
* :func:`spatial_spatial_attribution` ``[H2, W2, H1, W1]`` and :func:`group_attribution` ``[G, K]`` (NeuronGroups).
* :func:`dual_forward` -- forward-mode attribution ``J_logits . tangent`` in one pass for every class: with the
  activation masked to one position (:func:`position_mask`) it is the atlas's per-position attribution
  ``sum d logit / d act * act`` (Lucid's activation-atlas collection); with one channel's map it is a unit's
  attribution (:func:`unit_attribution`, the Microscope).

Integration rules are Captum's names (:data:`METHODS`); the step default is :data:`N_STEPS`, as everywhere.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from luminate.activations import LayerTap, activations, output_as_leaf, replace_output
from luminate.analysis.targets import (ClassLike, Target, _grad, _score, _sum_but_batch, as_batch,
                                       resolve_classes, resolve_targets)
from luminate.models.base import Model, as_model

#: Integration rules (Captum's names).
METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
#: The one default number of integration steps of every integrated method (Captum's default).
N_STEPS = 50
_DEFAULT_CHUNK = 16


def _layer_gradient(model: Model, images: torch.Tensor, layer: str, target: torch.Tensor,
                    baseline: torch.Tensor | None, replace: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(acts, ``d score / d acts``, score) for ``layer``; ``replace`` substitutes the layer's activations."""
    with torch.enable_grad(), model.frozen(), output_as_leaf(model, layer, replace) as held:   # eval mode, as always
        score = _score(model(images), target, baseline)
        return held["leaf"].detach(), _grad(score, held["leaf"]), score.detach()


def _quadrature(method: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of an integration rule with ``n_steps`` points."""
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    least = 2 if method == "riemann_trapezoid" else 1
    if n_steps < least:
        raise ValueError(f"n_steps must be at least {least} for {method}, got {n_steps}")
    k = torch.arange(n_steps, dtype=torch.float64)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    if method == "riemann_trapezoid":
        weights = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (n_steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (k + offset) / n_steps, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)


def _path_integral(start: torch.Tensor, end: torch.Tensor,
                   grad_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   n_steps: int, method: str, chunk: int | None) -> torch.Tensor:
    """``(end - start) * sum_k w_k grad(start + alpha_k (end - start))`` for every item, in chunks.

    ``grad_at(items, points)`` returns the score gradient at ``points`` (rows belong to ``items``).
    """
    alphas, weights = _quadrature(method, n_steps)
    n = end.shape[0]
    items = torch.arange(n).repeat(n_steps)                   # step-major, as Captum orders them
    steps = torch.arange(n_steps).repeat_interleave(n)
    chunk = chunk or _DEFAULT_CHUNK
    if chunk < 1:
        raise ValueError(f"internal_batch_size must be positive, got {chunk}")
    view = (-1,) + (1,) * (end.ndim - 1)
    diff = end - start
    total = torch.zeros_like(end)
    for s in range(0, items.numel(), chunk):
        idx, k = items[s:s + chunk].to(end.device), steps[s:s + chunk]
        points = start[idx] + alphas[k].to(end).view(view) * diff[idx]
        grad = grad_at(idx, points)
        total.index_add_(0, idx, grad * weights[k].to(end).view(view))
    return diff * total


def layer_ig_from_zero(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                       n_steps: int = N_STEPS, method: str = "riemann_left", internal_batch_size: int | None = None,
                       return_convergence_delta: bool = False):
    """Integrated gradients in the activation space of ``layer`` from zero activation (Lucid's AttrChannel),
    ``[N, C, H, W]``: the layer's activations ``a`` are replaced, in otherwise normal forward passes, by ``s a``
    for the integration points ``s``; the attribution is ``a * sum_k w_k grad_k``, summing to about
    ``score(a) - score(0)`` (``return_convergence_delta=True`` also returns that error ``[N]``)."""
    model = as_model(model)
    x = as_batch(model, inputs)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    acts = activations(model, x, layer, grid=True).to(x.device)
    start = torch.zeros_like(acts)

    def grad_at(idx: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return _layer_gradient(model, x[idx], layer, t[idx], None if b is None else b[idx], replace=points)[1]

    attr = _path_integral(start, acts, grad_at, n_steps, method, internal_batch_size)
    if not return_convergence_delta:
        return attr.cpu()
    with torch.no_grad():
        end_score = _score(model(x), t, b)
        with replace_output(model, layer, lambda out: start):
            start_score = _score(model(x), t, b)
    return attr.cpu(), (_sum_but_batch(attr) - (end_score - start_score)).cpu()


def _layer_attr(model, inputs, layer, target, baseline_target, integrated, n_steps) -> torch.Tensor:
    if integrated:
        attr = layer_ig_from_zero(model, inputs, layer, target, baseline_target, n_steps=n_steps)
    else:
        model = as_model(model)
        x = as_batch(model, inputs)
        t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
        acts, grads, _ = _layer_gradient(model, x, layer, t, b)
        attr = (acts * grads).cpu()
    if attr.ndim != 4:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(attr.shape[1:])}, not [C, H, W]; "
                         "choose a convolutional layer or use layer_gradient_x_activation")
    return attr


def spatial_attribution(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                        integrated: bool = False, n_steps: int = N_STEPS) -> torch.Tensor:
    """Attribution per position of ``layer``, summed over channels: ``[N, H, W]`` (Lucid's AttrSpatial).

    ``integrated=True`` uses :func:`layer_ig_from_zero` (zero-activation baseline, ``n_steps``
    left Riemann steps) instead of activation x gradient.
    """
    return _layer_attr(model, inputs, layer, target, baseline_target, integrated, n_steps).sum(1)


def channel_attribution(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                        integrated: bool = False, n_steps: int = N_STEPS) -> torch.Tensor:
    """Attribution per channel of ``layer``, summed over positions: ``[N, C]`` (Lucid's AttrChannel).

    ``integrated=True`` is Lucid's path-integrated version (zero baseline, ``n_steps`` left Riemann steps).
    """
    return _layer_attr(model, inputs, layer, target, baseline_target, integrated, n_steps).sum((2, 3))


def spatial_spatial_attribution(model, image, layer1: str, layer2: str, normalize: bool = True) -> torch.Tensor:
    """How each position of ``layer1`` feeds each position of the later ``layer2``: ``[H2, W2, H1, W1]``.

    For every position ``p`` of ``layer2`` the score is the L2 norm of its activation vector and the
    attribution is ``sum_c acts1 * d score_p / d acts1`` (Lucid's AttrSpatial). One forward pass (stopped
    at ``layer2``) serves all ``H2*W2`` backward passes, which run one at a time through the retained
    graph: memory stays at one forward graph plus one gradient. Measured on 2 CPU threads (``blocks.4`` to
    ``blocks.9`` of Lite0 at 224 px, 196 positions), this loop took 1.3 s, batched vector-Jacobian products
    (``is_grads_batched``) 67 s and a batch of image copies (which recomputes the network below
    ``layer1``) 8.5 s.
    Positions whose activation vector is zero get zero attribution.

    ``normalize=True`` divides by the largest absolute value (Lucid divides by the maximum, which is the
    same when the largest magnitude is positive, as it nearly always is), so values lie in [-1, 1].
    ``image``: one image ``[1, 3, H, W]`` or ``[3, H, W]``.
    """
    model = as_model(model)
    x = as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"spatial_spatial_attribution takes one image, got a batch of {x.shape[0]}")
    with torch.enable_grad(), output_as_leaf(model, layer1) as held, LayerTap(model, [layer2]) as tap:
        acts2 = tap(x)[layer2]
        if "leaf" not in held or acts2.grad_fn is None:
            raise ValueError(f"layer {layer2!r} does not depend on layer {layer1!r}: layer2 must come after layer1")
        acts1 = held["leaf"]
        if acts1.ndim != 4 or acts2.ndim != 4:
            raise ValueError("spatial_spatial_attribution needs two convolutional layers ([N, C, H, W] outputs)")
        h2, w2 = acts2.shape[2:]
        norms = acts2.detach()[0].norm(dim=0)                              # [H2, W2]
        out = torch.zeros(h2, w2, *acts1.shape[2:], device=x.device)
        for i in range(h2):
            for j in range(w2):
                if norms[i, j] > 0:
                    (grad,) = torch.autograd.grad(acts2[0, :, i, j].norm(), acts1, retain_graph=True)
                    out[i, j] = (grad * acts1.detach())[0].sum(0)
    if normalize:
        out = out / out.abs().max().clamp_min(1e-12)
    return out.cpu()


def group_attribution(model, image, layer: str, spatial_factors: torch.Tensor, channel_factors: torch.Tensor,
                      classes: Sequence[ClassLike] | ClassLike | None = None) -> torch.Tensor:
    """Attribution of class logits to neuron groups, ``[G, n_classes]`` (Lucid's NeuronGroups).

    Group ``g`` stands for the activation pattern ``spatial_factors[g] (x) channel_factors[g]``
    (``[H, W]`` outer ``[C]``); its attribution is ``sum (spatial_g (x) channel_g) * d logit / d acts``.
    When the groups reconstruct the activations exactly, the groups' attributions sum to the layer's
    total activation x gradient attribution.

    Args:
        image: one image ``[1, 3, H, W]``.
        spatial_factors: ``[G, H, W]``; channel_factors: ``[G, C]`` (e.g. from
            :class:`~luminate.analysis.factorization.ChannelReducer`).
        classes: class indices or names (``None``: the image's top class).
    """
    model = as_model(model)
    x = as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"group_attribution takes one image, got a batch of {x.shape[0]}")
    idx = torch.tensor(resolve_classes(model, classes, x), dtype=torch.long, device=x.device)
    # one copy of the image per class: one backward pass gives every class's gradient
    _, grads, _ = _layer_gradient(model, x.expand(len(idx), -1, -1, -1), layer, idx, None)   # [K, C, H, W]
    spatial = torch.as_tensor(spatial_factors, dtype=grads.dtype, device=grads.device)
    channel = torch.as_tensor(channel_factors, dtype=grads.dtype, device=grads.device)
    if grads.ndim != 4 or spatial.shape[1:] != grads.shape[2:] or channel.shape[1] != grads.shape[1] \
            or spatial.shape[0] != channel.shape[0]:
        raise ValueError(f"factors [G,H,W] {tuple(spatial.shape)} and [G,C] {tuple(channel.shape)} do not match "
                         f"layer {layer!r} with activations {tuple(grads.shape[1:])}")
    return torch.einsum("ghw,gc,kchw->gk", spatial, channel, grads).cpu()


# ------------------------------------------------------------------------- forward-mode attribution
def position_mask(act: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """``act`` with everything but one position per item (``yx`` ``[N, 2]``) set to zero (same shape)."""
    if act.ndim == 2:
        return act.clone()
    masked = torch.zeros_like(act)
    n = torch.arange(act.shape[0], device=act.device)
    masked[n, :, yx[:, 0], yx[:, 1]] = act[n, :, yx[:, 0], yx[:, 1]]
    return masked


def dual_forward(model: Model, images: torch.Tensor, module: nn.Module | str, yx: torch.Tensor | None = None, *,
                 mask=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward-mode AD pass: ``(activation of module, logits [N, K], attribution [N, K])``.

    The tangent at ``module``'s output is its activation masked to position ``yx[n]`` of each item, so
    the logits' tangent is ``J_logits · masked activation``: each position's attribution to every class.
    ``mask`` (a function ``activation -> tangent``, same shape) replaces the position mask, e.g. one
    channel's map for a unit's attribution (the Microscope).

    ``module`` may be a layer name: then ``"name#k"`` picks call ``k`` of a reused module, and a token layer
    ``[N, T, C]`` is seen (activation and mask) as its ``[N, C, h, w]`` grid. A module keeps its first call.
    """
    from luminate.activations import grid_to_tokens, tokens_to_grid

    state: dict[str, torch.Tensor] = {}
    layer, call, calls = None, 0, [0]
    if isinstance(module, str):
        layer = module
        module_name, call = model.resolve(layer)
        call = call or 0
        module = model.network.get_submodule(module_name)
    tokens = layer is not None and model.layer_layout(layer) == "tokens"

    def hook(mod, inputs, output):
        k, calls[0] = calls[0], calls[0] + 1
        if "act" in state or k != call:  # a module called twice keeps its first call (or the one addressed)
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the layer returns {type(output).__name__}, not a tensor; choose one of its submodules")
        primal = output.detach()
        if tokens and primal.ndim == 3:
            hw = tuple(images.shape[-2:])
            grid = tokens_to_grid(model, layer, primal, hw)
            state["act"] = grid
            prefix = model.token_grid(layer, primal.shape[1], hw)[0]
            tangent = grid_to_tokens(position_mask(grid, yx) if mask is None else mask(grid),
                                     torch.zeros_like(primal[:, :prefix]))
            return fwAD.make_dual(primal, tangent)
        state["act"] = primal
        return fwAD.make_dual(primal, position_mask(primal, yx) if mask is None else mask(primal))

    from luminate.overrides import without_fused_paths

    with torch.no_grad(), fwAD.dual_level(), without_fused_paths(model.network):
        handle = module.register_forward_hook(hook)
        try:
            out = model(images)
        finally:
            handle.remove()
        logits, tangent = fwAD.unpack_dual(out)
    if "act" not in state:
        raise RuntimeError("the layer did not run in the forward pass")
    if tangent is None:  # the output does not depend on the layer at all
        tangent = torch.zeros_like(logits)
    return state["act"], logits.detach(), tangent.detach()


def unit_attribution(model: Model, images: torch.Tensor, layer: str, units: Sequence[int]) -> torch.Tensor:
    """Each unit's attribution to every logit for each image, ``[N, U, n_classes]`` (CPU float32):
    ``Σ_{y,x} ∂logit_k/∂a[u,y,x] · a[u,y,x]``, by one forward-mode pass per unit."""
    module = model.layer(layer)
    out = []
    for unit in units:
        def mask(act: torch.Tensor, unit: int = unit) -> torch.Tensor:
            tangent = torch.zeros_like(act)
            tangent[:, unit] = act[:, unit]
            return tangent

        with model.frozen():   # eval mode (BatchNorm statistics, dropout) whatever the caller's mode
            _, _, tangent = dual_forward(model, images, module, mask=mask)
        out.append(tangent.float().cpu())
    if not out:
        return torch.zeros(images.shape[0], 0, 0)
    return torch.stack(out, 1)
