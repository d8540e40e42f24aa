"""Attribution: which pixels, positions, channels and neuron groups drive a class logit.

Every function takes a :class:`~luminate.models.Model` and images ``[N, 3, H, W]`` in [0, 1] (a ``[3, H, W]``
tensor, a path or a PIL image also work: non-tensors go through ``model.preprocess``). Results come back on
the CPU.

**Targets.** ``target`` is a class index or name (resolved with ``model.class_index``; a bad name raises an
error listing the closest names), a list / tensor with one class per image, or ``None`` for each image's
top-1 class. The score is the target's *logit* (pre-softmax, as in Lucid). Give ``baseline_target=j`` (or
``target=("daisy", "bee")``) to attribute the *difference* of two logits ``logit[target] - logit[j]``
(Lucid's AttrChannel ``score_f``); it is antisymmetric in the two classes.

**Captum does the work, in Captum's words.** :data:`CAPTUM_METHODS` is the one table ``{name: (Captum class,
"input" | "layer", defaults)}`` and :func:`attribute` the one entry point:
``attribute(model, x, "integrated_gradients", target="daisy", baselines=x0, n_steps=64)`` passes Captum's own keyword
names through (``baselines``, ``n_steps``, ``method``, ``internal_batch_size``, ``nt_samples``, ``stdevs``, ``abs``,
``sliding_window_shapes``, ``strides``, ``relu_attributions``...), refuses any other with a TypeError naming it, and
returns CPU tensors. Every integrated method defaults to :data:`N_STEPS` steps. Captum runs on Luminate's model
contract: images are ``[N, 3, H, W]`` in [0, 1] (checked once; the noisy copies SmoothGrad and GradientSHAP make go
through unchecked), class names resolve through the model's labels, and a logit difference is passed to Captum as an
extra forward argument, so every Captum expansion (steps, samples, windows) keeps it aligned. SmoothGrad's and
GradientSHAP's random draws come from a ``torch.Generator`` seeded by ``seed`` (Captum would draw from the global
RNGs), then Captum's ``Saliency`` takes the gradients. What Captum lacks -- layer integrated gradients from *zero
activation* (Lucid's AttrChannel), spatial / channel / spatial-to-spatial / group attribution, and the forward-mode
attribution the atlas and the Microscope use -- is in :mod:`luminate.analysis.lucid_attribution` (re-exported here).
:func:`check_method` turns a bad name into an error listing the valid ones.

**Input attribution** ``[N, 3, H, W]``:

* :func:`saliency` -- ``|d score / d x|`` (Captum ``Saliency``); :func:`input_x_gradient` (``InputXGradient``).
* :func:`integrated_gradients` -- Captum ``IntegratedGradients`` with its ``baselines``, ``n_steps``, ``method``,
  ``internal_batch_size`` and ``return_convergence_delta``. Baselines default to zeros, which in Luminate's [0, 1]
  image space is a black image; ``internal_batch_size=None`` means chunks of 16 (bounded memory). Captum's
  ``"riemann_trapezoid"`` weights sum to ``1 - 1/n`` (not 1): use the default ``"gausslegendre"`` when the sum
  matters.
* :func:`smoothgrad` (``NoiseTunnel(Saliency)``: ``nt_samples``, ``stdevs``, ``nt_type``), :func:`gradient_shap`
  (``GradientShap``, black and white references by default), :func:`occlusion` (``Occlusion``, grey patches of a
  seventh of the image side).
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
  activation with Lucid's AttrChannel left Riemann sum (:data:`N_STEPS` steps) (Luminate's own path: Captum has no
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
from typing import Iterator, Sequence

import torch

from luminate.analysis.lucid_attribution import (METHODS, N_STEPS, _DEFAULT_CHUNK, _layer_gradient,  # noqa: F401
                                                 channel_attribution, dual_forward, group_attribution,
                                                 layer_ig_from_zero, position_mask, spatial_attribution,
                                                 spatial_spatial_attribution, unit_attribution)
from luminate.analysis.targets import (ClassLike, Target, _indices, _logits, as_batch,  # noqa: F401
                                       resolve_classes, resolve_targets)
from luminate.models.base import Model, as_model


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


def integrated_gradients(model, inputs, target: Target = None, baselines=None, n_steps: int = N_STEPS,
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


def _input_gradients(model: Model, points: torch.Tensor, t: torch.Tensor, extra, batch: int) -> torch.Tensor:
    """``d score / d points`` (Captum ``Saliency`` without ``abs``), ``batch`` points per pass; ``t`` and ``extra``
    hold one row per point."""
    saliency_of = _captum().Saliency(_Scores(model))
    out = []
    for s in range(0, points.shape[0], batch):
        part = points[s:s + batch].detach().requires_grad_(True)
        part_extra = None if extra is None else tuple(e[s:s + batch] for e in extra)
        out.append(saliency_of.attribute(part, target=t[s:s + batch], abs=False, additional_forward_args=part_extra))
    return torch.cat(out)


def smoothgrad(model, inputs, target: Target = None, *, nt_samples: int = 16, stdevs: float = 0.15,
               abs: bool = True, nt_type: str = "smoothgrad", nt_samples_batch_size: int | None = None,
               seed: int = 0, baseline_target: Target = None) -> torch.Tensor:
    """SmoothGrad, Captum ``NoiseTunnel(Saliency)`` with Captum's arguments, ``[N, 3, H, W]``: the input gradient
    over ``nt_samples`` noisy copies (noise ``N(0, stdevs)`` in [0, 1] pixel units), averaged (``"smoothgrad"``),
    averaged squared (``"smoothgrad_sq"``) or its variance (``"vargrad"``); ``abs`` takes ``|gradient|`` first
    (Saliency's default). The noise comes from a generator seeded by ``seed``: no global RNG is read or touched.
    """
    if nt_type not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        raise ValueError(f"nt_type must be 'smoothgrad', 'smoothgrad_sq' or 'vargrad', got {nt_type!r}")
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    n, k = x.shape[0], int(nt_samples)
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((k, *x.shape), generator=generator) * float(stdevs)
    noisy = (x.detach()[None] + noise.to(x)).flatten(0, 1)                       # [k * N, C, H, W], sample-major
    extra_rows = None if extra is None else (extra[0].repeat(k),)
    with _captum_ready(model):
        grads = _input_gradients(model, noisy, t.repeat(k), extra_rows, nt_samples_batch_size or _DEFAULT_CHUNK)
    grads = grads.view(k, n, *x.shape[1:])
    grads = grads.abs() if abs else grads
    if nt_type == "smoothgrad":
        out = grads.mean(0)
    elif nt_type == "smoothgrad_sq":
        out = (grads ** 2).mean(0)
    else:
        out = (grads ** 2).mean(0) - grads.mean(0) ** 2
    return out.detach().cpu()


def gradient_shap(model, inputs, target: Target = None, baselines=None, *, n_samples: int = 16,
                  stdevs: float = 0.0, seed: int = 0, baseline_target: Target = None) -> torch.Tensor:
    """GradientSHAP with Captum ``GradientShap``'s arguments and algorithm, ``[N, 3, H, W]``: for ``n_samples``
    draws per input, a random reference from ``baselines`` (``[M, 3, H, W]``; default black and white), the input
    plus noise ``N(0, stdevs)``, and a random point on the path between them; the attribution is the mean of
    ``(noisy input - reference) * gradient at the point``. Draws come from a generator seeded by ``seed`` (no global
    RNG is read or touched).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    if baselines is None:
        ref = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])])
    else:
        ref = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
        ref = ref if ref.ndim == 4 else ref[None]
    n, k = x.shape[0], int(n_samples)
    generator = torch.Generator().manual_seed(int(seed))
    pick = torch.randint(ref.shape[0], (k * n,), generator=generator).to(x.device)
    alpha = torch.rand(k * n, generator=generator).to(x).view(-1, 1, 1, 1)
    noisy = x.detach().repeat(k, 1, 1, 1)
    if stdevs:
        noisy = noisy + (torch.randn(tuple(noisy.shape), generator=generator) * float(stdevs)).to(x)
    start = ref[pick]
    points = start + alpha * (noisy - start)
    extra_rows = None if extra is None else (extra[0].repeat(k),)
    with _captum_ready(model):
        grads = _input_gradients(model, points, t.repeat(k), extra_rows, _DEFAULT_CHUNK)
    return ((noisy - start) * grads).view(k, n, *x.shape[1:]).mean(0).detach().cpu()



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


