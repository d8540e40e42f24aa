"""Attribution: which pixels, positions, channels and neuron groups drive a class logit.

Every function takes a :class:`~luminate.models.Model` and images ``[N, 3, H, W]`` in [0, 1] (a ``[3, H, W]``
tensor, a path or a PIL image also work: non-tensors go through ``model.preprocess``). Results come back on
the CPU.

**Targets.** ``target`` is a class index or name (resolved with ``model.class_index``; a bad name raises an
error listing the closest names), a list / tensor with one class per image, or ``None`` for each image's
top-1 class. The score is the target's *logit* (pre-softmax, as in Lucid). Give ``baseline_target=j`` (or
``target=("daisy", "bee")``) to attribute the *difference* of two logits ``logit[target] - logit[j]``
(Lucid's AttrChannel ``score_f``); it is antisymmetric in the two classes.

**Captum does the work.** Every method below runs Captum's algorithm (``captum.attr``, in the ``analysis`` extra)
on Luminate's model contract: images are ``[N, 3, H, W]`` in [0, 1] (checked once; the noisy copies SmoothGrad and
GradientSHAP make go through unchecked), class names resolve through the model's labels, and a logit
difference is passed to Captum as an extra forward argument, so every Captum expansion (steps, samples, windows)
keeps it aligned. What Luminate adds is only what Captum lacks: layer integrated gradients from *zero activation*
(Lucid's AttrChannel), spatial-to-spatial and group attribution, and the atlas's forward-mode attribution
(``luminate.atlas.collect``). :func:`attribute` takes a method by name (:data:`ATTRIBUTION_METHODS`);
:func:`check_method` turns a bad name into an error listing the valid ones.

**Input attribution** ``[N, 3, H, W]``:

* :func:`saliency` -- ``|d score / d x|`` (Captum ``Saliency``); :func:`input_x_gradient` (``InputXGradient``).
* :func:`integrated_gradients` -- Captum ``IntegratedGradients`` with its ``baselines``, ``n_steps``, ``method``,
  ``internal_batch_size`` and ``return_convergence_delta``. Baselines default to zeros, which in Luminate's [0, 1]
  image space is a black image; ``internal_batch_size=None`` means chunks of 16 (bounded memory). Captum's
  ``"riemann_trapezoid"`` weights sum to ``1 - 1/n`` (not 1): use the default ``"gausslegendre"`` when the sum
  matters.
* :func:`smoothgrad` (``NoiseTunnel(Saliency)``), :func:`gradient_shap` (``GradientShap``, black and white
  references by default), :func:`occlusion` (``Occlusion``, grey patches of a seventh of the image side).
* :func:`deeplift` -- Captum ``DeepLift`` (rescale rule). Captum has no rule for ``ReLU6`` (EfficientNet-Lite's
  activation) and needs out-of-place non-linearities: while it runs, ``ReLU6`` modules become the exact
  ``6 - relu(6 - relu(x))`` and in-place ReLUs are made out-of-place, so the attributions sum to
  ``f(x) - f(x0)`` (measured: |delta| < 1e-12 on Lite0 in float64). Non-linearities called as functions or
  modules reused twice still get plain gradients there (Captum warns).

**Layer attribution** (``layer`` is a dotted module name such as ``"blocks.9.depthwise"``):

* :func:`layer_gradient_x_activation` -- ``acts * d score / d acts``, full layer shape ``[N,C,H,W]``;
  Captum ``LayerGradientXActivation``. Lucid's "linear approximation".
* :func:`gradcam` ``[N, h, w]`` -- Captum ``LayerGradCam`` (positive part, optionally upsampled).
* :func:`layer_integrated_gradients` -- integrated gradients in activation space, by default from zero
  activation with Lucid's AttrChannel left Riemann sum of 100 steps (Luminate's own path: Captum has no
  activation-space baseline). With ``baselines=images`` it is Captum's ``LayerIntegratedGradients``, which starts
  at the layer's activations for those images.
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
errors ``|delta| / |f(x) - f(x0)|`` on Lite0, ``flower.jpg``, class daisy (measured with trapezoid weights summing to 1,
before the move to Captum; Captum's trapezoid adds an error of about ``1/n``):

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
from luminate.models.base import Model, as_model

ClassLike = Union[int, str]
Target = Union[ClassLike, Sequence[ClassLike], torch.Tensor, tuple, None]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
_DEFAULT_CHUNK = 16


# ----------------------------------------------------------------------------------------------- helpers
def as_batch(model: Model, images) -> torch.Tensor:
    """``images`` as ``[N, C, H, W]`` float on the model's device: :meth:`Model.as_batch` (tensors as they are,
    paths, PIL images and arrays through ``model.preprocess``)."""
    return as_model(model).as_batch(images)


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


def resolve_classes(model: Model, classes: Sequence[ClassLike] | ClassLike | None, image: torch.Tensor | None = None,
                    top: int = 1) -> list[int]:
    """Class indices for one class or a list of classes (names or indices), or for ``None``: the ``top`` predicted
    classes of ``image`` ``[1, C, H, W]``, best first.

    Strings of digits count as indices (as the command line passes them); a bad name raises ``KeyError`` listing the
    closest names.
    """
    if classes is None:
        if image is None:
            raise ValueError("classes=None means the image's top classes, which needs the image")
        with torch.no_grad():
            logits = _logits(model(image.to(model.device)))
        return logits[0].topk(min(top, logits.shape[1])).indices.tolist()
    items = [classes] if isinstance(classes, (int, str, np.integer)) else list(classes)
    if not items:
        raise ValueError("no classes given: name at least one class, or pass None for the top predicted classes")
    return [_class_index(model, int(c) if isinstance(c, str) and c.strip().isdigit() else c) for c in items]


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


# ------------------------------------------------------------------------------------ Captum under the contract
def _captum():
    try:
        import captum.attr as captum_attr
    except ImportError as exc:  # pragma: no cover - captum is in the analysis extra
        raise ImportError("attribution methods run on Captum: pip install 'luminate[analysis]' (or captum)") from exc
    return captum_attr


class _Scores(torch.nn.Module):
    """``[N, C, H, W]`` images in [0, 1] -> logits ``[N, classes]`` (or logits minus the baseline class's logit).

    The [0, 1] check runs once on the real images before Captum is called; the perturbed copies Captum makes
    (SmoothGrad noise, GradientSHAP samples) may leave [0, 1] and go through unchecked. A module, so that Captum's
    DeepLift can hook its non-linearities.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, baseline: torch.Tensor | None = None) -> torch.Tensor:
        logits = _logits(self.model.network(self.model.normalize(images)))
        if baseline is not None:
            logits = logits - logits.gather(1, baseline.long()[:, None].to(logits.device))
        return logits


