"""The images a page shows first for a direction (a unit, a feature), and their own sanity scores.

Where the photos that drive a direction are at hand, a page shows first a **guided** image: the direction's
visualization pulled, at the blocks below its layer, towards the channel means of its top photos
(:class:`luminate.units.Guide`: the natural-statistics prior of :mod:`luminate.priors`, weight 30, a free mean colour,
the natural colour contrast, render's default transforms, 128 px, 256 steps), and beside it the **unguided** image
(the plain visualization). No score is by construction: the direction's top photos among the sample are ranked,
ranks 0, 2, 4, 6 guide (``Guide(stride=2)``), and the others score both images (Geirhos et al.'s path score and the
activation ratio, :func:`luminate.analysis.sanity.direction_scores`).

One file per page set keeps both images (8-bit, as cached) and their scores, keyed by item (a unit, a feature):
:func:`save_shown`, :func:`saved_scores` (a rerun of unchanged images scores nothing again), :func:`read_shown`.
The Microscope (:mod:`luminate.microscope.shown`) and the features site use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from luminate.cache import atomic_write, dequantize, quantize
from luminate.data.inputs import ImageSet
from luminate.images import UnreadableImageError
from luminate.models.base import Model
from luminate.units.render import GUIDED_UNIT_IMAGES, Directions, Guide, render_directions, unit_guide

#: the guided images (``docs/quality.md``: median path 0.89 on held-out photos for every 10th unit of lite0
#: ``blocks.9``)
GUIDED_IMAGES = GUIDED_UNIT_IMAGES
#: the names of the shown images, in the order a page shows them
SHOWN = ("guided", "unguided")
#: photos needed to guide (4 guide, the rest score)
MIN_PHOTOS = 12


def photo_sample(model: Model, imageset: ImageSet, skipped: Sequence[str] = (), limit: int = 64) -> Tensor:
    """Up to ``limit`` evenly spaced readable images of the set (``skipped``: names a pass could not read),
    preprocessed: ``[N, 3, H, W]`` in [0, 1] (``N`` may be 0)."""
    skipped = set(skipped)
    readable = [i for i in range(len(imageset)) if imageset.name(i) not in skipped]
    step = max(1, len(readable) // limit)
    pictures = []
    for i in readable[::step][:limit]:
        try:
            pictures.append(imageset.load(i, model.contract))
        except (UnreadableImageError, OSError, ValueError):
            continue
    return torch.stack(pictures) if pictures else torch.zeros(0, 3, *model.size)


def guide(photos: Tensor) -> Guide:
    """The pages' guide (:func:`luminate.units.render.unit_guide`), given at least :data:`MIN_PHOTOS` photos."""
    if photos.shape[0] < MIN_PHOTOS:
        raise ValueError(f"guided images need at least {MIN_PHOTOS} photos (4 to guide, the rest to score), "
                         f"got {photos.shape[0]}")
    return unit_guide(photos)


def can_guide(model: Model, layer: str) -> bool:
    """Whether ``layer``'s images can be guided: the natural-path guide compares the blocks computed before the layer
    (:func:`luminate.priors.blocks_below`), so the model's first block (a stem) has nothing to compare."""
    from luminate.priors import blocks_below

    return bool(blocks_below(model, layer))


def render_guided(model: Model, directions: Directions, photos: Tensor, cache_dir: str | os.PathLike | None = None,
                  batch: int | None = None, progress: bool = False) -> list[Tensor]:
    """Each direction's guided image ``[3, S, S]``, in order (cached like every direction render)."""
    settings = GUIDED_IMAGES.replace(guide=guide(photos), batch=batch)
    return list(render_directions(model, directions, settings, cache=cache_dir, progress=progress))


def score_shown(model: Model, directions: Directions, shown: Sequence[dict[str, Tensor]], photos: Tensor) -> list[dict]:
    """``[{name: {"path_score", "ratio", "flagged"}}]``, one per direction: each of its shown images scored on
    ``photos`` less the ones that guided it."""
    from luminate.analysis.sanity import direction_scores

    used = guide(photos).targets(model, directions)
    out = []
    for i, guiding in enumerate(used):
        keep = torch.ones(photos.shape[0], dtype=torch.bool)
        keep[guiding] = False
        vector = directions.vectors[i:i + 1]
        out.append({name: direction_scores(model, directions.layer, vector, photos[keep],
                                           shown[i][name][None]).score(0)
                    for name in SHOWN if name in shown[i]})   # one call each: the images may differ in size
    return out


def save_shown(path: Path, shown: dict[int, dict[str, Tensor]], scores: dict, **meta) -> Path:
    """Keep shown images (8-bit) and scores, ``{item: ...}``, in ``path``; ``meta`` (the layer, ...) is kept beside.
    A rerun with the same images and scores writes nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**meta, "order": list(SHOWN), "scores": scores,
            "images": {int(u): {name: quantize(im) for name, im in images.items()} for u, images in shown.items()}}
    if path.exists() and _same(torch.load(path, weights_only=True), data):
        return path
    return atomic_write(path, lambda f: torch.save(data, f))


def saved_scores(path: Path, shown: dict[int, dict[str, Tensor]]) -> dict | None:
    """The scores kept in ``path`` when it holds exactly these images (8-bit), else ``None``: the photos are the
    site's own, so equal images mean equal scores."""
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


def read_shown(path: Path, item: int, what: str = "item") -> tuple[dict[str, Tensor], dict]:
    """The images kept for ``item`` in ``path``, ``{name: [3, H, W]}`` in [0, 1] in the order a page shows them
    (the one shown first first), and their scores. Raises KeyError naming the items kept when ``item`` is not among
    them."""
    data = torch.load(path, weights_only=True)
    images = data["images"].get(int(item))
    if images is None:
        raise KeyError(f"{what} {item} has no shown images in {path} (kept: {sorted(data['images'])[:20]})")
    return ({name: dequantize(images[name]) for name in data["order"] if name in images},
            data["scores"].get(int(item), {}))


def _same(old: dict, new: dict) -> bool:
    if old.get("scores") != new["scores"] or old.get("order") != new["order"]:
        return False
    images = old.get("images", {})
    return images.keys() == new["images"].keys() and all(
        images[u].keys() == tiles.keys() and all(torch.equal(images[u][n], t) for n, t in tiles.items())
        for u, tiles in new["images"].items())
