"""Compute a convolution and the ReLU after it in one oneDNN call, for the duration of a render.

On the CPU a render step is bound by memory traffic at the large early layers: a ReLU (or ReLU6) after a
convolution reads and writes the whole activation once more. oneDNN applies the activation as a post-op of the
convolution (``torch.ops.mkldnn._convolution_pointwise``), in the same pass; the backward masks the gradient with
the saved output and takes the convolution's input gradient, as autograd would (no weight gradients: the network is
frozen).

:func:`fused_activations` is a context manager that switches it on for every ``(convolution, activation module)``
pair where the activation's input is exactly the convolution's output tensor, and puts everything back on exit:

>>> with model.frozen(), folded_batchnorm(net) as folded, fused_activations(net, probe, keep=taps) as fused:
...     with redirect, fused.redirecting(redirect):   # RedirectedReLU's gradient for the fused pairs too
...         ...
...     with fused.paused():                          # the convolution and its activation module, separately
...         ...

How pairs are found, and what is left alone
    A probe forward pass (no gradients) records each convolution's output tensor and each ReLU-like module's input
    (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh(0, m)``); a pair fuses when they are the same tensor, both modules run
    once, and no module the caller reads (``keep``) produces or consumes that tensor (a tap on a convolution would
    otherwise see post-activation values). Only plain ``nn.Conv2d`` forwards (zero padding given as numbers) and the
    padding-free "SAME" forwards that :func:`~luminate.fold.folded_batchnorm` installs are fused.

What changes, and how it is undone
    The convolution's ``forward`` becomes the fused call, and the activation's ``forward`` passes the fused output
    through untouched (any other input is activated as before: a paused or non-CPU call runs the two separately).
    Under :meth:`FusionInfo.redirecting` the fused backward takes Lucid's redirected ReLU gradient
    (:func:`~luminate.overrides.redirected_gradient`), so a render's first steps keep the fused pass too.
    A second probe pass compares the network's output and every kept module's output with the unfused ones; beyond
    ``rtol`` everything is undone (another reader of the pre-activation tensor) and ``info.reason`` says why.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from luminate.fold import SamePadded
from luminate.overrides import ReLUCalls, RedirectedReLU, redirected_gradient

INF = float("inf")


def _fused_op_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class _ConvActivation(torch.autograd.Function):
    """``clamp(conv2d(x, weight, bias), 0, upper)`` in one oneDNN call; gradient for ``x`` only."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: list, padding: list, groups: int,
                upper: float, redirect: bool) -> Tensor:
        attr, scalars = ("relu", []) if upper == INF else ("hardtanh", [0.0, upper])
        y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, [1, 1], groups, attr,
                                                    scalars, "")
        ctx.save_for_backward(x, weight, y)
        ctx.conv = (stride, padding, groups, upper, redirect)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, y = ctx.saved_tensors
        stride, padding, groups, upper, redirect = ctx.conv
        if redirect:
            masked = redirected_gradient(grad, y, upper)
        else:
            masked = torch.ops.aten.threshold_backward(grad, y, 0) if upper == INF \
                else torch.ops.aten.hardtanh_backward(grad, y, 0.0, upper)
        grad_x = torch.ops.aten.convolution_backward(masked, x, weight, None, stride, padding, [1, 1], False, [0, 0],
                                                     groups, [True, False, False])[0]
        return grad_x, None, None, None, None, None, None, None


def _upper(act: nn.Module) -> float | None:
    """The cap of a ReLU-like module (``inf`` for ReLU), or None when it is not one."""
    if type(act) is nn.ReLU:
        return INF
    if type(act) in (nn.ReLU6, nn.Hardtanh) and act.min_val == 0.0 and act.max_val > 0:
        return float(act.max_val)
    return None


