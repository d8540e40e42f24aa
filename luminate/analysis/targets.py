"""Targets of attribution: class names and indices, per-image targets, logit differences, the score.

Shared by :mod:`luminate.analysis.attribution` (Captum's methods) and :mod:`luminate.analysis.lucid_attribution`
(what Captum lacks). ``target`` is a class index or name (resolved with ``model.class_index``; a bad name raises an
error listing the closest names), a list / tensor with one class per image, or ``None`` for each image's top-1
class; a tuple ``(a, b)`` (or ``baseline_target=b``) means the logit difference ``logit[a] - logit[b]``.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from luminate.models.base import Model, as_model

ClassLike = Union[int, str]
Target = Union[ClassLike, Sequence[ClassLike], torch.Tensor, tuple, None]


def as_batch(model: Model, images) -> torch.Tensor:
    """``images`` as ``[N, C, H, W]`` float on the model's device: :meth:`Model.as_batch` (tensors as they are,
    paths, PIL images and arrays through ``model.preprocess``)."""
    return as_model(model).as_batch(images)


def resolve_targets(model: Model, target: Target, n: int, images: torch.Tensor | None = None,
                    baseline_target: Target = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class indices ``[n]`` for ``target`` and ``baseline_target`` (``None`` when there is none).

    A tuple of two classes ``(a, b)`` means ``target=a, baseline_target=b``; a list or tensor gives one
    class per image; ``None`` is each image's top-1 class (needs ``images``).
    """
    if isinstance(target, tuple):
        if len(target) != 2 or baseline_target is not None:
            raise ValueError("a tuple target means a logit difference (class, baseline_class): give exactly two "
                             "classes and no baseline_target; use a list for one class per image")
        target, baseline_target = target
    return _indices(model, target, n, images), (None if baseline_target is None
                                                else _indices(model, baseline_target, n, images))


def resolve_classes(model: Model, classes: Sequence[ClassLike] | ClassLike | None, image: torch.Tensor | None = None,
                    top: int = 1) -> list[int]:
    """Class indices for one class or a list of classes (names or indices), or for ``None``: the ``top`` predicted
    classes of ``image`` ``[1, C, H, W]``, best first.

    Strings of digits count as indices (as the command line passes them); a bad name raises ``KeyError`` listing the
    closest names.
    """
    if classes is None:
        if image is None:
            raise ValueError("classes=None means the image's top classes, which needs the image")
        with torch.no_grad(), model.frozen():   # eval mode: a training network keeps its statistics
            logits = _logits(model(image.to(model.device)))
        return logits[0].topk(min(top, logits.shape[1])).indices.tolist()
    items = [classes] if isinstance(classes, (int, str, np.integer)) else list(classes)
    if not items:
        raise ValueError("no classes given: name at least one class, or pass None for the top predicted classes")
    return [_class_index(model, int(c) if isinstance(c, str) and c.strip().isdigit() else c) for c in items]


def _indices(model: Model, target, n: int, images: torch.Tensor | None) -> torch.Tensor:
    device = model.device
    if target is None:
        if images is None:
            raise ValueError("target=None means each image's top class, which needs the images")
        with torch.no_grad(), model.frozen():   # eval mode: a training network keeps its statistics
            return _logits(model(images)).argmax(1).to(device)
    if isinstance(target, torch.Tensor):
        target = target.tolist() if target.ndim else int(target)
    if isinstance(target, (int, np.integer, str)):
        return torch.full((n,), _class_index(model, target), dtype=torch.long, device=device)
    items = list(target)
    if len(items) != n:
        raise ValueError(f"got {len(items)} targets for {n} images: give one class, or one per image")
    return torch.tensor([_class_index(model, t) for t in items], dtype=torch.long, device=device)


def _class_index(model: Model, label) -> int:
    if isinstance(label, torch.Tensor):
        label = label.item()
    return model.class_index(int(label) if isinstance(label, np.integer) else label)


def _logits(output: torch.Tensor) -> torch.Tensor:
    from luminate.models.contract import network_output

    output = network_output(output)  # a (logits, aux) tuple or a {"logits": ...} dict: the scores
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"attribution needs a model whose output is [N, classes] logits, got {shape}")
    return output


def _score(output: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor | None) -> torch.Tensor:
    """Per-image score ``[N]``: ``logit[target]`` or ``logit[target] - logit[baseline]``."""
    logits = _logits(output)
    score = logits.gather(1, target[:, None])[:, 0]
    if baseline is not None:
        score = score - logits.gather(1, baseline[:, None])[:, 0]
    return score


def _grad(score: torch.Tensor, leaf: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    (grad,) = torch.autograd.grad(score.sum(), leaf, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad


def _sum_but_batch(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)
