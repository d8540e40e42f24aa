"""The unit images a Microscope page shows, and their own sanity scores (:mod:`luminate.analysis.shown` for units).

Where the site has photos, a unit page shows first its **guided** image (pulled towards ranks 0, 2, 4, 6 of the
unit's top photos among the site's sample) and beside it the **unguided** one (the positive visualization); both
are scored on the photos held out from the guide. ``SITE/data/shown-<layer>.pt`` keeps both images (8-bit, as
cached) and their scores; :func:`shown_images` reads them back, the image the page shows first first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import Tensor

from luminate.analysis import shown as generic
from luminate.analysis.shown import GUIDED_IMAGES, MIN_PHOTOS, SHOWN, guide  # noqa: F401  (the Microscope's names)
from luminate.data.store import layer_key
from luminate.models.base import Model
from luminate.units.render import Directions


def _units(model: Model, layer: str, units: Sequence[int]) -> Directions:
    return Directions.for_units(layer, units, model.layer_info(layer).channels)


def render_guided(model: Model, layer: str, units: Sequence[int], photos: Tensor,
                  cache_dir: str | os.PathLike | None = None, batch: int | None = None,
                  progress: bool = False) -> dict[int, Tensor]:
    """``{unit: [3, S, S]}``: each unit's guided image (cached like every direction render)."""
    units = [int(u) for u in units]
    return dict(zip(units, generic.render_guided(model, _units(model, layer, units), photos, cache_dir, batch,
                                                 progress)))


def score_shown(model: Model, layer: str, shown: dict[int, dict[str, Tensor]], photos: Tensor) -> dict:
    """``{unit: {name: {"path_score", "ratio", "flagged"}}}``: each shown image scored on ``photos`` less the ones
    that guided the unit."""
    units = sorted(shown)
    return dict(zip(units, generic.score_shown(model, _units(model, layer, units), [shown[u] for u in units],
                                               photos)))


def shown_file(site: str | os.PathLike, layer: str) -> Path:
    return Path(site) / "data" / f"shown-{layer_key(layer)}.pt"


def save_shown(site: str | os.PathLike, layer: str, shown: dict[int, dict[str, Tensor]], scores: dict) -> Path:
    """Keep a layer's shown images (8-bit) and scores in the site's data folder (a rerun writes nothing)."""
    return generic.save_shown(shown_file(site, layer), shown, scores, layer=layer)


def saved_scores(site: str | os.PathLike, layer: str, shown: dict[int, dict[str, Tensor]]) -> dict | None:
    """The scores kept by an earlier build when it showed exactly these images, else ``None``."""
    return generic.saved_scores(shown_file(site, layer), shown)


def shown_images(site, layer: str, unit: int) -> list[Tensor]:
    """The images the unit's page shows, ``[3, H, W]`` in [0, 1], the one shown first first: the guided image and
    the unguided one where the site had photos to guide with, else the unguided one alone.

    ``site``: a site folder or a :class:`~luminate.microscope.Site`."""
    folder = getattr(site, "path", site)
    path = shown_file(folder, layer)
    if not path.exists():
        renders = getattr(site, "renders", None)
        if renders and int(unit) in renders.get(layer, {}):
            return [renders[layer][int(unit)]["positive"]]
        raise FileNotFoundError(f"no shown images of {layer} in {folder}: build the site with rendered units "
                                f"(luminate microscope ... --render-units)")
    return list(generic.read_shown(path, unit, f"unit {unit} of {layer}")[0].values())


def shown_scores(site, layer: str, unit: int) -> dict:
    """``{name: {"path_score", "ratio", "flagged"}}`` of the images :func:`shown_images` returns."""
    path = shown_file(getattr(site, "path", site), layer)
    return generic.read_shown(path, unit)[1] if path.exists() else {}
