"""What one image does to a layer: ``GET /api/activations`` (each unit's peak, one unit's map),
``GET /api/activations.png`` (every unit's map in one grey sprite), ``GET /api/classes`` (top classes) and
``GET /api/attribution`` (activation x gradient per position)."""

from __future__ import annotations

import math

import torch
from fastapi import APIRouter, Query
from fastapi.responses import Response

from luminate.images import png_bytes
from luminate.serve.routes.common import ToolboxDep
from luminate.serve.toolbox import Toolbox, rounded

router = APIRouter()


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


@router.get("/api/activations")
def layer_activations(image: str = Query(...), layer: str = Query(...), unit: int | None = None,
                      box: Toolbox = ToolboxDep) -> dict:
    act = box.activation(image, layer)
    peaks = act.flatten(1).max(1).values if act.ndim == 3 else act
    out = {"image": image, "layer": layer, "shape": list(act.shape), "peaks": peaks.double().tolist()}
    if act.ndim == 3:
        c, h, w = act.shape
        cols = max(1, math.ceil(math.sqrt(c)))
        out["sprite"] = {"cols": cols, "rows": math.ceil(c / cols), "tile": [h, w], "max": float(act.max())}
    if unit is not None:
        box.unit(layer, unit)
        out["unit"] = unit
        out["map"] = rounded(act[unit]) if act.ndim == 3 else rounded(act[unit:unit + 1])
    return out


@router.get("/api/activations.png")
def activations_png(image: str = Query(...), layer: str = Query(...), box: Toolbox = ToolboxDep) -> Response:
    box.layer(layer, spatial=True)
    data, layout = sprite(box.activation(image, layer))
    return Response(data, media_type="image/png", headers={"X-Sprite-Cols": str(layout["cols"])})


@router.get("/api/classes")
def classes(image: str = Query(...), k: int = Query(5, ge=1, le=50), box: Toolbox = ToolboxDep) -> dict:
    return {"image": image, "classes": box.classes(image, k)}


@router.get("/api/attribution")
def attribution(image: str = Query(...), target: str = Query(...), layer: str | None = None,
                box: Toolbox = ToolboxDep) -> dict:
    return box.attribution(image, target, layer)