def _prepare(model, inputs, target: Target, baseline_target: Target):
    """(model, images ``[N, C, H, W]``, targets ``[N]``, Captum's ``additional_forward_args``)."""
    model = as_model(model)
    x = as_batch(model, inputs)
    model.contract.check(x)
    t, b = resolve_targets(model, target, x.shape[0], x, baseline_target)
    return model, x.detach().clone().requires_grad_(True), t, (None if b is None else (b,))


@contextmanager
def _captum_ready(model: Model) -> Iterator[None]:
    """Frozen eval-mode weights while Captum runs (gradients are taken w.r.t. inputs only)."""
    frozen = getattr(model, "frozen", None)
    if frozen is None:
        yield
        return
    with frozen():
        yield


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's and NumPy's global generators (Captum draws from both) and restore them afterwards."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


# ------------------------------------------------------------------------------------ input attribution
def saliency(model, inputs, target: Target = None, abs: bool = True, baseline_target: Target = None) -> torch.Tensor:
    """Gradient of the target logit w.r.t. the input pixels, ``[N, 3, H, W]`` (absolute value by default).

    Captum ``Saliency`` (same arguments).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    with _captum_ready(model):
        out = _captum().Saliency(_Scores(model)).attribute(x, target=t, abs=abs, additional_forward_args=extra)
    return out.detach().cpu()


def input_x_gradient(model, inputs, target: Target = None, baseline_target: Target = None) -> torch.Tensor:
    """``inputs * d score / d inputs``, ``[N, 3, H, W]`` (Captum ``InputXGradient``)."""
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    with _captum_ready(model):
        out = _captum().InputXGradient(_Scores(model)).attribute(x, target=t, additional_forward_args=extra)
    return out.detach().cpu()


def integrated_gradients(model, inputs, target: Target = None, baselines=None, n_steps: int = 50,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         return_convergence_delta: bool = False, baseline_target: Target = None):
    """Integrated gradients of the target logit from ``baselines`` to ``inputs``, ``[N, 3, H, W]`` (Captum
    ``IntegratedGradients``).

    Args:
        inputs: ``[N, 3, H, W]`` in [0, 1].
        target: class(es) whose logit is explained (see the module docstring).
        baselines: ``None`` (zeros: a black image, since Luminate's images live in [0, 1]), a number, one image
            ``[3,H,W]`` or ``[1,3,H,W]``, or one per input.
        n_steps: integration points per image.
        method: one of :data:`METHODS` (Captum's; ``"riemann_trapezoid"`` uses Captum's weights, which sum to
            ``1 - 1/n``: prefer ``"gausslegendre"`` when completeness matters).
        internal_batch_size: scaled images per forward/backward pass (``None``: 16, bounded memory).
        return_convergence_delta: also return ``delta [N]`` = sum of attributions - (f(x) - f(x0)).

    Returns:
        attributions ``[N, 3, H, W]``, or ``(attributions, delta)``.
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    x0 = _broadcast_baselines(baselines, x)
    with _captum_ready(model):
        out = _captum().IntegratedGradients(_Scores(model)).attribute(
            x, baselines=x0, target=t, additional_forward_args=extra, n_steps=n_steps, method=method,
            internal_batch_size=internal_batch_size or _DEFAULT_CHUNK, return_convergence_delta=return_convergence_delta)
    if return_convergence_delta:
        attr, delta = out
        return attr.detach().cpu(), delta.detach().cpu()
    return out.detach().cpu()


def smoothgrad(model, inputs, target: Target = None, n_samples: int = 16, stdev: float = 0.15,
               absolute: bool = True, seed: int = 0, baseline_target: Target = None) -> torch.Tensor:
    """SmoothGrad: the input gradient averaged over ``n_samples`` noisy copies (noise ``N(0, stdev)`` in [0, 1]
    pixel units), ``[N, 3, H, W]``. Captum ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``.

    ``absolute`` averages ``|gradient|`` (Captum's ``Saliency`` default); ``seed`` makes the noise repeatable (the
    global RNGs are saved and restored around the call).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    captum_attr = _captum()
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(_Scores(model)))
    with _captum_ready(model), _seeded(seed):
        out = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=n_samples, stdevs=stdev, target=t,
                               additional_forward_args=extra, abs=absolute)
    return out.detach().cpu()


def gradient_shap(model, inputs, target: Target = None, baselines=None, n_samples: int = 16, stdev: float = 0.0,
                  seed: int = 0, baseline_target: Target = None) -> torch.Tensor:
    """GradientSHAP (Captum ``GradientShap``): expected gradients between ``inputs`` and random points on the
    paths to ``baselines``, ``[N, 3, H, W]``.

    ``baselines``: ``[M, 3, H, W]`` reference images (default: black and white, ``M = 2``); ``stdev`` adds noise to
    each sample; ``seed`` makes the draws repeatable.
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    if baselines is None:
        ref = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])])
    else:
        ref = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
        ref = ref if ref.ndim == 4 else ref[None]
    with _captum_ready(model), _seeded(seed):
        out = _captum().GradientShap(_Scores(model)).attribute(x, baselines=ref, n_samples=n_samples, stdevs=stdev,
                                                                 target=t, additional_forward_args=extra)
    return out.detach().cpu()


