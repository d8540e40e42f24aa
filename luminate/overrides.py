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


class _RedirectedReLUGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, output: torch.Tensor, upper: float) -> torch.Tensor:
        ctx.save_for_backward(output)
        ctx.upper = upper
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (output,) = ctx.saved_tensors
        below = output <= 0
        above = output >= ctx.upper
        relu_grad = grad.masked_fill(below | above, 0)
        # Gradient descent moves against grad: grad > 0 pushes a negative input lower, grad < 0 pushes
        # an input above the cap higher. Those are the only directions the redirect refuses.
        redirected = grad.masked_fill((below & (grad > 0)) | (above & (grad < 0)), 0)
        alive = relu_grad.flatten(1).abs().amax(1) > 0
        alive = alive.view(-1, *([1] * (grad.ndim - 1)))
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
    def hook(module, inputs, output):
        if output.requires_grad:
            return _RedirectedReLUGrad.apply(output, upper)
        return None
    return hook
