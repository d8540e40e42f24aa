"""The activation-atlas page: a zoomable canvas of icons; hovering a cell shows what landed there.

One self-contained HTML file: icons and sample-image thumbnails are inline data URLs, the script and styles are
inline, nothing is loaded from anywhere. Drag to pan; zoom with the mouse wheel (about the pointer), the ``+`` /
``−`` buttons or the ``+`` / ``-`` keys; ``fit`` (or ``0``) shows the whole atlas. Hovering (or tapping) a cell
fills the detail panel ``#detail`` (its ``data-cell`` attribute names the cell shown) with the cell's point
count, its top classes by attribution and thumbnails of a few of the image regions that landed in it.

Thumbnails are made when the page is built: each sample row's image is read from the path the activation store
recorded, cropped the way the model saw it (its evaluation crop and resize) around the row's position (six
layer cells wide), and shrunk to ``thumb_size`` pixels. Images that are missing or unreadable by then are
skipped; the page says how many.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from luminate.data.store import ActivationStore
from luminate.images import UnreadableImageError, data_url, load_image, resize
from luminate.views.html import HTMLView, asset, esc, json_script, page, write

if TYPE_CHECKING:  # types only: views import no computation
    from luminate.atlas.atlas import Atlas

__all__ = ["atlas_html", "write_atlas", "atlas_view", "sample_thumbnails"]

#: The atlas page's CSS and script (``luminate/views/assets/atlas.css``, ``atlas.js``).
ATLAS_CSS = asset("atlas.css")
ATLAS_JS = asset("atlas.js")


def atlas_html(atlas: Atlas, store: ActivationStore | str | os.PathLike | None = None, thumb_size: int = 64,
               samples: int = 6, icon_format: str = "jpeg", title: str | None = None) -> str:
    """The atlas as one self-contained HTML document (see the module docstring).

    Args:
        atlas: an :class:`~luminate.atlas.atlas.Atlas`.
        store: the activation store it came from (default: ``atlas.store_path``), for the sample images.
        thumb_size: side of the sample thumbnails in pixels (JPEG).
        samples: thumbnails per cell at most.
        icon_format: ``"jpeg"`` (small pages) or ``"png"`` (exact pixels).
        title: page title (default :meth:`Atlas.title`).
    """
    if store is None and atlas.store_path:
        store = atlas.store_path
    store = ActivationStore(store) if store is not None and not isinstance(store, ActivationStore) else store
    thumbs, missing = sample_thumbnails(atlas, store, thumb_size, samples) if store is not None else ({}, 0)
    s, g = atlas.icon_size, atlas.grid_size
    names = store.image_names() if store is not None else []
    image_of = store.meta([r for c in atlas.cells for r in c.samples])["image"] if store is not None and any(
        c.samples for c in atlas.cells) else np.zeros(0, np.int64)
    row_image = dict(zip((r for c in atlas.cells for r in c.samples), (int(i) for i in image_of)))
    cells, icons = [], []
    for k, (cell, icon) in enumerate(zip(atlas.cells, atlas.icons)):
        top, left = atlas.canvas_position(cell)
        icons.append(f'<img class="icon" data-cell="{k}" data-i="{cell.i}" data-j="{cell.j}" draggable="false" '
                     f'alt="cell ({cell.i}, {cell.j})" style="left:{left}px;top:{top}px;width:{s}px;height:{s}px" '
                     f'src="{data_url(icon[None, :3], icon_format)}">')
        sample_list = [[thumbs[r], names[row_image[r]] if row_image.get(r) is not None else ""]
                       for r in cell.samples[:samples] if r in thumbs]
        cells.append({"i": cell.i, "j": cell.j, "count": cell.count,
                      "top": [[name, round(score, 5)] for _, name, score in cell.top_classes],
                      "samples": sample_list})
    data = {"grid": g, "size": s, "kind": atlas.kind, "labels": atlas.labels, "top_source": atlas.top_source,
            "cells": cells}
    axes = ""
    if atlas.kind == "compare" and len(atlas.labels) == 2:
        axes = (f'<div class="axis left">&larr; {esc(atlas.labels[0])}</div>'
                f'<div class="axis right">{esc(atlas.labels[1])} &rarr;</div>')
    body = (f'<div class="atlas"><div class="viewport" id="viewport">'
            f'<div id="stage" style="width:{g * s}px;height:{g * s}px">{"".join(icons)}<div id="hilite"></div></div>'
            f'<div class="zoom"><button id="zoom-in" title="zoom in (+)">+</button>'
            f'<button id="zoom-out" title="zoom out (-)">&minus;</button>'
            f'<button id="zoom-fit" title="show everything (0)" style="font-size:12px">fit</button></div>{axes}</div>'
            f'<aside id="detail" data-cell=""><h2>Hover over a cell</h2><p class="muted">to see how many points landed '
            f"in it, the classes they add most to, and some of the images they come from.</p></aside></div>"
            + _about(atlas, store, missing) + json_script("atlas-data", data))
    subtitle = (f"{esc(atlas.description())}. Drag to pan, scroll or use + / &minus; to zoom. Each icon is a feature "
                "visualization of the average activation of the points in its cell; "
                + ("x: attribution difference between the two classes, y: a 1-D embedding."
                   if atlas.kind == "compare" else "nearby cells hold similar activations."))
    return page(title or atlas.title(), body, css=ATLAS_CSS, script=ATLAS_JS, subtitle=subtitle)


def write_atlas(atlas: Atlas, path: str | os.PathLike, store: ActivationStore | str | os.PathLike | None = None,
                **kwargs) -> Path:
    """Write :func:`atlas_html` to ``path``."""
    return write(path, atlas_html(atlas, store, **kwargs))


def atlas_view(atlas: Atlas, store: ActivationStore | str | os.PathLike | None = None, **kwargs) -> HTMLView:
    """The page as an :class:`~luminate.views.html.HTMLView` (shows itself in notebooks, ``.save(path)``)."""
    return HTMLView(atlas_html(atlas, store, **kwargs), atlas.title())


def sample_thumbnails(atlas: Atlas, store: ActivationStore, thumb_size: int = 64, samples: int = 6,
                      context: float = 6.0) -> tuple[dict[int, str], int]:
    """JPEG data URLs of the image regions of each cell's sample rows: ``({store row: data URL}, rows skipped)``.

    Each image is read once from the path the store recorded, preprocessed like the model's input
    (``atlas.contract``), and cropped to a square ``context`` layer cells wide centred on the row's position.
    Missing or unreadable images are skipped (counted).
    """
    rows = sorted({r for c in atlas.cells for r in c.samples[:samples]})
    if not rows:
        return {}, 0
    image_of = store.meta(rows)["image"]
    positions = store.positions(atlas.layer, rows)
    grid = tuple(store.layer_info(atlas.layer)["grid"])
    by_image: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for r, i, yx in zip(rows, image_of, positions):
        by_image[int(i)].append((r, yx))
    out: dict[int, str] = {}
    missing = 0
    for index, entries in by_image.items():
        path = store.image_path(index)
        try:
            if path is None or not Path(path).is_file():
                raise UnreadableImageError(f"image {index} is not a file any more")
            picture = load_image(path)
        except (UnreadableImageError, OSError):
            missing += len(entries)
            continue
        if atlas.contract is not None:
            picture = atlas.contract.preprocess(picture)
        for r, yx in entries:
            out[r] = data_url(_patch(picture, yx, grid, context, thumb_size), "jpeg", quality=80)
    return out, missing


def _patch(picture: torch.Tensor, yx: np.ndarray, grid: tuple[int, int], context: float, size: int) -> torch.Tensor:
    """The square region of ``picture`` ``[1, 3, H, W]`` around layer cell ``yx`` of ``grid``, resized to
    ``[1, 3, size, size]``."""
    h, w = picture.shape[-2:]
    cy, cx = (float(yx[0]) + 0.5) * h / grid[0], (float(yx[1]) + 0.5) * w / grid[1]
    side = int(round(min(h, w, max(16.0, context * max(h / grid[0], w / grid[1])))))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    return resize(picture[..., top:top + side, left:left + side], size)


def _about(atlas: Atlas, store: ActivationStore | None, missing: int) -> str:
    s = atlas.settings
    items = [("model", f"{atlas.model_name}, layer {atlas.layer}"),
             ("points", f"{len(atlas.rows)} ({atlas.method} layout)"),
             ("grid", f"{atlas.grid_size} &times; {atlas.grid_size}, cells with more than {s.get('min_count')} points: "
                      f"{len(atlas.cells)}"),
             ("icons", f"{atlas.icon_size} px, {s.get('steps')} steps, {s.get('attempts')} attempt(s), "
                       f"cossim_pow {s.get('cossim_pow')}, {'whitened' if s.get('whiten') else 'not whitened'}")]
    if store is not None:
        items.append(("store", f"<code>{esc(store.path)}</code>: {len(store)} rows from {store.n_images} images"
                               + (f", {len(store.skipped)} unreadable image(s) skipped" if store.skipped else "")))
    if missing:
        items.append(("thumbnails", f"{missing} sample image(s) could not be read when this page was made"))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<section class="card"><h2>About this atlas</h2><table>{rows}</table></section>'
