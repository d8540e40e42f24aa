"""Each convolution in one oneDNN call with packed weights, and the ReLU after it as a post-op, for a render.

On the CPU a render step pays two costs that do not show in a layer's arithmetic: a convolution given a plain weight
reorders it into oneDNN's blocked order on every call (15-70 us a layer here, forward and backward), and a ReLU (or
ReLU6) after a convolution reads and writes the whole activation once more. While :func:`fused_activations` is
active, every convolution it can take runs as ``torch.ops.mkldnn._convolution_pointwise`` with its weight reordered
once per render, the activation after it (if any) applied as a post-op in the same pass. The backward masks the
gradient with the saved output and takes the input gradient (no weight gradients: the network is frozen); for a
stride-1 convolution, plain or depthwise, that is a forward convolution with the flipped, transposed weight, packed
too, else ``convolution_backward``.

>>> with model.frozen(), folded_batchnorm(net) as folded, fused_activations(net, probe, keep=taps) as fused:
...     with redirect, fused.redirecting(redirect):   # RedirectedReLU's gradient for the fused pairs too
...         ...
...     with fused.paused():                          # each convolution and activation module as it was
...         ...

How layers are found, and what is left alone
    A probe forward pass (no gradients) records each convolution's output tensor and each ReLU-like module's input
    (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh(0, m)``). Every convolution called once and not in ``keep`` takes the
    fused path; an activation joins it when its input is exactly that convolution's output, it runs once, and no
    module the caller reads (``keep``) produces or consumes that tensor (a tap would otherwise see post-activation
    values). Only plain ``nn.Conv2d`` forwards (zero padding given as numbers) and the padding-free "SAME" forwards
    that :func:`~luminate.fold.folded_batchnorm` installs (:class:`~luminate.fold.SamePadded`) are taken.

What changes, and how it is undone
    The convolution's ``forward`` becomes the fused call, and a joined activation's ``forward`` passes the fused
    output through untouched (any other input is activated as before: a paused or non-CPU call runs the two
    separately). Under :meth:`FusionInfo.redirecting` the fused backward takes Lucid's redirected ReLU gradient
    (:func:`~luminate.overrides.redirected_gradient`), so a render's first steps keep the fused pass too.
    A second probe pass compares the network's output and every kept module's output with the unfused ones; beyond
    ``rtol`` (another reader of a pre-activation tensor, a subclass whose forward is not ``F.conv2d``) or on any
    error, everything is undone and ``info.reason`` says why.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from luminate.fold import SamePadded
from luminate.overrides import ReLUCalls, RedirectedReLU, redirected_gradient

INF = float("inf")
logger = logging.getLogger("luminate.fuse")


def _fused_op_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class _ConvActivation(torch.autograd.Function):
    """``clamp(conv2d(x, weight, bias), 0, upper)`` (``upper=None``: no activation) in one oneDNN call with the weight
    ``packed`` in oneDNN's order; gradient for ``x`` only: a forward convolution with the ``adjoint`` weight (packed
    too) where there is one, else ``convolution_backward``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, packed: Tensor, adjoint: Tensor | None, bias: Tensor | None,
                stride: list, padding: list, groups: int, upper: float | None, redirect: bool) -> Tensor:
        attr, scalars = ("none", []) if upper is None else ("relu", []) if upper == INF else ("hardtanh", [0.0, upper])
        y = torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, [1, 1], groups, attr,
                                                    scalars, "")
        inputs = (x, weight) if adjoint is None else (adjoint,)
        ctx.save_for_backward(*inputs, *(() if upper is None else (y,)))  # the mask needs y; an in-place op may follow
        ctx.conv = (stride, padding, groups, upper, redirect, tuple(weight.shape[-2:]))
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        stride, padding, groups, upper, redirect, kernel = ctx.conv
        saved = ctx.saved_tensors
        inputs, y = (saved, None) if upper is None else (saved[:-1], saved[-1])
        if upper is None:
            masked = grad
        elif redirect:
            masked = redirected_gradient(grad, y, upper)
        else:
            masked = torch.ops.aten.threshold_backward(grad, y, 0) if upper == INF \
                else torch.ops.aten.hardtanh_backward(grad, y, 0.0, upper)
        if len(inputs) == 1:        # stride 1: the input gradient is a convolution with the adjoint
            (adjoint,) = inputs
            dense = masked.is_contiguous(memory_format=torch.channels_last) or masked.is_contiguous()
            adjoint_padding = [k - 1 - p for k, p in zip(kernel, padding)]
            grad_x = torch.ops.mkldnn._convolution_pointwise(masked if dense else masked.contiguous(), adjoint, None,
                                                             adjoint_padding, [1, 1], [1, 1], groups, "none", [], "")
        else:
            x, weight = inputs
            grad_x = torch.ops.aten.convolution_backward(masked, x, weight, None, stride, padding, [1, 1], False,
                                                         [0, 0], groups, [True, False, False])[0]
        return grad_x, None, None, None, None, None, None, None, None, None


