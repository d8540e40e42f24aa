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
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from luminate.activations import activations
from luminate.images import png_bytes, to_pil
from luminate.models.base import Model, as_model
from luminate.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, ImageStore, UploadError, decode_upload
from luminate.serve.worker import RenderWorker
from luminate.views.html import asset

try:
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.formparsers import MultiPartException, MultiPartParser
except ImportError as exc:  # pragma: no cover - the serve extra is missing
    raise ImportError("luminate serve needs FastAPI and uvicorn: pip install \"luminate[serve]\"") from exc

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: The page's content security policy: its own origin only (inline CSS/JS are the page's own; eval stays allowed
#: because browser automation, Playwright's wait_for_function among it, evaluates strings in the page).
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
#: How the API names the codes of a feature dictionary of layer L (``--features``): ``features:L``.
FEATURES = "features:"
UNIT_FILE = re.compile(r"^(\d{1,6})\.png$")
EXAMPLE_FILE = re.compile(r"^(\d{1,3})\.jpg$")


def toolbox_page(title: str) -> str:
    """The page: ``assets/toolbox.html`` with ``toolbox.css`` and ``toolbox.js`` inlined."""
    from luminate.views.html import esc

    return (asset("toolbox.html").replace("{{title}}", esc(title)).replace("/*{{css}}*/", asset("toolbox.css"))
            .replace("/*{{js}}*/", asset("toolbox.js")))


@dataclass(frozen=True)
class FeatureLayer:
    """A dictionary's codes presented as a layer: ``name`` is ``features:L``, ``shape`` ``(N, h, w)``."""

    name: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0]


def open_dictionary(folder: str | Path, model: Model):
    """The feature dictionary in ``folder``: a features site (its one layer), a folder holding
    ``dictionary.safetensors`` or that file (:func:`luminate.features.load`), checked against ``model``."""
    from luminate import features

    path = Path(folder).expanduser()
    found = sorted((path / "data").glob("*/dictionary.safetensors")) if (path / "data").is_dir() else []
    if len(found) == 1 and not (path / "dictionary.safetensors").is_file():
        path = found[0]
    return features.load(path, model=model)


