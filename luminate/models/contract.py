"""The input contract: what a network expects, and the conversion from Luminate's images to it.

Luminate images are RGB float tensors in [0, 1], NCHW. A network may want another value range
(InceptionV1: (-117, 138)), a mean/std normalization, BGR order, and a particular size and
evaluation crop. A wrong input range is the most common silent failure of feature
visualization, so the contract is explicit, checked on every call, and shown in ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F


#: Named input conventions for :func:`luminate.models.wrap` (``preset="imagenet"``). Each is the keyword arguments
#: it stands for (input range and, where the convention has one, its evaluation transform); explicit arguments
#: given next to a preset override it.
PRESETS: Mapping[str, dict] = {
    # torchvision's ImageNet evaluation transform (the weights' transforms() of every torchvision classifier):
    # Resize(int(size / 0.875)) of the shorter side, bilinear with antialiasing, CenterCrop(size), then
    # (x - mean) / std with ImageNet statistics
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_fraction": 0.875,
                 "interpolation": "bilinear", "resize_first": True},
    # CLIP's image encoders: Resize(size) of the shorter side, bicubic, CenterCrop(size), CLIP's statistics
    "clip": {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
             "crop_fraction": 1.0, "interpolation": "bicubic", "resize_first": True},
    # [-1, 1] input (TF-slim Inception, many GANs and ViTs trained with mean = std = 0.5)
    "symmetric": {"value_range": (-1.0, 1.0)},
    # the network takes [0, 1] images as they are
    "unit": {"value_range": (0.0, 1.0)},
    # [0, 255] input (Caffe-style networks without mean subtraction)
    "0-255": {"value_range": (0.0, 255.0)},
}


def preset(name: str) -> dict:
    """The keyword arguments a named input convention stands for (see :data:`PRESETS`)."""
    key = str(name).lower()
    if key not in PRESETS:
        raise ValueError(f"unknown input preset {name!r}; known presets: {', '.join(PRESETS)}. Or give "
                         "mean=..., std=... (normalized input) or value_range=(lo, hi) yourself.")
    return dict(PRESETS[key])


@dataclass(frozen=True)
class InputContract:
    """How images in [0, 1] become network input.

    Give exactly one of ``value_range`` (``x -> lo + x * (hi - lo)``, per channel or shared) or
    ``mean``/``std`` (``x -> (x - mean) / std``); neither means the network takes [0, 1] as is.

    Args:
        size: the native ``(height, width)``; other sizes still work where the network allows.
        value_range: ``(lo, hi)`` that 0 and 1 map to (Lucid's ``image_value_range``).
        mean, std: per-channel normalization, in the [0, 1] scale.
        channel_order: ``"RGB"`` or ``"BGR"`` (the flip happens before scaling).
        crop_fraction: evaluation preprocessing crops the centre square of side
            ``crop_fraction * min(h, w)`` before resizing to ``size`` (1.0: the whole short side).
        interpolation: resize filter of the evaluation preprocessing (antialiased, as PIL's).
        resize_first: torchvision's order: resize the shorter side to ``int(min(size) / crop_fraction)``, then
            crop the centre ``size`` (``Resize(256), CenterCrop(224)``). Default: crop the centre, then resize.
        channels: number of input channels.
        fixed_size: the network only accepts ``size`` (a ViT with learned position embeddings): renders end
            their random transforms with a resize back to ``size``.
    """

    size: tuple[int, int] = (224, 224)
    value_range: tuple[float, float] | tuple[Sequence[float], Sequence[float]] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: Literal["RGB", "BGR"] = "RGB"
    crop_fraction: float = 1.0
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    channels: int = 3
    fixed_size: bool = False
    resize_first: bool = False
    _affine: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.value_range is not None and (self.mean is not None or self.std is not None):
            raise ValueError("give either value_range or mean/std, not both")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both or neither")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if int(self.channels) != self.channels or self.channels < 1:
            raise ValueError(f"channels must be a positive integer, got {self.channels!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        object.__setattr__(self, "size", size)
        c = self.channels
        if self.value_range is not None:
            lo, hi = (torch.as_tensor(v, dtype=torch.float32).expand(c).clone() for v in self.value_range)
            scale, shift = hi - lo, lo
        elif self.mean is not None:
            mean = torch.as_tensor(self.mean, dtype=torch.float32).expand(c).clone()
            std = torch.as_tensor(self.std, dtype=torch.float32).expand(c).clone()
            scale, shift = 1 / std, -mean / std
        else:
            scale, shift = torch.ones(c), torch.zeros(c)
        object.__setattr__(self, "_affine", (scale.view(1, c, 1, 1), shift.view(1, c, 1, 1)))
        object.__setattr__(self, "_on_device", {})

    def affine(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        """``(scale, shift)``, each ``[1, C, 1, 1]``, on ``device``: network input = image * scale + shift.

        Copies are made once per device and dtype and kept (no host-to-device copy per call).
        """
        key = (torch.device(device), dtype)
        cached = self._on_device.get(key)
        if cached is None:
            cached = self._on_device[key] = tuple(t.to(device=key[0], dtype=dtype) for t in self._affine)
        return cached

    @property
    def network_range(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The network-side values that image values 0 and 1 map to, per channel."""
        scale, shift = self._affine
        return tuple(shift.flatten().tolist()), tuple((shift + scale).flatten().tolist())

    def check(self, images: torch.Tensor) -> None:
        """Raise a clear error unless ``images`` is ``[N, channels, H, W]`` float in [0, 1]."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected a tensor [N, {self.channels}, H, W], got {type(images).__name__}; "
                            "convert with luminate.images.to_tensor")
        if images.ndim != 4 or images.shape[1] != self.channels:
            hint = ""
            if images.ndim in (3, 4) and images.shape[-1] == self.channels:
                hint = (" (channels last: the model accepts [N, C, H, W] or [C, H, W]; use "
                        f"images.permute({'0, 3, 1, 2' if images.ndim == 4 else '2, 0, 1'}), or give a numpy HWC "
                        "array or a PIL image, which Luminate converts itself)")
            raise ValueError(f"expected images of shape [N, {self.channels}, H, W], got {tuple(images.shape)}{hint}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
        with torch.no_grad():  # one device sync for both numbers
            lo, hi = torch.stack([images.min(), images.max()]).tolist()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (Luminate converts to the network's range {self._describe_range()} "
                f"itself), but these span [{lo:.3g}, {hi:.3g}]. Pass raw [0, 1] images, not normalized ones.")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` in [0, 1] -> the network's input (channel order, then scale and shift)."""
        if self.channel_order == "BGR":
            images = images.flip(1)
        scale, shift = self._affine
        if scale.device != images.device or scale.dtype != images.dtype:
            scale, shift = self.affine(images.device, images.dtype)
        return images * scale + shift

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation preprocessing: centre crop (``crop_fraction`` of the short side) and resize to ``size``.

        ``[N, C, H, W]`` in [0, 1] -> ``[N, C, *size]`` in [0, 1]. For non-square native sizes the crop
        keeps the native aspect ratio.
        """
        if self.resize_first:
            return self._resize_then_crop(images)
        h, w = images.shape[-2:]
        th, tw = self.size
        aspect = tw / th
        crop_h = self.crop_fraction * min(h, w / aspect)
        crop_w = crop_h * aspect
        crop_h, crop_w = max(1, int(round(crop_h))), max(1, int(round(crop_w)))
        top, left = ((h - crop_h) + 1) // 2, ((w - crop_w) + 1) // 2
        images = images[..., top:top + crop_h, left:left + crop_w]
        if (crop_h, crop_w) == (th, tw):
            return images
        antialias = self.interpolation != "nearest"
        kwargs = {"align_corners": False} if antialias else {}
        out = F.interpolate(images, size=(th, tw), mode=self.interpolation, antialias=antialias, **kwargs)
        return out.clamp(0, 1)

    def _resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        antialias = self.interpolation != "nearest"
        kwargs = {"align_corners": False} if antialias else {}
        return F.interpolate(images, size=size, mode=self.interpolation, antialias=antialias, **kwargs).clamp(0, 1)

    def _resize_then_crop(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision's ``Resize(int(min(size) / crop_fraction))`` (shorter side; the longer one
        ``int(short * long / short_in)``) then ``CenterCrop(size)`` (offsets ``int(round((in - out) / 2))``)."""
        h, w = images.shape[-2:]
        th, tw = self.size
        short = int(min(th, tw) / self.crop_fraction)
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        if nh < th or nw < tw:  # a crop wider than the resized image (non-square size): cover it
            grow = max(th / nh, tw / nw)
            nh, nw = max(th, int(nh * grow)), max(tw, int(nw * grow))
        if (nh, nw) != (h, w):
            images = self._resize(images, (nh, nw))
        top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
        return images[..., top:top + th, left:left + tw]

    def _describe_range(self) -> str:
        lo, hi = self.network_range
        fmt = lambda v: f"{v[0]:.4g}" if len(set(v)) == 1 else "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
        return f"[{fmt(lo)}, {fmt(hi)}]"

    def describe(self) -> str:
        """One line: size, order and the range the network sees."""
        h, w = self.size
        return (f"{h}x{w} {self.channel_order}, [0,1] -> {self._describe_range()}"
                + (f", resize {int(min(h, w) / self.crop_fraction)} {self.interpolation} + centre crop"
                   if self.resize_first else f", centre crop {self.crop_fraction:.3f}" if self.crop_fraction < 1 else "")
                + (", fixed size" if self.fixed_size else ""))


#: keys taken from a network that returns a dict (Hugging Face outputs, torchvision's segmentation models), in order
OUTPUT_KEYS = ("logits", "out")


def network_output(output, key: str | None = None) -> torch.Tensor:
    """The one tensor a network's forward gave, from the structures forwards return.

    A tensor as it is; a tuple or list (``(logits, aux)``): its first tensor; a dict or Hugging Face output:
    ``output[key]`` when ``key`` is declared (``model.output_key``), else its ``"logits"`` or ``"out"`` entry.
    Anything else raises an error that says how to declare the key or wrap the network.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    elif isinstance(output, Mapping):
        keys = [k for k in ([key] if key is not None else OUTPUT_KEYS) if k in output]
        if keys and isinstance(output[keys[0]], torch.Tensor):
            return output[keys[0]]
        if key is not None:
            raise KeyError(f"the network's output has no tensor under output_key {key!r}; its keys: "
                           f"{', '.join(map(str, output))}")
        raise TypeError(f"the network returns a dict with keys {', '.join(map(str, output))}: say which one holds "
                        "the class scores with model.output_key = 'KEY' (after luminate.models.wrap), or wrap the "
                        "network in a module whose forward returns that tensor")
    raise TypeError(f"the network returns {type(output).__name__}, not a tensor: wrap it in a module whose forward "
                    "returns the class scores [N, classes] (or its first output tensor)")


def first_in_channels(module: torch.nn.Module) -> tuple[str, int] | None:
    """``(name, in_channels)`` of the first convolution a network runs, as registered (``None`` if it has none)."""
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            return name, int(sub.in_channels)
    return None


def network_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The floating dtype of a network's first floating parameter (``float64`` for ``net.double()``), else ``None``."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None