def _packed(weight: Tensor, stride: list, padding: list, groups: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``weight`` in oneDNN's order for inputs like ``x``, and for a stride-1 convolution (plain or depthwise) the
    adjoint weight (flipped, in/out swapped; padding ``k - 1 - p``) packed for the output gradient, else None.
    A convolution reorders a plain weight on every call (15-70 us a layer on this project's CPU)."""
    reorder = torch.ops.mkldnn._reorder_convolution_weight
    packed = reorder(weight, padding, stride, [1, 1], groups, list(x.shape))
    out_channels, in_per_group, kh, kw = weight.shape
    depthwise = groups == out_channels == x.shape[1] and in_per_group == 1
    if list(stride) != [1, 1] or not (groups == 1 or depthwise) or padding[0] > kh - 1 or padding[1] > kw - 1:
        return packed, None
    flipped = weight.flip(-1, -2)
    adjoint = (flipped if depthwise else flipped.transpose(0, 1)).contiguous(
        memory_format=torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format)
    out_size = [x.shape[0], out_channels, x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1]
    return packed, reorder(adjoint, [kh - 1 - padding[0], kw - 1 - padding[1]], [1, 1], [1, 1], groups, out_size)


def _upper(act: nn.Module) -> float | None:
    """The cap of a ReLU-like module (``inf`` for ReLU), or None when it is not one."""
    if type(act) is nn.ReLU:
        return INF
    if type(act) in (nn.ReLU6, nn.Hardtanh) and act.min_val == 0.0 and act.max_val > 0:
        return float(act.max_val)
    return None


def _plain_spec(conv: nn.Conv2d) -> Callable[[Tensor], tuple] | None:
    """``x -> (weight, bias, stride, padding, groups)`` for a convolution that computes ``F.conv2d`` with its own
    settings (a subclass's forward is assumed to; the probe comparison after fusing checks that it does)."""
    if "forward" in conv.__dict__ or conv.padding_mode != "zeros" or isinstance(conv.padding, str) \
            or conv.dilation != (1, 1):
        return None
    stride, padding = list(conv.stride), list(conv.padding)
    return lambda x: (conv.weight, conv.bias, stride, padding, conv.groups)


@dataclass
class FusionInfo:
    """What :func:`fused_activations` did: ``pairs`` ``[(conv name, activation name)]`` (empty when none),
    ``reason`` why not, and :meth:`paused` to run the two separately for a while."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    convs: list[str] = field(default_factory=list)      # every convolution on the fused path, with or without one
    reason: str | None = None
    on: bool = True
    packing: bool = False       # weights are packed for the first input after the probe
    unpacked: int = 0           # convolutions whose weights oneDNN could not pack (they run with plain weights)
    redirect: RedirectedReLU | None = None
    unfused_calls: int | None = None     # ReLU-like calls the fused probe pass still made (None: not measured)

    @contextlib.contextmanager
    def redirecting(self, redirect: RedirectedReLU | None) -> Iterator[None]:
        """Inside the block fused pairs take Lucid's redirected ReLU gradient (counted in ``redirect.count``), as
        the separate activations would under ``redirect`` (``None``: no change)."""
        was, self.redirect = self.redirect, redirect
        try:
            yield
        finally:
            self.redirect = was

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside the block every fused convolution runs its own forward (and its activation module after it)."""
        was, self.on = self.on, False
        try:
            yield
        finally:
            self.on = was

    @property
    def complete(self) -> bool:
        """Whether every ReLU-like call of the probe pass was fused (a redirect then needs no function mode)."""
        return bool(self.pairs) and self.on and self.unfused_calls == 0

    def summary(self) -> str:
        """One line for ``result.settings``."""
        if self.convs:
            return (f"{len(self.convs)} convolutions in one oneDNN call each with packed weights, "
                    f"{len(self.pairs)} ReLU-like activations computed with them (post-ops)")
        return f"no convolution fused: {self.reason}"


class _FusedConv:
    """A convolution's forward while fused: one oneDNN call with packed weights (and the activation after it, if
    any) when on, on the CPU and in float32; its own forward otherwise."""

    def __init__(self, info: FusionInfo, unfused: Callable[[Tensor], Tensor], spec, upper: float | None):
        self.info, self.unfused, self.spec, self.upper = info, unfused, spec, upper
        self.last: Callable[[], Tensor | None] = lambda: None
        self.packs: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}   # id(weight) -> (weight, packed, adjoint)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.info.on or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.unfused(x)
        weight, bias, stride, padding, groups = self.spec(x)
        pack = self.packs.get(id(weight))
        if pack is None or pack[0] is not weight:
            if not self.info.packing:   # the probe: packed for its small size, a weight can be 60x slower later
                pack = (weight, weight, None)
            else:
                try:
                    pack = (weight, *_packed(weight, stride, padding, groups, x))
                except RuntimeError as error:  # a oneDNN build without weight packing: plain weights, slower
                    if not self.info.unpacked:
                        logger.warning("luminate: convolution weights could not be packed for oneDNN (%s); the "
                                       "render runs with plain weights, which is slower", error)
                    self.info.unpacked += 1
                    pack = (weight, weight, None)
                self.packs[id(weight)] = pack
        redirect = self.upper is not None and self.info.redirect is not None and x.requires_grad \
            and torch.is_grad_enabled()
        if redirect:
            self.info.redirect.count += 1
        y = _ConvActivation.apply(x, weight, pack[1], pack[2], bias, stride, padding, groups, self.upper, redirect)
        self.last = weakref.ref(y)
        return y


class _PassFused:
    """An activation's forward while fused: the fused output passes as it is, anything else is activated."""

    def __init__(self, conv: _FusedConv, activate: Callable[[Tensor], Tensor]):
        self.conv, self.activate = conv, activate

    def __call__(self, x: Tensor) -> Tensor:
        return x if self.conv.last() is x else self.activate(x)


def find_conv_activations(network: nn.Module, probe: Tensor, keep: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``[(conv name, activation name)]``: each ReLU-like module whose input is the output tensor of a convolution,
    both called once in a forward pass of ``probe``, the tensor neither produced nor read by a module in ``keep``."""
    return _survey(network, network, probe, set(keep))[0]


def _survey(network: nn.Module, forward: Callable[[Tensor], Tensor], probe: Tensor,
            keep: set[str]) -> tuple[list[tuple[str, str]], list[str], list[Tensor]]:
    """One probe pass: the fusable pairs, every convolution called once and not kept, and the outputs to compare
    (``forward``'s, then each kept module's)."""
    names = {m: n for n, m in network.named_modules()}
    calls: dict[str, int] = {}
    produced: dict[int, tuple[str, Tensor]] = {}      # conv outputs, kept alive so ids stay unique
    kept_tensors: set[int] = set()
    candidates: dict[str, str] = {}
    outputs: list[Tensor] = []
    handles = []

    def on_input(module, inputs):
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if name in keep:
            kept_tensors.update(id(t) for t in inputs if isinstance(t, Tensor))
        source = produced.get(id(inputs[0])) if inputs and isinstance(inputs[0], Tensor) else None
        if source is not None and source[1] is inputs[0] and _upper(module) is not None:
            candidates[name] = source[0]

    def on_output(module, inputs, output):
        name = names[module]
        if isinstance(output, Tensor):
            if name in keep:
                kept_tensors.add(id(output))
                outputs.append(output.detach().clone())
            if isinstance(module, nn.Conv2d):
                produced[id(output)] = (name, output)

    for module, name in names.items():
        if name in keep or isinstance(module, nn.Conv2d) or _upper(module) is not None:
            handles.append(module.register_forward_pre_hook(on_input))
        if name in keep or isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_output))
    try:
        with torch.no_grad():
            outputs.insert(0, forward(probe))
    finally:
        for h in handles:
            h.remove()
    tensors = {name: key for key, (name, _) in produced.items()}
    pairs = [(conv, act) for act, conv in candidates.items()
             if calls.get(act) == 1 and calls.get(conv) == 1 and tensors[conv] not in kept_tensors]
    convs = [name for name in tensors if calls.get(name) == 1 and name not in keep]
    return pairs, convs, outputs


@contextlib.contextmanager
def fused_activations(network: nn.Module, probe: Tensor, keep: Iterable[str] = (), rtol: float = 1e-4,
                      forward: Callable[[Tensor], Tensor] | None = None) -> Iterator[FusionInfo]:
    """Fuse every convolution with the ReLU-like module after it while the block runs; restore on exit.

    Args:
        network: the frozen network (weights without gradients); fusing is skipped off the oneDNN CPU build.
        probe: an input ``[1, C, H, W]`` on the network's device that the network (and ``forward``) runs.
        keep: module names whose inputs or outputs the caller reads (their tensors are not fused).
        rtol: the largest relative difference of the probe's outputs allowed (else nothing is fused).
        forward: ``images -> tensor`` the probe compares (default ``network``).

    Yields:
        :class:`FusionInfo`.
    """
    info, keep, forward = FusionInfo(), set(keep), forward or network
    if probe.device.type != "cpu" or probe.dtype != torch.float32 or not _fused_op_available():
        info.reason = "oneDNN post-ops need a float32 network on a CPU build with oneDNN"
        yield info
        return
    if network.training or any(p.requires_grad for p in network.parameters()):
        info.reason = "the network is training or its weights require gradients"
        yield info
        return
    try:
        pairs, convs, reference = _survey(network, forward, probe, keep)
    except Exception as error:  # a network that cannot run the probe: render it as it is
        info.reason = f"the probe image {tuple(probe.shape)} did not run ({type(error).__name__}: {error})"
        yield info
        return
    undo = []
    try:
        _install(network, convs, dict(pairs), info, undo)
        if not info.convs:
            info.reason = "no convolution that oneDNN computes as it is"
        else:
            try:
                with ReLUCalls() as calls:
                    got = _survey(network, forward, probe, keep)[2]
                info.unfused_calls = calls.count
                error = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                            for a, b in zip(got, reference))
                problem = None if len(got) == len(reference) and error <= rtol else \
                    f"fusing changed the probe's outputs by {error:.1e} (relative; allowed {rtol:g})"
            except Exception as error:  # oneDNN refused a layer: render the network as it is
                problem = f"the fused probe pass failed ({type(error).__name__}: {error})"
            if problem is not None:
                _restore(undo)
                undo, info.pairs, info.convs, info.reason = [], [], [], problem
        info.packing = True
        yield info
    finally:
        _restore(undo)


def _install(network: nn.Module, convs: list[str], activations: dict[str, str], info: FusionInfo,
             undo: list) -> None:
    """Give each convolution of ``convs`` that oneDNN can compute as it is the fused forward (with the activation
    module ``activations[conv]`` after it, when there is one, passing the fused output through)."""
    for conv_name in convs:
        conv = network.get_submodule(conv_name)
        own = conv.__dict__.get("forward")
        spec = own.arguments if isinstance(own, SamePadded) else _plain_spec(conv) if own is None else None
        if spec is None:
            continue
        act_name = activations.get(conv_name)
        act = network.get_submodule(act_name) if act_name is not None else None
        undo.append((conv, "forward" in conv.__dict__, own, act, act is not None and "forward" in act.__dict__,
                     act.__dict__.get("forward") if act is not None else None))
        fused = _FusedConv(info, own or conv.forward, spec, _upper(act) if act is not None else None)
        if act is not None:
            act.forward = _PassFused(fused, act.__dict__.get("forward") or act.forward)
            info.pairs.append((conv_name, act_name))
        conv.forward = fused
        info.convs.append(conv_name)


def _restore(undo: list) -> None:
    for conv, conv_had, conv_forward, act, act_had, act_forward in reversed(undo):
        for module, had, forward in ((act, act_had, act_forward), (conv, conv_had, conv_forward)):
            if module is None:
                continue
            if had:
                module.forward = forward
            else:
                module.__dict__.pop("forward", None)
