"""Attribution: which pixels, positions, channels and neuron groups drive a class logit.

Every method takes a :class:`~luminate.models.Model` and images ``[N, 3, H, W]`` in [0, 1] (a ``[3, H, W]``
tensor, a path or a PIL image also work: non-tensors go through ``model.preprocess``). Results come back on
the CPU.

**Targets.** ``target`` is a class index or name (resolved with ``model.class_index``; a bad name raises an
error listing the closest names), a list / tensor with one class per image, or ``None`` for each image's
top-1 class. The score is the target's *logit* (pre-softmax, as in Lucid). Give ``baseline_target=j`` (or
``target=("daisy", "bee")``) to attribute the *difference* of two logits ``logit[target] - logit[j]``
(Lucid's AttrChannel ``score_f``); it is antisymmetric in the two classes.

**Captum does the work, in Captum's words.** :data:`CAPTUM_METHODS` is the one table: one :class:`Method` row per
method name (the Captum class, ``"input"`` or ``"layer"``, the keywords it takes with their defaults) and
:func:`attribute` the one entry point, which dispatches from the row:
``attribute(model, x, "integrated_gradients", target="daisy", baselines=x0, n_steps=64)`` builds Captum's
``IntegratedGradients`` over the model, passes Captum's own keyword names through (``baselines``, ``n_steps``,
``method``, ``internal_batch_size``, ``nt_samples``, ``stdevs``, ``abs``, ``sliding_window_shapes``, ``strides``,
``relu_attributions``...), refuses any other with a TypeError naming it, and returns CPU tensors. Every integrated
method defaults to :data:`N_STEPS` steps. Captum runs on Luminate's model contract: images are checked once to be
in [0, 1] (the noisy copies NoiseTunnel and GradientShap make go through unchecked), class names resolve through the
model's labels, and a logit difference is passed to Captum as an extra forward argument, so every Captum expansion
(steps, samples, windows) keeps it aligned. :func:`check_method` turns a bad name into an error listing the valid
ones.

**Seeds.** SmoothGrad (Captum ``NoiseTunnel(Saliency)``) and GradientSHAP (``GradientShap``) draw random numbers,
and Captum takes no ``torch.Generator``: it draws from torch's global RNG (the noise) and numpy's (GradientShap's
reference and path points). Those rows take ``seed`` (default 0): the call runs inside ``torch.random.fork_rng``
(the CPU and the inputs' CUDA device) with the generators seeded by ``seed``, and numpy's global state is saved,
seeded and put back, so equal seeds give equal attributions and the caller's random streams are left as they were.
(Like any use of the global RNGs, two such calls must not run at once in threads of one process.)

**What Captum lacks** is written here or in :mod:`luminate.analysis.lucid_attribution` (re-exported here): layer
integrated gradients from *zero activation* (Lucid's AttrChannel; the ``layer_integrated_gradients`` row without
``baselines``), a DeepLIFT rule for ``ReLU6`` (below), spatial / channel / spatial-to-spatial / group attribution,
and the forward-mode attribution the atlas and the Microscope use.

**Input methods** ``[N, 3, H, W]``: ``saliency`` (``|d score / d x|``), ``input_x_gradient``,
``integrated_gradients`` (baselines default to zeros, which in Luminate's [0, 1] image space is a black image;
``internal_batch_size=None`` means chunks of 16; Captum's ``"riemann_trapezoid"`` weights sum to ``1 - 1/n``, not
1: use the default ``"gausslegendre"`` when the sum matters), ``smoothgrad`` (``nt_samples``, ``stdevs`` in [0, 1]
pixel units, ``nt_type``), ``gradient_shap`` (black and white references by default), ``occlusion`` (grey patches
of a seventh of the image side, strides of half a patch) and ``deeplift`` (rescale rule). Captum's DeepLift has no
rule for ``ReLU6`` (EfficientNet-Lite's activation) and needs out-of-place non-linearities: while it runs,
``ReLU6`` modules become the exact ``6 - relu(6 - relu(x))`` and in-place ReLUs are made out-of-place (put back
afterwards), so the attributions sum to ``f(x) - f(x0)`` (measured: |delta| < 1e-12 on Lite0 in float64).
Non-linearities called as functions or modules reused twice still get plain gradients there (Captum warns).

**Layer methods** (``layer`` is a dotted module name such as ``"blocks.9.depthwise"``):
``layer_gradient_x_activation`` (``acts * d score / d acts``, the layer's shape ``[N, C, H, W]``; Lucid's "linear
approximation"), ``gradcam`` ``[N, 1, h, w]`` (the positive part with ``relu_attributions=True``; upsample with
Captum's ``LayerAttribution.interpolate``), ``layer_integrated_gradients`` (from zero activation with Lucid's left
Riemann sum unless ``baselines`` images are given, when it is Captum's ``LayerIntegratedGradients``, starting at
those images' activations). :func:`spatial_attribution` ``[N,H,W]`` and :func:`channel_attribution` ``[N,C]`` (Lucid's
AttrSpatial and AttrChannel, linear or integrated), :func:`spatial_spatial_attribution` ``[H2,W2,H1,W1]`` and
:func:`group_attribution` ``[G, n_classes]`` (Lucid's NeuronGroups) have no Captum equivalent.

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

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import numpy as np
import torch

from luminate.analysis.lucid_attribution import (METHODS, N_STEPS, _DEFAULT_CHUNK, _layer_gradient,  # noqa: F401
                                                 channel_attribution, dual_forward, group_attribution,
                                                 layer_ig_from_zero, position_mask, spatial_attribution,
                                                 spatial_spatial_attribution, unit_attribution)
from luminate.analysis.targets import (ClassLike, Target, _indices, _logits, as_batch,  # noqa: F401
                                       resolve_classes, resolve_targets)
from luminate.models.base import Model, as_model


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
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Captum's random draws (torch's global RNG for noise, numpy's for GradientShap's references and path points)
    seeded by ``seed`` for the call; both global states are as they were afterwards."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(int(seed))
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(int(seed))
        np.random.seed(int(seed) % 2 ** 32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


# ------------------------------------------------------------------------------------ what Captum lacks
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


def _path_defaults(kwargs: dict, x: torch.Tensor) -> None:
    """Integrated methods and DeepLift: baselines broadcast to the inputs (``None``: black), and
    ``internal_batch_size=None`` means bounded chunks of 16 (Captum's None would run every step at once)."""
    kwargs["baselines"] = _broadcast_baselines(kwargs["baselines"], x)
    if "internal_batch_size" in kwargs and kwargs["internal_batch_size"] is None:
        kwargs["internal_batch_size"] = _DEFAULT_CHUNK


def _reference_images(kwargs: dict, x: torch.Tensor) -> None:
    """GradientShap's reference distribution ``[M, C, H, W]``: black and white by default."""
    if kwargs["baselines"] is None:
        kwargs["baselines"] = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])]).detach()
    else:
        ref = torch.as_tensor(kwargs["baselines"], dtype=x.dtype, device=x.device)
        kwargs["baselines"] = ref if ref.ndim == 4 else ref[None]


