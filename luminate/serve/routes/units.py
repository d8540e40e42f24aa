"""One unit: ``GET /api/units/LAYER/UNIT.png`` (the image shown first: the Microscope site's guided image where
the site has one, else the unguided feature visualization: 200 with the PNG, or 202 with the progress while the
background worker renders it; the ``X-Luminate-Image`` header says which) and, with a Microscope site,
``.../UNIT/shown`` (the images the site's unit page shows, guided first, with their scores on held-out photos),
``.../UNIT/shown/K.png``, ``.../UNIT/examples`` (statistics and top dataset examples) and ``.../UNIT/examples/K.jpg``."""

from __future__ import annotations

import io
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response

from luminate.images import to_pil
from luminate.serve.routes.common import ToolboxDep
from luminate.serve.toolbox import Toolbox
from luminate.serve.worker import QueueFull

router = APIRouter()
UNIT_FILE = re.compile(r"^(\d{1,6})\.png$")
EXAMPLE_FILE = re.compile(r"^(\d{1,3})\.jpg$")
SHOWN_FILE = re.compile(r"^(\d{1,2})\.png$")
#: the header that names the kind of unit image a response holds
KIND = "X-Luminate-Image"


def _png(image, kind: str) -> Response:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png",
                    headers={"Cache-Control": "max-age=3600", KIND: kind})


@router.get("/api/units/{layer}/{name}")
def unit_png(layer: str, name: str, box: Toolbox = ToolboxDep) -> Response:
    match = UNIT_FILE.match(name)
    if match is None:
        raise HTTPException(404, f"no such resource {name!r}: ask for /api/units/LAYER/UNIT.png")
    unit = int(match.group(1))
    box.layer(layer, spatial=True)
    box.unit(layer, unit)
    shown = box.shown(layer, unit)
    if shown is not None:
        name, image = next(iter(shown[0].items()))
        return _png(image, name)
    try:
        job = box.worker.request(layer, unit)
    except QueueFull as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    job.finished.wait(0.25)   # a unit already in the render cache is read back by then
    if job.status == "done":
        return Response(job.png, media_type="image/png", headers={"Cache-Control": "max-age=3600", KIND: "unguided"})
    if job.status == "failed":
        return JSONResponse(job.state(), status_code=500)
    return JSONResponse(job.state(), status_code=202, headers={"Retry-After": "1"})


def _site_shown(box: Toolbox, layer: str, unit: int) -> tuple[dict, dict]:
    box.site_examples(layer, unit)   # 404 without a site, or for a layer or unit it lacks
    shown = box.shown(layer, unit)
    if shown is None:
        raise HTTPException(404, f"the Microscope site has no rendered images of unit {unit} of {layer}: build it "
                                 f"with --render-units naming the unit")
    return shown


@router.get("/api/units/{layer}/{unit}/shown")
def unit_shown(layer: str, unit: int, box: Toolbox = ToolboxDep) -> dict:
    images, scores = _site_shown(box, layer, unit)
    return {"layer": layer, "unit": unit,
            "images": [{"name": name, "url": f"/api/units/{layer}/{unit}/shown/{k}.png", "scores": scores.get(name)}
                       for k, name in enumerate(images)]}


@router.get("/api/units/{layer}/{unit}/shown/{name}")
def unit_shown_image(layer: str, unit: int, name: str, box: Toolbox = ToolboxDep) -> Response:
    match = SHOWN_FILE.match(name)
    if match is None:
        raise HTTPException(404, f"no such resource {name!r}: ask for .../shown/K.png")
    images, _ = _site_shown(box, layer, unit)
    k = int(match.group(1))
    if k >= len(images):
        raise HTTPException(404, f"the page of unit {unit} of {layer} shows {len(images)} images (0..{len(images) - 1})")
    kind, image = list(images.items())[k]
    return _png(image, kind)


@router.get("/api/units/{layer}/{unit}/examples")
def unit_examples(layer: str, unit: int, box: Toolbox = ToolboxDep) -> dict:
    examples, top = box.site_examples(layer, unit)
    s = examples.summary(layer)
    stats = {key: float(s[key][unit]) for key in ("mean", "std", "firing", "minimum", "maximum") if key in s}
    stats["status"] = "dead" if bool(s["dead"][unit]) else "constant" if bool(s["constant"][unit]) else "ok"
    stats["images"] = int(s["n_images"])
    grid = [int(g) for g in s["grid"]]
    return {"layer": layer, "unit": unit, "grid": grid, "stats": stats,
            "examples": [{"rank": k, "name": examples.image_name(t["index"]), "value": t["value"], "y": t["y"],
                          "x": t["x"], "url": f"/api/units/{layer}/{unit}/examples/{k}.jpg"}
                         for k, t in enumerate(top)]}


@router.get("/api/units/{layer}/{unit}/examples/{name}")
def unit_example_image(layer: str, unit: int, name: str, box: Toolbox = ToolboxDep) -> Response:
    match = EXAMPLE_FILE.match(name)
    if match is None:
        raise HTTPException(404, f"no such resource {name!r}: ask for .../examples/K.jpg")
    examples, top = box.site_examples(layer, unit)
    k = int(match.group(1))
    if k >= len(top):
        raise HTTPException(404, f"unit {unit} of {layer} has {len(top)} top examples (0..{len(top) - 1})")
    path = Path(examples.image_path(top[k]["index"]))   # a file the site recorded, never one a request names
    if not path.is_file():
        raise HTTPException(404, f"the example image {path.name!r} is no longer on the disk")
    buffer = io.BytesIO()
    to_pil(box.model.preprocess(path)).save(buffer, format="JPEG", quality=85)
    return Response(buffer.getvalue(), media_type="image/jpeg")
