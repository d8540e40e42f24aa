"""Fold BatchNorm into the convolution before it, for the duration of a render.

A frozen network in eval mode computes ``bn(conv(x)) = conv(x) * s + t`` per channel, with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``. Scaling the convolution's weight by ``s`` and adding
``t`` as its bias gives the same values with one elementwise pass less forward and one less backward per
BatchNorm: the render loop's steps then cost less than the plain network's forward and backward.

:func:`folded_batchnorm` is a context manager that does it in place and puts everything back on exit:

>>> with model.frozen(), folded_batchnorm(model.network, keep=["blocks.9.project.conv"]) as info:
...     ...                                    # info.pairs: the (conv, bn) names folded
...                                            # the user's network is exactly as before after the block

How pairs are found
    A probe forward pass (no gradients, a small random image) records which BatchNorm's input is exactly the
    output tensor of a convolution, each called once per pass; only those pairs fold. Convolutions the caller
    reads (``keep``: a tapped layer sees its own output, which folding would change) are left alone.

What changes, and how it is undone
    The convolution's ``weight`` (and ``bias``) are *replaced* by new frozen parameters (the user's parameter
    objects are not written to), and the BatchNorm's ``forward`` becomes the identity (an instance attribute, so
    its hooks still fire and a tap on the BatchNorm sees the same values as before). A convolution subclass whose
    forward ignores ``self.bias`` (e.g. a "same"-padding convolution that calls ``F.conv2d(..., None, ...)``) gets
    the shift added by the BatchNorm instead. On exit the original parameters and forwards come back.

Safety
    After folding, a second probe pass compares the network's output (or the deepest kept layer) with the unfolded
    one; beyond ``rtol`` everything is undone and ``info.reason`` says why. Networks in training mode, without
    BatchNorm, or with parameters that require gradients (a network being trained) are not folded.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BN = (nn.BatchNorm2d,)


@dataclass
class FoldInfo:
    """What :func:`folded_batchnorm` did: ``pairs`` ``[(conv name, bn name)]`` folded (empty when nothing was),
    ``reason`` why not (``None`` when folded), ``max_error`` the probe's relative difference, ``channels_last``
    whether the weights are stored channels-last for the render."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None
    max_error: float = 0.0
    channels_last: bool = False       # the caller stores images channels-last (render sets it)

    def summary(self) -> str:
        """One line for ``result.settings``."""
        if self.pairs:
            return (f"{len(self.pairs)} BatchNorm layers folded into their convolutions "
                    f"(probe error {self.max_error:.1e})")
        return f"not folded: {self.reason}"


def probe_input(network: nn.Module, size: tuple[int, int], channels: int) -> Tensor:
    """The seeded random image ``[1, channels, *size]`` in [0, 1] that probe passes run, on the network's device and
    in its dtype."""
    param = next(iter(network.parameters()))
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, *size, generator=g).to(device=param.device, dtype=param.dtype)


def _uses_bias(conv: nn.Conv2d) -> bool:
    """Whether ``conv.forward`` adds ``conv.bias`` (a subclass may call ``F.conv2d(..., None, ...)`` itself)."""
    if type(conv).forward is nn.Conv2d.forward:
        return True
    w = conv.weight
    x = torch.zeros(1, conv.in_channels, 2 * conv.kernel_size[0] + 1, 2 * conv.kernel_size[1] + 1,
                    device=w.device, dtype=w.dtype)
    saved = conv.bias
    try:
        conv.bias = nn.Parameter(torch.ones(conv.out_channels, device=w.device, dtype=w.dtype), requires_grad=False)
        with torch.no_grad():
            y = conv(x)
    finally:
        conv.bias = saved
    return bool((y > 0.5).all())


def find_pairs(network: nn.Module, probe: Tensor) -> list[tuple[str, str]]:
    """``[(conv name, bn name)]``: each BatchNorm whose input is the output tensor of a convolution, both called once
    in a forward pass of ``probe`` (run under ``no_grad``)."""
    names = {m: n for n, m in network.named_modules()}
    calls: dict[str, int] = {}
    outputs: dict[int, tuple[str, Tensor]] = {}
    pairs: dict[str, str] = {}
    handles = []

    def on_conv(module, inputs, output):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, Tensor):
            outputs[id(output)] = (name, output)          # the tensor is kept so its id stays unique

    def on_bn(module, inputs):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        source = outputs.get(id(inputs[0])) if inputs and isinstance(inputs[0], Tensor) else None
        if source is not None and source[1] is inputs[0]:
            pairs[name] = source[0]

    for module, name in names.items():
        if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(on_conv))
        elif isinstance(module, _BN):
            handles.append(module.register_forward_pre_hook(on_bn))
    try:
        with torch.no_grad():
            network(probe)
    finally:
        for h in handles:
            h.remove()
    used = list(pairs.values())
    return [(conv, bn) for bn, conv in pairs.items()
            if calls.get(bn) == 1 and calls.get(conv) == 1 and used.count(conv) == 1]


def _identity(x: Tensor) -> Tensor:
    return x


