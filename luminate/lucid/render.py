"""Lucid's ``lucid.optvis.render``: :func:`render_vis` with Lucid's arguments and return value, calling
:func:`luminate.render`."""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np

from luminate.render import RenderResult
from luminate.render import render as _render
from luminate.transforms import standard_transforms


def render_vis(model, objective_f, param_f: Callable | None = None, optimizer=None, transforms=None,
               thresholds: Sequence[int] = (512,), print_objectives=None, verbose: bool = True,
               relu_gradient_override: bool = True, use_fixed_seed: bool = False) -> list[np.ndarray]:
    """Lucid's ``render_vis``: optimize and return one ``[B, H, W, C]`` float numpy array in [0, 1] per threshold.

    Args (Lucid's, in Lucid's order):
        model: a :class:`~luminate.models.Model` or zoo name (``luminate.models.load("inception_v1")``).
        objective_f: an objective, or a string ``"layer:channel"`` (``"mixed4a_pre_relu:476"``).
        param_f: a function returning a parameterization (``lambda: param.image(128, fft=False)``); default
            ``param.image(128)``.
        optimizer: a factory ``params -> torch.optim.Optimizer`` (Lucid took a TF optimizer); default Adam(0.05).
        transforms: a list of transforms; ``None`` is Lucid's standard set, ``[]`` none.
        thresholds: steps after which to return the images; ``max(thresholds)`` steps run.
        print_objectives: extra objectives whose values are printed at each threshold (with ``verbose``).
        verbose: print the objective at each threshold, as Lucid did.
        relu_gradient_override: redirect ReLU gradients for the first 16 steps (Lucid's default).
        use_fixed_seed: seed 0 (repeatable); otherwise a fresh seed each call.

    Transforms may be Lucid's one-argument functions (``lambda t: t``) or Luminate's ``(images, generator)``
    ones. For the full :class:`~luminate.render.RenderResult` (history, settings, GIF), call
    :func:`luminate.render` itself.
    """
    if optimizer is not None and not callable(optimizer):
        raise TypeError(f"optimizer must be a factory params -> torch.optim.Optimizer (e.g. lambda p: "
                        f"torch.optim.Adam(p, lr=0.05)); a TensorFlow optimizer ({type(optimizer).__name__}) has no "
                        "Luminate equivalent")
    thresholds = tuple(int(t) for t in thresholds)
    transforms = standard_transforms() if transforms is None else [lucid_transform(t) for t in transforms]
    result: RenderResult = _render(model, objective_f, param=param_f() if param_f is not None else None,
                                   transforms=transforms,
                                   thresholds=thresholds, optimizer=optimizer,
                                   seed=0 if use_fixed_seed else None, progress=False,
                                   redirect_relu_steps=16 if relu_gradient_override else 0)
    wanted = set(thresholds)
    out = []
    for t, images in zip(result.thresholds, result.images):
        if t not in wanted:
            continue
        if verbose:
            value = float(result.history[t - 1].sum()) if t > 0 else float("nan")
            extra = _extra_values(model, print_objectives, images) if print_objectives else ""
            print(t, f"{value:.4g}", extra)
        out.append(images.permute(0, 2, 3, 1).numpy())
    return out


def _extra_values(model, objectives, images) -> str:
    from luminate.activations import LayerTap
    from luminate.models.base import as_model
    from luminate.objectives import as_objective

    model = as_model(model)
    objs = [as_objective(o).bind(model) for o in objectives]
    layers = sorted(set().union(*(o.layers for o in objs)) - {"input", "step"})
    import torch

    with torch.no_grad(), LayerTap(model, layers, check_inputs=False) as tap:
        acts = tap(images.to(model.device))
        acts["input"] = images.to(model.device)
        acts["step"] = torch.zeros((), dtype=torch.long)
        return " ".join(f"{float(o(acts).sum()):.4g}" for o in objs)


def lucid_transform(t: Callable) -> Callable:
    """A transform Luminate's render can call, ``(images, generator) -> images``: Lucid's one-argument functions
    (``lambda t: t[..., 2:-2, 2:-2]``) are called with the images only (they draw no seeded randomness)."""
    try:
        params = [p for p in inspect.signature(t).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        variadic = any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(t).parameters.values())
    except (TypeError, ValueError):   # builtins without a signature: Luminate's convention
        return t
    if len(params) == 1 and not variadic:
        def one_argument(images, generator=None, _t=t):
            return _t(images)
        one_argument.__name__ = getattr(t, "__name__", "lucid_transform")
        return one_argument
    return t


__all__ = ["lucid_transform", "render_vis"]
