"""Activations through forward hooks that never outlive their use.

:class:`LayerTap` hooks only the layers asked for and, by default, stops the forward pass as soon
as the deepest of them has been computed: the rest of the network is wasted work for an objective
or an activation read-out. Hooks are removed when the ``with`` block ends, even on error.

Shapes: convolutional layers give ``[N, C, H, W]``; linear layers ``[N, C]``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from luminate.models.base import Model, as_model


class _StopForward(Exception):
    """Raised inside a hook once every requested layer has its output."""


class LayerTap:
    """Forward hooks on a set of layers, reusable for many forward passes.

    >>> with LayerTap(model, ["blocks.9", "logits"]) as tap:
    ...     acts = tap(images)          # {"blocks.9": [N,112,14,14], "logits": [N,1000]}

    Args:
        model: a :class:`~luminate.models.Model` (or a zoo name / bare module).
        layers: dotted layer names; ``"input"`` is the image itself, as the model receives it in [0, 1];
            ``"output"`` is the model's output (for example the logits of a classifier).
        stop_early: end the forward pass once all the layers have fired (a model that calls a
            module twice only records its first call). Ignored when ``"output"`` is requested.
        detach: store detached tensors (for read-outs under ``no_grad``).
        check_inputs: check every batch against the input contract (off in the render loop, where
            images are in [0, 1] by construction and the check would cost a device sync per step).
    """

    SPECIAL = ("input", "output")

    def __init__(self, model, layers: Iterable[str], stop_early: bool = True, detach: bool = False,
                 check_inputs: bool = True):
        self.model: Model = as_model(model)
        self.layers = list(dict.fromkeys(layers))
        self.module_layers = [name for name in self.layers if name not in self.SPECIAL]
        self.modules = {name: self.model.layer(name) for name in self.module_layers}
        self.wants_output = "output" in self.layers
        self.stop_early = stop_early and not self.wants_output
        self.detach = detach
        self.check_inputs = check_inputs
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, torch.Tensor] = {}

    def _make_hook(self, name: str):
        wanted = len(self.module_layers)

        def hook(module: nn.Module, inputs, output):
            if name in self._store:
                return
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                                "choose one of its submodules")
            self._store[name] = output.detach() if self.detach else output
            if self.stop_early and len(self._store) == wanted:
                raise _StopForward
        return hook

    def __enter__(self) -> "LayerTap":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store = {}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``images`` ``[N, C, H, W]`` in [0, 1]; return ``{layer: activation}``."""
        if not self._handles and self.module_layers:
            raise RuntimeError("LayerTap is not active: use it inside a `with` block")
        self._store = {}
        output = None
        if self.module_layers or self.wants_output:
            if self.check_inputs:
                self.model.contract.check(images)
            try:
                output = self.model.network(self.model.contract.normalize(images))
            except _StopForward:
                pass
        out = dict(self._store)
        self._store = {}
        missing = [n for n in self.module_layers if n not in out]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass of {self.model.name}")
        if "input" in self.layers:
            out["input"] = images
        if self.wants_output:
            out["output"] = output.detach() if self.detach else output
        return out


def activations(model, images: torch.Tensor, layers: str | Iterable[str], batch_size: int = 32,
                stop_early: bool = True) -> dict[str, torch.Tensor] | torch.Tensor:
    """Activations of ``layers`` for ``images`` ``[N, C, H, W]`` in [0, 1], without gradients.

    Processes ``batch_size`` images at a time on the model's device and returns CPU tensors:
    a dict for a list of layers, a tensor for a single layer name.
    """
    model = as_model(model)
    single = isinstance(layers, str)
    names = [layers] if single else list(layers)
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with torch.no_grad(), LayerTap(model, names, stop_early=stop_early, detach=True) as tap:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(model.device)
            for name, value in tap(batch).items():
                chunks[name].append(value.cpu())
    result = {name: torch.cat(parts) for name, parts in chunks.items()}
    return result[names[0]] if single else result


def all_activations(model, image: torch.Tensor, depth: int | None = 1) -> Mapping[str, torch.Tensor]:
    """Activations of one image at every listed layer (``depth=1``: blocks and top-level modules;
    ``None``: every submodule), in forward order."""
    from luminate.models.base import top_level_layers

    model = as_model(model)
    infos = top_level_layers(model, tuple(image.shape[-2:])) if depth == 1 else model.layers(tuple(image.shape[-2:]))
    return activations(model, image, [info.name for info in infos], stop_early=False)
