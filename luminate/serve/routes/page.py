"""``GET /`` (the page), ``GET /healthz`` and ``GET /api/info`` (model, layers, limits, site and features)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from luminate.serve.guard import CSP
from luminate.serve.routes.common import ToolboxDep
from luminate.serve.toolbox import Toolbox

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


@router.get("/healthz")
def healthz(box: Toolbox = ToolboxDep) -> dict:
    return {"status": "ok", "model": box.model.name}


@router.get("/api/info")
def info(box: Toolbox = ToolboxDep) -> dict:
    m = box.model
    layers = [{"name": i.name, "shape": list(i.shape), "channels": i.channels} for i in box.layer_infos]
    default = m.default_layer("visualization")
    return {"model": m.name, "input": m.contract.describe(), "size": list(m.size), "layers": layers,
            "default_layer": default if any(layer["name"] == default for layer in layers) else layers[-1]["name"],
            "attribution_layer": m.default_layer("attribution"), "labels": m.labels is not None,
            "site": box.examples.layers if box.examples is not None else None,
            "features": ({"layer": box.features.name, "of": box.dictionary.layer,
                          "n_features": box.features.channels} if box.features is not None else None),
            "limits": {"upload_bytes": box.max_upload, "pixels": box.max_pixels, "images": box.store.max_images}}