class SamePadded:
    """A stride-``s`` convolution that pads like TensorFlow's ``"SAME"`` (``F.pad`` with one pixel more at the
    bottom/right, then a convolution without padding), computed without the pad: where the padding is one pixel
    longer at the end, the kernel gets a leading row (column) of zeros and the convolution pads both sides by the
    longer amount, which gives the same windows. A separate padded copy of the input (and the zero-filled gradient of
    it) cost more than the convolution itself in a batch of 16 at 96 px (``benchmarks/render_speed.py``)."""

    def __init__(self, conv: nn.Conv2d, weight: Tensor, bias: Tensor):
        self.stride, self.groups = tuple(conv.stride), conv.groups
        self.kernel = tuple(weight.shape[-2:])
        self.weight, self.bias = weight, bias
        self.extended: dict[tuple[int, int], Tensor] = {}

    def _weight(self, grow_h: int, grow_w: int) -> Tensor:
        if (grow_h, grow_w) not in self.extended:
            w = F.pad(self.weight, (grow_w, 0, grow_h, 0))
            self.extended[(grow_h, grow_w)] = w.contiguous(memory_format=torch.channels_last) \
                if self.weight.is_contiguous(memory_format=torch.channels_last) else w.contiguous()
        return self.extended[(grow_h, grow_w)]

    def arguments(self, x: Tensor) -> tuple[Tensor, Tensor, list[int], list[int], int]:
        """``(weight, bias, stride, padding, groups)`` of the padding-free convolution for an input like ``x``."""
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return self._weight(bottom - top, right - left), self.bias, list(self.stride), [bottom, right], self.groups

    def __call__(self, x: Tensor) -> Tensor:
        weight, bias, stride, padding, groups = self.arguments(x)
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)


def _same_padded(conv: nn.Conv2d, weight: Tensor, bias: Tensor, device, dtype) -> SamePadded | None:
    """A :class:`SamePadded` forward for ``conv`` (with the folded ``weight`` and ``bias``) when it computes what
    ``conv``'s own forward plus ``bias`` computes on inputs of even and odd size, else None."""
    if conv.padding != (0, 0) or conv.dilation != (1, 1) or max(conv.stride) < 2 or conv.padding_mode != "zeros":
        return None
    fast = SamePadded(conv, weight, bias)
    g = torch.Generator().manual_seed(1)
    for side in (16, 17):
        x = torch.rand(1, conv.in_channels, side, side + 1, generator=g).to(device=device, dtype=dtype)
        want = type(conv).forward(conv, x) + bias[:, None, None]
        got = fast(x)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())):
            return None
    return fast


class _Shift:
    """A BatchNorm folded into a convolution that ignores its bias: adds the per-channel shift."""

    def __init__(self, shift: Tensor):
        self.shift = shift[:, None, None]

    def __call__(self, x: Tensor) -> Tensor:
        return x + self.shift


