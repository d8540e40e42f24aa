"""How a graph reads a layer's positions: every place a unit can fire, as one ``[N, C, h, w]`` tensor.

A convolutional layer's positions are its ``h x w`` grid; a vector layer ``[N, C]`` has one (``[N, C, 1, 1]``). A
token layer (``wrap(..., layout="tokens")``, native ``[N, T, C]``) has ``T`` positions: every token, the class and
register tokens included, read as ``[N, C, 1, T]``. The grid view the rest of Luminate uses (patch tokens only)
would miss what a ViT's head reads: it takes the class token, so a last block's patch tokens carry none of the
logit. :func:`replace_positions` hooks a layer in this reading; :func:`patch_grid` turns a token layer's ``[.., 1,
T]`` map into the patch grid ``[.., h, w]`` for pictures over the photo.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from luminate.activations import replace_output
from luminate.models.base import Model


def is_token_layer(model: Model, layer: str) -> bool:
    """Whether ``layer`` is a token sequence ``[N, T, C]`` (declared with ``layout="tokens"``)."""
    info = model.layer_info(layer)
    return info.layout == "tokens" and info.native_shape is not None and len(info.native_shape) == 2


def tokens_as_positions(tokens: torch.Tensor) -> torch.Tensor:
    """``[N, T, C]`` -> ``[N, C, 1, T]`` (a view)."""
    return tokens.transpose(1, 2).unsqueeze(2)


def positions_as_tokens(positions: torch.Tensor) -> torch.Tensor:
    """``[N, C, 1, T]`` -> ``[N, T, C]``."""
    return positions.squeeze(2).transpose(1, 2)


@contextlib.contextmanager
def replace_positions(model: Model, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, ``layer``'s output is replaced by ``fn`` of it, read as positions (``[N, C, h, w]``,
    ``[N, C]`` for vector layers as they are; a token layer's every token as ``[N, C, 1, T]``)."""
    if not is_token_layer(model, layer):
        with replace_output(model, layer, fn):
            yield
        return

    def on_tokens(tokens: torch.Tensor) -> torch.Tensor:
        return positions_as_tokens(fn(tokens_as_positions(tokens)))

    with replace_output(model, layer, on_tokens, grid=False):
        yield


def patch_grid(model: Model, layer: str, maps: torch.Tensor, image_size: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer's maps ``[..., h, w]`` as pictures over the photo: ``(grid [..., h, w], prefix [..., P] or None)``.

    For a token layer (``[..., 1, T]``, on an input of ``image_size``) the patch tokens go back on their grid and
    the ``P`` leading class / register tokens come apart; other layers' maps are returned as they are."""
    if not is_token_layer(model, layer):
        return maps, None
    tokens = maps.shape[-1]
    prefix, h, w = model.token_grid(layer, tokens, tuple(image_size))
    flat = maps[..., 0, :]
    return flat[..., prefix:].reshape(*flat.shape[:-1], h, w), flat[..., :prefix]
