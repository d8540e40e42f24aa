"""Luminate: see what neural networks see.

>>> import luminate
>>> model = luminate.models.load("efficientnet_lite0")
>>> result = luminate.render(model, "blocks.9:7", seed=0)
>>> result.save("channel.png")

Subpackages: :mod:`luminate.models` (zoo, input contract, layers), :mod:`luminate.objectives`,
:mod:`luminate.param`, :mod:`luminate.transforms`, :func:`luminate.render`, :mod:`luminate.recipes`,
:mod:`luminate.analysis` (attribution, factorization, building blocks), :mod:`luminate.atlas`,
:mod:`luminate.views` (HTML and notebook display).
"""

__version__ = "0.1.0"

# Before torch loads: idle OpenMP threads sleep instead of spinning, so a shared CPU slows Luminate down
# gracefully instead of falling off a cliff (see luminate.runtime; an OMP_WAIT_POLICY you set is kept).
from luminate import runtime  # noqa: E402  (imports no torch)

runtime.prefer_passive_waiting()

from luminate import models, objectives, param, transforms  # noqa: E402
from luminate.activations import LayerTap, activations  # noqa: E402
from luminate.images import load_image, save_image  # noqa: E402
from luminate.render import RenderResult, render  # noqa: E402

__all__ = ["LayerTap", "RenderResult", "activations", "load_image", "models", "objectives", "param", "render",
           "save_image", "transforms"]

# Heavier subpackages load on first use: `import luminate; luminate.atlas.collect(...)` works without importing
# them up front.
_LAZY = ("analysis", "atlas", "recipes", "views", "lucid")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"luminate.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'luminate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
