"""The :class:`Model` wrapper: a network, its input contract, its labels, and its layers by name."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from luminate.models.contract import InputContract, first_in_channels, network_dtype, network_output
from luminate.models.defaults import LAYER_DEPTH, LAYER_PURPOSES, block_layers, top_level_layers  # noqa: F401
from luminate.models.labels import Labels


LAYOUTS = ("channels", "tokens")


@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer: dotted module name, module type, output shape (without batch) at a size.

    ``shape`` is the shape objectives and analysis see: ``(C, H, W)`` for convolutional layers, ``(C,)`` for
    vectors, and for a token layer (``layout="tokens"``, native output ``[T, C]``) ``(C, h, w)``: the channels and
    the grid the ``h * w`` patch tokens are laid out on. ``prefix_tokens`` leading tokens (class / register tokens)
    are left out of the grid; ``native_shape`` is the output as the network computed it. ``calls`` is how many times
    the module ran in one forward pass (address call ``k`` as ``"name#k"``).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    layout: str = "channels"
    native_shape: tuple[int, ...] | None = None
    prefix_tokens: int = 0
    calls: int = 1

    @property
    def tokens(self) -> int | None:
        """Number of tokens ``T`` of a token layer (``None`` for other layers)."""
        return self.native_shape[0] if self.layout == "tokens" and self.native_shape else None

    @property
    def grid(self) -> tuple[int, ...]:
        """The spatial grid ``(h, w)`` (``()`` for vectors)."""
        return self.shape[1:]

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:]


class BaseModel(nn.Module):
    """What every Luminate model is and honours, image or text: a ``network``, its input ``contract``, ``labels``, a
    ``name``; layers by dotted name (``"name#k"``: the ``k``-th call of a reused module) with their shapes;
    :meth:`frozen` (eval mode, frozen weights, both put back), ``device``, a weights fingerprint, class names and a
    default layer per purpose. :class:`Model` (images ``[N, C, H, W]`` in [0, 1]) and
    :class:`~luminate.models.textmodel.TextModel` (token ids ``[N, T]``) derive from it; ``isinstance(m, Model)``
    means an image model. What a kind of model reads is its own: ``forward``, ``normalize`` (its input as the
    network takes it), ``size`` (one input's shape after the batch axis: ``(H, W)`` or ``(1, T)``) and the layer
    tracing behind :meth:`layers`.
    """

    #: True for models that read token ids (``luminate.text``), False for image models.
    is_text: bool = False
    #: the key of the class scores when the network returns a dict (see contract.network_output); tuples give
    #: their first tensor
    output_key: str | None = None

    def __init__(self, network: nn.Module, contract, labels: Labels | Sequence[str] | None = None,
                 name: str = "model", check_inputs: bool = True,
                 layer_aliases: Callable[[str], str] | Mapping[str, str] | None = None):
        super().__init__()
        self.network = network
        self.contract = contract
        self.labels = labels if isinstance(labels, Labels) or labels is None else Labels(labels)
        self.name = name
        self.check_inputs = check_inputs
        self.layer_aliases = layer_aliases
        self._layer_cache: dict = {}

    def normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's input -> the network's input."""
        raise NotImplementedError(f"{type(self).__name__} must say how its inputs reach the network")

    @property
    def size(self) -> tuple[int, int]:
        raise NotImplementedError(f"{type(self).__name__} must give the shape of one input")

    def layer_layout(self, name: str) -> str:
        """``"tokens"`` or ``"channels"``: how a 3-D output ``[B, T, C]`` of layer ``name`` is read by
        :class:`~luminate.activations.LayerTap` (``"channels"``: as it is)."""
        return "channels"

    def _traced(self, size) -> tuple[list[LayerInfo], dict[str, LayerInfo]]:
        raise NotImplementedError(f"{type(self).__name__} must trace its layers")

    def default_layer(self, purpose: str = "visualization") -> str:
        raise NotImplementedError(f"{type(self).__name__} must choose its default layers")

    def default_layers(self, size=None) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must choose its default layers")

    @contextlib.contextmanager
    def frozen(self) -> Iterator["BaseModel"]:
        """Run the network in eval mode with ``requires_grad=False`` weights, then put both back as they were.

        >>> with model.frozen():
        ...     acts = tap(images)

        Every module's ``training`` flag and every parameter's ``requires_grad`` is restored on exit (nested use
        is fine), so a network that is mid-training keeps training afterwards.
        """
        modules = [(m, m.training) for m in self.network.modules()]
        params = [(p, p.requires_grad) for p in self.network.parameters()]
        try:
            for m, _ in modules:
                m.training = False
            for p, _ in params:
                if p.requires_grad:
                    p.requires_grad_(False)
            yield self
        finally:
            for m, mode in modules:
                m.training = mode
            for p, flag in params:
                if p.requires_grad != flag:
                    p.requires_grad_(flag)

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for b in self.network.buffers():
            return b.device
        return torch.device("cpu")

    #: Zoo models are inference-only: ``train()`` keeps them in eval mode (BatchNorm statistics never change).
    eval_only: bool = False

    def train(self, mode: bool = True) -> "BaseModel":
        """Set the network's training mode, as for any module, so a wrapped network can keep training between
        renders. Luminate's own entry points run it in eval mode regardless (see :meth:`frozen`) and leave this
        mode as it was. Zoo models (``eval_only``) stay in eval mode."""
        return super().train(False if self.eval_only else mode)

    def resolve(self, name: str) -> tuple[str, int | None]:
        """``(dotted module name, call index or None)`` for a layer name: ``"res.relu#1"`` -> ``("res.relu", 1)``;
        names in ``layer_aliases`` (Lucid's ``"mixed4a_pre_relu"`` for InceptionV1) are translated. Unknown names
        raise an error listing the closest names."""
        module_name, call = split_call(name)
        try:
            self.network.get_submodule(module_name)
            return module_name, call
        except AttributeError:
            pass
        alias = self._alias(module_name)
        if alias is not None:
            return alias, call
        resolve_layer(self.network, module_name)  # raises with the closest names
        return module_name, call  # pragma: no cover - resolve_layer raised

    def _alias(self, name: str) -> str | None:
        aliases = self.layer_aliases
        if aliases is None:
            return None
        try:
            target = aliases(name) if callable(aliases) else aliases[name]
            self.network.get_submodule(target)
            return target
        except (KeyError, AttributeError, ValueError):
            return None

    def layer(self, name: str) -> nn.Module:
        """The submodule called ``name`` (``"name#k"``: the same module); an unknown name raises an error listing
        the closest names."""
        return self.network.get_submodule(self.resolve(name)[0])

    def layers(self, size: int | tuple[int, int] | None = None) -> list[LayerInfo]:
        """Every addressable layer with its output shape for one input of ``size`` (default: native)."""
        return self._traced(size)[0]

    def layer_info(self, name: str, size: int | tuple[int, int] | None = None) -> LayerInfo:
        """The :class:`LayerInfo` of ``name`` (``"name#k"``: its ``k``-th call; aliases are translated)."""
        module_name, call = self.resolve(name)  # clear error for unknown names
        infos, later_calls = self._traced(size)
        if call:
            if f"{module_name}#{call}" in later_calls:
                return later_calls[f"{module_name}#{call}"]
            runs = next((i.calls for i in infos if i.name == module_name), 0)
            raise IndexError(f"layer {name!r}: {module_name!r} runs {runs} time(s) in a forward pass of {self.name}, "
                             f"so its calls are #0..#{max(runs - 1, 0)}")
        for info in infos:
            if info.name == module_name:
                return info
        raise ValueError(f"layer {name!r} does not run in a forward pass of {self.name}, so it has no output")

    def check_channel(self, layer: str, channel: int) -> None:
        """Raise an error that gives the valid range when ``channel`` is outside ``layer``'s channels."""
        n = self.layer_info(layer).channels
        if not 0 <= channel < n:  # one rule everywhere: units count from 0, never from the end
            raise IndexError(f"channel {channel} is out of range for layer {layer!r} of {self.name}, "
                             f"which has {n} channels (0..{n - 1}; a negative number is not read from the end)")

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

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its index as a string when the model has no labels)."""
        return self.labels[index] if self.labels is not None else str(index)

    #: Declared default layers by purpose (``{"attribution": "blocks.10", ...}``): zoo entries and
    #: ``wrap(..., layer_defaults=...)`` set them; purposes not declared are chosen by inspecting the network.
    layer_defaults: Mapping[str, str] | None = None

    def __repr__(self) -> str:  # the network's full module tree is long; keep repr to the contract
        return f"{type(self).__name__}({self.extra_repr()})"



class Model(BaseModel):
    """An image model: a network plus everything needed to use it correctly.

    ``model(images)`` takes ``[N, C, H, W]`` float images in [0, 1], checks them against the
    :class:`InputContract`, converts them (range, channel order) and runs the network. Layers are the
    dotted names of ``model.network``'s submodules (``"blocks.9"``), as in ``named_modules()``; ``"name#k"``
    is the ``k``-th call (from 0) of a module that runs several times in one forward pass.

    The caller's network is never changed for good. Luminate's entry points (render, activations, attribution,
    collection) run it inside :meth:`frozen`: eval mode and ``requires_grad=False`` for the duration, and each
    module's training flag and each parameter's ``requires_grad`` restored afterwards. ``model.train()`` /
    ``model.eval()`` set the network's mode as for any module, so a model can keep training between renders.
    Zoo models are built in eval mode with frozen weights and stay so (``eval_only``).

    Token layers: ``layout="tokens"`` declares that 3-D outputs ``[B, T, C]`` are token sequences (ViT, MLP-Mixer,
    CLIP); ``layer_layouts`` overrides it per layer (exact names or dotted prefixes). Objectives and analysis see
    such a layer as ``[B, C, h, w]``: the patch tokens on their grid, the ``prefix_tokens`` leading class / register
    tokens left out (found from the token count when not given).
    """

    def __init__(self, network: nn.Module, contract: InputContract, labels: Labels | Sequence[str] | None = None,
                 name: str = "model", check_inputs: bool = True, layout: str = "channels",
                 layer_layouts: Mapping[str, str] | None = None, prefix_tokens: int | None = None,
                 layer_aliases: Callable[[str], str] | Mapping[str, str] | None = None):
        super().__init__(network, contract, labels, name, check_inputs, layer_aliases)
        for value in [layout, *(layer_layouts or {}).values()]:
            if value not in LAYOUTS:
                raise ValueError(f"layout must be one of {LAYOUTS}, got {value!r}")
        self.layout = layout
        self.layer_layouts = dict(layer_layouts or {})
        for prefix in self.layer_layouts:
            resolve_layer(network, prefix)  # a misspelt name fails here, with the closest names
        if prefix_tokens is not None and prefix_tokens < 0:
            raise ValueError(f"prefix_tokens must be 0 or more, got {prefix_tokens}")
        self.prefix_tokens = prefix_tokens
        scale, shift = contract.affine()
        # the contract's constants as buffers: they follow model.to(device), so no copy is made per call
        self.register_buffer("input_scale", scale.clone(), persistent=False)
        self.register_buffer("input_shift", shift.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            self.contract.check(images)
        return network_output(self.network(self.normalize(images)), self.output_key)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` in [0, 1] -> the network's input (channel order, range), with the constants on the
        model's device."""
        if self.contract.channel_order == "BGR":
            images = images.flip(1)
        scale, shift = self.input_scale, self.input_shift
        if scale.device != images.device or scale.dtype != images.dtype:
            scale, shift = self.contract.affine(images.device, images.dtype)
        dtype = network_dtype(self.network)  # a float64 (or half) network gets its own dtype; gradients flow back
        return (images * scale + shift).to(dtype or images.dtype)



    @property
    def size(self) -> tuple[int, int]:
        return self.contract.size



    def preprocess(self, image) -> torch.Tensor:
        """Any image (path, PIL, array, tensor) -> ``[N, C, *size]`` in [0, 1] on the model's device."""
        from luminate.images import needed_side, to_tensor  # images is a leaf module, imported here: models stay light

        side = needed_side(self.contract.size, self.contract.crop_fraction)  # a huge JPEG decodes at reduced size
        tensor = to_tensor(image, channels=self.contract.channels, min_side=side)
        return self.contract.preprocess(tensor).to(self.device)

    def as_batch(self, images, *, single: bool = False) -> torch.Tensor:
        """The one way Luminate's analyses get an image batch: ``[N, C, H, W]`` float on the model's device.

        Float tensors are used as they are (``[C, H, W]`` gains a batch axis; no crop or resize: a tensor is taken
        to be prepared already, so a model-sized or deliberately smaller image is not cropped again); other tensors
        are converted (uint8 scaled to [0, 1]); paths, PIL images and arrays go through :meth:`preprocess` (the
        evaluation crop and size). ``single=True`` requires exactly one image.
        """
        from luminate.images import to_tensor

        if isinstance(images, (list, tuple)):  # paths, PIL images, arrays, tensors: any mix, any sizes
            if not images:
                raise ValueError("no images given: Luminate accepts a path, PIL image, array or tensor, or a list")
            parts = [self.as_batch(item) for item in images]
            if len({tuple(p.shape[1:]) for p in parts}) > 1:  # different sizes: each brought to the model's size
                parts = [self.contract.preprocess(p) for p in parts]
            batch = torch.cat(parts)
        elif isinstance(images, torch.Tensor):
            if images.is_floating_point() and images.ndim in (3, 4):
                batch = (images if images.ndim == 4 else images[None]).detach().to(self.device)
            else:
                batch = to_tensor(images, channels=self.contract.channels).to(self.device)
        else:
            batch = self.preprocess(images)
        if single and batch.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {batch.shape[0]}; pass images one at a time")
        return batch




    def layer_layout(self, name: str) -> str:
        """``"tokens"`` or ``"channels"``: how a 3-D output ``[B, T, C]`` of layer ``name`` is read (the most
        specific entry of ``layer_layouts``, else the model's ``layout``)."""
        module_name = self.resolve(name)[0] if name not in ("input", "output") else name
        best, layout = -1, self.layout
        for prefix, value in self.layer_layouts.items():
            if (module_name == prefix or module_name.startswith(prefix + ".")) and len(prefix) > best:
                best, layout = len(prefix), value
        return layout

    def _traced(self, size) -> tuple[list[LayerInfo], dict[str, LayerInfo]]:
        hw = self.size if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        if hw not in self._layer_cache:
            self._layer_cache[hw] = _trace_layers(self, hw)
        return self._layer_cache[hw]



    def token_grid(self, name: str, tokens: int, image_size: tuple[int, int]) -> tuple[int, int, int]:
        """``(prefix, h, w)`` for a token layer with ``tokens`` tokens on an input of ``image_size``: the number of
        leading non-patch tokens and the grid of the rest. The prefix is ``prefix_tokens`` when given, else the one
        found at the native size."""
        prefix = self.prefix_tokens
        if prefix is None:
            prefix = self.layer_info(name).prefix_tokens
        return (prefix, *_grid_for(tokens - prefix, image_size, name))






    def default_layer(self, purpose: str = "visualization") -> str:
        """The layer Luminate uses when none is given, for one ``purpose`` (:data:`LAYER_PURPOSES`:
        ``"visualization"``, ``"dictionary"``, ``"attribution"``, ``"groups"``).

        The model's declared :attr:`layer_defaults` entry (zoo: EfficientNet-Lite attribution and dictionary at
        ``blocks.10``, groups at ``head``; InceptionV1 ``mixed4d``), else the network is inspected
        (:mod:`luminate.models.defaults`): the last spatial layer for attribution, a non-negative post-activation
        layer for groups and dictionaries (NMF), the block 60% of the way through for visualization.
        """
        from luminate.models.defaults import default_layer

        return default_layer(self, purpose)

    def default_layers(self, size: int | tuple[int, int] | None = None) -> list[str]:
        """The layers a layer-by-layer view shows when none are given: the top-level spatial layers (stem, each
        block, head) in forward order, without containers that repeat a child's output or pooled maps of a single
        position (at ``size``, default the model's)."""
        infos = [info for info in top_level_layers(self, size)
                 if len(info.shape) == 3 and info.shape[1] * info.shape[2] > 1]
        names = [info.name for info in infos]
        return [n for n in names if not any(other.startswith(n + ".") for other in names)]

    def extra_repr(self) -> str:
        labels = f"{len(self.labels)} labels" if self.labels is not None else "no labels"
        tokens = ", token layers" if self.layout == "tokens" or "tokens" in self.layer_layouts.values() else ""
        return f"name={self.name!r}, input={self.contract.describe()}{tokens}, {labels}"


