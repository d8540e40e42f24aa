"""Luminate: see what neural networks see.

>>> import luminate
>>> model = luminate.models.load("efficientnet_lite0")
>>> result = luminate.render(model, "blocks.9:7", seed=0)
>>> result.save("channel.png")

Subpackages: :mod:`luminate.models` (zoo, input contract, layers), :mod:`luminate.objectives`,
:mod:`luminate.param`, :mod:`luminate.transforms`, :func:`luminate.render`, :mod:`luminate.recipes`,
:mod:`luminate.analysis` (attribution, factorization, building blocks), :mod:`luminate.views` (HTML and notebook
display). The pipelines load on first use, under the same names: :mod:`luminate.data` (image and text sets, the
activation store, the streaming pass), :mod:`luminate.units` (directions rendered one way, examples),
:mod:`luminate.atlas`, :mod:`luminate.microscope`, :mod:`luminate.features`, :mod:`luminate.text`,
:mod:`luminate.circuits` and :mod:`luminate.serve` (``import luminate; luminate.features.learn(...)`` works).
"""

__version__ = "0.1.0"

# Importing Luminate changes nothing in the process (no environment writes): the thread policy is the command
# line's choice (luminate_launcher) or yours (luminate.runtime.share_cpu()).
from luminate import models, objectives, param, runtime, transforms
from luminate.activations import LayerTap, activations
from luminate.images import load_image, save_image
from luminate.render import RenderResult, render

__all__ = ["LayerTap", "RenderResult", "activations", "load_image", "models", "objectives", "param", "render",
           "save_image", "transforms"]

# Heavier subpackages load on first use: `import luminate; luminate.atlas.collect(...)` works without importing
# them up front.
_LAZY = ("analysis", "atlas", "circuits", "data", "dream", "features", "lucid", "lucent", "microscope", "recipes",
         "serve", "text", "units", "views")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(f"luminate.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"luminate.{name}":
                raise                                   # a dependency of an existing subpackage is missing: say so
            raise AttributeError(f"module 'luminate' has no attribute {name!r} (luminate.{name} is not installed "
                                 "in this copy of Luminate)") from None
        globals()[name] = module
        return module
    raise AttributeError(f"module 'luminate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