class _ReLU6AsReLUs(torch.nn.Module):
    """``relu6(x) = 6 - relu(6 - relu(x))``: two ``nn.ReLU`` modules in a chain, so Captum's DeepLift applies its
    rescale rule (it has none for ``ReLU6``). The chained multipliers telescope to ReLU6's own rescale rule
    ``(relu6(x) - relu6(x0)) / (x - x0)``."""

    def __init__(self) -> None:
        super().__init__()
        self.low = torch.nn.ReLU()
        self.high = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 6.0 - self.high(6.0 - self.low(x))


@contextmanager
def _deeplift_ready(model: Model) -> Iterator[None]:
    """While active, ``ReLU6`` modules are DeepLift-compatible pairs of ReLUs and in-place ReLUs are out-of-place.

    Captum's DeepLift hooks every non-linearity module and needs each to run once per forward pass: a module reused
    at two places of the network, or a non-linearity written as a function call (``F.relu``) rather than a module,
    gets no rescale rule (Captum then falls back to its gradient there).
    """
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    inplace: list[torch.nn.Module] = []
    try:
        for parent in model.network.modules():
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.ReLU6:
                    swapped.append((parent, name, child))
                    setattr(parent, name, _ReLU6AsReLUs().to(next(model.parameters(), torch.zeros(())).device))
                elif getattr(child, "inplace", False) is True:
                    child.inplace = False
                    inplace.append(child)
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        for child in inplace:
            child.inplace = True


