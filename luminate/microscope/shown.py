"""The unit images a Microscope page shows, and their own sanity scores.

Where the photos that drive a unit are at hand, the page shows first a **guided** image: the unit's visualization
pulled, at the blocks below its layer, towards the channel means of its top photos (:class:`luminate.units.Guide`:
the natural-statistics prior of :mod:`luminate.priors`, weight 30, a free mean colour, the natural colour contrast,
render's default transforms, 128 px, 256 steps), and beside it the **unguided** image (the positive visualization,
as before). No score is by construction: the unit's top photos among the site's sample are ranked, ranks 0, 2, 4, 6
guide (``Guide(stride=2)``), and the rest, ranks 1, 3, 5, 7 among them, score both images (Geirhos et al.'s path
score and the activation ratio, :func:`luminate.analysis.sanity.sanity_scores`).

``SITE/data/shown-<layer>.pt`` keeps both images (8-bit, as cached) and their scores;
:func:`shown_images` reads them back, the image the page shows first first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from luminate.cache import atomic_write, dequantize, quantize
from luminate.data.store import layer_key
from luminate.models.base import Model
from luminate.units.render import GUIDED_UNIT_IMAGES, Directions, Guide, render_directions, unit_guide

#: the guided unit images (``docs/quality.md``: median path 0.89 on held-out photos for every 10th unit of lite0
#: ``blocks.9``)
GUIDED_IMAGES = GUIDED_UNIT_IMAGES
#: the names of the shown images, in the order a page shows them
SHOWN = ("guided", "unguided")
#: photos a site needs to guide its unit images (4 to guide, the rest to score)
MIN_PHOTOS = 12


def guide(photos: Tensor) -> Guide:
    """The Microscope's guide (:func:`luminate.units.render.unit_guide`), given at least :data:`MIN_PHOTOS`."""
    if photos.shape[0] < MIN_PHOTOS:
        raise ValueError(f"guided unit images need at least {MIN_PHOTOS} photos (4 to guide, the rest to score), "
                         f"got {photos.shape[0]}")
    return unit_guide(photos)


def render_guided(model: Model, layer: str, units: Sequence[int], photos: Tensor,
                  cache_dir: str | os.PathLike | None = None, batch: int | None = None,
                  progress: bool = False) -> dict[int, Tensor]:
    """``{unit: [3, S, S]}``: each unit's guided image (cached like every direction render)."""
    units = [int(u) for u in units]
    directions = Directions.for_units(layer, units, model.layer_info(layer).channels)
    settings = GUIDED_IMAGES.replace(guide=guide(photos), batch=batch)
    images = render_directions(model, directions, settings, cache=cache_dir, progress=progress)
    return dict(zip(units, images))


def score_shown(model: Model, layer: str, shown: dict[int, dict[str, Tensor]], photos: Tensor) -> dict:
    """``{unit: {name: {"path_score", "ratio", "flagged"}}}``: each shown image scored on ``photos`` less the ones
    that guided the unit."""
    from luminate.analysis.sanity import sanity_scores

    units = sorted(shown)
    used = guide(photos).targets(model, Directions.for_units(layer, units, model.layer_info(layer).channels))
    out: dict[int, dict] = {}
    for u, guiding in zip(units, used):
        keep = torch.ones(photos.shape[0], dtype=torch.bool)
        keep[guiding] = False
        out[u] = {name: sanity_scores(model, layer, [u], photos[keep], visualizations=shown[u][name][None]).score(u)
                  for name in SHOWN if name in shown[u]}   # one call each: the images may differ in size
    return out


def shown_file(site: str | os.PathLike, layer: str) -> Path:
    return Path(site) / "data" / f"shown-{layer_key(layer)}.pt"


def save_shown(site: str | os.PathLike, layer: str, shown: dict[int, dict[str, Tensor]], scores: dict) -> Path:
    """Keep a layer's shown images (8-bit) and scores in the site's data folder."""
    path = shown_file(site, layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"layer": layer, "order": list(SHOWN), "scores": scores,
            "images": {int(u): {name: quantize(im) for name, im in images.items()} for u, images in shown.items()}}
    if path.exists() and _same(torch.load(path, weights_only=True), data):
        return path                 # a rerun of a finished site writes nothing
    return atomic_write(path, lambda f: torch.save(data, f))


def saved_scores(site: str | os.PathLike, layer: str, shown: dict[int, dict[str, Tensor]]) -> dict | None:
    """The scores kept by an earlier build when it showed exactly these images (8-bit), else ``None``: the photos
    are the site's own, so equal images mean equal scores, and a rerun of a finished site scores nothing again."""
    path = shown_file(site, layer)
    if not path.exists():
        return None
    old = torch.load(path, weights_only=True)
    images = old.get("images", {})
    for u, tiles in shown.items():
        kept = images.get(int(u))
        if kept is None or kept.keys() != tiles.keys() or int(u) not in old.get("scores", {}):
            return None
        if not all(torch.equal(kept[n], quantize(t)) for n, t in tiles.items()):
            return None
    return {int(u): old["scores"][int(u)] for u in shown}


def _same(old: dict, new: dict) -> bool:
    if old.get("scores") != new["scores"] or old.get("order") != new["order"]:
        return False
    images = old.get("images", {})
    return images.keys() == new["images"].keys() and all(
        images[u].keys() == tiles.keys() and all(torch.equal(images[u][n], t) for n, t in tiles.items())
        for u, tiles in new["images"].items())


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
    data = torch.load(path, weights_only=True)
    images = data["images"].get(int(unit))
    if images is None:
        raise KeyError(f"unit {unit} of {layer} was not rendered in {folder} (rendered: "
                       f"{sorted(data['images'])[:20]})")
    return [dequantize(images[name]) for name in data["order"] if name in images]


def shown_scores(site, layer: str, unit: int) -> dict:
    """``{name: {"path_score", "ratio", "flagged"}}`` of the images :func:`shown_images` returns."""
    path = shown_file(getattr(site, "path", site), layer)
    return torch.load(path, weights_only=True)["scores"].get(int(unit), {}) if path.exists() else {}
