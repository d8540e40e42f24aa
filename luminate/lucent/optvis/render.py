"""Lucent's ``lucent.optvis.render``: :func:`render_vis` with Lucent's arguments and return value, running on
:func:`luminate.render`, plus :func:`hook_model`.

What a bare network is taken to be (Lucent's rule, kept exactly): with ``preprocess=True`` a network whose class is
called ``InceptionV1`` gets ``255 x - 117`` of the [0, 1] image, any other network torchvision's ImageNet
normalization ``(x - mean) / std``; with ``preprocess=False`` it gets the [0, 1] image. Images under 224 px are
resized (bilinear, aligned corners) to 224 after the transforms, or to ``fixed_image_size``. A
:class:`luminate.models.Model` brings its own input contract and is used as it is.

Faster than Lucent by construction: no hook on every module (only the layers the objective reads are tapped, and the
forward pass stops after the deepest), weights frozen for the call (no weight gradients), BatchNorm folded into the
convolutions, channels-last on the CPU. The network is left as it was: mode, ``requires_grad``, weights, no hooks.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from luminate.lucent.misc.io import show
from luminate.lucent.modelzoo.util import layer_path, layer_paths
from luminate.lucent.optvis import objectives, param, transform
from luminate.models.base import Model
from luminate.models.contract import InputContract
from luminate.objectives import Objective as EngineObjective
from luminate.param import Parameterization
from luminate.render import render as _render

#: Lucent's default optimizer (Adam, lr 0.05), and the size small images are resized to.
LEARNING_RATE = 5e-2
NETWORK_SIZE = 224


def render_vis(model: nn.Module, objective_f, param_f: Callable | None = None, optimizer: Callable | None = None,
               transforms: Sequence[Callable] | None = None, thresholds: Sequence[int] = (512,),
               verbose: bool = False, preprocess: bool = True, progress: bool = True, show_image: bool = True,
               save_image: bool = False, image_name: str | None = None, show_inline: bool = False,
               fixed_image_size: int | None = None) -> list[np.ndarray]:
    """Optimize ``param_f``'s image for ``objective_f`` on ``model``; one ``[B, H, W, C]`` float32 array in [0, 1]
    per threshold (and the last image when interrupted with Ctrl-C).

    Args (Lucent's):
        model: a network (``inceptionv1()``, a torchvision model) or a Luminate ``Model``.
        objective_f: an objective of :mod:`~luminate.lucent.optvis.objectives`, a function of ``T``, or
            ``"layer:channel"`` with Lucent's layer names (``"mixed4a:476"``, ``"features_3_conv_0:5"``).
        param_f: ``() -> (params, image_f)``; default ``param.image(128)``.
        optimizer: ``params -> torch.optim.Optimizer``; default Adam(lr=0.05).
        transforms: a list; None is ``transform.standard_transforms``, ``[]`` none.
        thresholds: steps after which the image is returned; ``max(thresholds)`` steps run.
        verbose: print the loss before the first step and at each threshold.
        preprocess: convert the [0, 1] image to the network's input (see the module docstring).
        progress: a progress bar. show_image: open the final image with PIL's viewer. save_image, image_name: save
            the final image (default ``image.jpg``). show_inline: show the images in a notebook.
        fixed_image_size: the side the network gets the image at (default: 224 for images under 224 px).
    """
    params, image_f = (param_f or (lambda: param.image(128)))()
    source = as_parameterization(params, image_f)
    steps = [transform.engine_transform(t)
             for t in (transform.standard_transforms if transforms is None else transforms)]
    side = fixed_image_size or (NETWORK_SIZE if min(source.size) < NETWORK_SIZE else None)
    if side:
        steps.append(transform.upsample(side))
    network = model.network if isinstance(model, Model) else model
    engine_model = lucent_model(model, preprocess)
    paths = layer_paths(network)
    lucent_objective = objectives.as_objective(objective_f)
    layers = getattr(lucent_objective, "layers", None)
    if layers is None or verbose:
        layers, initial = _trial(lucent_objective, engine_model, network, paths, source, steps)
        if verbose:
            print(f"Initial loss: {initial:.3f}")
    engine_objective = on_engine(lucent_objective, {n: _path(network, paths, n) for n in layers})
    wanted = sorted({int(t) for t in thresholds if int(t) >= 1})
    if not wanted:
        raise ValueError(f"thresholds {tuple(thresholds)}: give at least one step count of 1 or more")

    def report(step: int, images: Tensor, scores: Tensor) -> None:
        if verbose and step in wanted:
            print(f"Loss at step {step}: {-float(scores.sum()):.3f}")

    result = _render(engine_model, engine_objective, param=source, transforms=steps, thresholds=wanted,
                     optimizer=optimizer or (lambda p: torch.optim.Adam(p, lr=LEARNING_RATE)),
                     seed=int(torch.randint(0, 2**31 - 1, ()).item()), progress=progress, callback=report,
                     redirect_relu_steps=16 if getattr(network, "redirected_relu", False) else 0, reset=False)
    images = [tensor_to_img_array(img) for t, img in zip(result.thresholds, result.images) if t in wanted]
    if result.interrupted:
        print(f"Interrupted optimization at step {len(result.history)}.")
        images.append(tensor_to_img_array(result.image))
    if show_inline:
        for img in images:
            show(img)
    if save_image:
        export(result.image, image_name)
    if show_image and not show_inline:
        view(result.image)
    return images


def lucent_model(model: nn.Module, preprocess: bool = True) -> Model:
    """``model`` as a Luminate :class:`Model` taking [0, 1] images, with Lucent's input assumption (module
    docstring). The network is wrapped, not changed."""
    if isinstance(model, Model):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"render_vis takes a torch.nn.Module (a network) or a Luminate Model, not "
                        f"{type(model).__name__}")
    if not preprocess:
        contract = InputContract()
    elif model._get_name() == "InceptionV1":
        contract = InputContract(value_range=(-117.0, 138.0))
    else:
        contract = InputContract(mean=transform.IMAGENET_MEAN, std=transform.IMAGENET_STD)
    return Model(model, contract, name=model._get_name(), check_inputs=False)


class CallableParam(Parameterization):
    """Lucent's ``(params, image_f)`` as a parameterization: ``forward()`` is ``image_f()``, ``parameters()`` are
    ``params`` (a function of tensors the optimizer updates in place)."""

    def __init__(self, params: Iterable[Tensor], image_f: Callable[[], Tensor]):
        with torch.no_grad():
            b, c, h, w = image_f().shape
        super().__init__(b, c, (h, w))
        self.image_f = image_f
        self._tensors = list(params)

    def forward(self, index=None) -> Tensor:
        out = self.image_f()
        return out if index is None else out[torch.as_tensor(index, device=out.device)]

    def parameters(self, recurse: bool = True):
        return iter(self._tensors)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Nothing: Lucent's parameterizations draw their values when made."""