def deeplift(model, inputs, target: Target = None, baselines=None, baseline_target: Target = None,
             return_convergence_delta: bool = False):
    """DeepLIFT (rescale rule; Captum ``DeepLift``) from ``baselines`` (default black) to ``inputs``, ``[N, 3, H, W]``.

    Captum's DeepLift supports ``ReLU`` but not ``ReLU6``: while it runs, every ``nn.ReLU6`` of the network is
    replaced by the equivalent ``6 - relu(6 - relu(x))`` (exact, and its DeepLIFT multipliers are ReLU6's rescale
    rule), and in-place ReLUs are made out-of-place; the network is put back afterwards. Non-linearities called as
    functions, or modules reused at two places, get plain gradients from Captum (a warning from Captum says so).
    Attributions sum to ``f(x) - f(x0)`` (``delta`` reports the error).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    x0 = _broadcast_baselines(baselines, x)
    with _captum_ready(model), _deeplift_ready(model):
        out = _captum().DeepLift(_Scores(model)).attribute(x, baselines=x0, target=t, additional_forward_args=extra,
                                                           return_convergence_delta=return_convergence_delta)
    if return_convergence_delta:
        return out[0].detach().cpu(), out[1].detach().cpu()
    return out.detach().cpu()


def occlusion(model, inputs, target: Target = None, window: int | None = None, stride: int | None = None,
              baselines: float = 0.5, perturbations_per_eval: int = 16, baseline_target: Target = None) -> torch.Tensor:
    """Occlusion (Captum ``Occlusion``): the drop of the score when a ``window`` x ``window`` patch (all colour
    channels) is replaced by ``baselines`` (default mid-grey), ``[N, 3, H, W]``.

    ``window`` defaults to a seventh of the image side (32 px at 224), ``stride`` to half the window.
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    window = window or max(1, min(x.shape[-2:]) // 7)
    stride = stride or max(1, window // 2)
    with torch.no_grad(), _captum_ready(model):
        out = _captum().Occlusion(_Scores(model)).attribute(
            x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
            baselines=baselines, target=t, additional_forward_args=extra,
            perturbations_per_eval=perturbations_per_eval)
    return out.detach().cpu()


# ------------------------------------------------------------------------------------ layer attribution
def layer_gradient_x_activation(model, inputs, layer: str, target: Target = None,
                                baseline_target: Target = None) -> torch.Tensor:
    """``acts * d score / d acts`` at ``layer``: the layer's full shape, ``[N, C, H, W]`` (or ``[N, C]``).

    Lucid's linear attribution (AttrSpatial / AttrChannel "simple"); Captum ``LayerGradientXActivation``.
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    module = model.layer(layer)
    with _captum_ready(model):
        out = _captum().LayerGradientXActivation(_Scores(model), module).attribute(x, target=t,
                                                                                   additional_forward_args=extra)
    return out.detach().cpu()


def gradcam(model, inputs, layer: str, target: Target = None, relu: bool = True,
            upsample: bool = False, baseline_target: Target = None) -> torch.Tensor:
    """Grad-CAM (Captum ``LayerGradCam``) at ``layer``: ``[N, h, w]`` (``[N, H, W]`` with ``upsample``).

    Each channel's activation map weighted by the spatial mean of its gradient, summed over channels; ``relu``
    keeps the positive part (Grad-CAM's definition). Pages and the CLI default ``layer`` to the explain page's
    attribution layer (``blocks.10`` for EfficientNet-Lite).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    captum_attr = _captum()
    with _captum_ready(model):
        out = captum_attr.LayerGradCam(_Scores(model), model.layer(layer)).attribute(
            x, target=t, additional_forward_args=extra, relu_attributions=relu)
    if out.ndim != 4:
        raise ValueError(f"Grad-CAM needs a convolutional layer ([N, C, h, w] activations); {layer!r} gives "
                         f"{tuple(out.shape[1:])}")
    if upsample:
        out = captum_attr.LayerAttribution.interpolate(out, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return out[:, 0].detach().cpu()


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
    if baselines is not None:   # Captum's own algorithm: the path starts at the baseline image's activations
        model, x, t, extra = _prepare(model, inputs, target, baseline_target)
        if method not in METHODS:
            raise ValueError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
        with _captum_ready(model):
            out = _captum().LayerIntegratedGradients(_Scores(model), model.layer(layer)).attribute(
                x, baselines=_broadcast_baselines(baselines, x), target=t, additional_forward_args=extra,
                n_steps=n_steps, method=method, internal_batch_size=internal_batch_size or _DEFAULT_CHUNK,
                return_convergence_delta=return_convergence_delta)
        if return_convergence_delta:
            return out[0].detach().cpu(), out[1].detach().cpu()
        return out.detach().cpu()
    # from zero activation (Lucid's AttrChannel): Captum has no activation-space baseline, so the path is ours
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


# ------------------------------------------------------------------------------------ one entry point by name
#: Methods :func:`attribute` (and ``luminate attribute --method``) knows: pixel-space ones attribute to the input,
#: layer ones (:data:`LAYER_METHODS`) to a layer's positions.
ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift", "occlusion",
                       "gradient_shap", "gradcam", "layer_integrated_gradients", "layer_gradient_x_activation")
LAYER_METHODS = ("gradcam", "layer_integrated_gradients", "layer_gradient_x_activation")


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`ATTRIBUTION_METHODS` (``-`` and ``_`` both accepted), else a ValueError
    listing the valid names."""
    name = str(method).strip().lower().replace("-", "_")
    aliases = {"ig": "integrated_gradients", "grad_cam": "gradcam", "layer_ig": "layer_integrated_gradients",
               "linear": "layer_gradient_x_activation", "shap": "gradient_shap"}
    name = aliases.get(name, name)
    if name not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: {', '.join(ATTRIBUTION_METHODS)}")
    return name


def attribute(model, inputs, method: str = "integrated_gradients", target: Target = None, layer: str | None = None,
              n_steps: int = 32, baseline_target: Target = None) -> torch.Tensor:
    """Attribution by method name: ``[N, 3, H, W]`` for pixel methods, ``[N, C, h, w]`` for the layer methods
    (``[N, 1, h, w]`` for Grad-CAM), each from the function of the same name with Luminate's defaults.

    ``n_steps`` is the path length of the integrated methods and the sample count of SmoothGrad and GradientSHAP.
    Layer methods need ``layer``.
    """
    method = check_method(method)
    if method in LAYER_METHODS and not layer:
        raise ValueError(f"{method} attributes to a layer: pass layer= (e.g. 'blocks.10'; see luminate.models.layers)")
    if method == "saliency":
        return saliency(model, inputs, target, baseline_target=baseline_target)
    if method == "input_x_gradient":
        return input_x_gradient(model, inputs, target, baseline_target=baseline_target)
    if method == "integrated_gradients":
        return integrated_gradients(model, inputs, target, n_steps=n_steps, baseline_target=baseline_target)
    if method == "smoothgrad":
        return smoothgrad(model, inputs, target, n_samples=n_steps, baseline_target=baseline_target)
    if method == "gradient_shap":
        return gradient_shap(model, inputs, target, n_samples=n_steps, baseline_target=baseline_target)
    if method == "deeplift":
        return deeplift(model, inputs, target, baseline_target=baseline_target)
    if method == "occlusion":
        return occlusion(model, inputs, target, baseline_target=baseline_target)
    if method == "gradcam":
        return gradcam(model, inputs, layer, target, baseline_target=baseline_target)[:, None]
    if method == "layer_integrated_gradients":
        return layer_integrated_gradients(model, inputs, layer, target, baseline_target, n_steps=n_steps)
    return layer_gradient_x_activation(model, inputs, layer, target, baseline_target)


def class_maps(model, image, classes: Sequence[int], method: str, layer: str | None = None, n_steps: int = 32,
               cell: int = 8) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-class maps for a page: ``(spatial [K, h, w], channel [K, C] or None)`` for one image and ``K`` classes.

    Layer methods give the layer's grid (channel attribution summed over positions; for Grad-CAM each channel's
    share ``mean(grad) * sum(acts)``); pixel methods sum the colour channels and then ``cell`` x ``cell`` pixel
    blocks (a 28 x 28 grid at 224 px), and have no channel attribution (``None``).
    """
    method = check_method(method)
    model = as_model(model)
    x = as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"class maps take one image, got a batch of {x.shape[0]}")
    batch = x.expand(len(classes), -1, -1, -1)
    target = list(classes)
    if method in LAYER_METHODS:
        if method == "gradcam":
            spatial = gradcam(model, batch, layer, target)
            acts, grads, _ = _layer_gradient(model, batch, layer, _indices(model, target, len(target), batch), None)
            channel = (grads.mean((2, 3)) * acts.sum((2, 3))).cpu()
            return spatial, channel
        attr = attribute(model, batch, method, target, layer=layer, n_steps=n_steps)
        if attr.ndim != 4:
            raise ValueError(f"layer {layer!r} gives activations of shape {tuple(attr.shape[1:])}, not [C, h, w]; "
                             "choose a convolutional layer (see `luminate layers MODEL`)")
        return attr.sum(1), attr.sum((2, 3))
    attr = attribute(model, batch, method, target, n_steps=n_steps).sum(1, keepdim=True)
    cell = max(1, int(cell))
    return torch.nn.functional.avg_pool2d(attr, cell, ceil_mode=True)[:, 0] * cell * cell, None
