"""The Microscope's collection: every unit's peak activation per image, streamed once into resumable stores.

For every image and every unit (channel) of the chosen layers, the pass records the unit's **maximum activation
over positions** and where it is (:func:`luminate.units.examples.examples_part`, the examples pass a features site
runs too, here with the identity encoder), with the model's evaluation preprocessing;
:func:`luminate.units.examples.summarize` then merges the shards into per-unit results (top, bottom, quantile
samples, histograms, co-activation).

Class attribution (optional): the unit's attribution to every logit, averaged over the images,
``attr[k] = Σ_{y,x} ∂logit_k/∂a[c,y,x] · a[c,y,x]`` (gradient x activation of the unit's whole map, the linear
estimate of what the unit adds to class ``k``). It is computed with forward-mode AD, one pass of the network per
unit and image, so it runs on an evenly spaced sample of at most ``attribution_images`` images (every
``ceil(N / attribution_images)``-th image; all of them for small sets), and of fewer when many units are
attributed (at most about ``attribution_budget`` unit-image passes in all).

Storage (both are :mod:`luminate.data.store` stores, so shards are written atomically, listed in a manifest only
when complete, never rewritten, and a killed run resumes where it stopped)::

    OUT/examples/      shard k = images [k*S, (k+1)*S): image [R] (index), peak.<layer> [R, C] float32,
                       argmax.<layer> [R, C] int32 (row * W + column in the layer's grid); unreadable
                       images are skipped and named in the manifest
    OUT/attribution/   shard k = the sampled images of the same range: image [R'],
                       attr.<layer> [R', U, n_classes] float32 (U = the units asked for)
    OUT/summary-<layer>.npz   the merged per-unit results (written once the shards are complete)

A shard depends only on the settings and its images (never on the batch size, the worker count or where a
run resumed), so shards can be computed by separate processes, Ray tasks or Ray Data actors
(:func:`luminate.data.passes.stream`). Memory stays at one batch while collecting and one shard while merging.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from luminate.activations import LayerTap
from luminate.analysis.lucid_attribution import unit_attribution  # noqa: F401 (shared with the atlas)
from luminate.data.inputs import Batch, ImageSet, image_set
from luminate.data.passes import stream
from luminate.data.settings import (CollectionSettings, LayerSpec, PassSettings, output_width, parse_units,
                                    resolve_layers, split_options, with_options)
from luminate.data.store import StoreWriter, update_manifest
from luminate.models.base import Model, as_model
from luminate.units.examples import ATTRIBUTION, EXAMPLES, Examples, examples_part

logger = logging.getLogger("luminate.microscope")


@dataclass(frozen=True)
class ExamplesSettings:
    """What a Microscope collection keeps (besides the model, layers, images and units).

    Attributes:
        top_k: examples kept per unit by :func:`~luminate.units.examples.summarize`.
        shard_images: images per shard, the unit of resumption and of parallel work.
        attribution_images: at most this many (evenly spaced) images for class attribution; 0 disables it.
        attribution_budget: at most about this many forward-mode passes (attributed units x sampled images) in
            all: a whole-model run attributing many units samples fewer images (every ``ceil(N U / budget)``-th).
    """

    top_k: int = 9
    shard_images: int = 256
    attribution_images: int = 256
    attribution_budget: int = 512

    def __post_init__(self) -> None:
        if self.shard_images < 1 or self.top_k < 1:
            raise ValueError("batch_size, shard_images and top_k must be at least 1")


def unit_map(specs: Sequence[LayerSpec], units) -> dict[str, list[int]]:
    """``{layer: units}`` from a spec for every layer (``"0:64"``, a list, None: all) or ``{layer: spec}``."""
    return {s.name: parse_units(units.get(s.name, []) if isinstance(units, dict) else units, s.channels)
            for s in specs}


def collect_examples(model: Model | str, images, layers: str | Sequence[str], out,
                     settings: ExamplesSettings | None = None, *, units=None, attribute=True,
                     run: PassSettings | None = None, shards: Iterable[int] | None = None, **options) -> Examples:
    """Stream ``images`` through ``model`` once and record every unit's peak activation per image.

    Args:
        model: a :class:`~luminate.models.Model` or zoo name; images get its evaluation preprocessing.
        images: a folder, a list of paths, a torch ``Dataset`` or an image batch (:func:`luminate.data.image_set`:
            unreadable files are skipped and named).
        layers: layer name(s) with ``[C, H, W]`` (or ``[C]``) outputs; ``"all"``:
            :func:`luminate.data.resolve_layers`.
        out: the data folder (created or resumed).
        settings: :class:`ExamplesSettings` (examples per unit, shard size, attribution sample).
        units: the units to show (given pages): ``"0:64"``, a list, ``{layer: units}``; ``None``: all. Peaks are
            recorded for every unit of the layer regardless.
        attribute: the units attributed to classes (same forms as ``units``); ``True`` (default): the units shown.
        run: how the pass runs (:class:`~luminate.data.PassSettings`: batch size, workers, progress, Ray: a Ray
            Data pipeline by default, one Ray task per shard with ``engine="tasks"``).
        shards: only these shards (a worker's share); default all missing ones.
        options: any field of either settings value by name (``top_k=4, batch_size=8``).

    Returns:
        :class:`~luminate.units.examples.Examples` (complete unless ``shards`` left some out).
    """
    mine, theirs = split_options(options, ExamplesSettings, PassSettings)
    settings, run = with_options(settings, ExamplesSettings, mine), with_options(run, PassSettings, theirs)
    model = as_model(model)
    if not layers:
        raise ValueError("give at least one layer, e.g. layers='blocks.10' (list them with `luminate layers MODEL`)")
    names = resolve_layers(model, layers)   # "all" expanded; unknown names reported before any work
    specs = [LayerSpec.of(model, name) for name in names]
    pages = unit_map(specs, units)
    attributed = pages if attribute is True else {s.name: [] for s in specs} if attribute is False \
        else unit_map(specs, attribute)
    return collect_into(model, image_set(images), specs, out, settings, pages, attributed, run, shards)


def collect_into(model: Model, imageset: ImageSet, specs: Sequence[LayerSpec], out, settings: ExamplesSettings,
                 pages: dict[str, list[int]], attributed: dict[str, list[int]], run: PassSettings,
                 shards: Iterable[int] | None = None) -> Examples:
    """:func:`collect_examples` with everything resolved: the image set, the layers' specs, the units given pages
    and the units attributed (``{layer: units}``)."""
    names = [s.name for s in specs]
    images = imageset
    n_classes = output_width(model)
    n_images = len(imageset)
    n_attributed = sum(len(u) for u in attributed.values())
    every = max(1, math.ceil(n_images / settings.attribution_images),
                math.ceil(n_images * n_attributed / max(settings.attribution_budget, 1))) \
        if settings.attribution_images > 0 and n_attributed else 0
    out = Path(out)
    collection = CollectionSettings.of(model, imageset, names, settings.shard_images, kind="microscope.peaks-v1",
                                       attribution=False)
    info = {"units": pages, "top_k": int(settings.top_k), "attributed": attributed}
    header = collection.header(model, imageset, specs, n_classes, microscope=info)
    examples = StoreWriter(out / EXAMPLES, header, imageset.names(), overwrite=True)
    attribution = None
    if every:
        attr_settings = dict(collection.manifest(), kind="microscope.attribution-v1", units=attributed, every=every,
                             method="grad-x-activation(channel map)")
        attribution = StoreWriter(out / ATTRIBUTION, dict(header, settings=attr_settings), imageset.names(),
                                  overwrite=True)
    # the units and k live outside the settings (they change no shard): recorded, rewritten only when changed
    update_manifest(out / EXAMPLES, "microscope", info)
    done = examples.done() & (attribution.done() if attribution is not None else examples.done())
    wanted = set(range(collection.n_shards)) if shards is None else {int(k) for k in shards}
    todo = sorted(k for k in wanted - done if 0 <= k < collection.n_shards)
    if done and todo:
        logger.info("resuming %s: %d of %d shards already collected", out, len(done), collection.n_shards)
    if todo and run.ray is not None and run.engine == "tasks":
        from luminate.parallel import run_tasks

        worker = PassSettings(batch_size=run.batch_size, num_workers=0, progress=False)
        sizes = [collection.shard_range(k)[1] - collection.shard_range(k)[0] for k in todo]
        run_tasks(_collect_task, [(model, images, names, str(out), settings, pages, attributed, worker, k)
                                  for k in todo],
                  ray=run.ray, num_cpus=run.num_cpus, max_retries=run.max_retries, progress=run.progress,
                  desc="collect", unit="img",
                  weights=sizes, shared={"model": model})
    elif todo:
        shard_writer = ShardWriter(examples, attribution, collection, specs, attributed, n_classes)
        stream(model, imageset, todo, collection.shard_images, PeakWork(tuple(names), attributed, every),
               shard_writer.commit, run)
    return Examples(out)


def _collect_task(model, images, names, out, settings, pages, attributed, run, shard) -> int:
    """One shard, in a worker (idempotent: a finished shard is skipped)."""
    collect_examples(model, images, names, out, settings, units=pages, attribute=attributed, run=run,
                     shards=[shard])
    return shard


@dataclass(frozen=True)
class PeakWork:
    """The Microscope's work on a batch (:class:`luminate.data.passes.BatchWork`): :func:`batch_results`."""

    layers: tuple[str, ...]
    attributed: dict
    every: int

    @contextmanager
    def open(self, model: Model) -> Iterator:
        specs = [LayerSpec.of(model, name) for name in self.layers]
        with model.frozen(), LayerTap(model, list(self.layers), detach=True) as tap:
            yield lambda batch: batch_results(model, tap, specs, batch, self.attributed, self.every)


def batch_results(model: Model, tap: LayerTap, specs: Sequence[LayerSpec], batch: Batch, attributed: dict,
                  every: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch of a collection: ``(examples part, attribution part)`` as numpy arrays, keyed like the shards
    (``image``, ``peak.<key>`` ``[B, C]``, ``argmax.<key>``; ``image``, ``attr.<key>`` ``[B', U, K]`` for the
    images sampled for attribution, every ``every``-th index; empty when ``every`` is 0). Shared by the
    in-process pass and the Ray Data actors, so both write the same shards."""
    indices = batch.indices.numpy()
    images = batch.images.to(model.device, non_blocking=True)
    with torch.no_grad():
        part = examples_part(tap(images), batch.indices, [spec.name for spec in specs])   # units: the channels
    attr_part: dict[str, np.ndarray] = {}
    if every:
        sampled = [j for j, i in enumerate(np.asarray(indices).tolist()) if i % every == 0]
        if sampled:
            chosen = images[sampled]
            attr_part["image"] = np.asarray(indices, dtype=np.int64)[sampled]
            for spec in specs:
                attr = unit_attribution(model, chosen, spec.name, attributed[spec.name])
                attr_part[f"attr.{spec.key}"] = attr.numpy()
    return part, attr_part


class ShardWriter:
    """Keeps the finished shards of a Microscope pass: ``commit(shard, parts, skipped)`` writes the attribution
    shard first, then the examples shard, whose manifest entry marks the pair as done."""

    def __init__(self, examples: StoreWriter, attribution: StoreWriter | None, collection: CollectionSettings,
                 specs: Sequence[LayerSpec], attributed: dict, n_classes: int):
        self.examples, self.attribution, self.collection = examples, attribution, collection
        self.specs, self.attributed, self.n_classes = specs, attributed, n_classes

    def commit(self, shard: int, parts: list[tuple[dict, dict]], skipped: list[tuple[str, str]]) -> None:
        for name, reason in skipped:
            logger.warning("skipping unreadable image %s: %s", name, reason)
        images = self.collection.shard_range(shard)
        if self.attribution is not None:
            self.attribution.write_shard(shard, self._arrays([a for _, a in parts if a], "attr"), images)
        if not self.examples.write_shard(shard, self._arrays([p for p, _ in parts], "peak"), images, skipped):
            logger.info("shard %d was finished by another writer meanwhile; kept that one", shard)

    def _arrays(self, parts: list[dict], kind: str) -> dict[str, np.ndarray]:
        if parts:
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        arrays = {"image": np.zeros(0, np.int64)}
        for spec in self.specs:
            if kind == "peak":
                arrays[f"peak.{spec.key}"] = np.zeros((0, spec.channels), np.float32)
                arrays[f"argmax.{spec.key}"] = np.zeros((0, spec.channels), np.int32)
            else:
                arrays[f"attr.{spec.key}"] = np.zeros((0, len(self.attributed[spec.name]), self.n_classes),
                                                      np.float32)
        return arrays
