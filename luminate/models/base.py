"""The :class:`Model` wrapper: a network, its input contract, its labels, and its layers by name."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from luminate.models.contract import InputContract
from luminate.models.labels import Labels


@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer: dotted module name, module type, output shape (without batch) at a size."""

    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:]


class Model(nn.Module):
    """A network plus everything needed to use it correctly.

    ``model(images)`` takes ``[N, C, H, W]`` float images in [0, 1], checks them against the
    :class:`InputContract`, converts them (range, channel order) and runs the network. Layers are the
    dotted names of ``model.network``'s submodules (``"blocks.9"``), as in ``named_modules()``.

    The model is put in eval mode and its parameters are frozen (``requires_grad=False``): Luminate
    differentiates with respect to images and activations, never weights.
    """

    def __init__(self, network: nn.Module, contract: InputContract, labels: Labels | Sequence[str] | None = None,
                 name: str = "model", check_inputs: bool = True):
        super().__init__()
        self.network = network
        self.contract = contract
        self.labels = labels if isinstance(labels, Labels) or labels is None else Labels(labels)
        self.name = name
        self.check_inputs = check_inputs
        self._layer_cache: dict[tuple[int, int], list[LayerInfo]] = {}
        self.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            self.contract.check(images)
        return self.network(self.contract.normalize(images))

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for b in self.network.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def size(self) -> tuple[int, int]:
        return self.contract.size

    def train(self, mode: bool = True) -> "Model":
        # A visualization model always runs in eval mode: BatchNorm statistics and dropout must not change.
        return super().train(False)

    def preprocess(self, image) -> torch.Tensor:
        """Any image (path, PIL, array, tensor) -> ``[N, C, *size]`` in [0, 1] on the model's device."""
        from luminate.images import to_tensor  # images is a leaf module; imported here to keep models light

        return self.contract.preprocess(to_tensor(image, channels=self.contract.channels)).to(self.device)

    def layer(self, name: str) -> nn.Module:
        """The submodule called ``name``; an unknown name raises an error listing the closest names."""
        return resolve_layer(self.network, name)

    def layers(self, size: int | tuple[int, int] | None = None) -> list[LayerInfo]:
        """Every addressable layer with its output shape for one input of ``size`` (default: native)."""
        hw = self.size if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        if hw not in self._layer_cache:
            self._layer_cache[hw] = _trace_layers(self, hw)
        return self._layer_cache[hw]

    def layer_info(self, name: str, size: int | tuple[int, int] | None = None) -> LayerInfo:
        self.layer(name)  # clear error for unknown names
        for info in self.layers(size):
            if info.name == name:
                return info
        raise ValueError(f"layer {name!r} does not run in a forward pass of {self.name}, so it has no output")

    def check_channel(self, layer: str, channel: int) -> None:
        """Raise an error that gives the valid range when ``channel`` is outside ``layer``'s channels."""
        n = self.layer_info(layer).channels
        if not -n <= channel < n:
            raise IndexError(f"channel {channel} is out of range for layer {layer!r} of {self.name}, "
                             f"which has {n} channels (0..{n - 1})")

    def weights_fingerprint(self, refresh: bool = False) -> str:
        """A short hash of every parameter and buffer of the network (any changed value changes it).

        Caches (sprite sheets, atlas icons) and activation stores record it, so they never reuse results
        made with other weights. Hashing EfficientNet-Lite0 takes tens of milliseconds, so the value is
        memoized and recomputed when a tensor is replaced or modified in place (PyTorch's version counters:
        ``copy_``, optimizer steps, ``load_state_dict``). Writes through ``tensor.data`` bypass the counters:
        pass ``refresh=True`` after those.
        """
        state = self.network.state_dict(keep_vars=True)
        stamp = tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in state.values())
        memo = self.__dict__.get("_fingerprint")
        if memo is not None and memo[0] == stamp and not refresh:
            return memo[1]
        digest = hashlib.sha256()
        for name, tensor in state.items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        value = digest.hexdigest()[:16]
        self.__dict__["_fingerprint"] = (stamp, value)
        return value

    def class_index(self, label: str | int) -> int:
        if self.labels is None:
            if isinstance(label, int):
                return label
            raise ValueError(f"{self.name} has no labels, so class {label!r} must be given as an index")
        return self.labels.index(label)

    def extra_repr(self) -> str:
        labels = f"{len(self.labels)} labels" if self.labels is not None else "no labels"
        return f"name={self.name!r}, input={self.contract.describe()}, {labels}"

    def __repr__(self) -> str:  # the network's full module tree is long; keep repr to the contract
        return f"Model({self.extra_repr()})"


