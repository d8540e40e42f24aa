"""Activations through forward hooks that never outlive their use.

:class:`LayerTap` hooks only the layers asked for and, by default, stops the forward pass as soon
as the deepest of them has been computed: the rest of the network is wasted work for an objective
or an activation read-out. Hooks are removed when the ``with`` block ends, even on error, and the network
runs in eval mode with frozen weights only while the tap is open (:meth:`Model.frozen`).

Shapes: convolutional layers give ``[N, C, H, W]``; linear layers ``[N, C]``. A token layer (declared with
``wrap(..., layout="tokens")``) computes ``[N, T, C]``; the tap presents it as ``[N, C, h, w]`` (``grid=True``, the
default): its patch tokens on their grid, leading class / register tokens left out, so every objective and
analysis indexes channels on dimension 1. :func:`activations` returns layers as the network computed them
unless asked for ``grid=True``.

Reused modules: a module called several times in one forward pass (ResNet's shared ``relu``) is addressed per
call as ``"name#k"`` (``k`` from 0); the plain name means its first call, and a tap on a plain name that fires
more than once per pass warns, naming the module and the ``#k`` syntax.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from luminate.models.base import Model, as_model
from luminate.models.contract import network_output


class _StopForward(Exception):
    """Raised inside a hook once every requested layer has its output."""


def tokens_to_grid(model: Model, name: str, tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """A token layer's ``[N, T, C]`` activation as ``[N, C, h, w]``: leading prefix (class / register) tokens
    dropped, the patch tokens laid out row by row on the grid for an input of ``image_size``."""
    if tokens.ndim != 3:
        raise ValueError(f"layer {name!r} is declared as tokens [N, T, C] but outputs shape {tuple(tokens.shape)}")
    n, t, c = tokens.shape
    prefix, h, w = model.token_grid(name, t, image_size)
    return tokens[:, prefix:].transpose(1, 2).reshape(n, c, h, w)


def grid_to_tokens(grid: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`tokens_to_grid`: ``[N, C, h, w]`` -> ``[N, prefix + h*w, C]`` (``prefix`` ``[N, P, C]``
    tokens put back in front)."""
    tokens = grid.flatten(2).transpose(1, 2)
    return tokens if prefix is None else torch.cat([prefix, tokens], 1)


