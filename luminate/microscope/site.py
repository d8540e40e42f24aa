"""A Microscope run: collection, per-unit summaries and renders for a site folder, ready for the pages.

:func:`build` runs the three resumable stages into ``SITE/data`` (and the render cache):

1. dataset examples (:func:`luminate.microscope.collect_examples`), sharded by images;
2. per-unit summaries (:func:`luminate.microscope.summarize`);
3. feature visualizations of the chosen units that are neither dead nor constant
   (:func:`luminate.microscope.render.render_units`), chunked by units;

and returns a :class:`Site`, which :func:`luminate.views.microscope.write_site` turns into pages. Stages 1 and 3
can run as Ray tasks (``ray="local"`` or an address). A finished stage is skipped, so a rerun of a finished
site computes nothing and (with ``write_site``) rewrites no file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from luminate.analysis.shown import photo_sample
from luminate.activations import LayerTap
from luminate.cache import RenderCache
from luminate.data.inputs import ImageSet, image_set
from luminate.data.settings import (LayerSpec, PassSettings, parse_units, resolve_layers, split_options,
                                    with_options)
from luminate.data.store import SiteInUseError, site_lock  # noqa: F401 (the site lock, named here for readers)
from luminate.images import UnreadableImageError
from luminate.microscope.collect import ExamplesSettings, collect_into, unit_map
from luminate.microscope.render import render_units
from luminate.models.base import Model, as_model
from luminate.units.examples import Examples, summarize

DATA = "data"
logger = logging.getLogger("luminate.microscope")


class Site:
    """Everything the pages of a Microscope site show, computed (or read back) by :func:`build`.

    Attributes:
        path: the site folder; ``examples``: the :class:`~luminate.microscope.Examples`;
        layers: ``[{"name", "key", "channels", "grid", "units"}]``; ``summaries``: ``{layer: summarize(...)}``;
        renders: ``{layer: {unit: {"positive", "negative", "diversity"}}}``; ``settings``: the run's settings;
        stamp: a hash of everything the pages depend on (a rerun with the same stamp writes nothing).
    """

    def __init__(self, path: Path, model: Model, imageset: ImageSet, examples: Examples, layers: list[dict],
                 summaries: dict, renders: dict, settings: dict, sanity: dict | None = None,
                 circuits: dict | None = None, shown: dict | None = None):
        self.path = path
        self.model = model
        self.imageset = imageset
        self.examples = examples
        self.layers = layers
        self.summaries = summaries
        self.renders = renders
        self.settings = settings
        self.sanity = sanity or {}
        self.circuits = circuits or {}   # {upper layer: {"lower", "matrix" [C, C'], "method", "key"}}
        self.shown = shown or {}         # {(layer, unit): {"guided" / "unguided": {"path_score", "ratio", ...}}}
        payload = [sorted(self.shown.items()), settings, {name: str(s["key"]) for name, s in summaries.items()},
                   {layer: sorted(units) for layer, units in renders.items()}, sorted(self.sanity.items()),
                   {layer: c.get("key") for layer, c in self.circuits.items()}]
        self.stamp = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]

    @property
    def model_name(self) -> str:
        return self.model.name

    def status(self, layer: str, unit: int) -> str:
        s = self.summaries[layer]
        return "dead" if s["dead"][unit] else "constant" if s["constant"][unit] else "ok"

    def classes(self, layer: str, unit: int, n: int = 6) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The classes the unit raises most and lowers most: ``([(class, mean attribution)], [...])``."""
        s = self.summaries[layer]
        where = np.nonzero(s["attr_units"] == unit)[0]
        if not len(where) or int(s["attr_count"]) == 0:
            return [], []
        row = s["attr_mean"][where[0]]
        labels = self.model.labels

        def name(k) -> str:   # the first synonym: "dock, dockage, docking facility" -> "dock"
            return str(labels[int(k)]).split(",")[0].strip() if labels is not None else f"class {int(k)}"
        order = np.argsort(-row, kind="stable")
        raised = [(name(k), float(row[k])) for k in order[:n] if row[k] > 0]
        lowered = [(name(k), float(row[k])) for k in order[::-1][:n] if row[k] < 0]
        return raised, lowered

    def similar(self, layer: str, unit: int, n: int = 8) -> list[tuple[int, float]]:
        s = self.summaries[layer]
        return [(int(v), float(c)) for v, c in zip(s["similar_units"][unit][:n], s["similar_corr"][unit][:n])
                if v >= 0 and c > 0]

    def has_page(self, layer: str, unit: int) -> bool:
        return unit in self._page_units(layer)

    def _page_units(self, layer: str) -> set[int]:
        cache = self.__dict__.setdefault("_pages", {})
        if layer not in cache:
            cache[layer] = set(next((l["units"] for l in self.layers if l["name"] == layer), []))
        return cache[layer]

    def rendered(self, layer: str) -> list[int]:
        """The units of ``layer`` with feature visualizations."""
        return sorted(self.renders.get(layer, {}))

    def examples_of(self, layer: str, unit: int, which: str = "top") -> list[dict]:
        """``Examples.top_examples(layer, unit, which=...)`` of this site."""
        return self.examples.top_examples(layer, unit, which=which)

    def inputs(self, layer: str, unit: int, k: int = 8) -> list[dict]:
        """The strongest units of the layer below (:mod:`luminate.microscope.circuits`), with ``"page"``: whether
        they have a page in this site."""
        from luminate.microscope.circuits import _ranked

        c = self.circuits.get(layer)
        if c is None:
            return []
        return [dict(e, page=self.has_page(e["layer"], e["unit"])) for e in _ranked(c["lower"], c["matrix"][unit], k)]

    def outputs(self, layer: str, unit: int, k: int = 8) -> list[dict]:
        """The units of the layer above that this unit drives most (same form as :meth:`inputs`)."""
        from luminate.microscope.circuits import _ranked

        for upper, c in self.circuits.items():
            if c["lower"] == layer:
                return [dict(e, page=self.has_page(e["layer"], e["unit"]))
                        for e in _ranked(upper, c["matrix"][:, unit], k)]
        return []

    def circuit_method(self, layer: str) -> str | None:
        c = self.circuits.get(layer)
        return c["method"] if c is not None else None

    def histogram(self, layer: str, unit: int) -> dict:
        s = self.summaries[layer]
        return {"counts": s["hist_counts"][unit], "edges": s["hist_edges"][unit], "firing": float(s["firing"][unit]),
                "mean": float(s["mean"][unit]), "std": float(s["std"][unit]), "n_images": int(s["n_images"])}

    def unit_data(self, layer: str, units: Sequence[int], batch_size: int = 16) -> Iterator[dict]:
        """Per-unit page data of rendered units (see :func:`luminate.views.microscope.unit_page`), computed a few
        units at a time: the top examples' preprocessed images and the unit's activation map on each (one forward
        pass per image, to the layer only). Pages of other units are drawn from thumbnails instead."""
        info = next(l for l in self.layers if l["name"] == layer)
        units = list(units)
        for start in range(0, len(units), batch_size):
            chunk = units[start:start + batch_size]
            tops = {u: self.examples.top_examples(layer, u) for u in chunk}
            wanted = sorted({t["index"] for u in chunk for t in tops[u]})
            pictures: dict[int, torch.Tensor] = {}
            for i in wanted:
                try:
                    pictures[i] = self.imageset.load(i, self.model.contract)
                except (UnreadableImageError, OSError):   # the file changed since collection: leave it out
                    continue
            maps = self._maps(layer, pictures)
            for u in chunk:
                raised, lowered = self.classes(layer, u)
                examples = [{"name": self.examples.image_name(t["index"]), "value": t["value"], "y": t["y"],
                             "x": t["x"], "picture": pictures[t["index"]], "map": maps[t["index"]][u]}
                            for t in tops[u] if t["index"] in pictures]
                yield {"unit": u, "status": self.status(layer, u), "images": self.renders[layer].get(u),
                       "examples": examples, "hist": self.histogram(layer, u), "raised": raised, "lowered": lowered,
                       "similar": [(v, c, self.has_page(layer, v)) for v, c in self.similar(layer, u)],
                       "sanity": self.sanity.get((layer, u)), "grid": info["grid"],
                       "shown": self.shown.get((layer, u))}

    def thumbnail(self, index: int, size: int = 112) -> torch.Tensor | None:
        """Image ``index`` as the model saw it (preprocessed), ``[3, size, size]``; None when it cannot be read."""
        try:
            picture = self.imageset.load(int(index), self.model.contract)
        except (UnreadableImageError, OSError):
            return None
        return torch.nn.functional.interpolate(picture[None], size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0].clamp(0, 1)

    def _maps(self, layer: str, pictures: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """``{image index: activation [C, h, w]}`` of ``layer`` (CPU)."""
        if not pictures:
            return {}
        keys = list(pictures)
        out = {}
        with torch.no_grad(), self.model.frozen(), LayerTap(self.model, [layer], detach=True) as tap:
            for start in range(0, len(keys), 32):
                part = keys[start:start + 32]
                act = tap(torch.stack([pictures[i] for i in part]).to(self.model.device))[layer].cpu()
                if act.ndim == 2:
                    act = act[:, :, None, None]
                out.update(zip(part, act))
        return out


@dataclass(frozen=True)
class MicroscopeSettings:
    """What a Microscope site shows and how its units are drawn (the collection's own settings are derived from it).

    Attributes:
        units: the units given pages (``"0:64"``, a list, ``None``: all); peaks, histograms, examples, similarity
            and inputs cover every unit of the layer.
        render: the units visualized and attributed to classes, per layer, among those with pages: a spec
            (``"0:2"``, a list), ``"all"``, ``"none"``, or ``"auto"`` (default): every page unit when there are at
            most ``render_budget`` of them, else the first ``ceil(render_budget / layers)`` of each layer.
        circuit_images: images (evenly spaced) for the gradient x activation inputs of non-linear connections;
            0: no inputs.
        top_k: dataset examples per unit. steps, size, seed: feature-visualization settings.
        shard_images, attribution_images: see :class:`~luminate.microscope.collect.ExamplesSettings`.
        units_per_batch: units rendered together (``6 x`` as many images per batch).
        cache_dir: the unit render cache (default: Luminate's render cache, ``$LUMINATE_CACHE/renders``).
        sanity: show Geirhos et al.'s sanity check of each unit's visualization on its page (the path score of
            :mod:`luminate.analysis.sanity`, when that module is available).
        guided: render each rendered unit's guided image (shown first) from half of the sampled photos and score
            both images on the other half (:mod:`luminate.microscope.shown`).
    """

    units: str | Sequence[int] | None = "0:64"
    render: str | Sequence[int] | None = "auto"
    render_budget: int = 64
    circuit_images: int = 8
    top_k: int = 9
    steps: int = 256
    size: int = 96
    seed: int = 0
    shard_images: int = 256
    attribution_images: int = 256
    units_per_batch: int = 8
    cache_dir: str | os.PathLike | None = None
    sanity: bool = False
    guided: bool = True

    @property
    def examples(self) -> ExamplesSettings:
        return ExamplesSettings(top_k=self.top_k, shard_images=self.shard_images,
                                attribution_images=self.attribution_images)


def build(model: Model | str, images, out: str | os.PathLike, settings: MicroscopeSettings | None = None, *,
          layers: str | Sequence[str] | None = None, run: PassSettings | None = None, **options) -> Site:
    """Collect, summarize and render everything a Microscope site of ``model`` over ``images`` shows.

    Args:
        model: a Model or zoo name. images: a folder, list of paths, Dataset or image batch.
        out: the site folder (its ``data`` subfolder holds the collection; resumed when it exists).
        settings: :class:`MicroscopeSettings` (units with pages, units rendered, examples, visualizations).
        layers: layer name(s); ``"all"``: every layer of the model's layer-by-layer list (stem, blocks, head);
            default the model's visualization layer. Unknown names stop the run before any work.
        run: how the passes run (:class:`~luminate.data.PassSettings`): ``batch_size``, ``num_workers``,
            ``progress``; ``ray`` (``None`` in-process, ``"local"`` or a Ray address: the collection runs on Ray
            Data and render chunks become Ray tasks) and ``num_cpus`` (CPUs of a local Ray instance).
        options: any field of either settings value by name (``units=None, render="0:2", batch_size=16``).
    """
    mine, theirs = split_options(options, MicroscopeSettings, PassSettings)
    settings, run = with_options(settings, MicroscopeSettings, mine), with_options(run, PassSettings, theirs)
    model = as_model(model)
    names = resolve_layers(model, layers)   # a typo stops here, before any folder or work
    with site_lock(out):   # one run at a time owns the site
        if run.ray is None:
            return _build(model, image_set(images), out, names, settings, run)
        from luminate.parallel import RayContext

        with RayContext(run.ray, run.num_cpus):   # one Ray instance for every stage (each would otherwise start its own)
            return _build(model, image_set(images), out, names, settings, run)


def render_plan(page_units: dict[str, list[int]], render, budget: int = 64) -> tuple[dict[str, list[int]], str]:
    """``({layer: units to render}, description)`` for ``render`` (see :func:`build`), within the page units."""
    total = sum(len(u) for u in page_units.values())
    if isinstance(render, str) and render.strip().lower() == "auto":
        if total <= budget:
            return dict(page_units), f"all {total} units with pages (within the default budget of {budget})"
        each = max(1, -(-budget // max(len(page_units), 1)))
        plan = {layer: units[:each] for layer, units in page_units.items()}
        n = sum(len(u) for u in plan.values())
        return plan, (f"{n} of {total} units: the first {each} of each layer (default budget {budget}; choose with "
                      "--render-units SPEC|all|none)")
    if render is None or (isinstance(render, str) and render.strip().lower() == "none"):
        return {layer: [] for layer in page_units}, f"none of {total} units (--render-units none)"
    if isinstance(render, str) and render.strip().lower() == "all":
        return dict(page_units), f"all {total} units with pages"
    plan = {}
    for layer, units in page_units.items():
        wanted = set(parse_units(render, max(units) + 1 if units else 0)) if isinstance(render, str) \
            else {int(u) for u in render}
        plan[layer] = [u for u in units if u in wanted]
    n = sum(len(u) for u in plan.values())
    return plan, f"{n} of {total} units ({render} of each layer)"


def _build(model: Model, imageset: ImageSet, out, names: list[str], settings: MicroscopeSettings,
           run: PassSettings) -> Site:
    out = Path(out)
    data = out / DATA
    specs = [LayerSpec.of(model, name) for name in names]
    page_units = unit_map(specs, settings.units)
    plan, render_note = render_plan(page_units, settings.render, settings.render_budget)
    logger.warning("luminate microscope: rendering %s", render_note)
    examples = collect_into(model, imageset, specs, data, settings.examples, page_units, unit_map(specs, plan), run)
    if not examples.complete:
        raise RuntimeError(f"the collection in {data} is incomplete after running; run again to finish it")
    summaries = {name: summarize(data, name) for name in names}
    if all(int(s["n_images"]) == 0 for s in summaries.values()):
        reasons = "; ".join(f"{n}: {r}" for n, r in examples.skipped[:3])
        raise ValueError(f"none of the {len(imageset)} images could be read ({reasons}); check the image set")
    cache_dir = RenderCache(settings.cache_dir).folder
    layer_info = [dict(examples.store.layer_info(name), units=examples.units(name)) for name in names]
    renders = _renders(model, names, plan, summaries, settings, cache_dir, run)
    shown = _shown(model, out, renders, imageset, examples, settings, cache_dir, run) if settings.guided else {}
    s = settings
    site_settings = {"model": model.name, "weights": model.weights_fingerprint(), "input": model.contract.describe(),
                     "layers": ", ".join(names), "top examples": s.top_k, "visualizations":
                         f"{s.size} px, {s.steps} steps, seed {s.seed}, {s.units_per_batch} units per batch",
                     "shown first": ("guided by half of each unit's top photos (ranks 0, 2, 4, 6), scored on the "
                                     "others" if s.guided else "the unguided visualization"),
                     "rendered units": render_note, "render cache": str(cache_dir),
                     "class attribution": f"gradient x activation, mean over "
                                          f"{int(next(iter(summaries.values()))['attr_count'])} images"}
    circuits = {}
    if s.circuit_images > 0 and len(names) > 1:
        from luminate.microscope.circuits import compute_circuits

        sample = photo_sample(model, imageset, [name for name, _ in examples.skipped], limit=s.circuit_images)
        circuits = compute_circuits(model, data, names, sample,
                                    fingerprint=f"{imageset.fingerprint()}:{s.circuit_images}", progress=run.progress)
        methods = sorted({c["method"] for c in circuits.values()})
        site_settings["inputs"] = f"{', '.join(methods)} (gradient x activation over {len(sample)} images)"
    scores = (_sanity_scores(model, renders, photo_sample(model, imageset, [name for name, _ in examples.skipped]))
              if s.sanity else None)
    return Site(out, model, imageset, examples, layer_info, summaries, renders, site_settings, scores, circuits, shown)


def _shown(model: Model, out: Path, renders: dict, imageset: ImageSet, examples: Examples,
           settings: MicroscopeSettings, cache_dir, run: PassSettings) -> dict:
    """``{(layer, unit): {name: scores}}``: each rendered unit's guided image (added to ``renders`` as ``"guided"``)
    and the scores of the guided and unguided images on the photos held out from the guide
    (:mod:`luminate.microscope.shown`); saved beside the site's data."""
    from luminate.analysis.shown import can_guide
    from luminate.microscope.shown import MIN_PHOTOS, render_guided, save_shown, saved_scores, score_shown

    photos = photo_sample(model, imageset, [name for name, _ in examples.skipped])
    if photos.shape[0] < MIN_PHOTOS:
        logger.warning("luminate microscope: %d photos are too few to guide unit images (%d needed); the pages show "
                       "the unguided images", photos.shape[0], MIN_PHOTOS)
        return {}
    out_scores = {}
    for layer, rendered in renders.items():
        if not rendered:
            continue
        if not can_guide(model, layer):
            logger.warning("luminate microscope: %s has no block below it to guide its unit images along; its pages "
                           "show the unguided images", layer)
            continue
        guided = render_guided(model, layer, sorted(rendered), photos, cache_dir, batch=settings.units_per_batch,
                               progress=run.progress)
        shown = {u: {"guided": guided[u], "unguided": rendered[u]["positive"]} for u in sorted(rendered)}
        scores = saved_scores(out, layer, shown) or score_shown(model, layer, shown, photos)
        save_shown(out, layer, shown, scores)
        for u in shown:
            rendered[u]["guided"] = guided[u]
            out_scores[(layer, u)] = scores[u]
    return out_scores


def _renders(model: Model, names: list[str], plan: dict, summaries: dict, settings: MicroscopeSettings, cache_dir,
             run: PassSettings) -> dict:
    """``{layer: {unit: images}}``: the visualizations of the planned units that are neither dead nor constant
    (``[C]`` layers get none)."""
    renders = {}
    for name in names:
        s = summaries[name]
        alive = [u for u in plan[name] if not (s["dead"][u] or s["constant"][u])]
        if alive and len(model.layer_info(name).shape) == 3:
            renders[name] = render_units(model, name, alive, size=settings.size, steps=settings.steps,
                                         seed=settings.seed, units_per_batch=settings.units_per_batch,
                                         cache_dir=cache_dir, ray=run.ray, num_cpus=run.num_cpus,
                                         progress=run.progress)
        else:
            renders[name] = {}
    return renders


def _first_shown(images: dict) -> torch.Tensor:
    """The image a unit page shows first: the guided one when there is one."""
    return images["guided"] if images.get("guided") is not None else images["positive"]


def _sanity_scores(model: Model, renders: dict, images) -> dict | None:
    """``{(layer, unit): text}``: Geirhos et al.'s path check of the visualization each rendered unit's page shows first
    (:func:`luminate.analysis.sanity.sanity_scores`) when that module is available; None otherwise."""
    try:
        from luminate.analysis.sanity import sanity_scores
    except ImportError:
        return None
    out = {}
    for layer, rendered in renders.items():
        units = sorted(rendered)
        if not units:
            continue
        report = sanity_scores(model, layer, units, images,
                               visualizations=torch.stack([_first_shown(rendered[u]) for u in units]))
        for i, unit in enumerate(units):
            score = report.score(unit)
            text = f"path score {score['path_score']:.2f}, activation ratio {score['ratio']:.2f}"
            reasons = report.reasons(i)
            out[(layer, unit)] = text + (f" (flagged: {'; '.join(reasons)})" if reasons else " (passes)")
    return out