class Toolbox:
    """The state behind the app: the model (with its lock), the uploaded images, the render worker, the optional
    Microscope site and feature dictionary. :func:`create_app` makes one; everything it holds belongs to that app."""

    def __init__(self, model: Model, *, site: str | Path | None = None, features: str | Path | None = None,
                 render_size: int = 96,
                 render_steps: int = 256, max_images: int = 64, max_image_bytes: int = 256 << 20,
                 max_upload: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS):
        self.model = model
        # the server's model is inference-only: frozen once, so concurrent Model.frozen() blocks restore nothing
        model.eval()
        model.requires_grad_(False)
        self.lock = threading.Lock()
        with self.lock, torch.no_grad():
            self.layer_infos = [model.layer_info(name) for name in model.default_layers()]
            activations(model, torch.zeros(1, model.contract.channels, *model.size), self.layer_infos[-1].name)
        self.store = ImageStore(max_images=max_images, max_bytes=max_image_bytes)
        self.max_upload, self.max_pixels = max_upload, max_pixels
        self.dictionary = open_dictionary(features, model) if features is not None else None
        self.features = None
        if self.dictionary is not None:
            base = self.dictionary.layer
            self.features = FeatureLayer(FEATURES + base, (self.dictionary.n_features,
                                                            *model.layer_info(base).shape[1:]))
            self.layer_infos.append(self.features)
        self.worker = RenderWorker(model, size=render_size, steps=render_steps, dictionary=self.dictionary)
        self.examples = None
        if site is not None:
            from luminate.microscope import open_examples

            self.examples = open_examples(site)

    # ----- inputs -------------------------------------------------------------------------------------------

    def add_image(self, data: bytes) -> dict:
        image = decode_upload(data, max_bytes=self.max_upload, max_pixels=self.max_pixels)
        pixels = self.model.preprocess(image).cpu()
        return {"id": self.store.add(pixels), "width": image.width, "height": image.height}

    def image(self, key: str):
        try:
            return self.store.get(key)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None

    def layer(self, name: str, spatial: bool = False):
        """The LayerInfo of ``name`` (a :class:`FeatureLayer` for ``features:L``), or 400 naming the closest layers."""
        if name.startswith(FEATURES):
            if self.features is None or name != self.features.name:
                have = (f"this server has {self.features.name}" if self.features is not None
                        else "start the server with --features SITE for a dictionary's features")
                raise HTTPException(400, f"unknown feature layer {name!r}: {have}")
            return self.features
        try:
            with self.lock:
                info = self.model.layer_info(name)
        except (KeyError, ValueError, IndexError) as exc:
            raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
        if len(info.shape) not in (1, 3) or (spatial and len(info.shape) != 3):
            want = "a convolutional layer [C, H, W]" if spatial else "[C] or [C, H, W] activations"
            raise HTTPException(400, f"layer {name!r} has output shape {list(info.shape)}; this needs {want}")
        return info

    def unit(self, layer: str, unit: int) -> None:
        if self.features is not None and layer == self.features.name:
            n = self.features.channels
            if not 0 <= unit < n:
                raise HTTPException(404, f"feature {unit} is out of range: the dictionary has {n} (0..{n - 1})")
            return
        try:
            self.model.check_channel(layer, unit)
        except IndexError as exc:
            raise HTTPException(404, exc.args[0]) from None

    # ----- computations -------------------------------------------------------------------------------------

    def activation(self, key: str, layer: str) -> torch.Tensor:
        """``[C, h, w]`` (or ``[C]``) activation of ``layer`` for image ``key``: one forward pass cut at the layer,
        remembered with the image."""
        self.layer(layer)
        item = self.image(key)
        cached = item.activations.get(layer)
        if cached is not None:
            return cached
        if layer.startswith(FEATURES):   # the dictionary's codes of its layer's activation
            value = self.dictionary.encode(self.activation(key, self.dictionary.layer)[None])[0]
        else:
            with self.lock:
                value = activations(self.model, item.pixels, layer, grid=True)[0]
        self.store.put_activation(key, layer, value)
        return value

    def classes(self, key: str, k: int) -> list[dict]:
        item = self.image(key)
        with self.lock, torch.no_grad(), self.model.frozen():
            output = self.model(item.pixels.to(self.model.device))
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            return []
        probs = output.float().softmax(-1)[0].cpu()
        top = probs.topk(min(k, probs.numel()))
        return [{"index": int(i), "name": self.model.class_name(int(i)), "probability": float(p)}
                for p, i in zip(top.values, top.indices)]

    def attribution(self, key: str, target: str, layer: str | None) -> dict:
        from luminate.analysis import attribution

        layer = layer or self.model.default_layer("attribution")
        self.layer(layer, spatial=True)
        item = self.image(key)
        try:
            index = attribution.resolve_classes(self.model, target)[0]
        except (KeyError, ValueError, IndexError) as exc:
            raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
        with self.lock:
            where = attribution.spatial_attribution(self.model, item.pixels.to(self.model.device), layer,
                                                    target=index)[0]
        return {"image": key, "target": index, "class": self.model.class_name(index), "layer": layer,
                "method": "activation x gradient, summed over channels", "shape": list(where.shape),
                "map": _rounded(where)}

    def site_examples(self, layer: str, unit: int) -> tuple[Any, list[dict]]:
        if self.examples is None:
            raise HTTPException(404, "no Microscope site is open: start the server with --site SITE "
                                     "(a folder made by `luminate microscope`)")
        if layer not in self.examples.layers:
            raise HTTPException(404, f"the Microscope site has no layer {layer!r}; its layers: "
                                     f"{', '.join(self.examples.layers)}")
        try:
            return self.examples, self.examples.top_examples(layer, unit)
        except IndexError as exc:
            raise HTTPException(404, exc.args[0]) from None


#: Bytes a multipart form adds around the file (boundaries, part headers).
FORM_OVERHEAD = 64 << 10
#: Most bytes of a refused request read (and dropped) so that the client, still sending, sees the 413 answer.
DRAIN_LIMIT = 256 << 20


async def _drain(request: Request, seen: int = 0) -> None:
    """Read and drop the rest of a refused request's body (up to :data:`DRAIN_LIMIT`): a client that is still
    sending when the connection closes sees a reset instead of the answer."""
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break
    except Exception:   # the client gave up: nothing left to answer
        pass


def _too_large(size: int, limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request is {size / 2**20:.1f} MB (or more); uploads are limited to "
                                   f"{limit / 2**20:.0f} MB"}, status_code=413, headers={"Connection": "close"})


