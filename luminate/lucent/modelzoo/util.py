"""Lucent's ``modelzoo.util``: layer names the Lucent way (module paths joined with ``_``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from torch import nn


def layer_paths(model: nn.Module) -> "OrderedDict[str, str]":
    """Lucent's layer names of ``model`` -> the modules' dotted paths, in Lucent's order (depth first, parents first):
    ``features_3_conv_0`` -> ``features.3.conv.0``. A model with its own Lucent names (``lucent_layers()``, as
    :func:`luminate.lucent.modelzoo.inceptionv1`) gives those."""
    own = getattr(model, "lucent_layers", None)
    if callable(own):
        return OrderedDict(own())
    names: "OrderedDict[str, str]" = OrderedDict()
    for path, _ in model.named_modules(remove_duplicate=False):
        if path:
            names.setdefault(path.replace(".", "_"), path)
    return names


def layer_path(model: nn.Module, name: str, paths: Mapping[str, str] | None = None) -> str:
    """The module path of Lucent's layer ``name``; an unknown name raises a KeyError with the closest names."""
    paths = layer_paths(model) if paths is None else paths
    if name in paths:
        return paths[name]
    other = getattr(model, "lucent_layer", None)
    found = other(name) if callable(other) else None
    if found is not None:
        return found
    import difflib

    close = difflib.get_close_matches(name, list(paths), n=5, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise KeyError(f"invalid layer {name!r}.{hint} Retrieve the list of layers with "
                   "luminate.lucent.modelzoo.util.get_model_layers(model).")


def get_model_layers(model: nn.Module, getLayerRepr: bool = False):  # noqa: N803 - Lucent's argument name
    """Lucent's layer names of ``model`` (a list), or name -> ``repr`` of the layer with ``getLayerRepr=True``."""
    paths = layer_paths(model)
    if not getLayerRepr:
        return list(paths)
    return OrderedDict((name, repr(model.get_submodule(path))) for name, path in paths.items())


__all__ = ["get_model_layers", "layer_path", "layer_paths"]