@contextlib.contextmanager
def replace_output(model, layer: str, fn: Callable[[torch.Tensor], torch.Tensor], grid: bool = True
                   ) -> Iterator[None]:
    """While active, the output ``a`` of ``layer`` is replaced by ``fn(a)`` (same shape) in every forward pass.

    Only the addressed call is replaced: ``"name#k"`` its ``k``-th call, a plain name its first (the other calls of
    a reused module run unchanged). With ``grid=True`` a token layer's ``fn`` sees and returns ``[N, C, h, w]``
    (prefix tokens are kept as they were). Used by layer attribution.
    """
    model = as_model(model)
    module_name, call = model.resolve(layer)
    module = model.network.get_submodule(module_name)
    tokens = grid and model.layer_layout(layer) == "tokens"
    calls = {"n": 0}

    def hook(mod, inputs, output):
        k = calls["n"]
        calls["n"] += 1
        if k != (call or 0):
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {layer!r} returns {type(output).__name__}, not a tensor; "
                            "choose one of its submodules")
        if tokens and output.ndim == 3:
            prefix = model.token_grid(layer, output.shape[1], image_size["hw"])[0]
            new = grid_to_tokens(fn(tokens_to_grid(model, layer, output, image_size["hw"])), output[:, :prefix])
        else:
            new = fn(output)
        if new.shape != output.shape:
            raise ValueError(f"replacement for layer {layer!r} has shape {tuple(new.shape)}, "
                             f"expected {tuple(output.shape)}")
        return new

    image_size = {"hw": model.size}

    def root_hook(mod, inputs):
        calls["n"] = 0
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
            image_size["hw"] = tuple(inputs[0].shape[-2:])

    handles = [model.network.register_forward_pre_hook(root_hook), module.register_forward_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def output_as_leaf(model, layer: str, value: torch.Tensor | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """While active, ``layer``'s output (or ``value``, same shape) enters the rest of the network as a detached
    leaf that requires grad, so ``torch.autograd.grad(score, held["leaf"])`` is the gradient with respect to the
    layer. Yields ``held``; ``"leaf"`` appears once a forward pass has reached the layer."""
    held: dict[str, torch.Tensor] = {}

    def make_leaf(output: torch.Tensor) -> torch.Tensor:
        held["leaf"] = (output if value is None else value).detach().requires_grad_(True)
        return held["leaf"]

    with replace_output(model, layer, make_leaf):
        yield held


class LayerTap:
    """Forward hooks on a set of layers, reusable for many forward passes.

    >>> with LayerTap(model, ["blocks.9", "logits"]) as tap:
    ...     acts = tap(images)          # {"blocks.9": [N,112,14,14], "logits": [N,1000]}

    Args:
        model: a :class:`~luminate.models.Model` (or a zoo name).
        layers: dotted layer names; ``"name#k"`` is call ``k`` of a module that runs several times per pass;
            ``"input"`` is the image itself, as the model receives it in [0, 1];
            ``"output"`` is the model's output (for example the logits of a classifier).
        stop_early: end the forward pass once all the layers have fired. Ignored when ``"output"`` is requested.
        detach: store detached tensors (for read-outs under ``no_grad``).
        check_inputs: check every batch against the input contract (off in the render loop, where
            images are in [0, 1] by construction and the check would cost a device sync per step).
        grid: present token layers as ``[N, C, h, w]`` (False: as computed, ``[N, T, C]``).
    """

    SPECIAL = ("input", "output")

    def __init__(self, model, layers: Iterable[str], stop_early: bool = True, detach: bool = False,
                 check_inputs: bool = True, grid: bool = True):
        self.model: Model = as_model(model)
        self.layers = list(dict.fromkeys(layers))
        self.module_layers = [name for name in self.layers if name not in self.SPECIAL]
        # module name -> [(call index, layer name)]
        self._targets: dict[str, list[tuple[int, str]]] = {}
        for name in self.module_layers:
            module_name, call = self.model.resolve(name)
            self._targets.setdefault(module_name, []).append((call or 0, name))
        self.modules = {module_name: self.model.network.get_submodule(module_name) for module_name in self._targets}
        self._tokens = {name for name in self.module_layers if self.model.layer_layout(name) == "tokens"} if grid \
            else set()
        self.wants_output = "output" in self.layers
        self.stop_early = stop_early and not self.wants_output
        self.detach = detach
        self.check_inputs = check_inputs
        self.grid = grid
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._image_size: tuple[int, int] = self.model.size
        self._frozen = None
        self._warn_reused()

    def _warn_reused(self) -> None:
        plain = [name for name in self.module_layers if self.model.resolve(name)[1] is None]
        if not plain:
            return
        try:
            runs = {name: self.model.layer_info(name).calls for name in plain}
        except Exception:  # a network that cannot run a blank image at its native size: no warning possible here
            return
        for name, calls in runs.items():
            if calls > 1:
                warnings.warn(f"layer {name!r} of {self.model.name} runs {calls} times in one forward pass; "
                              f"{name!r} means its first call. Address one call as '{name}#0' .. "
                              f"'{name}#{calls - 1}'.", stacklevel=3)

    def _make_hook(self, module_name: str):
        targets = self._targets[module_name]
        wanted = len(self.module_layers)

        def hook(module: nn.Module, inputs, output):
            call = self._calls.get(module_name, 0)
            self._calls[module_name] = call + 1
            for k, name in targets:
                if k != call or name in self._store:
                    continue
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                                    "choose one of its submodules")
                value = output.detach() if self.detach else output
                if name in self._tokens and value.ndim == 3:
                    value = tokens_to_grid(self.model, name, value, self._image_size)
                self._store[name] = value
            if self.stop_early and len(self._store) == wanted:
                raise _StopForward
        return hook

    def __enter__(self) -> "LayerTap":
        self._frozen = self.model.frozen()
        self._frozen.__enter__()
        for module_name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(module_name)))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store = {}
        if self._frozen is not None:
            frozen, self._frozen = self._frozen, None
            frozen.__exit__(None, None, None)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``images`` ``[N, C, H, W]`` in [0, 1]; return ``{layer: activation}``."""
        if not self._handles and self.module_layers:
            raise RuntimeError("LayerTap is not active: use it inside a `with` block")
        self._store = {}
        self._calls = {}
        self._image_size = tuple(images.shape[-2:])
        output = None
        if self.module_layers or self.wants_output:
            if self.check_inputs:
                self.model.contract.check(images)
            try:
                output = self.model.network(self.model.normalize(images))
            except _StopForward:
                pass
        out = dict(self._store)
        self._store = {}
        missing = [n for n in self.module_layers if n not in out]
        if missing:
            detail = "; ".join(f"{n!r} ran {self._calls.get(self.model.resolve(n)[0], 0)} time(s)" for n in missing)
            raise RuntimeError(f"layers {missing} did not run in the forward pass of {self.model.name} ({detail})")
        if "input" in self.layers:
            out["input"] = images
        if self.wants_output:
            output = network_output(output, self.model.output_key)
            out["output"] = output.detach() if self.detach else output
        return out


def activations(model, images: torch.Tensor, layers: str | Iterable[str], batch_size: int = 32,
                stop_early: bool = True, grid: bool = False) -> dict[str, torch.Tensor] | torch.Tensor:
    """Activations of ``layers`` for ``images`` ``[N, C, H, W]`` in [0, 1], without gradients (other forms, as
    :meth:`Model.as_batch` takes them: paths, PIL images, arrays, or a list of any of these, of any sizes).

    Processes ``batch_size`` images at a time on the model's device and returns CPU tensors:
    a dict for a list of layers, a tensor for a single layer name. Layers come as the network computed them
    (a token layer: ``[N, T, C]``); ``grid=True`` gives token layers as ``[N, C, h, w]``, as objectives see them.
    """
    model = as_model(model)
    if not isinstance(images, torch.Tensor) or (images.ndim == 3 and not getattr(model, "is_text", False)):
        # paths, PIL images, arrays, lists of any sizes, one CHW image
        images = model.as_batch(images)
    single = isinstance(layers, str)
    names = [layers] if single else list(layers)
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with torch.no_grad(), LayerTap(model, names, stop_early=stop_early, detach=True, grid=grid) as tap:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(model.device)
            for name, value in tap(batch).items():
                chunks[name].append(value.cpu())
    result = {name: torch.cat(parts) for name, parts in chunks.items()}
    return result[names[0]] if single else result


def all_activations(model, image: torch.Tensor, depth: int | None = 1) -> Mapping[str, torch.Tensor]:
    """Activations of one image at every listed layer (``depth=1``: blocks and top-level modules;
    ``None``: every submodule), in forward order; token layers as ``[1, C, h, w]`` grids."""
    from luminate.models.base import top_level_layers

    model = as_model(model)
    image = image if isinstance(image, torch.Tensor) and image.ndim != 3 else model.as_batch(image)
    infos = top_level_layers(model, tuple(image.shape[-2:])) if depth == 1 else model.layers(tuple(image.shape[-2:]))
    return activations(model, image, [info.name for info in infos], stop_early=False, grid=True)
