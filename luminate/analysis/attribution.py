"""Attribution: which pixels, positions, channels and neuron groups drive a class logit.

Every function takes a :class:`~luminate.models.Model` and images ``[N, 3, H, W]`` in [0, 1] (a ``[3, H, W]``
tensor, a path or a PIL image also work: non-tensors go through ``model.preprocess``). Results come back on
the CPU.

**Targets.** ``target`` is a class index or name (resolved with ``model.class_index``; a bad name raises an
error listing the closest names), a list / tensor with one class per image, or ``None`` for each image's
top-1 class. The score is the target's *logit* (pre-softmax, as in Lucid). Give ``baseline_target=j`` (or
``target=("daisy", "bee")``) to attribute the *difference* of two logits ``logit[target] - logit[j]``
(Lucid's AttrChannel ``score_f``); it is antisymmetric in the two classes.

**Input attribution** (Captum's argument names and return shapes):

* :func:`saliency` -- ``|d score / d x|`` ``[N,3,H,W]``; Captum ``Saliency`` (``abs=True`` default as there).
* :func:`input_x_gradient` -- ``x * d score / d x``; Captum ``InputXGradient``.
* :func:`integrated_gradients` -- ``(x - x0) * integral_0^1 grad(x0 + a (x - x0)) da``; Captum
  ``IntegratedGradients`` with the same ``baselines``, ``n_steps``, ``method``, ``internal_batch_size``
  and ``return_convergence_delta``. Differences: baselines default to zeros *in Luminate's [0, 1] image
  space* (a black image, where Captum's zeros live in whatever space the forward function takes);
  ``internal_batch_size=None`` processes chunks of at most 16 scaled images instead of all at once (same
  result, bounded memory); and ``"riemann_trapezoid"`` uses true trapezoid weights ``1/(n-1)`` (halved
  at the ends), which sum to 1 -- Captum's weights are ``1/n`` and sum to ``1 - 1/n``, so Captum's
  trapezoid attributions equal ours times ``(n - 1) / n``.

**Layer attribution** (``layer`` is a dotted module name such as ``"blocks.9.depthwise"``):

* :func:`layer_gradient_x_activation` -- ``acts * d score / d acts``, full layer shape ``[N,C,H,W]``;
  Captum ``LayerGradientXActivation`` (identical numbers). Lucid's "linear approximation".
* :func:`layer_integrated_gradients` -- integrated gradients in activation space, by default from zero
  activation with Lucid's AttrChannel left Riemann sum of 100 steps. Captum ``LayerIntegratedGradients``
  starts instead at the layer's activations for a baseline *image* (black by default); pass
  ``baselines=images`` to do the same (then the numbers match Captum's for the same ``method``).
* :func:`spatial_attribution` ``[N,H,W]`` (sum over channels, Lucid's AttrSpatial) and
  :func:`channel_attribution` ``[N,C]`` (sum over positions, Lucid's AttrChannel), linear or integrated.
  Captum has no direct equivalent: sum its layer attributions over ``dim=1`` or ``dim=(2, 3)``.
* :func:`spatial_spatial_attribution` ``[H2,W2,H1,W1]`` -- how each position of ``layer1`` feeds the
  activation norm at each position of a later ``layer2`` (Lucid's AttrSpatial, no Captum equivalent).
* :func:`group_attribution` ``[G, n_classes]`` -- attribution to neuron groups given by spatial and
  channel factors (Lucid's NeuronGroups; no Captum equivalent).

Completeness (the attributions sum to the change of the score) holds for the integrated methods up to the
quadrature error, which ``return_convergence_delta=True`` reports. On ReLU6 networks that error converges
slowly and erratically: the score along the path is piecewise linear with very many kinks, and near a flat
baseline the gradient spikes (on EfficientNet-Lite0 the daisy logit of ``flower.jpg`` makes half its
change in the first 5% of the path from a black image, with gradients 40x their mean). Measured relative
errors ``|delta| / |f(x) - f(x0)|`` on Lite0, ``flower.jpg``, class daisy:

* input IG, 224 px, black baseline: trapezoid 64 steps 56%, 128 steps 0.6%, 256 steps 2.5%;
  Gauss-Legendre 64 steps 1.8%, 128 steps 3.6%. Grey baseline, Gauss-Legendre 64: 6.8%.
* input IG from a blurred copy of the image (box blur, the smoother path): 224 px, 31-px blur,
  trapezoid 64: 2.1%, Gauss-Legendre 64: 2.8%; 128 px, 17-px blur, trapezoid 32 / 48 / 64: 4.0% / 0.3% /
  3.6% (the test asserts < 10% for 32 steps; exactness of the rules is tested on a smooth network,
  where trapezoid with 64 steps is within 1e-3).
* layer IG from zero activation: ``blocks.12.depthwise`` at 128 px, trapezoid 32: 0.06%, left 16 / 100
  (Lucid): 0.5% / 0.2% (the test asserts < 1% and < 2%); ``blocks.9.depthwise`` at 224 px, left 64: 0.9%;
  ``head``: exact (everything above it is linear).

Check the delta, raise ``n_steps``, and prefer a blurred baseline over a black one when completeness matters.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch

from luminate.activations import LayerTap, activations
from luminate.images import to_tensor
from luminate.models.base import Model, as_model

ClassLike = Union[int, str]
Target = Union[ClassLike, Sequence[ClassLike], torch.Tensor, tuple, None]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
_DEFAULT_CHUNK = 16


# ----------------------------------------------------------------------------------------------- helpers
def as_batch(model: Model, images) -> torch.Tensor:
    """``images`` as ``[N, C, H, W]`` float on the model's device.

    Tensors are used as they are (``[C,H,W]`` gains a batch axis; float dtypes are kept; no crop or
    resize); paths, PIL images and arrays go through ``model.preprocess`` (the model's evaluation crop
    and size).
    """
    if isinstance(images, torch.Tensor):
        if images.is_floating_point() and images.ndim in (3, 4):
            return (images if images.ndim == 4 else images[None]).detach().to(model.device)
        return to_tensor(images, channels=model.contract.channels).to(model.device)
    return model.preprocess(images)


def resolve_targets(model: Model, target: Target, n: int, images: torch.Tensor | None = None,
                    baseline_target: Target = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class indices ``[n]`` for ``target`` and ``baseline_target`` (``None`` when there is none).

    A tuple of two classes ``(a, b)`` means ``target=a, baseline_target=b``; a list or tensor gives one
    class per image; ``None`` is each image's top-1 class (needs ``images``).
    """
    if isinstance(target, tuple):
        if len(target) != 2 or baseline_target is not None:
            raise ValueError("a tuple target means a logit difference (class, baseline_class): give exactly two "
                             "classes and no baseline_target; use a list for one class per image")
        target, baseline_target = target
    return _indices(model, target, n, images), (None if baseline_target is None
                                                else _indices(model, baseline_target, n, images))


