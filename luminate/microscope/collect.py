"""Dataset examples of every unit: one streaming pass over an image set into sharded, resumable stores.

For every image and every unit (channel) of the chosen layers, the pass records the unit's **maximum
activation over positions** and where it is (the arg-max position), with the model's evaluation
preprocessing. Per-unit results are then merged from the shards (:func:`summarize`):

* the top-k images by that maximum, best first, with the arg-max position (ties: the lower image index);
* the bottom-k images: the *lowest* maxima (the most negative, for units that go negative), lowest first;
* quantile samples: ``samples`` images from each of ``strata`` activation strata (by default 5 from each fifth of
  the distribution of maxima). The strata edges are the 20/40/60/80 % quantiles read from a fine (256-bin)
  histogram of a second streaming pass, so they are exact to 1/256 of the unit's range; a third pass keeps, per
  stratum, the images with the smallest pseudo-random priority (a hash of image index and unit): a streamed,
  stratified reservoir sample that depends on neither the shard size, the batch size nor the worker count;
* a histogram of the maxima over the image set, the fraction of images where the unit fires (maximum
  above zero), mean / spread, and flags for **dead** units (never above zero) and **constant** units
  (the same maximum on every image);
* co-activation similarity: the correlation, over images, of two units' maxima (units of one layer);
* class attribution (optional, ``units``): the unit's attribution to every logit, averaged over the images,
  ``attr[k] = Σ_{y,x} ∂logit_k/∂a[c,y,x] · a[c,y,x]`` (gradient x activation of the unit's whole map, the
  linear estimate of what the unit adds to class ``k``). It is computed with forward-mode AD, one pass of the
  network per unit and image, so it runs on an evenly spaced sample of at most ``attribution_images``
  images (every ``ceil(N / attribution_images)``-th image; all of them for small sets), and of fewer when many
  units are attributed (at most about ``attribution_budget`` unit-image passes in all).

Storage (both are :mod:`luminate.atlas.store` stores, so shards are written atomically, listed in a manifest
only when complete, never rewritten, and a killed run resumes where it stopped)::

    OUT/examples/      shard k = images [k*S, (k+1)*S): image [R] (index), peak.<layer> [R, C] float32,
                       argmax.<layer> [R, C] int32 (row * W + column in the layer's grid); unreadable
                       images are skipped and named in the manifest
    OUT/attribution/   shard k = the sampled images of the same range: image [R'],
                       attr.<layer> [R', U, n_classes] float32 (U = the units asked for)
    OUT/summary-<layer>.npz   the merged per-unit results (written once the shards are complete)

A shard depends only on the settings and its images (never on the batch size, the worker count or where a
run resumed), so shards can be computed by separate processes or Ray tasks (:mod:`luminate.parallel`).
Memory stays at one batch while collecting and one shard while merging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from luminate.activations import LayerTap
from luminate.analysis.lucid_attribution import unit_attribution  # noqa: F401 (shared with the atlas)
from luminate.atlas.collect import _LayerSpec, _output_width
from luminate.atlas.imageset import DatasetImages, ImageFolder, ImageSet, image_loader, image_set, shard_batches
from luminate.atlas.store import ActivationStore, StoreWriter
from luminate.cache import atomic_write, load_keyed_npz, save_keyed_npz
from luminate.models.base import Model, as_model

logger = logging.getLogger("luminate.microscope")

EXAMPLES = "examples"
ATTRIBUTION = "attribution"
SUMMARY_VERSION = 2
#: activation strata of the quantile samples, and images kept per stratum
STRATA = 5
SAMPLES = 5
FINE_BINS = 256
WHICH = ("top", "bottom", "quantiles")


def parse_units(spec: str | Sequence[int] | range | None, channels: int) -> list[int]:
    """Unit indices from ``"0:64"`` (a slice, clipped to the layer), ``"3,7,9"``, a list or range; ``None``: all."""
    if spec is None:
        return list(range(channels))
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                parts = [int(p) if p.strip() else None for p in text.split(":")]
                if len(parts) > 3:
                    raise ValueError
                return list(range(channels))[slice(*parts)]
            units = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"units {spec!r}: give a slice like 0:64 or a list like 3,7,9") from None
    else:
        units = [int(u) for u in spec]
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise IndexError(f"unit {bad[0]} is out of range for a layer with {channels} channels (0..{channels - 1})")
    return sorted(dict.fromkeys(units))


def resolve_layers(model, layers: str | Sequence[str] | None) -> list[str]:
    """The layer names of a run, checked against ``model`` before any work starts.

    ``None``: the model's default layer; ``"all"`` (or ``["all"]``): every layer of its layer-by-layer list
    (:meth:`~luminate.models.Model.default_layers`: stem, each block, head, in forward order); otherwise the
    names given, in order without repeats. Every unknown name is reported at once, with the closest names.
    """
    import difflib

    model = as_model(model)
    if layers is None:
        from luminate.recipes import default_layer

        return [default_layer(model)]
    names = [layers] if isinstance(layers, str) else list(layers)
    if [n.strip().lower() for n in names] == ["all"]:
        names = model.default_layers()
        if not names:
            names = [info.name for info in model.layers() if len(info.shape) == 3]
        if not names:
            raise ValueError(f"{model.name} has no [C, H, W] layers to show; name layers with --layers")
        return names
    names = list(dict.fromkeys(names))
    known = [info.name for info in model.layers()]
    bad = []
    for name in names:
        try:
            model.layer_info(name)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            bad.append(f"{name!r}" + (f" (closest: {', '.join(close)})" if close else f" ({exc})"))
    if bad:
        raise ValueError(f"unknown layer(s) for {model.name}: {'; '.join(bad)}. List the layers with "
                         f"`luminate layers {model.name}`, or give --layers all")
    return names


class Examples:
    """The collected examples of a Microscope run, read from ``OUT`` (a site's ``data`` folder).

    ``examples.top_examples(layer, unit)`` lists the unit's best images; ``examples.summary(layer)`` holds every
    per-unit result as numpy arrays (see :func:`summarize`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.store = ActivationStore(self.path / EXAMPLES)
        self.attribution = (ActivationStore(self.path / ATTRIBUTION)
                            if (self.path / ATTRIBUTION / "manifest.json").is_file() else None)
        self._summaries: dict[str, dict] = {}

    @property
    def layers(self) -> list[str]:
        return self.store.layers

    @property
    def complete(self) -> bool:
        return self.store.complete and (self.attribution is None or self.attribution.complete)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.store.skipped

    @property
    def top_k(self) -> int:
        return int(self.store.manifest["microscope"]["top_k"])

    def units(self, layer: str) -> list[int]:
        """The units the run was asked about (given pages)."""
        return list(self.store.manifest["microscope"]["units"][layer])

    def attributed(self, layer: str) -> list[int]:
        """The units attributed to classes (by default the units given pages)."""
        info = self.store.manifest["microscope"]
        return list(info.get("attributed", info["units"])[layer])

    def image_name(self, index: int) -> str:
        return self.store.image_names()[int(index)]

    def image_path(self, index: int) -> str:
        """The original file of image ``index`` (its name when it came from a Dataset)."""
        path = self.store.image_path(index)
        return str(path) if path is not None else self.image_name(index)

    def summary(self, layer: str) -> dict:
        if layer not in self._summaries:
            self._summaries[layer] = summarize(self.path, layer, write=False)
        return self._summaries[layer]

    def top_examples(self, layer: str, unit: int, k: int | None = None, which: str = "top") -> list[dict]:
        """``[{"image", "value", "y", "x", "index"}]``: the unit's images, the value of its maximum over positions
        and the position of that maximum (row ``y``, column ``x`` in the layer's grid).

        ``which``: ``"top"`` the strongest first; ``"bottom"`` the lowest maxima first (most negative);
        ``"quantiles"`` the stratified samples across the range, lowest first, each with its ``"stratum"``
        (0 = the lowest fifth) and ``"quantile"`` range ``(lo, hi)``.
        """
        if which not in WHICH:
            raise ValueError(f"which={which!r}: one of {', '.join(WHICH)}")
        s = self.summary(layer)
        channels = s["top_values"].shape[0]
        if not 0 <= int(unit) < channels:
            raise IndexError(f"unit {unit} is out of range for layer {layer!r} ({channels} units, 0..{channels - 1})")
        width = int(s["grid"][1])
        prefix = {"top": "top", "bottom": "bottom", "quantiles": "quant"}[which]
        rows = zip(s[f"{prefix}_values"][unit], s[f"{prefix}_images"][unit], s[f"{prefix}_argmax"][unit])
        out = []
        for j, (value, index, flat) in enumerate(rows):
            if index < 0:
                if which == "quantiles":
                    continue
                break
            item = {"image": self.image_path(int(index)), "value": float(value), "y": int(flat) // width,
                    "x": int(flat) % width, "index": int(index)}
            if which == "quantiles":
                stratum = int(s["quant_stratum"][unit][j])
                strata = int(s["quant_strata"])
                item.update(stratum=stratum, quantile=(stratum / strata, (stratum + 1) / strata))
            out.append(item)
        return out[:k] if k is not None else out

    def __repr__(self) -> str:
        return f"Examples({str(self.path)!r}, layers={self.layers}, images={self.store.n_images})"


def open_examples(site_or_store: str | os.PathLike | Examples) -> Examples:
    """:class:`Examples` from a Microscope site folder, its ``data`` folder, or the ``examples`` store itself."""
    if isinstance(site_or_store, Examples):
        return site_or_store
    path = Path(site_or_store).expanduser()
    for candidate in (path / "data", path, path.parent):
        if (candidate / EXAMPLES / "manifest.json").is_file():
            return Examples(candidate)
    raise FileNotFoundError(f"{path} holds no Microscope examples (no data/{EXAMPLES}/manifest.json): build a site "
                            "with `luminate microscope MODEL IMAGES -o SITE` or luminate.microscope.build_site")


def top_examples(site_or_store: str | os.PathLike | Examples, layer: str, unit: int, k: int | None = None,
                 which: str = "top") -> list[dict]:
    """The images that excite ``unit`` of ``layer`` most, best first: ``[{"image", "value", "y", "x", "index"}]``.

    ``image`` is the original file path (or ``dataset[i]``), ``value`` the unit's maximum activation over
    positions in that image, ``(y, x)`` where that maximum is, in the layer's grid. ``which="bottom"``: the
    images with the lowest maxima, lowest first; ``which="quantiles"``: samples from each activation stratum,
    lowest first (with ``"stratum"`` and ``"quantile"``; see the module docstring for how they are drawn).
    """
    return open_examples(site_or_store).top_examples(layer, unit, k, which)


def layers(site_or_store: str | os.PathLike | Examples) -> list[tuple[str, int]]:
    """``[(layer, number of units)]`` of a collected site, in forward order."""
    examples = open_examples(site_or_store)
    return [(info["name"], int(info["channels"])) for info in examples.store.manifest["layers"]]


# ----- collection ------------------------------------------------------------------------------------------------


def collect_examples(model, images, layers: str | Sequence[str], out_dir: str | os.PathLike, *,
                     units: str | Sequence[int] | dict | None = None, top_k: int = 9, batch_size: int = 32,
                     shard_images: int = 256, attribution_images: int = 256, attribution_budget: int = 512,
                     progress: bool = True,
                     num_workers: int | None = None, shards: Iterable[int] | None = None, ray: str | None = None,
                     num_cpus: int | None = None, attribute: str | Sequence[int] | dict | None | bool = True,
                     ray_engine: str = "data") -> Examples:
    """Stream ``images`` through ``model`` once and record every unit's peak activation per image.

    Args:
        model: a :class:`~luminate.models.Model`, zoo name or module; images get its evaluation preprocessing.
        images: a folder, a list of paths, a torch ``Dataset`` or an image batch (the atlas's image sets:
            unreadable files are skipped and named).
        layers: layer name(s) with ``[C, H, W]`` (or ``[C]``) outputs; ``"all"``: :func:`resolve_layers`.
        out_dir: the data folder (created or resumed).
        units: the units to show (given pages): ``"0:64"``, a list, ``{layer: units}``; ``None``: all. Peaks are
            recorded for every unit of the layer regardless.
        attribute: the units attributed to classes (same forms as ``units``); ``True`` (default): the units shown.
        top_k: examples kept per unit by :func:`summarize`.
        batch_size: images per forward pass (results do not depend on it).
        shard_images: images per shard, the unit of resumption and of parallel work.
        attribution_images: at most this many (evenly spaced) images for class attribution; 0 disables it.
        attribution_budget: at most about this many forward-mode passes (attributed units x sampled images) in
            all: a whole-model run attributing many units samples fewer images (every ``ceil(N U / budget)``-th).
        shards: only these shards (a worker's share); default all missing ones.
        ray: ``None`` (this process), ``"local"`` or a Ray address: collection runs on Ray. ``ray_engine="data"``
            (default): a Ray Data pipeline (:func:`luminate.parallel.collect_with_ray_data`: batches of paths
            decoded in tasks, a pool of model actors, shards written here, the same files as in-process);
            ``"tasks"``: one Ray task per shard.

    Returns:
        :class:`Examples` (complete unless ``shards`` left some out).
    """
    model = as_model(model)
    if not layers:
        raise ValueError("give at least one layer, e.g. layers='blocks.10' (list them with `luminate layers MODEL`)")
    names = resolve_layers(model, layers)   # "all" expanded; unknown names reported before any work
    if batch_size < 1 or shard_images < 1 or top_k < 1:
        raise ValueError("batch_size, shard_images and top_k must be at least 1")
    specs = [_LayerSpec(model, name) for name in names]
    unit_map = {s.name: parse_units(units.get(s.name) if isinstance(units, dict) else units, s.channels)
                for s in specs}
    if attribute is True:
        attr_map = unit_map
    elif attribute is False:
        attr_map = {s.name: [] for s in specs}
    else:
        attr_map = {s.name: parse_units(attribute.get(s.name, []) if isinstance(attribute, dict) else attribute,
                                        s.channels) for s in specs}
    n_classes = _output_width(model)
    imageset = image_set(images)
    n_images = len(imageset)
    n_shards = math.ceil(n_images / shard_images)
    n_attributed = sum(len(u) for u in attr_map.values())
    every = max(1, math.ceil(n_images / attribution_images),
                math.ceil(n_images * n_attributed / max(attribution_budget, 1))) \
        if attribution_images > 0 and n_attributed else 0
    out_dir = Path(out_dir)
    kind = "folder" if isinstance(imageset, ImageFolder) else "dataset" if isinstance(imageset, DatasetImages) \
        else "list"
    layer_records = [{"name": s.name, "key": s.key, "channels": s.channels, "grid": list(s.grid)} for s in specs]
    settings = {"kind": "microscope.peaks-v1", "model": model.name, "weights": model.weights_fingerprint(),
                "input": model.contract.describe(), "layers": names, "n_images": n_images,
                "images": imageset.fingerprint(), "shard_images": shard_images, "attribution": False}
    header = {"model": model.name, "input": model.contract.describe(), "layers": layer_records,
              "n_classes": n_classes, "labels": list(model.labels.entries) if model.labels is not None else None,
              "images": {"count": n_images, "kind": kind, "source": imageset.source,
                         "root": str(imageset.root) if isinstance(imageset, ImageFolder) else None},
              "settings": settings, "n_shards": n_shards, "shard_images": shard_images,
              "microscope": {"units": unit_map, "top_k": int(top_k), "attributed": attr_map}}
    examples = StoreWriter(out_dir / EXAMPLES, header, imageset.names(), overwrite=True)
    attribution = None
    if every:
        attr_settings = dict(settings, kind="microscope.attribution-v1", units=attr_map, every=every,
                             method="grad-x-activation(channel map)")
        attribution = StoreWriter(out_dir / ATTRIBUTION, dict(header, settings=attr_settings), imageset.names(),
                                  overwrite=True)
    _set_microscope_header(out_dir / EXAMPLES, header["microscope"])
    done = examples.done() & (attribution.done() if attribution is not None else examples.done())
    wanted = set(range(n_shards)) if shards is None else {int(k) for k in shards}
    todo = sorted(k for k in wanted - done if 0 <= k < n_shards)
    if done and todo:
        logger.info("resuming %s: %d of %d shards already collected", out_dir, len(done), n_shards)
    if todo and ray is not None and ray_engine == "data":
        from luminate.parallel import collect_with_ray_data

        collect_with_ray_data(model, imageset, specs, attr_map, examples, attribution, todo, shard_images,
                              batch_size, every, n_classes, ray=ray, num_cpus=num_cpus, progress=progress)
    elif todo and ray is not None:
        from luminate.parallel import run_tasks

        sizes = [min((k + 1) * shard_images, n_images) - k * shard_images for k in todo]
        run_tasks(_collect_task, [(model, images, names, str(out_dir), unit_map, top_k, batch_size, shard_images,
                                   attribution_images, k, attr_map) for k in todo],
                  ray=ray, num_cpus=num_cpus, progress=progress, desc="collect", unit="img", weights=sizes,
                  shared={"model": model})
    elif todo:
        _run(model, imageset, specs, attr_map, examples, attribution, todo, shard_images, batch_size, every,
             n_classes, progress, num_workers)
    return Examples(out_dir)


def _collect_task(model, images, names, out_dir, unit_map, top_k, batch_size, shard_images, attribution_images,
                  shard, attr_map=True) -> int:
    """One shard, in a worker (idempotent: a finished shard is skipped)."""
    collect_examples(model, images, names, out_dir, units=unit_map, top_k=top_k, batch_size=batch_size,
                     shard_images=shard_images, attribution_images=attribution_images, progress=False,
                     num_workers=0, shards=[shard], attribute=attr_map)
    return shard


def _set_microscope_header(path: Path, info: dict) -> None:
    """Record the run's units and k in the examples manifest (outside the settings: they do not change shards).
    Rewrites the manifest only when they changed, so a rerun touches no file."""
    from luminate.atlas.store import read_manifest

    manifest = read_manifest(path)
    if manifest.get("microscope") == json.loads(json.dumps(info)):
        return
    import fcntl

    with open(path / ".lock", "a") as lock:   # the store's own manifest lock
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            manifest = read_manifest(path)
            manifest["microscope"] = info
            atomic_write(path / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"), durable=True)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def batch_results(model: Model, tap: LayerTap, specs, indices: np.ndarray, images: torch.Tensor, unit_map: dict,
                  every: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch of a collection: ``(examples part, attribution part)`` as numpy arrays, keyed like the shards
    (``image``, ``peak.<key>`` ``[B, C]``, ``argmax.<key>``; ``image``, ``attr.<key>`` ``[B', U, K]`` for the
    images sampled for attribution, every ``every``-th index; empty when ``every`` is 0). Shared by the
    in-process pass and the Ray Data actors, so both write the same shards."""
    images = images.to(model.device, non_blocking=True)
    with torch.no_grad():
        acts = tap(images)
    part = {"image": np.asarray(indices, dtype=np.int64)}
    for spec in specs:
        peak, argmax = peaks(acts[spec.name])
        part[f"peak.{spec.key}"] = peak.float().cpu().numpy()
        part[f"argmax.{spec.key}"] = argmax.cpu().numpy().astype(np.int32)
    attr_part: dict[str, np.ndarray] = {}
    if every:
        sampled = [j for j, i in enumerate(np.asarray(indices).tolist()) if i % every == 0]
        if sampled:
            chosen = images[sampled]
            attr_part["image"] = np.asarray(indices, dtype=np.int64)[sampled]
            for spec in specs:
                attr = unit_attribution(model, chosen, spec.name, unit_map[spec.name])
                attr_part[f"attr.{spec.key}"] = attr.numpy()
    return part, attr_part


def write_shard_parts(examples: StoreWriter, attribution: StoreWriter | None, shard: int, parts: list[dict],
                      attr_parts: list[dict], skipped: list[tuple[str, str]], specs, unit_map: dict,
                      n_classes: int, shard_images: int, n_images: int) -> None:
    """Write shard ``shard`` from its batches' parts (in image order): attribution first, then the examples shard,
    whose manifest entry marks the pair as done."""
    lo, hi = shard * shard_images, min((shard + 1) * shard_images, n_images)
    if attribution is not None:
        attribution.write_shard(shard, _concat(_stack(attr_parts), specs, "attr", unit_map, n_classes), (lo, hi))
    arrays = _concat(_stack(parts), specs, "peak", unit_map, n_classes)
    if not examples.write_shard(shard, arrays, (lo, hi), skipped):
        logger.info("shard %d was finished by another writer meanwhile; kept that one", shard)


def _stack(parts: list[dict]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for name, value in part.items():
            out.setdefault(name, []).append(value)
    return out


def _run(model: Model, imageset: ImageSet, specs, unit_map, examples: StoreWriter, attribution: StoreWriter | None,
         todo: list[int], shard_images: int, batch_size: int, every: int, n_classes: int, progress: bool,
         num_workers: int | None) -> None:
    from tqdm.auto import tqdm

    n_images = len(imageset)
    plan = shard_batches(todo, shard_images, n_images, batch_size)
    loader = image_loader(imageset, model.contract, [b for _, b in plan], num_workers=num_workers,
                          pin_memory=model.device.type == "cuda")
    bar = tqdm(total=sum(len(b) for _, b in plan), unit="img", desc="collect", disable=not progress)
    parts: list[dict] = []
    attr_parts: list[dict] = []
    skipped: list[tuple[str, str]] = []
    names = [s.name for s in specs]
    try:
        with model.frozen(), LayerTap(model, names, detach=True) as tap:
            for step, ((shard, indices), batch) in enumerate(zip(plan, loader)):
                for index, reason in batch.skipped:
                    name = imageset.name(index)
                    logger.warning("skipping unreadable image %s: %s", name, reason)
                    skipped.append((name, reason))
                if len(batch.indices):
                    part, attr_part = batch_results(model, tap, specs, batch.indices.numpy(), batch.images, unit_map,
                                                    every)
                    parts.append(part)
                    if attr_part:
                        attr_parts.append(attr_part)
                bar.update(len(indices))
                bar.set_postfix(skipped=len(skipped), refresh=False)
                if step + 1 == len(plan) or plan[step + 1][0] != shard:
                    write_shard_parts(examples, attribution, shard, parts, attr_parts, skipped, specs, unit_map,
                                      n_classes, shard_images, n_images)
                    parts, attr_parts, skipped = [], [], []
    finally:
        bar.close()


def _concat(parts: dict, specs, kind: str, unit_map: dict, n_classes: int) -> dict[str, np.ndarray]:
    if parts and parts.get("image"):
        return {name: np.concatenate(values) for name, values in parts.items()}
    arrays = {"image": np.zeros(0, np.int64)}
    for spec in specs:
        if kind == "peak":
            arrays[f"peak.{spec.key}"] = np.zeros((0, spec.channels), np.float32)
            arrays[f"argmax.{spec.key}"] = np.zeros((0, spec.channels), np.int32)
        else:
            arrays[f"attr.{spec.key}"] = np.zeros((0, len(unit_map[spec.name]), n_classes), np.float32)
    return arrays


def peaks(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``act`` ``[N, C, H, W]`` -> (maximum over positions ``[N, C]``, flat arg-max ``y * W + x`` ``[N, C]``).
    A ``[N, C]`` activation is its own maximum, at position 0."""
    if act.ndim == 2:
        return act, torch.zeros_like(act, dtype=torch.long)
    if act.ndim != 4:
        raise ValueError(f"activations of shape {tuple(act.shape)}: the Microscope needs [N, C, H, W] or [N, C]")
    return act.flatten(2).max(2)


# ----- merging ---------------------------------------------------------------------------------------------------


def summary_path(data_dir: str | os.PathLike, layer: str) -> Path:
    from luminate.atlas.store import layer_key

    return Path(data_dir) / f"summary-{layer_key(layer)}.npz"


def _summary_key(store: ActivationStore, attribution: ActivationStore | None, layer: str, bins: int,
                 similar: int) -> str:
    def shards(s: ActivationStore | None):
        if s is None:
            return None
        return [s.manifest["settings_hash"], [[sh["index"], sorted((f, v["sha256"]) for f, v in sh["files"].items())]
                                              for sh in s.shards]]
    payload = [SUMMARY_VERSION, layer, bins, similar, store.manifest["microscope"], shards(store), shards(attribution)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def summarize(data_dir: str | os.PathLike, layer: str, bins: int = 32, similar: int = 8, write: bool = True,
              strata: int = STRATA, samples: int = SAMPLES) -> dict:
    """Merge the shards of ``layer`` into per-unit results (read back from ``summary-<layer>.npz`` when it is
    up to date; written there when ``write`` and the collection is complete).

    Returns a dict of numpy arrays (``C`` units, ``k`` examples, ``U`` attributed units, ``K`` classes):
    ``top_values`` ``[C, k]`` float32 (maxima, best first; ``-inf`` past the images there are),
    ``top_images`` ``[C, k]`` int64 (image indices, ``-1`` when missing), ``top_argmax`` ``[C, k]`` (flat
    ``y * W + x``), ``bottom_values`` / ``bottom_images`` / ``bottom_argmax`` ``[C, k]`` (the lowest maxima,
    lowest first), ``quant_values`` / ``quant_images`` / ``quant_argmax`` / ``quant_stratum`` ``[C, strata *
    samples]`` (stratified samples, lowest first; image ``-1`` where a stratum had fewer images), ``quant_edges``
    ``[C, strata + 1]``, ``hist_counts`` ``[C, bins]``, ``hist_edges`` ``[C, bins + 1]``, ``firing`` ``[C]``
    (fraction of images with a maximum above zero), ``mean``, ``std``, ``minimum``, ``maximum`` ``[C]``,
    ``dead`` / ``constant`` ``[C]`` bool, ``similar_units`` / ``similar_corr`` ``[C, similar]`` (the most
    correlated units, by correlation of maxima over images; ``-1`` where no unit is left to compare),
    ``attr_units`` ``[U]``, ``attr_mean`` ``[U, K]``,
    ``n_images``, ``grid`` ``[2]``, ``key`` (the inputs' hash).
    """
    data_dir = Path(data_dir)
    store = ActivationStore(data_dir / EXAMPLES)
    attr_dir = data_dir / ATTRIBUTION
    attribution = ActivationStore(attr_dir) if (attr_dir / "manifest.json").is_file() else None
    info = store.layer_info(layer)
    key = _summary_key(store, attribution, layer, bins, similar) + f"-{strata}x{samples}"
    path = summary_path(data_dir, layer)
    found = load_keyed_npz(path, key)
    if found is not None:
        return found
    top_k = int(store.manifest["microscope"]["top_k"])
    result = merge_shards(store, info["key"], top_k, bins, similar, strata, samples)
    result["grid"] = np.array(info["grid"], dtype=np.int64)
    info_m = store.manifest["microscope"]
    units = info_m.get("attributed", info_m["units"])[layer]
    result["attr_units"] = np.array(units, dtype=np.int64)
    result["attr_mean"], result["attr_count"] = _attribution_mean(attribution, info["key"], len(units),
                                                                  store.n_classes)
    result["key"] = np.array(key)
    complete = store.complete and (attribution is None or attribution.complete)
    if write and complete:
        save_keyed_npz(path, result, durable=True)
    return result


def merge_shards(store: ActivationStore, key: str, top_k: int, bins: int = 32, similar: int = 8,
                 strata: int = STRATA, samples: int = SAMPLES) -> dict:
    """Streaming merge of the examples shards of one layer, in three passes over the shards (memory: one shard
    plus ``[C, C]`` and ``[C, 256]``): top / bottom k and moments; histograms; stratified quantile samples."""
    channels = next(info["channels"] for info in store.manifest["layers"] if info["key"] == key)
    values = np.full((channels, 0), -np.inf, np.float32)
    images = np.zeros((channels, 0), np.int64)
    argmax = np.zeros((channels, 0), np.int32)
    low_values, low_images, low_argmax = values, images, argmax
    n = 0
    total = np.zeros(channels)
    squares = np.zeros(channels)
    outer = np.zeros((channels, channels))
    fires = np.zeros(channels, np.int64)
    lo = np.full(channels, np.inf)
    hi = np.full(channels, -np.inf)
    fields = ["image", f"peak.{key}", f"argmax.{key}"]
    for _, shard in store.iter_shards(fields):
        index = np.asarray(shard["image"])
        if not len(index):
            continue
        peak = np.asarray(shard[f"peak.{key}"], dtype=np.float32)            # [R, C]
        where = np.asarray(shard[f"argmax.{key}"], dtype=np.int32)            # [R, C]
        values, images, argmax = merge_top_k(values, images, argmax, peak.T, np.broadcast_to(index, peak.T.shape),
                                             where.T, top_k)
        low_values, low_images, low_argmax = merge_top_k(low_values, low_images, low_argmax, -peak.T,
                                                         np.broadcast_to(index, peak.T.shape), where.T, top_k)
        p = peak.astype(np.float64)
        n += len(index)
        total += p.sum(0)
        squares += (p * p).sum(0)
        outer += p.T @ p
        fires += (peak > 0).sum(0)
        lo = np.minimum(lo, p.min(0))
        hi = np.maximum(hi, p.max(0))
    values, images, argmax = _pad(values, images, argmax, top_k, -np.inf)
    low_values, low_images, low_argmax = _pad(-low_values, low_images, low_argmax, top_k, np.inf)
    count = max(n, 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    if n == 0:
        lo, hi = np.zeros(channels), np.zeros(channels)
    dead = hi <= 0
    constant = (hi - lo) <= 1e-6 * np.maximum(1.0, np.abs(hi))
    # histograms: a second streaming pass, with per-unit edges from the first
    edge_lo = np.where(hi > lo, lo, lo - 0.5)
    edge_hi = np.where(hi > lo, hi, hi + 0.5)
    edges = edge_lo[:, None] + (edge_hi - edge_lo)[:, None] * np.linspace(0, 1, bins + 1)[None, :]
    counts = np.zeros((channels, bins), np.int64)
    fine = np.zeros((channels, FINE_BINS), np.int64)
    for _, shard in store.iter_shards([f"peak.{key}"]):
        peak = np.asarray(shard[f"peak.{key}"], dtype=np.float64)
        if not len(peak):
            continue
        for table, n_bins in ((counts, bins), (fine, FINE_BINS)):
            slot = np.floor((peak - edge_lo) / (edge_hi - edge_lo) * n_bins).astype(np.int64).clip(0, n_bins - 1)
            np.add.at(table.reshape(-1), (np.arange(channels) * n_bins + slot).reshape(-1), 1)   # [R, C] slots
    quant = _stratified_samples(store, key, channels, fine, edge_lo, edge_hi, strata, samples)
    # co-activation: correlation of the units' maxima over images
    cov = outer / count - np.outer(mean, mean)
    scale = np.where(constant, np.inf, std)
    corr = cov / np.outer(scale, scale)
    np.fill_diagonal(corr, -np.inf)
    corr[:, constant] = -np.inf
    similar = min(similar, max(channels - 1, 0))
    order = np.argsort(-corr, axis=1, kind="stable")[:, :similar]
    similar_corr = np.take_along_axis(corr, order, 1)
    order[~np.isfinite(similar_corr)] = -1    # fewer comparable units than asked for
    return {"top_values": values, "top_images": images, "top_argmax": argmax, "bottom_values": low_values,
            "bottom_images": low_images, "bottom_argmax": low_argmax, **quant, "hist_counts": counts,
            "hist_edges": edges.astype(np.float32), "firing": (fires / count).astype(np.float32),
            "mean": mean.astype(np.float32), "std": std.astype(np.float32), "minimum": lo.astype(np.float32),
            "maximum": hi.astype(np.float32), "dead": dead, "constant": constant & ~dead,
            "similar_units": order.astype(np.int64), "similar_corr": np.nan_to_num(similar_corr, neginf=0.0),
            "n_images": np.array(n)}


def _pad(values: np.ndarray, images: np.ndarray, argmax: np.ndarray, k: int, fill: float):
    """Pad ``[C, k']`` example arrays to ``k`` columns (fewer readable images than ``k``): image ``-1``."""
    if values.shape[1] >= k:
        return values, images, argmax
    channels, pad = values.shape[0], k - values.shape[1]
    return (np.concatenate([values, np.full((channels, pad), fill, np.float32)], 1),
            np.concatenate([images, np.full((channels, pad), -1, np.int64)], 1),
            np.concatenate([argmax, np.zeros((channels, pad), np.int32)], 1))


def _priority(index: np.ndarray, channels: int) -> np.ndarray:
    """A fixed pseudo-random priority per (image, unit), ``[R, C]`` uint64 (splitmix64 of both): the reservoir
    keeps the smallest, so the samples depend only on the images, never on shards or batches."""
    with np.errstate(over="ignore"):
        z = (np.asarray(index, np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)
             + (np.arange(channels, dtype=np.uint64)[None, :] + np.uint64(1)) * np.uint64(0xD1B54A32D192ED03))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def quantile_edges(fine: np.ndarray, edge_lo: np.ndarray, edge_hi: np.ndarray, strata: int) -> np.ndarray:
    """``[C, strata + 1]`` value edges of equal-count strata from per-unit fine histograms ``[C, B]`` over
    ``[edge_lo, edge_hi]`` (linear within a bin; the outer edges are the range itself)."""
    channels, n_bins = fine.shape
    cum = np.concatenate([np.zeros((channels, 1)), np.cumsum(fine, 1)], 1)            # [C, B + 1]
    total = np.maximum(cum[:, -1:], 1)
    width = (edge_hi - edge_lo)[:, None] / n_bins
    edges = np.empty((channels, strata + 1))
    edges[:, 0], edges[:, -1] = -np.inf, np.inf
    for j in range(1, strata):
        target = total[:, 0] * j / strata
        b = np.clip((cum < target[:, None]).sum(1) - 1, 0, n_bins - 1)             # the bin holding the rank
        below = np.take_along_axis(cum, b[:, None], 1)[:, 0]
        inside = np.maximum(np.take_along_axis(fine, b[:, None], 1)[:, 0], 1)
        edges[:, j] = edge_lo + (b + np.clip((target - below) / inside, 0, 1)) * width[:, 0]
    return edges


def _stratified_samples(store: ActivationStore, key: str, channels: int, fine: np.ndarray, edge_lo: np.ndarray,
                        edge_hi: np.ndarray, strata: int, samples: int) -> dict[str, np.ndarray]:
    """The third pass: per unit and stratum, the ``samples`` images of smallest :func:`_priority`."""
    edges = quantile_edges(fine, edge_lo, edge_hi, strata)
    none = np.iinfo(np.uint64).max
    pri = np.full((channels, strata, samples), none, np.uint64)
    val = np.zeros((channels, strata, samples), np.float32)
    img = np.full((channels, strata, samples), -1, np.int64)
    arg = np.zeros((channels, strata, samples), np.int32)
    rows = np.arange(channels)[:, None]
    for _, shard in store.iter_shards(["image", f"peak.{key}", f"argmax.{key}"]):
        index = np.asarray(shard["image"], dtype=np.int64)
        if not len(index):
            continue
        peak = np.asarray(shard[f"peak.{key}"], dtype=np.float32).T                   # [C, R]
        where = np.asarray(shard[f"argmax.{key}"], dtype=np.int32).T
        stratum = (peak[:, :, None] >= edges[:, None, 1:-1]).sum(2)                     # [C, R]
        priority = _priority(index, channels).T                                        # [C, R]
        for j in range(strata):
            p = np.concatenate([pri[:, j], np.where(stratum == j, priority, none)], 1)
            order = np.argsort(p, axis=1, kind="stable")[:, :samples]
            pri[:, j] = p[rows, order]
            val[:, j] = np.concatenate([val[:, j], peak], 1)[rows, order]
            img[:, j] = np.concatenate([img[:, j], np.broadcast_to(index, peak.shape)], 1)[rows, order]
            arg[:, j] = np.concatenate([arg[:, j], where], 1)[rows, order]
    img[pri == none] = -1
    level = np.broadcast_to(np.arange(strata)[None, :, None], img.shape)
    # lowest first within each stratum (missing samples last)
    order = np.argsort(np.where(img >= 0, val, np.inf), axis=2, kind="stable")
    take = lambda a: np.take_along_axis(a, order, 2).reshape(channels, strata * samples)  # noqa: E731
    return {"quant_values": take(val), "quant_images": take(img), "quant_argmax": take(arg),
            "quant_stratum": take(np.ascontiguousarray(level)), "quant_edges": edges.astype(np.float32),
            "quant_strata": np.array(strata)}


def merge_top_k(values: np.ndarray, images: np.ndarray, argmax: np.ndarray, new_values: np.ndarray,
                new_images: np.ndarray, new_argmax: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge a running per-unit top-k (``[C, k']``, best first) with new candidates ``[C, R]`` whose image
    indices are all larger; keep the ``k`` largest values, ties to the lower image index (stable sort)."""
    all_values = np.concatenate([values, new_values], 1)
    all_images = np.concatenate([images, new_images], 1)
    all_argmax = np.concatenate([argmax, new_argmax], 1)
    order = np.argsort(-all_values, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(all_values, order, 1), np.take_along_axis(all_images, order, 1),
            np.take_along_axis(all_argmax, order, 1))


def _attribution_mean(attribution: ActivationStore | None, key: str, n_units: int, n_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros((n_units, n_classes))
    count = 0
    if attribution is not None:
        for _, shard in attribution.iter_shards([f"attr.{key}"]):
            attr = np.asarray(shard[f"attr.{key}"], dtype=np.float64)
            if len(attr):
                total += attr.sum(0)
                count += len(attr)
    return (total / max(count, 1)).astype(np.float32), np.array(count)