def occlusion(model, inputs, target: Target = None, sliding_window_shapes: tuple | None = None,
              strides: tuple | int | None = None, baselines: float = 0.5, perturbations_per_eval: int = 16,
              baseline_target: Target = None) -> torch.Tensor:
    """Occlusion (Captum ``Occlusion``, same arguments): the drop of the score when a patch (all colour channels)
    is replaced by ``baselines`` (default mid-grey), ``[N, 3, H, W]``.

    ``sliding_window_shapes`` defaults to ``(C, w, w)`` with ``w`` a seventh of the image side (32 px at 224),
    ``strides`` to half the window.
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    window = max(1, min(x.shape[-2:]) // 7)
    shapes = tuple(sliding_window_shapes) if sliding_window_shapes is not None else (x.shape[1], window, window)
    strides = strides if strides is not None else (shapes[0], max(1, shapes[1] // 2), max(1, shapes[2] // 2))
    with torch.no_grad(), _captum_ready(model):
        out = _captum().Occlusion(_Scores(model)).attribute(
            x, sliding_window_shapes=shapes, strides=strides, baselines=baselines, target=t,
            additional_forward_args=extra, perturbations_per_eval=perturbations_per_eval)
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


def gradcam(model, inputs, layer: str, target: Target = None, relu_attributions: bool = True,
            upsample: bool = False, baseline_target: Target = None,
            attribute_to_layer_input: bool = False) -> torch.Tensor:
    """Grad-CAM (Captum ``LayerGradCam``) at ``layer``: ``[N, h, w]`` (``[N, H, W]`` with ``upsample``).

    Each channel's activation map weighted by the spatial mean of its gradient, summed over channels; ``relu``
    ``relu_attributions`` keeps the positive part (Grad-CAM's definition). Pages and the CLI default ``layer`` to the explain page's
    attribution layer (``blocks.10`` for EfficientNet-Lite).
    """
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    captum_attr = _captum()
    with _captum_ready(model):
        out = captum_attr.LayerGradCam(_Scores(model), model.layer(layer)).attribute(
            x, target=t, additional_forward_args=extra, relu_attributions=relu_attributions,
            attribute_to_layer_input=attribute_to_layer_input)
    if out.ndim != 4:
        raise ValueError(f"Grad-CAM needs a convolutional layer ([N, C, h, w] activations); {layer!r} gives "
                         f"{tuple(out.shape[1:])}")
    if upsample:
        out = captum_attr.LayerAttribution.interpolate(out, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return out[:, 0].detach().cpu()


def layer_integrated_gradients(model, inputs, layer: str, target: Target = None, baseline_target: Target = None,
                               baselines=None, n_steps: int = N_STEPS, method: str = "riemann_left",
                               internal_batch_size: int | None = None, return_convergence_delta: bool = False):
    """Integrated gradients in the activation space of ``layer``, ``[N, C, H, W]``.

    The layer's activations ``a`` are replaced, in otherwise normal forward passes, by ``a0 + s (a - a0)``
    for the integration points ``s``; the attribution is ``(a - a0) * sum_k w_k grad_k``. Without
    ``baselines`` the path starts at zero activation (:func:`~luminate.analysis.lucid_attribution.layer_ig_from_zero`).

    Args:
        baselines: ``None``: ``a0 = 0`` (Lucid's AttrChannel path from zero activation); images
            (``[N|1, 3, H, W]`` in [0, 1], or a number for a flat image): ``a0`` = their activations at
            ``layer``, as Captum's ``LayerIntegratedGradients`` does.
        n_steps, method: a left Riemann sum (Lucid's rule) of :data:`N_STEPS` steps; any of :data:`METHODS`.
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
    # from zero activation (Lucid's AttrChannel): Captum has no activation-space baseline
    return layer_ig_from_zero(model, inputs, layer, target, baseline_target, n_steps=n_steps, method=method,
                              internal_batch_size=internal_batch_size,
                              return_convergence_delta=return_convergence_delta)


# ------------------------------------------------------------------------------------ one entry point by name
#: Every method :func:`attribute` (and ``luminate attribute --method``) knows: ``{name: (Captum class, "input" |
#: "layer", defaults)}``. :func:`attribute` passes Captum's own keyword arguments through (the defaults are
#: Luminate's where Captum has none or another); ``"layer"`` methods attribute to a layer's activations.
#: ``layer_integrated_gradients`` without ``baselines`` starts at zero activation (Lucid; Captum lacks it).
CAPTUM_METHODS: dict[str, tuple[str, str, dict]] = {
    "saliency": ("Saliency", "input", {"abs": True}),
    "input_x_gradient": ("InputXGradient", "input", {}),
    "integrated_gradients": ("IntegratedGradients", "input",
                             {"baselines": None, "n_steps": N_STEPS, "method": "gausslegendre",
                              "internal_batch_size": _DEFAULT_CHUNK, "return_convergence_delta": False}),
    "smoothgrad": ("NoiseTunnel(Saliency)", "input",
                   {"nt_samples": 16, "stdevs": 0.15, "abs": True, "nt_type": "smoothgrad",
                    "nt_samples_batch_size": None, "seed": 0}),
    "gradient_shap": ("GradientShap", "input", {"baselines": None, "n_samples": 16, "stdevs": 0.0, "seed": 0}),
    "deeplift": ("DeepLift", "input", {"baselines": None, "return_convergence_delta": False}),
    "occlusion": ("Occlusion", "input", {"sliding_window_shapes": None, "strides": None, "baselines": 0.5,
                                         "perturbations_per_eval": 16}),
    "gradcam": ("LayerGradCam", "layer", {"relu_attributions": True, "attribute_to_layer_input": False,
                                          "upsample": False}),
    "layer_integrated_gradients": ("LayerIntegratedGradients", "layer",
                                   {"baselines": None, "n_steps": N_STEPS, "method": "riemann_left",
                                    "internal_batch_size": _DEFAULT_CHUNK, "return_convergence_delta": False}),
    "layer_gradient_x_activation": ("LayerGradientXActivation", "layer", {}),
}
ATTRIBUTION_METHODS = tuple(CAPTUM_METHODS)
LAYER_METHODS = tuple(name for name, (_, kind, _) in CAPTUM_METHODS.items() if kind == "layer")
_ALIASES = {"ig": "integrated_gradients", "grad_cam": "gradcam", "layer_ig": "layer_integrated_gradients",
            "linear": "layer_gradient_x_activation", "shap": "gradient_shap", "noise_tunnel": "smoothgrad"}


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`ATTRIBUTION_METHODS` (or a Captum class name such as
    ``"IntegratedGradients"``; ``-`` and ``_`` both accepted), else a ValueError listing the valid names."""
    text = str(method).strip()
    by_class = {cls.lower(): name for name, (cls, _, _) in CAPTUM_METHODS.items()}
    name = by_class.get(text.lower(), text.lower().replace("-", "_"))
    name = _ALIASES.get(name, name)
    if name not in CAPTUM_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: {', '.join(ATTRIBUTION_METHODS)}")
    return name


def attribute(model: Model | str, inputs, method: str = "integrated_gradients", *, target: Target = None,
              layer: str | None = None, baseline_target: Target = None, **captum_kwargs):
    """Attribution by method name (:data:`CAPTUM_METHODS`), with Captum's own keyword arguments.

    ``attribute(model, x, "integrated_gradients", target="daisy", baselines=x0, n_steps=64)`` runs Captum's
    ``IntegratedGradients`` under the model contract; ``smoothgrad`` takes ``nt_samples``, ``stdevs``, ``abs``;
    ``occlusion`` ``sliding_window_shapes``, ``strides``; layer methods need ``layer``. A keyword the method does
    not take raises a TypeError naming it and the ones the method takes.

    Args:
        inputs: ``[N, 3, H, W]`` in [0, 1] (or a path / PIL image, through ``model.preprocess``).
        target: class index or name, one per image, a ``(class, other)`` logit difference, or ``None`` (top-1).

    Returns CPU tensors: ``[N, 3, H, W]`` for input methods, the layer's shape ``[N, C, h, w]`` for layer methods
    (``[N, 1, h, w]`` for Grad-CAM); ``(attributions, delta)`` with ``return_convergence_delta=True``.
    """
    method = check_method(method)
    _, kind, defaults = CAPTUM_METHODS[method]
    unknown = sorted(set(captum_kwargs) - set(defaults))
    if unknown:
        takes = ", ".join(["target", "baseline_target", *(["layer"] if kind == "layer" else []), *defaults])
        raise TypeError(f"attribute(..., {method!r}) got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"{method} takes {takes}")
    if kind == "layer" and not layer:
        raise ValueError(f"{method} attributes to a layer: pass layer= (e.g. model.default_layer('attribution'); "
                         "luminate.models.layers(model) lists them)")
    if kind == "input" and layer is not None:
        raise TypeError(f"{method} attributes to the input pixels and takes no layer; the layer methods are "
                        f"{', '.join(LAYER_METHODS)}")
    args = {"target": target, "baseline_target": baseline_target, **captum_kwargs}
    if kind == "layer":
        out = _FUNCTIONS[method](model, inputs, layer, **args)
        return out[:, None] if method == "gradcam" else out
    return _FUNCTIONS[method](model, inputs, **args)


_FUNCTIONS: dict[str, object] = {name: globals()[name] for name in CAPTUM_METHODS}


def class_maps(model, image, classes: Sequence[int], method: str, layer: str | None = None, n_steps: int = N_STEPS,
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
        attr = attribute(model, batch, method, target=target, layer=layer, **_steps(method, n_steps))
        if attr.ndim != 4:
            raise ValueError(f"layer {layer!r} gives activations of shape {tuple(attr.shape[1:])}, not [C, h, w]; "
                             "choose a convolutional layer (see `luminate layers MODEL`)")
        return attr.sum(1), attr.sum((2, 3))
    attr = attribute(model, batch, method, target=target, **_steps(method, n_steps)).sum(1, keepdim=True)
    cell = max(1, int(cell))
    return torch.nn.functional.avg_pool2d(attr, cell, ceil_mode=True)[:, 0] * cell * cell, None


def _steps(method: str, n_steps: int) -> dict:
    """The keyword that sets a method's path length or sample count (Captum's name for it), if it has one."""
    defaults = CAPTUM_METHODS[method][2]
    for key in ("n_steps", "nt_samples", "n_samples"):
        if key in defaults:
            return {key: n_steps}
    return {}
