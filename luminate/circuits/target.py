"""The quantity a graph explains: one class logit, or the difference of two (``"labrador - tiger cat"``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from luminate.analysis.targets import resolve_classes
from luminate.models.base import Model

#: How a logit difference is written: ``"a - b"`` (spaces around the minus, so class names with hyphens work).
DIFFERENCE = " - "


@dataclass(frozen=True)
class Target:
    """``logit[classes[0]]``, minus ``logit[classes[1]]`` when there are two; ``label`` as the user wrote it."""

    classes: tuple[int, ...]
    label: str

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """``[N, classes]`` logits -> ``[N]`` target scores."""
        value = logits[:, self.classes[0]]
        return value - logits[:, self.classes[1]] if len(self.classes) == 2 else value


def parse_target(model: Model, target, image: torch.Tensor | None = None) -> Target:
    """A :class:`Target` from a class name or index, ``"a - b"``, a tuple ``(a, b)``, or ``None`` (the photo's top
    class). Bad names raise the error of :func:`luminate.analysis.targets.resolve_classes` (closest names)."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and DIFFERENCE in target:
        parts = [p.strip() for p in target.split(DIFFERENCE)]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"target {target!r}: a logit difference is two classes, 'a - b' (e.g. 'daisy - bee')")
        target = tuple(parts)
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ValueError(f"a tuple target is a logit difference of two classes, got {len(target)}")
        classes = resolve_classes(model, list(target))
        if classes[0] == classes[1]:
            raise ValueError(f"target {target!r}: the two classes of a difference must differ")
    else:
        classes = resolve_classes(model, target, image)
    label = DIFFERENCE.join(model.class_name(c) for c in classes)
    return Target(tuple(int(c) for c in classes), label)
