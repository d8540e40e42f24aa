"""The live toolbox's HTTP app (FastAPI): one model loaded once, a photo or camera frame meets its units.

Endpoints (JSON unless said otherwise; errors are ``{"detail": reason}``):

* ``GET /`` the page (one self-contained document: CSS and JavaScript inline, nothing from the network);
  ``GET /healthz``; ``GET /api/info`` (model, layers, limits, whether a Microscope site is open);
* ``POST /api/images`` (multipart field ``file``) -> ``{"id", "width", "height"}``: 413 over the size limit,
  400 with the reason for anything that is not an image, 413 for an image whose header declares too many
  pixels (refused before decoding); ``GET /api/images/ID.png`` the image as the model sees it;
* ``GET /api/activations?image=ID&layer=L[&unit=U]`` -> ``{"layer", "shape", "peaks": [C]}`` (each unit's maximum
  over positions, the numbers :func:`luminate.activations` gives; ``"map"``: unit ``U``'s activation map);
  ``GET /api/activations.png?image=ID&layer=L`` every unit's map tiled into one grey PNG (``"sprite"`` in the JSON
  says how); ``GET /api/classes?image=ID`` the top classes with probabilities;
* ``GET /api/units/LAYER/UNIT.png`` the unit's feature visualization: 200 with the PNG, or 202 with
  ``{"status", "progress"}`` while a background thread renders it (never on a request thread);
* ``GET /api/units/LAYER/UNIT/examples`` and ``.../examples/K.jpg``: the Microscope's top dataset examples and
  statistics of the unit (with ``site=``);
* ``GET /api/attribution?image=ID&target=CLASS[&layer=L]`` -> activation x gradient per position of ``layer``
  (:func:`luminate.analysis.attribution.spatial_attribution`).

Unknown layers answer 400 and unknown image ids 404, both naming the close names. The app serves nothing from the
disk by a name from a request (no paths at all in its routes), adds no CORS headers and refuses cross-origin
requests and unexpected ``Host`` headers (DNS rebinding). Forward passes on the shared model take turns under one
lock: LayerTap's hooks belong to the model, so two passes at once would see each other's layers.

The pieces: :mod:`luminate.serve.toolbox` (the state: model, images, worker, site, dictionary),
:mod:`luminate.serve.guard` (what every request passes first), :mod:`luminate.serve.routes` (one APIRouter per
topic; a new one is one line in ``routes.ROUTERS``); :func:`create_app` puts them together.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

try:
    from fastapi import FastAPI
except ImportError as exc:  # pragma: no cover - the serve extra is missing
    raise ImportError("luminate serve needs FastAPI and uvicorn: pip install \"luminate[serve]\"") from exc

from luminate.models.base import as_model
from luminate.serve.guard import LOOPBACK, add_guard
from luminate.serve.routes import ROUTERS
from luminate.serve.toolbox import Toolbox
from luminate.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES
from luminate.views.html import asset, esc


def toolbox_page(title: str) -> str:
    """The page: ``assets/toolbox.html`` with ``toolbox.css`` and ``toolbox.js`` inlined."""
    return (asset("toolbox.html").replace("{{title}}", esc(title)).replace("/*{{css}}*/", asset("toolbox.css"))
            .replace("/*{{js}}*/", asset("toolbox.js")))


def create_app(model, *, site: str | Path | None = None, features: str | Path | None = None, render_size: int = 96,
               render_steps: int = 256, max_images: int = 64, max_image_bytes: int = 256 << 20,
               max_upload: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK) -> FastAPI:
    """The toolbox app over ``model`` (a Model or zoo name), ready for uvicorn (see :func:`luminate.serve.run`).

    Args:
        site: a Microscope site folder: unit panels show its top dataset examples and statistics.
        features: a feature dictionary (a ``luminate features`` site or a folder with ``dictionary.safetensors``):
            its codes are one more layer, ``features:L``, shown and rendered like a layer's units.
        render_size, render_steps: feature visualizations of units (rendered in the background, cached on disk).
        max_images, max_image_bytes: the uploaded-image store's bounds (least recently used evicted).
        max_upload, max_pixels: the largest upload in bytes and the largest image in pixels.
        allowed_hosts: the ``Host`` header names served (loopback names by default; ``None``: any, for a server
            deliberately exposed on a network).
    """
    toolbox = Toolbox(as_model(model), site=site, features=features, render_size=render_size,
                      render_steps=render_steps, max_images=max_images, max_image_bytes=max_image_bytes,
                      max_upload=max_upload, max_pixels=max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        toolbox.worker.close()

    app = FastAPI(title="Luminate toolbox", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.toolbox = toolbox
    app.state.page = toolbox_page(f"Luminate toolbox: {toolbox.model.name}")
    add_guard(app, toolbox.max_upload, allowed_hosts)
    for router in ROUTERS:
        app.include_router(router)
    return app


__all__ = ["LOOPBACK", "Toolbox", "create_app", "toolbox_page"]