def _rounded(t: torch.Tensor, digits: int = 5) -> Any:
    return np.round(t.double().numpy(), digits).tolist()


def sprite(act: torch.Tensor) -> tuple[bytes, dict]:
    """Every unit's map of ``act`` ``[C, h, w]`` as one grey PNG (unit ``c`` at row ``c // cols``, column
    ``c % cols``, no padding; 255 = the layer's largest activation, 0 = zero or below) and its layout."""
    c, h, w = act.shape
    cols = max(1, math.ceil(math.sqrt(c)))
    rows = math.ceil(c / cols)
    top = float(act.max())
    scaled = (act.clamp_min(0) / top) if top > 0 else torch.zeros_like(act)
    canvas = torch.zeros(rows * cols, h, w)
    canvas[:c] = scaled
    canvas = canvas.reshape(rows, cols, h, w).permute(0, 2, 1, 3).reshape(1, 1, rows * h, cols * w)
    return png_bytes(canvas), {"cols": cols, "rows": rows, "tile": [h, w], "max": top}


def create_app(model, *, site: str | Path | None = None, features: str | Path | None = None, render_size: int = 96, render_steps: int = 256,
               max_images: int = 64, max_image_bytes: int = 256 << 20, max_upload: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_PIXELS, allowed_hosts: tuple[str, ...] | None = LOOPBACK) -> FastAPI:
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
    toolbox = Toolbox(as_model(model), site=site, features=features, render_size=render_size, render_steps=render_steps,
                      max_images=max_images, max_image_bytes=max_image_bytes, max_upload=max_upload,
                      max_pixels=max_pixels)
    page = toolbox_page(f"Luminate toolbox: {toolbox.model.name}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        toolbox.worker.close()

    app = FastAPI(title="Luminate toolbox", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.toolbox = toolbox

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        name = urlsplit(f"//{host}").hostname or ""
        if allowed_hosts is not None and name not in allowed_hosts:
            return JSONResponse({"detail": f"unexpected Host header {host!r}: this server answers "
                                           f"{', '.join(allowed_hosts)} only"}, status_code=400)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return JSONResponse({"detail": f"cross-origin request from {origin!r} refused: the toolbox answers "
                                           "its own page only"}, status_code=403)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > toolbox.max_upload + FORM_OVERHEAD:
            await _drain(request)
            return _too_large(int(length), toolbox.max_upload)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": toolbox.model.name}

    @app.get("/api/info")
    def info() -> dict:
        m = toolbox.model
        layers = [{"name": i.name, "shape": list(i.shape), "channels": i.channels} for i in toolbox.layer_infos]
        default = m.default_layer("visualization")
        return {"model": m.name, "input": m.contract.describe(), "size": list(m.size), "layers": layers,
                "default_layer": default if any(l["name"] == default for l in layers) else layers[-1]["name"],
                "attribution_layer": m.default_layer("attribution"), "labels": m.labels is not None,
                "site": toolbox.examples.layers if toolbox.examples is not None else None,
                "features": ({"layer": toolbox.features.name, "of": toolbox.dictionary.layer,
                              "n_features": toolbox.features.channels} if toolbox.features is not None else None),
                "limits": {"upload_bytes": toolbox.max_upload, "pixels": toolbox.max_pixels,
                           "images": toolbox.store.max_images}}

    @app.post("/api/images")
    async def upload(request: Request) -> dict:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(400, "send the image as multipart/form-data with the file in the field 'file'")
        body = bytearray()
        async for chunk in request.stream():   # a body without Content-Length is capped while it arrives
            body += chunk
            if len(body) > toolbox.max_upload + FORM_OVERHEAD:
                await _drain(request, len(body))
                return _too_large(len(body), toolbox.max_upload)

        async def received():
            yield bytes(body)

        try:
            form = await MultiPartParser(request.headers, received(), max_files=1, max_fields=4).parse()
        except MultiPartException as exc:
            raise HTTPException(400, f"the multipart form cannot be read: {exc.message}") from None
        try:
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise HTTPException(400, "no file in the form field 'file'")
            data = await file.read(toolbox.max_upload + 1)
        finally:
            await form.close()
        try:
            return await run_in_threadpool(toolbox.add_image, data)
        except UploadError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @app.get("/api/images/{name}")
    def image_png(name: str) -> Response:
        key = name.removesuffix(".png")
        return Response(png_bytes(toolbox.image(key).pixels), media_type="image/png")

    @app.get("/api/activations")
    def layer_activations(image: str = Query(...), layer: str = Query(...), unit: int | None = None) -> dict:
        act = toolbox.activation(image, layer)
        peaks = act.flatten(1).max(1).values if act.ndim == 3 else act
        out = {"image": image, "layer": layer, "shape": list(act.shape), "peaks": peaks.double().tolist()}
        if act.ndim == 3:
            c, h, w = act.shape
            cols = max(1, math.ceil(math.sqrt(c)))
            out["sprite"] = {"cols": cols, "rows": math.ceil(c / cols), "tile": [h, w], "max": float(act.max())}
        if unit is not None:
            toolbox.unit(layer, unit)
            out["unit"] = unit
            out["map"] = _rounded(act[unit]) if act.ndim == 3 else _rounded(act[unit:unit + 1])
        return out

    @app.get("/api/activations.png")
    def activations_png(image: str = Query(...), layer: str = Query(...)) -> Response:
        toolbox.layer(layer, spatial=True)
        data, layout = sprite(toolbox.activation(image, layer))
        return Response(data, media_type="image/png", headers={"X-Sprite-Cols": str(layout["cols"])})

    @app.get("/api/classes")
    def classes(image: str = Query(...), k: int = Query(5, ge=1, le=50)) -> dict:
        return {"image": image, "classes": toolbox.classes(image, k)}

    @app.get("/api/units/{layer}/{name}")
    def unit_png(layer: str, name: str) -> Response:
        match = UNIT_FILE.match(name)
        if match is None:
            raise HTTPException(404, f"no such resource {name!r}: ask for /api/units/LAYER/UNIT.png")
        unit = int(match.group(1))
        toolbox.layer(layer, spatial=True)
        toolbox.unit(layer, unit)
        job = toolbox.worker.request(layer, unit)
        job.finished.wait(0.25)   # a unit already in the render cache is read back by then
        if job.status == "done":
            return Response(job.png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
        if job.status == "failed":
            return JSONResponse(job.state(), status_code=500)
        return JSONResponse(job.state(), status_code=202, headers={"Retry-After": "1"})

    @app.get("/api/units/{layer}/{unit}/examples")
    def unit_examples(layer: str, unit: int) -> dict:
        examples, top = toolbox.site_examples(layer, unit)
        s = examples.summary(layer)
        stats = {key: float(s[key][unit]) for key in ("mean", "std", "firing", "minimum", "maximum") if key in s}
        stats["status"] = "dead" if bool(s["dead"][unit]) else "constant" if bool(s["constant"][unit]) else "ok"
        stats["images"] = int(s["n_images"])
        grid = [int(g) for g in s["grid"]]
        return {"layer": layer, "unit": unit, "grid": grid, "stats": stats,
                "examples": [{"rank": k, "name": examples.image_name(t["index"]), "value": t["value"], "y": t["y"],
                              "x": t["x"], "url": f"/api/units/{layer}/{unit}/examples/{k}.jpg"}
                             for k, t in enumerate(top)]}

    @app.get("/api/units/{layer}/{unit}/examples/{name}")
    def unit_example_image(layer: str, unit: int, name: str) -> Response:
        match = EXAMPLE_FILE.match(name)
        if match is None:
            raise HTTPException(404, f"no such resource {name!r}: ask for .../examples/K.jpg")
        examples, top = toolbox.site_examples(layer, unit)
        k = int(match.group(1))
        if k >= len(top):
            raise HTTPException(404, f"unit {unit} of {layer} has {len(top)} top examples (0..{len(top) - 1})")
        path = Path(examples.image_path(top[k]["index"]))   # a file the site recorded, never one a request names
        if not path.is_file():
            raise HTTPException(404, f"the example image {path.name!r} is no longer on the disk")
        buffer = io.BytesIO()
        to_pil(toolbox.model.preprocess(path)).save(buffer, format="JPEG", quality=85)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    @app.get("/api/attribution")
    def attribution(image: str = Query(...), target: str = Query(...), layer: str | None = None) -> dict:
        return toolbox.attribution(image, target, layer)

    return app