@contextlib.contextmanager
def folded_batchnorm(network: nn.Module, keep: Iterable[str] = (), size: tuple[int, int] = (64, 64),
                     channels: int = 3, rtol: float = 1e-4, forward=None,
                     channels_last: bool = False) -> Iterator[FoldInfo]:
    """Fold every eval-mode BatchNorm2d into the convolution feeding it while the block runs; restore on exit.

    Args:
        network: the frozen network (eval mode, ``requires_grad=False`` weights: inside ``Model.frozen()``).
        keep: module names whose outputs the caller reads (their convolutions are not folded).
        size, channels: the probe image ``[1, channels, *size]`` (random, seeded).
        rtol: the largest relative difference of the probe's output allowed (else nothing is folded).
        forward: ``images -> tensor`` the probe compares (default ``network``), e.g. a tap of the deepest layer.
        channels_last: store the folded 4-d weights channels-last (faster convolutions on CPUs with oneDNN;
            feed the network channels-last images too).

    Yields:
        :class:`FoldInfo`.
    """
    info = FoldInfo()
    keep = set(keep)
    forward = forward or network
    bns = [m for m in network.modules() if isinstance(m, _BN)]
    if not bns:
        info.reason = "the network has no BatchNorm2d"
        yield info
        return
    if network.training or any(m.training for m in bns):
        info.reason = "the network is in training mode"
        yield info
        return
    if any(p.requires_grad for p in network.parameters()):
        info.reason = "the network's weights require gradients (it is not frozen)"
        yield info
        return
    if any(not m.track_running_stats or m.running_var is None for m in bns):
        info.reason = "a BatchNorm2d without running statistics"
        yield info
        return
    probe = probe_input(network, size, channels)
    try:
        pairs = [(c, b) for c, b in find_pairs(network, probe) if c not in keep]
        with torch.no_grad():
            reference = forward(probe) if pairs else None
    except Exception as error:  # a network that cannot run the probe image: render it as it is
        info.reason = f"the probe image {tuple(probe.shape)} did not run ({type(error).__name__}: {error})"
        yield info
        return
    if not pairs:
        info.reason = "no BatchNorm2d directly after a convolution"
        yield info
        return
    undo = []
    try:
        with torch.no_grad():
            for conv_name, bn_name in pairs:
                conv = network.get_submodule(conv_name)
                bn = network.get_submodule(bn_name)
                gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
                scale = gamma / torch.sqrt(bn.running_var + bn.eps)
                shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
                old_w, old_b = conv.weight, conv.bias
                bias_in_conv = _uses_bias(conv)
                if old_b is not None:
                    shift = shift + old_b * scale
                undo.append((conv, old_w, old_b, bn, "forward" in bn.__dict__, bn.__dict__.get("forward"),
                             "forward" in conv.__dict__, conv.__dict__.get("forward")))
                w = old_w * scale.reshape(-1, *([1] * (old_w.ndim - 1)))
                if channels_last and w.ndim == 4:
                    w = w.contiguous(memory_format=torch.channels_last)
                conv.weight = nn.Parameter(w.to(old_w.dtype), requires_grad=False)
                if bias_in_conv:
                    conv.bias = nn.Parameter(shift.to(old_w.dtype), requires_grad=False)
                    bn.forward = _identity
                elif (fast := _same_padded(conv, conv.weight, shift.to(old_w.dtype), old_w.device,
                                           old_w.dtype)) is not None:
                    conv.forward = fast            # the shift goes into the convolution as its bias
                    bn.forward = _identity
                else:
                    if old_b is not None:
                        conv.bias = nn.Parameter((old_b * 0).to(old_w.dtype), requires_grad=False)
                    bn.forward = _Shift(shift.to(old_w.dtype))
            folded = forward(probe)
        error = float((folded - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
        info.max_error = error
        if error > rtol or not torch.isfinite(folded).all():
            _restore(undo)
            undo = []
            info.reason = f"folding changed the probe output by {error:.1e} (relative; allowed {rtol:g})"
        else:
            info.pairs = pairs
        yield info
    finally:
        _restore(undo)


def _restore(undo: list) -> None:
    for conv, old_w, old_b, bn, had_forward, old_forward, conv_had_forward, conv_forward in reversed(undo):
        conv.weight = old_w
        conv.bias = old_b
        for module, had, forward in ((bn, had_forward, old_forward), (conv, conv_had_forward, conv_forward)):
            if had:
                module.forward = forward
            else:
                module.__dict__.pop("forward", None)


def units_per_batch(device: torch.device | str, wanted: int = 16) -> int:
    """How many units the Microscope should render in one batch on ``device``.

    On a CPU a batch costs about as much as the same units one by one, or more (a batch of 16 units measured 17.3x
    one unit per step on this project's CPU): render one unit at a time. On a GPU batching fills the device: up to
    ``wanted`` units per batch."""
    device = torch.device(device)
    return max(1, int(wanted)) if device.type in ("cuda", "mps", "xpu") else 1


@contextlib.contextmanager
def channels_last_weights(network: nn.Module, keep: Iterable[str] = ()) -> Iterator[int]:
    """Store every frozen 4-d convolution weight channels-last while the block runs (new parameter objects with the
    same values; the user's come back on exit); yields how many were swapped. For networks without BatchNorm to fold
    (InceptionV1): oneDNN's convolutions run faster on channels-last images with channels-last weights. Networks in
    training mode or with trainable weights are left alone."""
    keep = set(keep)
    swapped = []
    if not network.training and not any(p.requires_grad for p in network.parameters()):
        for name, module in network.named_modules():
            if isinstance(module, nn.Conv2d) and name not in keep and module.weight.ndim == 4 \
                    and not module.weight.is_contiguous(memory_format=torch.channels_last):
                swapped.append((module, module.weight))
                module.weight = nn.Parameter(module.weight.detach().contiguous(memory_format=torch.channels_last),
                                             requires_grad=False)
    try:
        yield len(swapped)
    finally:
        for module, weight in reversed(swapped):
            module.weight = weight


#: glibc ``mallopt`` parameters: ``M_TRIM_THRESHOLD``, ``M_MMAP_THRESHOLD``
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest ``M_MMAP_THRESHOLD`` glibc accepts on 64-bit systems (32 MiB)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: free memory at the top of the heap kept for reuse instead of returned to the system (1 GiB)
_TRIM_THRESHOLD = 1 << 30
_memory_kept: list[bool] = []


def reuse_freed_memory() -> bool:
    """Let the process keep and reuse the memory of freed tensors up to 32 MiB each (glibc only; once per process).

    By default glibc serves every allocation above a moving threshold (128 KiB at first) with its own ``mmap`` and
    gives it back with ``munmap`` when freed, so each render step of a batch maps, zero-fills (page faults) and
    unmaps the same activation buffers again: a batch of 16 units at 96 px cost 9.4x one unit per step that way,
    5.1x with the buffers reused (``docs/quality.md``). Raising the thresholds keeps freed memory in the heap for
    the next step (up to 1 GiB of free heap is kept rather than trimmed, since a batch's activations are freed
    together at the end of each step); the process's resident memory stays near its high-water mark instead of
    shrinking between steps.
    Returns whether the setting took effect (False off glibc)."""
    if _memory_kept:
        return _memory_kept[0]
    ok = False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):   # not glibc (macOS, Windows, musl): nothing to tune
        ok = False
    _memory_kept.append(ok)
    return ok