def resolve_classes(model: Model, classes: Sequence[ClassLike] | ClassLike | None, image: torch.Tensor) -> list[int]:
    """Class indices for one class, a list of classes, or ``None`` (the top class of ``image`` ``[1,3,H,W]``)."""
    if classes is None or isinstance(classes, (int, str, np.integer)):
        return _indices(model, classes, 1, image).tolist()
    return [int(_indices(model, c, 1, image)[0]) for c in classes]


def _indices(model: Model, target, n: int, images: torch.Tensor | None) -> torch.Tensor:
    device = model.device
    if target is None:
        if images is None:
            raise ValueError("target=None means each image's top class, which needs the images")
        with torch.no_grad():
            return _logits(model(images)).argmax(1).to(device)
    if isinstance(target, torch.Tensor):
        target = target.tolist() if target.ndim else int(target)
    if isinstance(target, (int, np.integer, str)):
        return torch.full((n,), _class_index(model, target), dtype=torch.long, device=device)
    items = list(target)
    if len(items) != n:
        raise ValueError(f"got {len(items)} targets for {n} images: give one class, or one per image")
    return torch.tensor([_class_index(model, t) for t in items], dtype=torch.long, device=device)


def _class_index(model: Model, label) -> int:
    if isinstance(label, torch.Tensor):
        label = label.item()
    return model.class_index(int(label) if isinstance(label, np.integer) else label)


def _logits(output: torch.Tensor) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"attribution needs a model whose output is [N, classes] logits, got {shape}")
    return output


def _score(output: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor | None) -> torch.Tensor:
    """Per-image score ``[N]``: ``logit[target]`` or ``logit[target] - logit[baseline]``."""
    logits = _logits(output)
    score = logits.gather(1, target[:, None])[:, 0]
    if baseline is not None:
        score = score - logits.gather(1, baseline[:, None])[:, 0]
    return score