def wrap(module: nn.Module, size: int | tuple[int, int] = 224, *, value_range=None, mean=None, std=None,
         channel_order: str = "RGB", labels: Sequence[str] | Labels | None = None, name: str | None = None,
         crop_fraction: float = 1.0, channels: int = 3) -> Model:
    """Wrap any ``torch.nn.Module`` with an explicit input contract.

    Example: a torchvision-style classifier trained on ImageNet-normalized inputs::

        model = luminate.models.wrap(net, 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """
    if isinstance(module, Model):
        raise TypeError("this module is already a luminate Model")
    contract = InputContract(size=size, value_range=value_range, mean=mean, std=std, channel_order=channel_order,
                             crop_fraction=crop_fraction, channels=channels)
    return Model(module, contract, labels, name or type(module).__name__)


def as_model(model) -> Model:
    """A :class:`Model` from a Model, a zoo name, or a bare module (assumed to take [0, 1] input)."""
    if isinstance(model, Model):
        return model
    if isinstance(model, str):
        from luminate.models.zoo import load

        return load(model)
    if isinstance(model, nn.Module):
        return wrap(model)
    raise TypeError(f"expected a luminate Model, a zoo name or a torch.nn.Module, got {type(model).__name__}")


def layer_names(module: nn.Module) -> list[str]:
    """Dotted names of every submodule, in definition order (the root itself excluded)."""
    return [name for name, _ in module.named_modules() if name]


def resolve_layer(module: nn.Module, name: str) -> nn.Module:
    """``module.get_submodule(name)`` with an error that lists the closest layer names."""
    if not isinstance(name, str):
        raise TypeError(f"layer names are strings like 'blocks.9', got {type(name).__name__}")
    try:
        return module.get_submodule(name)
    except AttributeError:
        pass
    names = layer_names(module)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if name.split(".")[-1] in n][:5] or names[:5]
    raise KeyError(f"unknown layer {name!r}. Closest names: {', '.join(close)}. "
                   "List them all with luminate.models.layers(model) or `luminate layers MODEL`.")


def _trace_layers(model: Model, size: tuple[int, int]) -> list[LayerInfo]:
    """Run one blank image of ``size`` through the model and record every module's output shape."""
    shapes: dict[str, LayerInfo] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name not in shapes and isinstance(output, torch.Tensor):
                shapes[name] = LayerInfo(name, type(module).__name__, tuple(output.shape[1:]))
        return hook

    for name, mod in model.network.named_modules():
        if name:
            handles.append(mod.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            x = torch.full((1, model.contract.channels, *size), 0.5, device=model.device)
            model(x)
    finally:
        for h in handles:
            h.remove()
    order = {name: k for k, name in enumerate(layer_names(model.network))}
    return sorted(shapes.values(), key=lambda info: order[info.name])


def block_layers(model: Model) -> list[str]:
    """The network's repeated spatial blocks (``blocks.0`` ... ``blocks.15``): the children of its Sequential /
    ModuleList containers with ``[C, H, W]`` outputs of more than one position, in forward order. Models without such containers give their
    top-level spatial layers, and failing that every spatial layer. Recipes pick default layers from this list."""
    spatial = [info for info in top_level_layers(model) if len(info.shape) == 3 and info.shape[1] * info.shape[2] > 1]
    blocks = [info.name for info in spatial if "." in info.name]
    return blocks or [info.name for info in spatial] or [info.name for info in model.layers() if len(info.shape) == 3]


def top_level_layers(model: Model, size=None) -> list[LayerInfo]:
    """Layers worth listing first: named children and the blocks of containers (``blocks.0``, ...)."""
    infos = model.layers(size)
    keep = []
    for info in infos:
        depth = info.name.count(".")
        parent = model.network.get_submodule(info.name.rsplit(".", 1)[0]) if depth else model.network
        if depth == 0 or (depth == 1 and isinstance(parent, (nn.Sequential, nn.ModuleList))):
            keep.append(info)
    return keep


