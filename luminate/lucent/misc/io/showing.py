"""Lucent's ``misc.io.show``: numpy arrays as images in a Jupyter notebook (IPython's display)."""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from luminate.images import data_url
from luminate.lucent.misc.io.collapse_channels import collapse_channels


def _display(markup: str) -> None:
    try:
        from IPython.display import HTML, display
    except ImportError as exc:  # pragma: no cover - IPython ships with every notebook
        raise ImportError("show() displays in a Jupyter notebook and needs IPython (pip install ipython); to write "
                          "files use luminate.images.save_image") from exc
    display(HTML(markup))


def _to_unit(array: np.ndarray, domain: tuple[float, float] | None) -> np.ndarray:
    array = np.squeeze(np.array(array, dtype=np.float64))
    if array.ndim > 3:
        raise ValueError(f"an image is [H, W], [H, W, C] or [1, H, W, C], got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("the image holds NaN values")
    lo, hi = (array.min(), array.max()) if domain is None else domain
    array = array.clip(lo, hi)
    return (array - lo) / (hi - lo) if hi != lo else array - lo


def _img_tag(array: np.ndarray, domain, width: int | None, fmt: str = "png") -> str:
    import torch

    unit = _to_unit(array, domain)
    tensor = torch.from_numpy(unit).float()
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    style = "image-rendering: pixelated;" + (f"width: {int(width)}px;" if width is not None else "")
    return f'<img src="{data_url(tensor, fmt=fmt)}" style="{style}">'


def image(array: np.ndarray, domain=None, width: int | None = None, fmt: str = "png") -> None:
    """Show one image (``domain``: the value range; None takes the array's min and max)."""
    _display(_img_tag(array, domain, width, fmt))


def images(arrays: Sequence[np.ndarray], labels: Sequence | None = None, domain=None, width: int | None = None) -> None:
    """Show images side by side, each under its label (default: its index)."""
    cells = []
    for i, array in enumerate(arrays):
        label = html.escape(str(labels[i] if labels is not None else i))
        cells.append(f'<div style="margin-right:10px; margin-top: 4px;">{label}<br/>'
                     f'{_img_tag(array, domain, width)}</div>')
    _display('<div style="display: flex; flex-direction: row;">' + "".join(cells) + "</div>")


def _rgb(array: np.ndarray) -> np.ndarray:
    return collapse_channels(array) if array.shape[-1] not in (1, 3, 4) else array


def show(thing, domain=(0, 1), **kwargs) -> None:
    """Display ``thing``: a rank-4 array as a row of images, rank 2 or 3 as one image, a list as a row; arrays with
    other than 1, 3 or 4 channels are collapsed to RGB (:func:`collapse_channels`)."""
    if isinstance(thing, np.ndarray):
        if thing.ndim in (3, 4):
            thing = _rgb(thing)
        if thing.ndim == 4:
            images(list(thing), domain=domain, **kwargs)
        elif thing.ndim in (2, 3):
            image(thing, domain=domain, **kwargs)
        else:
            print(repr(thing))
    elif isinstance(thing, (list, tuple)):
        items = [_rgb(t) if isinstance(t, np.ndarray) and t.ndim == 3 else t for t in thing]
        images(items, domain=domain, **kwargs)
    else:
        print(repr(thing))


__all__ = ["image", "images", "show"]
