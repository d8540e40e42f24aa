"""Gradient overrides for the first steps of feature visualization.

A unit that never fires on the initial noise gets no gradient through ReLU and stays dead. Lucid's
fix (``redirected_relu_grad``): while the optimization is young, if an image's true ReLU gradient is
entirely zero, let the incoming gradient through instead, except where it would push an input that is
already below zero (or, for ReLU6, above six) further out.

:class:`RedirectedReLU` is a ``TorchFunctionMode``: while it is active, every ReLU-like call, however it is
spelled, computes the same values through a function whose backward is the redirected gradient:

* ``nn.ReLU`` / ``F.relu`` / ``torch.relu`` / ``Tensor.relu``, and their in-place forms
  (``nn.ReLU(inplace=True)``, ``F.relu(x, inplace=True)``, ``torch.relu_``, ``Tensor.relu_``);
* ``nn.ReLU6`` / ``F.relu6`` and ``F.hardtanh(x, 0, max)`` (in place or not): capped at the upper value.

Because the override sits on the function call and not on a module hook, it also holds when an objective reads
the ReLU's own output (the output already carries the redirected gradient), when a module is reused, and for
functional calls inside a module's ``forward``. Only tensors that require gradients are redirected, and
nothing outside the ``with`` block is affected. ``count`` says how many calls were redirected, so a render can
report a network with no ReLU-like unit instead of pretending.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

INF = float("inf")


class _RedirectedReLU(torch.autograd.Function):
    """``clamp(x, 0, upper)`` (in place when asked) whose backward is Lucid's redirected ReLU gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float, inplace: bool) -> torch.Tensor:
        if inplace:
            out = x.clamp_min_(0) if upper == INF else x.clamp_(0, upper)
            ctx.mark_dirty(x)
        else:
            out = x.clamp_min(0) if upper == INF else x.clamp(0, upper)
        ctx.save_for_backward(out)
        ctx.upper = upper
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return redirected_gradient(grad, out, ctx.upper), None, None


def redirected_gradient(grad: torch.Tensor, out: torch.Tensor, upper: float = INF) -> torch.Tensor:
    """Lucid's redirected gradient of ``out = clamp(x, 0, upper)`` (``upper=inf``: ReLU) for the incoming ``grad``
    (``[B, ...]``, one decision per image): the true gradient for an image that has one anywhere, else ``grad``
    except where it would push an input below zero (or above the cap) further out."""
    # the true gradient in one fused pass (zero where the output sits at 0 or at the cap)
    relu_grad = torch.ops.aten.threshold_backward(grad, out, 0) if upper == INF \
        else torch.ops.aten.hardtanh_backward(grad, out, 0.0, upper)
    if grad.ndim > 1:
        # an image is alive when its true gradient is non-zero anywhere: two vectorized reductions, which read
        # channels-last gradients in place (a flatten would copy them)
        dims = tuple(range(1, grad.ndim))
        alive = (relu_grad.amax(dims, keepdim=True) > 0) | (relu_grad.amin(dims, keepdim=True) < 0)
    else:
        alive = relu_grad.ne(0).any()
    if grad.device.type == "cpu" and bool(alive.all()):
        # every image already has a true gradient: the redirect would change nothing. Reading the flag is
        # free on the CPU (on a GPU it would be a sync per ReLU, so the general path below runs there).
        return relu_grad
    # Gradient descent moves against grad: grad > 0 pushes a negative input lower, grad < 0 pushes
    # an input above the cap higher. Those are the only directions the redirect refuses.
    refused = (out <= 0) & (grad > 0)
    if upper != INF:
        refused |= (out >= upper) & (grad < 0)
    return torch.where(alive, relu_grad, grad.masked_fill(refused, 0))


def _arg(args, kwargs, index: int, name: str, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _relu_spec(func, args, kwargs):
    """``(x, upper, inplace)`` when ``func(*args, **kwargs)`` is a ReLU-like call, else None."""
    if func is F.relu:
        return _arg(args, kwargs, 0, "input", None), INF, bool(_arg(args, kwargs, 1, "inplace", False))
    if func is torch.relu or func is torch.Tensor.relu:
        return _arg(args, kwargs, 0, "input", None), INF, False
    if func is torch.relu_ or func is torch.Tensor.relu_:
        return _arg(args, kwargs, 0, "input", None), INF, True
    if func is F.relu6:
        return _arg(args, kwargs, 0, "input", None), 6.0, bool(_arg(args, kwargs, 1, "inplace", False))
    if func is F.hardtanh:
        low = float(_arg(args, kwargs, 1, "min_val", -1.0))
        high = float(_arg(args, kwargs, 2, "max_val", 1.0))
        if low == 0.0 and high > 0:
            return _arg(args, kwargs, 0, "input", None), high, bool(_arg(args, kwargs, 3, "inplace", False))
    return None


class RedirectedReLU(TorchFunctionMode):
    """Context manager: redirect the gradients of every ReLU-like call made inside the block.

    >>> with RedirectedReLU():
    ...     y = net(x)            # nn.ReLU, F.relu, torch.relu_, nn.ReLU6, hardtanh(0, 6), ...
    >>> loss(y).backward()        # the redirect lives in the graph recorded inside the block

    ``module`` is accepted for compatibility and not needed: the mode covers every call in the block.
    ``count`` is the number of calls redirected so far.
    """

    def __init__(self, module: nn.Module | None = None):
        super().__init__()
        self.module = module
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        spec = _relu_spec(func, args, kwargs)
        if spec is not None:
            x, upper, inplace = spec
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
                self.count += 1
                return _RedirectedReLU.apply(x, upper, inplace)
        return func(*args, **kwargs)

    def close(self) -> None:
        """Compatibility no-op: leaving the ``with`` block ends the redirect."""


class ReLUCalls(TorchFunctionMode):
    """Context manager: count the ReLU-like calls (those :class:`RedirectedReLU` would redirect, with or without
    gradients) made inside the block, in ``count``; the calls run unchanged."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _relu_spec(func, args, kwargs) is not None:
            self.count += 1
        return func(*args, **kwargs)


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


_FUSED = (nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.MultiheadAttention)


def without_fused_paths(module: nn.Module):
    """A context in which PyTorch's fused attention kernels are skipped: the inference fast path of
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` (taken only when no torch-function mode is active,
    hence a pass-through mode) and the flash / memory-efficient ``scaled_dot_product_attention`` backends (the math
    backend is used). They have no forward-mode AD formulas, so forward-mode attribution through a ViT needs this.
    For networks without such modules it is a no-op context."""
    import contextlib

    stack = contextlib.ExitStack()
    if any(isinstance(m, _FUSED) for m in module.modules()):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        stack.enter_context(_PassThrough())
    return stack
