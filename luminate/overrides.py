"""Gradient overrides for the first steps of feature visualization.

A unit that never fires on the initial noise gets no gradient through ReLU and stays dead. Lucid's
fix (``redirected_relu_grad``): while the optimization is young, if an image's true ReLU gradient is
entirely zero, let the incoming gradient through instead, except where it would push an input that is
already below zero (or, for ReLU6, above six) further out. Luminate applies it to every ``nn.ReLU`` and
``nn.ReLU6`` module through forward hooks that :class:`RedirectedReLU` removes when it is closed.

The rule reads the ReLU's *output*, so it also works for in-place ReLUs whose input is overwritten.
"""

from __future__ import annotations

import torch
from torch import nn


class _RedirectedReLU(torch.autograd.Function):
    """``clamp(x, 0, upper)`` whose backward is Lucid's redirected ReLU gradient (computed from the output)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float) -> torch.Tensor:
        out = x.clamp_min(0) if upper == float("inf") else x.clamp(0, upper)
        ctx.save_for_backward(out)
        ctx.upper = upper
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        below = out <= 0
        outside = below | (out >= ctx.upper) if ctx.upper != float("inf") else below
        relu_grad = grad.masked_fill(outside, 0)
        # Gradient descent moves against grad: grad > 0 pushes a negative input lower, grad < 0 pushes
        # an input above the cap higher. Those are the only directions the redirect refuses.
        refused = below & (grad > 0)
        if ctx.upper != float("inf"):
            refused |= (out >= ctx.upper) & (grad < 0)
        redirected = grad.masked_fill(refused, 0)
        alive = relu_grad.flatten(1).ne(0).any(1).view(-1, *([1] * (grad.ndim - 1)))
        return torch.where(alive, relu_grad, redirected), None


class RedirectedReLU:
    """Context manager: redirect the gradients of every ReLU/ReLU6 module of ``module``.

    >>> with RedirectedReLU(model.network):
    ...     loss.backward()
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self._handles: list = []

    def __enter__(self) -> "RedirectedReLU":
        for m in self.module.modules():
            if isinstance(m, nn.ReLU6):
                self._handles.append(m.register_forward_hook(_hook(6.0)))
            elif isinstance(m, nn.ReLU):
                self._handles.append(m.register_forward_hook(_hook(float("inf"))))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _hook(upper: float):
    # The hook recomputes the output from the module's input through the redirecting function, so the
    # module's own backward (which would zero the gradient again) drops out of the graph. In-place
    # ReLUs have overwritten their input with the output; clamping it again is harmless.
    def hook(module, inputs, output):
        if output.requires_grad:
            return _RedirectedReLU.apply(inputs[0], upper)
        return None
    return hook
