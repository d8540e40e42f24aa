"""Lucent's ``lucent.util``."""

from __future__ import annotations

import random

import torch


def set_seed(seed: int) -> None:
    """Seed torch (every device) and Python's ``random``, and ask cuDNN for deterministic kernels, as Lucent does.

    :func:`luminate.lucent.optvis.render.render_vis` draws its run's seed and Lucent parameterizations draw their
    initial values from torch's generator, so after ``set_seed(s)`` a render repeats exactly on the CPU.
    """
    torch.manual_seed(seed)
    random.seed(seed)
    torch.backends.cudnn.deterministic = True


__all__ = ["set_seed"]
