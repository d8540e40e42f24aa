"""Text models: a network that reads token ids, its text input contract, and its layers by name.

A :class:`TextModel` is a :class:`~luminate.models.base.BaseModel` (as the image :class:`~luminate.models.Model` is)
whose input is a batch of token ids ``[N, T]`` (``int64``) instead of images. Its :class:`TextContract` turns text
into those ids (a character vocabulary or a word-piece tokenizer), says how long a window the network reads at once
(``max_length``), and counts the characters it cannot represent, so nothing is dropped silently. Layers are named
and hooked as for image models (``luminate.activations.LayerTap`` works on id batches); a layer's output per text is
``[T, C]``.

It has none of the image model's image steps: asked for one (``preprocess``, ``as_batch``, ``token_grid``, an image
setting of the contract), it raises :class:`NotAnImageModel`, which says the model reads text and points to
:mod:`luminate.text`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from luminate.models.base import BaseModel, LayerInfo
from luminate.models.labels import Labels


class NotAnImageModel(TypeError, AttributeError):
    """An image operation was asked of a text model (an AttributeError too: a text model has no image steps, so
    ``hasattr(text_model, "as_batch")`` is False)."""


def _image_only(name: str, what: str) -> NotAnImageModel:
    return NotAnImageModel(f"{name} is a text model (it reads token ids, not images), so it cannot {what}. Use "
                           "luminate.text (activations, bits_per_char, embed, find_units, microscope) or an image "
                           "model such as efficientnet_lite0.")


@dataclass
class Encoded:
    """One text as the network reads it.

    ``ids`` ``[T]`` int64 token ids; ``offsets`` ``[(start, end)]`` character span of each token in the text;
    ``tokens`` the token strings shown in views; ``unknown`` how many characters (or words) the vocabulary lacks
    (they became the unknown id); ``unknown_chars`` which ones, with counts.
    """

    text: str
    ids: torch.Tensor
    offsets: list[tuple[int, int]]
    tokens: list[str]
    unknown: int = 0
    unknown_chars: dict[str, int] = field(default_factory=dict)


class TextContract:
    """How text becomes network input: the vocabulary or tokenizer, the window length, unknown characters.

    Args:
        encode: ``text -> Encoded`` (ids without the model's special tokens).
        vocab_size: number of ids the network's embedding has.
        max_length: tokens the network reads at once (its training window or position limit).
        kind: ``"characters"`` or ``"word pieces"`` (shown in ``repr`` and views).
        decode: ``id -> str`` for output-effect views.
    """

    channels = 0  # no image channels

    def __init__(self, encode: Callable[[str], Encoded], vocab_size: int, max_length: int, kind: str,
                 decode: Callable[[int], str], name: str = "text model"):
        self._encode = encode
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.kind = kind
        self.decode = decode
        self.name = name

    def encode(self, text: str) -> Encoded:
        """``text`` -> :class:`Encoded` (a clear error for anything but ``str``)."""
        if isinstance(text, bytes):
            raise TypeError("texts are str, not bytes: decode them first (luminate.text.read_texts reads files and "
                            "names lines that are not UTF-8)")
        if not isinstance(text, str):
            raise TypeError(f"expected a text (str), got {type(text).__name__}")
        return self._encode(unicodedata.normalize("NFC", text))

    def check(self, ids: torch.Tensor) -> None:
        """Raise a clear error unless ``ids`` is ``[N, T]`` integer token ids inside the vocabulary."""
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.ndim != 2:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise _image_only(self.name, f"take {shape}: it takes token ids [N, T] (int64); encode texts with "
                                         "luminate.text.encode(model, texts)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1} for {self.name}, got "
                             f"{int(ids.min())}..{int(ids.max())}")

    # ----- the image parts of a contract, refused clearly -----
    IMAGE_FIELDS = ("fixed_size", "channel_order", "value_range", "mean", "std", "crop_fraction", "interpolation",
                    "network_range")

    def __getattr__(self, name: str):
        if name in TextContract.IMAGE_FIELDS:
            raise _image_only(self.__dict__.get("name", "this model"), f"use an image setting ({name})")
        raise AttributeError(name)

    @property
    def size(self):
        raise _image_only(self.name, "take images of a size")

    def preprocess(self, images):
        raise _image_only(self.name, "preprocess images")

    def normalize(self, images):
        raise _image_only(self.name, "normalize images")

    def affine(self, *args, **kwargs):
        raise _image_only(self.name, "normalize images")

    def describe(self) -> str:
        return f"text ({self.kind}, {self.vocab_size} ids, window {self.max_length})"

    def __repr__(self) -> str:
        return f"TextContract({self.describe()})"


class TextModel(BaseModel):
    """A network over token ids with a :class:`TextContract`.

    ``model(ids)`` takes ``[N, T]`` int64 ids (checked) and returns the network's output. ``prefix`` ids are
    prepended by :mod:`luminate.text` before each text (the character model's start padding, a transformer's
    ``[CLS]``) and ``suffix`` ids appended (``[SEP]``); activations returned per text leave them out.

    Attributes:
        recurrent: the network carries a state along the text (the whole text runs at once); otherwise the text
            is read in windows of ``contract.max_length`` tokens.
        readout: ``layer -> [C, V]`` matrix of each unit's direct effect on the output logits (for views), or
            ``None``.
    """

    is_text = True

    def __init__(self, network: nn.Module, contract: TextContract, name: str, *, prefix: Sequence[int] = (),
                 suffix: Sequence[int] = (), pad_id: int = 0, recurrent: bool = False,
                 labels: Labels | Sequence[str] | None = None,
                 readout: Callable[[str], torch.Tensor | None] | None = None):
        super().__init__(network, contract, labels, name)
        self.prefix = [int(i) for i in prefix]
        self.suffix = [int(i) for i in suffix]
        self.pad_id = int(pad_id)
        self.recurrent = bool(recurrent)
        self._readout = readout

    def forward(self, ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.check_inputs:
            self.contract.check(ids)
        return self.network(ids, *args, **kwargs)

    def normalize(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids go to the network as they are."""
        return ids

    def encode(self, text: str) -> Encoded:
        """One text -> :class:`Encoded` (see :meth:`TextContract.encode`)."""
        return self.contract.encode(text)

    def readout(self, layer: str) -> torch.Tensor | None:
        """``[C, V]``: each unit's direct effect on the output logits through the readout (``None`` if unknown)."""
        return self._readout(self.resolve(layer)[0]) if self._readout is not None else None

    @property
    def vocab(self) -> list[str]:
        """Every id's string (id 0 first)."""
        return [self.contract.decode(i) for i in range(self.contract.vocab_size)]

    @property
    def size(self) -> tuple[int, int]:
        """``(1, max_length)``: the shape of one window of ids (image code that asks for a size gets no image
        size; its image steps refuse a text model with a clear error)."""
        return (1, self.contract.max_length)

    #: the image model's image steps, which a text model does not have (asked for, they say so)
    IMAGE_STEPS = {"preprocess": "preprocess images", "as_batch": "take an image batch",
                   "token_grid": "lay tokens on an image grid"}

    def __getattr__(self, name: str):
        if name in TextModel.IMAGE_STEPS:
            raise _image_only(self.__dict__.get("name", "this model"), TextModel.IMAGE_STEPS[name])
        return super().__getattr__(name)

    def _sample_ids(self, length: int | None = None) -> torch.Tensor:
        enc = self.encode("The quick brown fox (who was 3) jumps over the lazy dog.")
        ids = self.prefix + enc.ids.tolist() + self.suffix
        if length:
            ids = (ids * (length // max(len(ids), 1) + 1))[:length]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def _traced(self, size) -> tuple[list[LayerInfo], dict[str, LayerInfo]]:
        key = ("text", size)
        if key not in self._layer_cache:
            self._layer_cache[key] = _trace_text(self, self._sample_ids(size if isinstance(size, int) else None))
        return self._layer_cache[key]

    def layers(self, size: int | None = None) -> list[LayerInfo]:
        """Every layer with a tensor output and its per-token shape ``(C, T)`` for a sample text (``size``: its
        length in tokens)."""
        return self._traced(size)[0]

    def default_layer(self, purpose: str = "visualization") -> str:
        return self.default_text_layer

    default_text_layer: str = ""

    def default_layers(self, size=None) -> list[str]:
        return [self.default_text_layer]

    def extra_repr(self) -> str:
        kind = "recurrent" if self.recurrent else f"windows of {self.contract.max_length}"
        return f"name={self.name!r}, input={self.contract.describe()}, {kind}"


def _trace_text(model: TextModel, ids: torch.Tensor) -> tuple[list[LayerInfo], dict[str, LayerInfo]]:
    """Run ``ids`` ``[1, T]`` and record each module's per-token output ``[T, C]`` as ``(C, T)``, per call."""
    from luminate.models.base import _trace_layers

    def describe(name: str, kind: str, shape: tuple[int, ...]) -> LayerInfo | None:
        return LayerInfo(name, kind, (shape[1], shape[0]), "tokens", shape, 0) if len(shape) == 2 else None

    return _trace_layers(model, (1, ids.shape[1]), inputs=ids, describe=describe)


def is_text_model(model) -> bool:
    """True for a :class:`TextModel` (or a zoo name of one: ``char_rnn``, ``minilm_l6``)."""
    if isinstance(model, str):
        from luminate.models.zoo import TEXT_MODELS

        return model.lower().replace("-", "_") in TEXT_MODELS
    return bool(getattr(model, "is_text", False))


__all__ = ["Encoded", "NotAnImageModel", "TextContract", "TextModel", "is_text_model"]
