"""The model zoo: ready models by name, each with its input contract and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from luminate.models.base import Model
from luminate.models.contract import InputContract
from luminate.models.efficientnet import VARIANTS, efficientnet_lite
from luminate.models.labels import imagenet_labels

DEFAULT_MODEL = "efficientnet_lite0"

#: Each zoo entry's default layers by purpose (its metadata, as timm's ``default_cfg``; see
#: :meth:`Model.default_layer`). EfficientNet-Lite: ``blocks.10`` is the last 14x14 block at 224 px (as Lucid's
#: ``mixed4d``); groups need non-negative values for NMF, and the block outputs are signed (linear projections),
#: so groups use ``head``, after a ReLU6. InceptionV1: Lucid's ``mixed4d`` (post-ReLU concatenation).
LAYER_DEFAULTS: dict[str, dict[str, str]] = {
    **{name: {"visualization": "blocks.9", "attribution": "blocks.10", "groups": "head", "dictionary": "blocks.10"}
       for name in VARIANTS},
    "inception_v1": {"attribution": "mixed4d", "groups": "mixed4d", "dictionary": "mixed4d"},
}


def _ready(model: Model, device) -> Model:
    """Zoo models are ours, not a caller's: eval mode and frozen weights for good, their declared default
    layers, then on ``device``."""
    model.layer_defaults = LAYER_DEFAULTS.get(model.name)
    model.eval_only = True
    model.eval()
    model.network.requires_grad_(False)
    return model.to(device) if device else model


def _efficientnet(name: str) -> Callable[..., Model]:
    def build(weights: str | Path | bool = True, device: str | None = None) -> Model:
        res = VARIANTS[name].resolution
        contract = InputContract(size=(res, res), value_range=(-127 / 128, 128 / 128),
                                 crop_fraction=res / (res + 32), interpolation="bicubic")
        return _ready(Model(efficientnet_lite(name, weights), contract, imagenet_labels(), name), device)
    build.__doc__ = f"{name}: ImageNet EfficientNet-Lite, {VARIANTS[name].resolution} px, input (255x-127)/128."
    return build


def _inception_v1(weights: str | Path | bool = True, device: str | None = None) -> Model:
    from luminate.models.inception import inception_v1, lucid_layer

    model = inception_v1(weights)
    model.layer_aliases = lucid_layer  # Lucid's names ("mixed4a_pre_relu") work too, for ported Lucid code
    return _ready(model, device)


ZOO: dict[str, Callable[..., Model]] = {name: _efficientnet(name) for name in VARIANTS}
ZOO["inception_v1"] = _inception_v1


def _text(name: str) -> Callable[..., Model]:
    def build(weights: str | Path | bool = True, device: str | None = None) -> Model:
        from luminate.models import char_rnn, minilm  # text models: their extras load only when asked for

        return _ready({"char_rnn": char_rnn.char_rnn, "minilm_l6": minilm.minilm_l6}[name](weights), device)
    build.__doc__ = {"char_rnn": "char_rnn: textgenrnn's character LSTM (2 x 128 cells), text input",
                     "minilm_l6": "minilm_l6: all-MiniLM-L6-v2 sentence encoder (6 layers), text input"}[name]
    return build


#: Zoo models that read text (luminate.text); the others take images.
TEXT_MODELS = ("char_rnn", "minilm_l6")
ZOO.update({name: _text(name) for name in TEXT_MODELS})


def available() -> list[str]:
    """Names that :func:`load` accepts."""
    return sorted(ZOO)


def load(name: str = DEFAULT_MODEL, weights: str | Path | bool = True, device: str | None = None) -> Model:
    """A ready model by name (see :func:`available`), on ``device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"``; default
    CPU). Zoo models are in eval mode with frozen weights.

    ``weights=True`` loads the pretrained weights (from the registry package, or for InceptionV1 from the
    local cache); a path loads that file; ``False`` builds the architecture with random weights.
    """
    key = name.lower().replace("-", "_")
    if key not in ZOO:
        import difflib

        close = difflib.get_close_matches(key, list(ZOO), n=3, cutoff=0.4)
        raise KeyError(f"unknown model {name!r}. Available: {', '.join(available())}"
                       + (f" (did you mean {close[0]}?)" if close else "")
                       + ". Any torch.nn.Module works through luminate.models.wrap(module, ...).")
    return ZOO[key](weights=weights, device=device)