def _plain_spec(conv: nn.Conv2d) -> Callable[[Tensor], tuple] | None:
    """``x -> (weight, bias, stride, padding, groups)`` for a convolution that computes ``F.conv2d`` with its own
    settings (a subclass's forward is taken to; the probe comparison after fusing checks it)."""
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
    reason: str | None = None
    on: bool = True
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
        """Inside the block every fused pair runs as a convolution and then its activation module."""
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
        if self.pairs:
            return f"{len(self.pairs)} ReLU-like activations computed with their convolutions (oneDNN post-ops)"
        return f"no activation fused: {self.reason}"


class _FusedConv:
    """A convolution's forward while fused: the fused call when on, on the CPU and in float32; its own otherwise."""

    def __init__(self, info: FusionInfo, unfused: Callable[[Tensor], Tensor], spec, upper: float):
        self.info, self.unfused, self.spec, self.upper = info, unfused, spec, upper
        self.last: Callable[[], Tensor | None] = lambda: None

    def __call__(self, x: Tensor) -> Tensor:
        if not self.info.on or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.unfused(x)
        weight, bias, stride, padding, groups = self.spec(x)
        redirect = self.info.redirect is not None and x.requires_grad and torch.is_grad_enabled()
        if redirect:
            self.info.redirect.count += 1
        y = _ConvActivation.apply(x, weight, bias, stride, padding, groups, self.upper, redirect)
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
            keep: set[str]) -> tuple[list[tuple[str, str]], list[Tensor]]:
    """One probe pass: the fusable pairs, and the outputs to compare (``forward``'s, then each kept module's)."""
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
        if isinstance(module, nn.Conv2d):
            calls[name] = calls.get(name, 0) + 1
        if isinstance(output, Tensor):
            if name in keep:
                kept_tensors.add(id(output))
                outputs.append(output.detach().clone())
            if isinstance(module, nn.Conv2d):
                produced[id(output)] = (name, output)

    for module, name in names.items():
        if name in keep or _upper(module) is not None:
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
    return pairs, outputs


def _outputs(network: nn.Module, forward: Callable[[Tensor], Tensor], probe: Tensor, keep: set[str]) -> list[Tensor]:
    """The probe's output and every kept module's output (tensors only), as :func:`_survey` lists them."""
    seen: list[Tensor] = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()) if isinstance(o, Tensor)
                                       else None)
               for n, m in network.named_modules() if n in keep]
    try:
        with torch.no_grad():
            out = forward(probe)
    finally:
        for h in handles:
            h.remove()
    return [out] + seen


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
        pairs, reference = _survey(network, forward, probe, keep)
    except Exception as error:  # a network that cannot run the probe: render it as it is
        info.reason = f"the probe image {tuple(probe.shape)} did not run ({type(error).__name__}: {error})"
        yield info
        return
    undo = []
    try:
        for conv_name, act_name in pairs:
            conv, act = network.get_submodule(conv_name), network.get_submodule(act_name)
            own = conv.__dict__.get("forward")
            spec = own.arguments if isinstance(own, SamePadded) else _plain_spec(conv) if own is None else None
            if spec is None:
                continue
            undo.append((conv, "forward" in conv.__dict__, own, act, "forward" in act.__dict__,
                         act.__dict__.get("forward")))
            fused = _FusedConv(info, own or conv.forward, spec, _upper(act))
            act.forward = _PassFused(fused, act.__dict__.get("forward") or act.forward)
            conv.forward = fused
            info.pairs.append((conv_name, act_name))
        if not info.pairs:
            info.reason = "no ReLU-like module directly after a convolution"
        else:
            with ReLUCalls() as calls:
                got = _outputs(network, forward, probe, keep)
            info.unfused_calls = calls.count
            error = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(got, reference))
            if len(got) != len(reference) or error > rtol:
                _restore(undo)
                undo, info.pairs = [], []
                info.reason = f"fusing changed the probe's outputs by {error:.1e} (relative; allowed {rtol:g})"
        yield info
    finally:
        _restore(undo)


def _restore(undo: list) -> None:
    for conv, conv_had, conv_forward, act, act_had, act_forward in reversed(undo):
        for module, had, forward in ((act, act_had, act_forward), (conv, conv_had, conv_forward)):
            if had:
                module.forward = forward
            else:
                module.__dict__.pop("forward", None)