def _occlusion_windows(kwargs: dict, x: torch.Tensor) -> None:
    """Occlusion's windows default to ``(C, w, w)`` with ``w`` a seventh of the image side (32 px at 224), strides to
    half a window."""
    window = max(1, min(x.shape[-2:]) // 7)
    if kwargs["sliding_window_shapes"] is None:
        kwargs["sliding_window_shapes"] = (x.shape[1], window, window)
    shapes = tuple(kwargs["sliding_window_shapes"])
    kwargs["sliding_window_shapes"] = shapes
    if kwargs["strides"] is None:
        kwargs["strides"] = (shapes[0], max(1, shapes[1] // 2), max(1, shapes[2] // 2))


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


# ------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Method:
    """One row of :data:`CAPTUM_METHODS`: everything :func:`attribute` needs to run a method.

    Attributes:
        captum: the ``captum.attr`` class; with ``wraps``, a class wrapping another (``NoiseTunnel(Saliency)``).
        kind: ``"input"`` (attributions to the pixels, ``[N, 3, H, W]``) or ``"layer"`` (to a layer's activations;
            :func:`attribute` needs ``layer``).
        defaults: every keyword the method takes, with its default: Captum's names, Luminate's values where Captum
            has none or another; ``seed`` for methods that draw random numbers.
        choices: keywords with a fixed set of values, checked before Captum runs.
        fill: fills the defaults that depend on the images (baselines, windows) in place.
        during: a context the Captum call runs in (what Captum lacks for this method).
        without_baselines: the algorithm run when ``baselines`` is None (Captum lacks it).
        spatial: the layer must give ``[N, C, h, w]`` activations.
    """

    captum: str
    kind: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    wraps: str | None = None
    choices: Mapping[str, tuple] = field(default_factory=dict)
    fill: Callable[[dict, torch.Tensor], None] | None = None
    during: Callable[[Model], ContextManager] | None = None
    without_baselines: Callable[..., Any] | None = None
    spatial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "choices", MappingProxyType(dict(self.choices)))

    @property
    def captum_name(self) -> str:
        """The Captum class as written in Captum: ``"IntegratedGradients"``, ``"NoiseTunnel(Saliency)"``."""
        return f"{self.captum}({self.wraps})" if self.wraps else self.captum

    @property
    def seeded(self) -> bool:
        """Whether the method draws random numbers (and so takes ``seed``)."""
        return "seed" in self.defaults


_PATH = {"baselines": None, "n_steps": N_STEPS, "internal_batch_size": _DEFAULT_CHUNK,
         "return_convergence_delta": False}
_RULES = {"method": METHODS}

#: Every method :func:`attribute` (and ``luminate attribute --method``) knows, one :class:`Method` row each. The
#: defaults are the one place a method's defaults live; ``layer_integrated_gradients`` without ``baselines``
#: starts at zero activation (Lucid; Captum lacks it).
CAPTUM_METHODS: Mapping[str, Method] = MappingProxyType({
    "saliency": Method("Saliency", "input", {"abs": True}),
    "input_x_gradient": Method("InputXGradient", "input"),
    "integrated_gradients": Method("IntegratedGradients", "input", {**_PATH, "method": "gausslegendre"},
                                   choices=_RULES, fill=_path_defaults),
    "smoothgrad": Method("NoiseTunnel", "input", {"nt_samples": 16, "stdevs": 0.15, "abs": True,
                                                  "nt_type": "smoothgrad", "nt_samples_batch_size": 4, "seed": 0},
                         wraps="Saliency", choices={"nt_type": ("smoothgrad", "smoothgrad_sq", "vargrad")}),
    "gradient_shap": Method("GradientShap", "input", {"baselines": None, "n_samples": 16, "stdevs": 0.0, "seed": 0},
                            fill=_reference_images),
    "deeplift": Method("DeepLift", "input", {"baselines": None, "return_convergence_delta": False},
                       fill=_path_defaults, during=_deeplift_ready),
    "occlusion": Method("Occlusion", "input", {"sliding_window_shapes": None, "strides": None, "baselines": 0.5,
                                               "perturbations_per_eval": 16}, fill=_occlusion_windows),
    "gradcam": Method("LayerGradCam", "layer", {"relu_attributions": True, "attribute_to_layer_input": False},
                      spatial=True),
    "layer_integrated_gradients": Method("LayerIntegratedGradients", "layer", {**_PATH, "method": "riemann_left"},
                                         choices=_RULES, fill=_path_defaults, without_baselines=layer_ig_from_zero),
    "layer_gradient_x_activation": Method("LayerGradientXActivation", "layer"),
})
ATTRIBUTION_METHODS = tuple(CAPTUM_METHODS)
LAYER_METHODS = tuple(name for name, row in CAPTUM_METHODS.items() if row.kind == "layer")


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`ATTRIBUTION_METHODS` (any case; ``-`` for ``_``), else a ValueError listing
    the valid names (and, for a Captum class name, the method that runs it)."""
    name = str(method).strip().lower().replace("-", "_")
    if name in CAPTUM_METHODS:
        return name
    hint = next((f" ({method!r} is Captum's class of {n!r}: pass method={n!r})"
                 for n, row in CAPTUM_METHODS.items() if row.captum_name.lower() == str(method).strip().lower()), "")
    raise ValueError(f"unknown attribution method {method!r}{hint}; valid methods: {', '.join(ATTRIBUTION_METHODS)}")


def _keywords(name: str, row: Method, layer: str | None, given: dict) -> dict:
    """The row's defaults updated with ``given``, after checking the names, the values with fixed choices and
    ``layer`` against the method's kind."""
    unknown = sorted(set(given) - set(row.defaults))
    if unknown:
        takes = ", ".join(["target", "baseline_target", *(["layer"] if row.kind == "layer" else []), *row.defaults])
        raise TypeError(f"attribute(..., {name!r}) got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"{name} takes {takes}")
    if row.kind == "layer" and not layer:
        raise ValueError(f"{name} attributes to a layer: pass layer= (e.g. model.default_layer('attribution'); "
                         "luminate.models.layers(model) lists them)")
    if row.kind == "input" and layer is not None:
        raise TypeError(f"{name} attributes to the input pixels and takes no layer; the layer methods are "
                        f"{', '.join(LAYER_METHODS)}")
    kwargs = {**row.defaults, **given}
    for key, allowed in row.choices.items():
        if kwargs[key] not in allowed:
            raise ValueError(f"{name}: unknown {key} {kwargs[key]!r}; choose one of {', '.join(allowed)}")
    return kwargs


def _explainer(row: Method, model: Model, layer: str | None):
    """The Captum object of ``row`` over the model's scores (and the layer's module for layer methods)."""
    captum_attr = _captum()
    scores = _Scores(model)
    if row.wraps:
        return getattr(captum_attr, row.captum)(getattr(captum_attr, row.wraps)(scores))
    if row.kind == "layer":
        return getattr(captum_attr, row.captum)(scores, model.layer(layer))
    return getattr(captum_attr, row.captum)(scores)


def attribute(model: Model | str, inputs, method: str = "integrated_gradients", /, *, target: Target = None,
              layer: str | None = None, baseline_target: Target = None, **captum_kwargs):
    """Attribution by method name (a row of :data:`CAPTUM_METHODS`), with Captum's own keyword arguments.

    ``attribute(model, x, "integrated_gradients", target="daisy", baselines=x0, n_steps=64)`` runs Captum's
    ``IntegratedGradients`` under the model contract; ``smoothgrad`` takes ``nt_samples``, ``stdevs``, ``abs``,
    ``seed``; ``occlusion`` ``sliding_window_shapes``, ``strides``; layer methods need ``layer``. A keyword the
    method does not take raises a TypeError naming it and the ones the method takes.

    Args:
        inputs: ``[N, 3, H, W]`` in [0, 1] (or a path / PIL image, through ``model.preprocess``).
        method: a name of :data:`ATTRIBUTION_METHODS`, given by position (``method=`` is Captum's keyword: the
            integration rule of the integrated methods, one of :data:`METHODS`).
        target: class index or name, one per image, a ``(class, other)`` logit difference, or ``None`` (top-1).
        layer: the layer of a layer method (a dotted module name).

    Returns CPU tensors: ``[N, 3, H, W]`` for input methods, the layer's shape ``[N, C, h, w]`` for layer methods
    (``[N, 1, h, w]`` for Grad-CAM); ``(attributions, delta)`` with ``return_convergence_delta=True``.
    """
    name = check_method(method)
    row = CAPTUM_METHODS[name]
    kwargs = _keywords(name, row, layer, captum_kwargs)
    if row.without_baselines is not None and kwargs["baselines"] is None:
        del kwargs["baselines"]
        return row.without_baselines(model, inputs, layer, target, baseline_target, **kwargs)
    model, x, t, extra = _prepare(model, inputs, target, baseline_target)
    seed = kwargs.pop("seed", None)
    if row.fill is not None:
        row.fill(kwargs, x)
    explainer = _explainer(row, model, layer)
    with ExitStack() as stack:
        stack.enter_context(model.frozen())             # eval-mode weights; gradients w.r.t. the inputs only
        if row.during is not None:
            stack.enter_context(row.during(model))
        if seed is not None:
            stack.enter_context(_seeded(seed, x.device))
        out = explainer.attribute(x, target=t, additional_forward_args=extra, **kwargs)
    out = tuple(o.detach().cpu() for o in out) if isinstance(out, tuple) else out.detach().cpu()
    first = out[0] if isinstance(out, tuple) else out
    if row.spatial and first.ndim != 4:
        raise ValueError(f"{name} needs a convolutional layer ([N, C, h, w] activations); {layer!r} gives "
                         f"{tuple(first.shape[1:])}")
    return out


def class_maps(model, image, classes: Sequence[int], method: str, layer: str | None = None, n_steps: int = N_STEPS,
               cell: int = 8) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-class maps for a page: ``(spatial [K, h, w], channel [K, C] or None)`` for one image and ``K`` classes.

    Layer methods give the layer's grid (channel attribution summed over positions; for Grad-CAM each channel's
    share ``mean(grad) * sum(acts)``); pixel methods sum the colour channels and then ``cell`` x ``cell`` pixel
    blocks (a 28 x 28 grid at 224 px), and have no channel attribution (``None``). ``n_steps`` sets the path length
    or sample count of the methods that have one.
    """
    method = check_method(method)
    model = as_model(model)
    x = as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"class maps take one image, got a batch of {x.shape[0]}")
    batch = x.expand(len(classes), -1, -1, -1)
    target = list(classes)
    if method == "gradcam":
        spatial = attribute(model, batch, method, target=target, layer=layer)[:, 0]
        acts, grads, _ = _layer_gradient(model, batch, layer, _indices(model, target, len(target), batch), None)
        return spatial, (grads.mean((2, 3)) * acts.sum((2, 3))).cpu()
    if method in LAYER_METHODS:
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
    defaults = CAPTUM_METHODS[method].defaults
    for key in ("n_steps", "nt_samples", "n_samples"):
        if key in defaults:
            return {key: n_steps}
    return {}