def _grad(score: torch.Tensor, leaf: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    (grad,) = torch.autograd.grad(score.sum(), leaf, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


@contextmanager
def _replace_output(model: Model, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, ``layer``'s output ``a`` is replaced by ``fn(a)`` (same shape) in every forward pass: only the
    addressed call of a reused module (``"name#k"``; a plain name: its first), token layers as ``[N, C, h, w]``."""
    from luminate.activations import replace_output

    with replace_output(model, layer, fn):
        yield


def _input_gradient(model: Model, x: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(``d score / d x`` ``[N,C,H,W]``, score ``[N]``)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        score = _score(model(leaf), target, baseline)
        return _grad(score, leaf), score.detach()


def _layer_gradient(model: Model, images: torch.Tensor, layer: str, target: torch.Tensor,
                    baseline: torch.Tensor | None, replace: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(acts, ``d score / d acts``, score) for ``layer``; ``replace`` substitutes the layer's activations."""
    held: dict[str, torch.Tensor] = {}

    def make_leaf(output: torch.Tensor) -> torch.Tensor:
        held["acts"] = (output if replace is None else replace).detach().requires_grad_(True)
        return held["acts"]

    with torch.enable_grad(), _replace_output(model, layer, make_leaf):
        score = _score(model(images), target, baseline)
        return held["acts"].detach(), _grad(score, held["acts"]), score.detach()


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


def _broadcast_baselines(baselines, inputs: torch.Tensor) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    if isinstance(baselines, (int, float)):
        return torch.full_like(inputs, float(baselines))
    b = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    try:
        return b.expand_as(inputs) if b.ndim == inputs.ndim else b[None].expand_as(inputs)
    except RuntimeError:
        raise ValueError(f"baselines of shape {tuple(b.shape)} do not broadcast to the inputs {tuple(inputs.shape)}: "
                         "give a number, one image [C,H,W] / [1,C,H,W] or one per input") from None


def _sum_but_batch(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


# ------------------------------------------------------------------------------------ input attribution
def saliency(model, inputs, target: Target = None, abs: bool = True, baseline_target: Target = None) -> torch.Tensor:
    """Gradient of the target logit w.r.t. the input pixels, ``[N, 3, H, W]`` (absolute value by default).

    Captum: ``Saliency(model).attribute(inputs, target=target, abs=abs)`` gives the same numbers.
    """
    model = as_model(model)
    x = as_batch(model, inputs)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    grad, _ = _input_gradient(model, x, t, b)
    return (grad.abs() if abs else grad).cpu()


def input_x_gradient(model, inputs, target: Target = None, baseline_target: Target = None) -> torch.Tensor:
    """``inputs * d score / d inputs``, ``[N, 3, H, W]`` (Captum ``InputXGradient``)."""
    model = as_model(model)
    x = as_batch(model, inputs)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    grad, _ = _input_gradient(model, x, t, b)
    return (x * grad).cpu()


def integrated_gradients(model, inputs, target: Target = None, baselines=None, n_steps: int = 50,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         return_convergence_delta: bool = False, baseline_target: Target = None):
    """Integrated gradients of the target logit from ``baselines`` to ``inputs``, ``[N, 3, H, W]``.

    Args:
        inputs: ``[N, 3, H, W]`` in [0, 1].
        target: class(es) whose logit is explained (see the module docstring).
        baselines: ``None`` (zeros: a black image), a number, one image ``[3,H,W]`` or ``[1,3,H,W]``, or one
            per input. Scaled images ``x0 + a (x - x0)`` must stay in [0, 1] (the model checks).
        n_steps: integration points per image.
        method: one of :data:`METHODS` (Captum's names; Captum's default ``"gausslegendre"``).
        internal_batch_size: scaled images per forward/backward pass (``None``: 16).
        return_convergence_delta: also return ``delta [N]`` = sum of attributions - (f(x) - f(x0)), as Captum.

    Returns:
        attributions ``[N, 3, H, W]`` (summing to about ``f(x) - f(x0)`` per image), or
        ``(attributions, delta)``.
    """
    model = as_model(model)
    x = as_batch(model, inputs)
    x0 = _broadcast_baselines(baselines, x)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    attr = _path_integral(x0, x, lambda idx, pts: _input_gradient(model, pts, t[idx], b if b is None else b[idx])[0],
                          n_steps, method, internal_batch_size)
    if not return_convergence_delta:
        return attr.cpu()
    with torch.no_grad():
        n = x.shape[0]
        both = torch.cat([t, t]), (None if b is None else torch.cat([b, b]))
        scores = _score(model(torch.cat([x, x0])), *both)
    delta = _sum_but_batch(attr) - (scores[:n] - scores[n:])
    return attr.cpu(), delta.cpu()


# ------------------------------------------------------------------------------------ layer attribution
def layer_gradient_x_activation(model, inputs, layer: str, target: Target = None,
                                baseline_target: Target = None) -> torch.Tensor:
    """``acts * d score / d acts`` at ``layer``: the layer's full shape, ``[N, C, H, W]`` (or ``[N, C]``).

    Lucid's linear attribution (AttrSpatial / AttrChannel "simple"); Captum ``LayerGradientXActivation``.
    """
    model = as_model(model)
    x = as_batch(model, inputs)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    acts, grad, _ = _layer_gradient(model, x, layer, t, b)
    return (acts * grad).cpu()


def layer_integrated_gradients(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                               baselines=None, n_steps: int = 100, method: str = "riemann_left",
                               internal_batch_size: int | None = None, return_convergence_delta: bool = False):
    """Integrated gradients in the activation space of ``layer``, ``[N, C, H, W]``.

    The layer's activations ``a`` are replaced, in otherwise normal forward passes, by ``a0 + s (a - a0)``
    for the integration points ``s``; the attribution is ``(a - a0) * sum_k w_k grad_k``.

    Args:
        baselines: ``None``: ``a0 = 0`` (Lucid's AttrChannel path from zero activation); images
            (``[N|1, 3, H, W]`` in [0, 1], or a number for a flat image): ``a0`` = their activations at
            ``layer``, as Captum's ``LayerIntegratedGradients`` does.
        n_steps, method: Lucid's default is a left Riemann sum of 100 steps; any of :data:`METHODS`.
        internal_batch_size: images per forward/backward pass (``None``: 16).
        return_convergence_delta: also return ``delta [N]`` = sum - (score(a) - score(a0)).

    Returns:
        attributions ``[N, C, H, W]`` summing to about ``score(a) - score(a0)``, or ``(attributions, delta)``.
    """
    model = as_model(model)
    x = as_batch(model, inputs)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    acts = activations(model, x, layer, grid=True).to(x.device)
    if baselines is None:
        start = torch.zeros_like(acts)
    else:
        start = activations(model, _broadcast_baselines(baselines, x), layer).to(x.device)

    def grad_at(idx: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return _layer_gradient(model, x[idx], layer, t[idx], None if b is None else b[idx], replace=points)[1]

    attr = _path_integral(start, acts, grad_at, n_steps, method, internal_batch_size)
    if not return_convergence_delta:
        return attr.cpu()
    with torch.no_grad():
        end_score = _score(model(x), t, b)
        with _replace_output(model, layer, lambda out: start):
            start_score = _score(model(x), t, b)
    return attr.cpu(), (_sum_but_batch(attr) - (end_score - start_score)).cpu()


def _layer_attr(model, inputs, layer, target, baseline_target, integrated, n_steps) -> torch.Tensor:
    if integrated:
        attr = layer_integrated_gradients(model, inputs, layer, target, baseline_target, n_steps=n_steps)
    else:
        attr = layer_gradient_x_activation(model, inputs, layer, target, baseline_target)
    if attr.ndim != 4:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(attr.shape[1:])}, not [C, H, W]; "
                         "choose a convolutional layer or use layer_gradient_x_activation")
    return attr


def spatial_attribution(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                        integrated: bool = False, n_steps: int = 100) -> torch.Tensor:
    """Attribution per position of ``layer``, summed over channels: ``[N, H, W]`` (Lucid's AttrSpatial).

    ``integrated=True`` uses :func:`layer_integrated_gradients` (zero-activation baseline, ``n_steps``
    left Riemann steps) instead of activation x gradient.
    """
    return _layer_attr(model, inputs, layer, target, baseline_target, integrated, n_steps).sum(1)


def channel_attribution(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                        integrated: bool = False, n_steps: int = 100) -> torch.Tensor:
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
    held: dict[str, torch.Tensor] = {}

    def make_leaf(output: torch.Tensor) -> torch.Tensor:
        held["acts1"] = output.detach().requires_grad_(True)
        return held["acts1"]

    with torch.enable_grad(), _replace_output(model, layer1, make_leaf), LayerTap(model, [layer2]) as tap:
        acts2 = tap(x)[layer2]
        if "acts1" not in held or acts2.grad_fn is None:
            raise ValueError(f"layer {layer2!r} does not depend on layer {layer1!r}: layer2 must come after layer1")
        acts1 = held["acts1"]
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