def as_parameterization(params: Iterable[Tensor], image_f: Callable[[], Tensor]) -> Parameterization:
    """The parameterization the render loop optimizes: ``image_f`` itself when it is one, else a
    :class:`CallableParam`."""
    if isinstance(image_f, Parameterization):
        return image_f
    if not callable(image_f):
        raise TypeError("param_f must return (params, image_f), with image_f a function returning [B, C, H, W]")
    return CallableParam(params, image_f)


def _path(network: nn.Module, paths: Mapping[str, str], name: str) -> str:
    if name == "labels":
        return "output"
    if name == "input":
        return "input"
    return layer_path(network, name, paths)


def on_engine(objective: Callable, layers: Mapping[str, str]) -> EngineObjective:
    """Lucent's loss as an objective of Luminate's render loop: ``layers`` maps the Lucent names it reads to module
    paths; the loss is negated and spread evenly over the batch (the sum is Lucent's value)."""
    def score(acts: Mapping[str, Tensor]) -> Tensor:
        loss = objective(lambda name: acts[layers[name]] if name in layers else _unread(name))
        batch = acts["input"].shape[0]
        return (-loss).reshape(1).expand(batch) / batch

    return EngineObjective(score, set(layers.values()) | {"input"}, name=getattr(objective, "name", None) or "lucent")


def _unread(name: str):
    raise KeyError(f"the objective read layer {name!r} only on some calls; Luminate taps the layers it read on a "
                   "trial call, so read every layer on every call")


