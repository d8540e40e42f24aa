"""Models: the zoo, the input contract, and layers by dotted name.

>>> model = luminate.models.load("efficientnet_lite0")
>>> model
Model(name='efficientnet_lite0', input=224x224 RGB, [0,1] -> [-0.9922, 1], centre crop 0.875, 1000 labels)
"""

from luminate.models.base import BaseModel, LayerInfo, Model, as_model, layer_names, resolve_layer, wrap
from luminate.models.contract import PRESETS, InputContract
from luminate.models.defaults import nonnegative_layers
from luminate.models.labels import Labels, imagenet_labels
from luminate.models.table import LayerTable
from luminate.models.zoo import DEFAULT_MODEL, available, load


def layers(model, size=None) -> LayerTable:
    """Every addressable layer of ``model`` (a Model or a zoo name) with its output shape: a
    :class:`~luminate.models.table.LayerTable`, a list that prints as a table (HTML in a notebook)."""
    model = as_model(model)
    return LayerTable(model.layers(size), title=repr(model))


__all__ = ["BaseModel", "DEFAULT_MODEL", "PRESETS", "InputContract", "LayerInfo", "Labels", "Model", "as_model", "available",
           "imagenet_labels", "LayerTable", "layer_names", "layers", "load", "nonnegative_layers", "resolve_layer",
           "wrap"]