WRAP_HINT = ("luminate.models.wrap(net, size, mean=..., std=...) for normalized input, "
             "wrap(net, size, value_range=(lo, hi)) for a plain range (value_range=(0, 1): [0, 1] as is), "
             "or a preset: wrap(net, 224, preset='imagenet')")


def wrap(module: nn.Module, size: int | tuple[int, int] = 224, *, preset: str | None = None, value_range=None,
         mean=None, std=None, channel_order: str = "RGB", labels: Sequence[str] | Labels | None = None,
         name: str | None = None, crop_fraction: float | None = None, interpolation: str | None = None,
         channels: int = 3, layout: str = "channels",
         layer_layouts: Mapping[str, str] | None = None, prefix_tokens: int | None = None,
         fixed_size: bool | None = None, layer_defaults: Mapping[str, str] | None = None,
         device: str | torch.device | None = None) -> Model:
    """Wrap any ``torch.nn.Module`` with an explicit input contract.

    Say how the network expects its input, exactly one way: ``mean``/``std`` (``(x - mean) / std`` on [0, 1]
    images), ``value_range=(lo, hi)`` (0 -> lo, 1 -> hi; ``(0, 1)`` for [0, 1] as is), or ``preset`` (one of
    :data:`~luminate.models.contract.PRESETS`: ``"imagenet"``, ``"clip"``, ``"symmetric"``, ``"unit"``, ``"0-255"``).
    ``"imagenet"`` and ``"clip"`` also bring their evaluation transform exactly (``"imagenet"``: torchvision's
    ``Resize(int(size / 0.875))`` bilinear with antialiasing, ``CenterCrop(size)``).

    Args:
        size: native input size (int or ``(H, W)``).
        channels: input channels (1 for grayscale, 4+ for multispectral); renders follow it.
        crop_fraction, interpolation: the evaluation transform of photos (default: the preset's, else the whole
            short side, bicubic).
        layout: ``"tokens"`` reads 3-D outputs ``[B, T, C]`` as token sequences (ViT); ``layer_layouts`` overrides
            it per layer name or dotted prefix. ``prefix_tokens``: leading class/register tokens (default: found).
        fixed_size: the network only takes ``size`` (default: True for ``layout="tokens"``, whose position
            embeddings fix the token count): renders end their transforms with a resize to ``size``.
        layer_defaults: the layers analyses use when none is given, by purpose (``{"attribution": "layer4",
            "groups": "layer3"}``; see :meth:`Model.default_layer`); purposes left out are found by inspection.
        device: move the model there (``"cuda"``, ``"cpu"``, ...).

    Example: a torchvision-style classifier trained on ImageNet-normalized inputs::

        model = luminate.models.wrap(net, 224, preset="imagenet")
        model = luminate.models.wrap(net, 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """
    from luminate.models.contract import preset as preset_kwargs

    if isinstance(module, BaseModel):
        raise TypeError(f"this module is already a luminate {type(module).__name__}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap() takes a torch.nn.Module, got {type(module).__name__}")
    spec = preset_kwargs(preset) if preset is not None else {}
    if value_range is not None or mean is not None or std is not None:
        spec = {"value_range": value_range, "mean": mean, "std": std}
    if not any(spec.get(k) is not None for k in ("value_range", "mean", "std")):
        raise ValueError(f"wrap({type(module).__name__}, ...) needs the network's input convention, or every "
                         f"picture would be made for the wrong input. Use {WRAP_HINT}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    fixed = (layout == "tokens") if fixed_size is None else bool(fixed_size)
    transform = preset_kwargs(preset) if preset is not None else {}   # the preset's evaluation transform
    if crop_fraction is not None:
        transform["crop_fraction"] = crop_fraction
    if interpolation is not None:
        transform["interpolation"] = interpolation
    first = first_in_channels(module)
    if first is not None and first[1] != channels:
        raise ValueError(f"the network's first convolution {first[0]!r} takes {first[1]} input channel(s), but "
                         f"wrap() was given channels={channels}: wrap(net, ..., channels={first[1]})")
    contract = InputContract(size=size, value_range=spec.get("value_range"), mean=spec.get("mean"),
                             std=spec.get("std"), channel_order=channel_order,
                             crop_fraction=transform.get("crop_fraction", 1.0),
                             interpolation=transform.get("interpolation", "bicubic"),
                             resize_first=transform.get("resize_first", False), channels=channels, fixed_size=fixed)
    model = Model(module, contract, labels, name or type(module).__name__, layout=layout,
                  layer_layouts=layer_layouts, prefix_tokens=prefix_tokens)
    if layer_defaults:
        from luminate.models.defaults import LAYER_PURPOSES

        for purpose, layer in layer_defaults.items():
            if purpose not in LAYER_PURPOSES:
                raise ValueError(f"layer_defaults: unknown purpose {purpose!r}; one of {', '.join(LAYER_PURPOSES)}")
            model.resolve(layer)  # a misspelt layer fails here, with the closest names of this network
        model.layer_defaults = dict(layer_defaults)
    return model.to(device) if device is not None else model


def as_model(model) -> BaseModel:
    """A Luminate model from a model or a zoo name: a :class:`Model` for image models (text zoo names give a
    :class:`~luminate.models.textmodel.TextModel`, which refuses image steps by name). A bare ``nn.Module`` is
    refused with how to wrap it: its input convention (range, normalization, size) cannot be guessed, and a wrong
    guess gives plausible but wrong pictures."""
    if isinstance(model, BaseModel):
        return model
    if isinstance(model, str):
        from luminate.models.zoo import load

        return load(model)
    if isinstance(model, nn.Module):
        raise TypeError(f"a bare {type(model).__name__} has no input contract: Luminate cannot know its input size, "
                        f"range or normalization. Wrap it once: {WRAP_HINT}.")
    raise TypeError(f"expected a luminate Model, a zoo name or a torch.nn.Module, got {type(model).__name__}")


def layer_names(module: nn.Module) -> list[str]:
    """Dotted names of every submodule, in definition order (the root itself excluded)."""
    return [name for name, _ in module.named_modules() if name]


_CALL = re.compile(r"^(?P<name>.*)#(?P<call>\d+)$")


def split_call(name: str) -> tuple[str, int | None]:
    """``"res.relu#1"`` -> ``("res.relu", 1)``; a plain name -> ``(name, None)``."""
    if not isinstance(name, str):
        raise TypeError(f"layer names are strings like 'blocks.9', got {type(name).__name__}")
    m = _CALL.match(name)
    return (m.group("name"), int(m.group("call"))) if m else (name, None)


def resolve_layer(module: nn.Module, name: str) -> nn.Module:
    """``module.get_submodule(name)`` with an error that lists the closest layer names (``"name#k"`` gives the
    module of ``name``)."""
    name = split_call(name)[0]
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


def _grid_for(patches: int, image_size: tuple[int, int], name: str = "") -> tuple[int, int]:
    """The ``(h, w)`` grid of ``patches`` tokens closest to the image's aspect ratio."""
    if patches < 1:
        raise ValueError(f"token layer {name!r} has no patch tokens left after its prefix tokens")
    H, W = image_size
    best = None
    for h in range(1, int(math.isqrt(patches)) + 1):
        if patches % h == 0:
            for hh, ww in ((h, patches // h), (patches // h, h)):
                err = abs(math.log((hh / ww) / (H / W)))
                if best is None or err < best[0]:
                    best = (err, hh, ww)
    return best[1], best[2]


def find_prefix_tokens(tokens: int, image_size: tuple[int, int], max_prefix: int = 16) -> int:
    """The smallest number of leading tokens whose removal leaves a grid with the image's aspect ratio
    (ViT: 197 tokens at 224 px -> 1 class token and 14 x 14 patches; DINOv2 with 4 registers -> 5); 0 when none
    fits."""
    H, W = image_size
    for k in range(0, min(max_prefix, tokens - 1) + 1):
        n = tokens - k
        h = math.isqrt(round(n * H / W))
        for hh in (h, h + 1):
            if hh > 0 and n % hh == 0 and hh * W == (n // hh) * H:
                return k
    return 0


def _trace_layers(model: Model, size: tuple[int, int], inputs: torch.Tensor | None = None,
                  describe: Callable[[str, str, tuple[int, ...]], LayerInfo | None] | None = None
                  ) -> tuple[list[LayerInfo], dict[str, LayerInfo]]:
    """Run one blank image of ``size`` (or ``inputs``) through the model and record every module's output shape,
    per call (``describe(name, kind, shape)``: the LayerInfo of an output, None to leave it out).

    Returns the layers in definition order (first calls) and ``{"name#k": LayerInfo}`` for later calls."""
    shapes: dict[str, list[LayerInfo]] = {}
    handles = []

    def info_for(name: str, kind: str, shape: tuple[int, ...]) -> LayerInfo | None:
        if describe is not None:
            return describe(name, kind, shape)
        if len(shape) == 2 and model.layer_layout(name) == "tokens":
            tokens, channels = shape
            prefix = model.prefix_tokens if model.prefix_tokens is not None else find_prefix_tokens(tokens, size)
            h, w = _grid_for(tokens - prefix, size, name)
            return LayerInfo(name, kind, (channels, h, w), "tokens", shape, prefix)
        return LayerInfo(name, kind, shape)

    def make_hook(name: str):
        def hook(module, inputs, output):
            info = info_for(name, type(module).__name__, tuple(output.shape[1:])) \
                if isinstance(output, torch.Tensor) else None
            if info is not None:
                shapes.setdefault(name, []).append(info)
        return hook

    for name, mod in model.network.named_modules():
        if name:
            handles.append(mod.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad(), model.frozen():
            x = torch.full((1, model.contract.channels, *size), 0.5, device=model.device) if inputs is None else inputs
            model(x)
    finally:
        for h in handles:
            h.remove()
    order = {name: k for k, name in enumerate(layer_names(model.network))}
    first, later = [], {}
    for name, calls in shapes.items():
        first.append(LayerInfo(**{**calls[0].__dict__, "calls": len(calls)}))
        for k, info in enumerate(calls[1:], 1):
            later[f"{name}#{k}"] = LayerInfo(**{**info.__dict__, "name": f"{name}#{k}", "calls": len(calls)})
    return sorted(first, key=lambda info: order[info.name]), later