def _trial(objective: Callable, engine_model: Model, network: nn.Module, paths: Mapping[str, str],
           source: Parameterization, steps: list) -> tuple[list[str], float]:
    """The Lucent layers ``objective`` reads and its loss, from one forward pass with every layer hooked (as Lucent
    does each step; here once, without gradients)."""
    read: list[str] = []
    with torch.no_grad(), ModelHook(network, source, paths) as hook:
        images = source()
        x = transform.compose(steps)(images, torch.Generator().manual_seed(0))
        try:
            hook.output = engine_model(x.to(engine_model.device))
        except RuntimeError as exc:
            warnings.warn("Some layers could not be computed because the image is too small; that is fine as long "
                          f"as the objective does not use them (exception: {exc})", stacklevel=3)

        def T(name: str) -> Tensor:
            read.append(name)
            return hook(name)

        loss = float(objective(T))
    return list(dict.fromkeys(read)), loss


class ModuleHook:
    """A forward hook keeping the last output of one module (``features``) until :meth:`close`."""

    def __init__(self, module: nn.Module):
        self.hook = module.register_forward_hook(self.hook_fn)
        self.module = None
        self.features = None

    def hook_fn(self, module: nn.Module, inputs, output) -> None:
        self.module = module
        self.features = output

    def close(self) -> None:
        self.hook.remove()


class ModelHook:
    """``hook(layer)``: the last output of Lucent's layer ``layer`` (``"input"``: ``image_f()``; ``"labels"``: the
    network's output when known, else the last module's). Made by :func:`hook_model`; a context manager, and
    :meth:`close` removes every hook (Lucent never removed them)."""

    def __init__(self, model: nn.Module, image_f: Callable[[], Tensor], paths: Mapping[str, str] | None = None):
        self.model = model
        self.image_f = image_f
        self.paths = layer_paths(model) if paths is None else paths
        self.features: "OrderedDict[str, ModuleHook]" = OrderedDict()
        self.output: Tensor | None = None
        for name, path in self.paths.items():
            self.features[name] = ModuleHook(model.get_submodule(path))

    def __call__(self, layer: str) -> Tensor:
        if layer == "input":
            return self.image_f()
        if layer == "labels":
            out = self.output if self.output is not None else list(self.features.values())[-1].features
        else:
            out = self.features[self._hooked_name(layer)].features
        if out is None:
            raise RuntimeError(f"no saved output of {layer!r}: run the model on an image first (model(image_f())), in "
                               "eval mode (model.eval())")
        return out

    def _hooked_name(self, layer: str) -> str:
        if layer in self.features:
            return layer
        path = layer_path(self.model, layer, self.paths)             # raises with the closest names
        same = next((name for name, p in self.paths.items() if p == path and name in self.features), None)
        if same is None:
            raise KeyError(f"layer {layer!r} ({path}) is not among the hooked layers; use a name from "
                           "luminate.lucent.modelzoo.util.get_model_layers(model)")
        return same

    def close(self) -> None:
        for hooked in self.features.values():
            hooked.close()
        self.features.clear()

    def __enter__(self) -> "ModelHook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hook_model(model: nn.Module, image_f: Callable[[], Tensor]) -> ModelHook:
    """Hook every module of ``model`` under Lucent's names; ``hook(layer)`` reads a layer after ``model(...)``."""
    return ModelHook(model, image_f)


def tensor_to_img_array(tensor: Tensor) -> np.ndarray:
    """``[B, C, H, W]`` -> ``[B, H, W, C]`` numpy."""
    return np.transpose(tensor.detach().cpu().numpy(), [0, 2, 3, 1])


def _uint8_row(tensor: Tensor) -> np.ndarray:
    image = (tensor_to_img_array(tensor) * 255).astype(np.uint8)
    return np.concatenate(list(image), axis=1)


def view(tensor: Tensor) -> None:
    """Open the images (side by side) in PIL's image viewer."""
    from PIL import Image

    Image.fromarray(_uint8_row(tensor)).show()


def export(tensor: Tensor, image_name: str | None = None) -> None:
    """Save the images side by side to ``image_name`` (default ``image.jpg``)."""
    from PIL import Image

    Image.fromarray(_uint8_row(tensor)).save(image_name or "image.jpg")


__all__ = ["CallableParam", "ModelHook", "ModuleHook", "as_parameterization", "export", "hook_model", "lucent_model",
           "on_engine", "render_vis", "tensor_to_img_array", "view"]
