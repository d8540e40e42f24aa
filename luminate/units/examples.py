"""Dataset examples of units: the one reading of "which inputs excite this unit most", for any encoder.

A collection records, per input and unit, the unit's maximum over positions and where it is
(:func:`peaks`; a unit is a channel of the layer, or a dictionary feature: the activations through the dictionary's
``encode`` first). The Microscope streams it into a sharded store (``OUT/examples``, :mod:`luminate.data.store`);
:func:`summarize` merges the shards into per-unit results in three streaming passes:

* the top-k inputs by that maximum, best first, with the arg-max position (ties: the lower input index);
* the bottom-k inputs: the *lowest* maxima (the most negative, for units that go negative), lowest first;
* quantile samples: ``samples`` inputs from each of ``strata`` activation strata (by default 5 from each fifth of
  the distribution of maxima). The strata edges are the 20/40/60/80 % quantiles read from a fine (256-bin)
  histogram of a second streaming pass, so they are exact to 1/256 of the unit's range; a third pass keeps, per
  stratum, the inputs with the smallest pseudo-random priority (a hash of input index and unit): a streamed,
  stratified reservoir sample that depends on neither the shard size, the batch size nor the worker count;
* a histogram of the maxima, the fraction of inputs where the unit fires (maximum above zero), mean / spread, and
  flags for **dead** units (never above zero) and **constant** units (the same maximum everywhere);
* co-activation similarity: the correlation, over inputs, of two units' maxima (units of one layer);
* the mean class attribution of the attributed units (from ``OUT/attribution``, when collected).

:func:`ranked` orders the per-input maxima of a features site the same way. :func:`top_examples` is the one reader
of a site's examples: an image Microscope (``data/examples``), a text Microscope (``data/text``) or a features site
(``data/<layer>/examples.npz``), each answering ``[{"value", "index", ...}]`` best first.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from luminate.activations import LayerTap
from luminate.cache import load_keyed_npz, save_keyed_npz
from luminate.data.inputs import Batch, ImageSet
from luminate.data.passes import stream
from luminate.data.settings import PassSettings
from luminate.data.store import MANIFEST, ActivationStore, layer_key
from luminate.models.base import Model

EXAMPLES = "examples"
ATTRIBUTION = "attribution"
TEXT = "text"
FEATURE_EXAMPLES = "examples.npz"
SUMMARY_VERSION = 2
#: activation strata of the quantile samples, and inputs kept per stratum
STRATA = 5
SAMPLES = 5
FINE_BINS = 256
WHICH = ("top", "bottom", "quantiles")


def peaks(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``act`` ``[N, C, H, W]`` -> (maximum over positions ``[N, C]``, flat arg-max ``y * W + x`` ``[N, C]``).
    A ``[N, C]`` activation is its own maximum, at position 0."""
    if act.ndim == 2:
        return act, torch.zeros_like(act, dtype=torch.long)
    if act.ndim != 4:
        raise ValueError(f"activations of shape {tuple(act.shape)}: the Microscope needs [N, C, H, W] or [N, C]")
    return act.flatten(2).max(2)


class NonFiniteActivationsError(ValueError):
    """A layer's activations hold NaN or infinity (named with the image; ``index``: the image's index)."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


#: ``encode(activations [B, C, H, W]) -> units [B, N, H, W]``: None (identity) makes the units the layer's channels
#: (the Microscope); a dictionary's ``encode`` makes them its features (a features site). It must pickle for Ray.
Encoder = Callable[[torch.Tensor], torch.Tensor]


def examples_part(acts: dict[str, torch.Tensor], indices: torch.Tensor, layers: Sequence[str],
                  encode: Encoder | None = None, firing: bool = False, finite: bool = False
                  ) -> dict[str, np.ndarray]:
    """One batch of the examples pass, keyed like a store's shard: ``image`` ``[B]`` (indices), and per layer
    ``peak.<key>`` ``[B, N]`` float32 (each unit's maximum over positions, :func:`peaks`), ``argmax.<key>``
    ``[B, N]`` int32 (flat ``y * W + x``); with ``firing``, ``fires.<key>`` ``[B, N]`` int32 (positions where the
    unit is above zero). ``acts``: ``{layer: [B, C, H, W]}``; ``encode`` maps them to units first; ``finite``
    refuses activations holding NaN or infinity (:class:`NonFiniteActivationsError` naming the first image)."""
    part = {"image": np.asarray(indices.numpy(), dtype=np.int64)}
    for name in layers:
        units = acts[name]
        if finite:
            bad = ~torch.isfinite(units).flatten(1).all(1)
            if bool(bad.any()):
                index = int(indices[bad.cpu()][0])
                raise NonFiniteActivationsError(f"activations of {name} hold NaN or infinity for image {index}",
                                                index)
        if encode is not None:
            units = encode(units.float())
        peak, argmax = peaks(units)
        key = layer_key(name)
        part[f"peak.{key}"] = peak.float().cpu().numpy()
        part[f"argmax.{key}"] = argmax.cpu().numpy().astype(np.int32)
        if firing:
            part[f"fires.{key}"] = (units > 0).flatten(2).sum(2).cpu().numpy().astype(np.int32)
    return part


@dataclass(frozen=True)
class ExamplesWork:
    """The examples pass's work on a batch (a :class:`luminate.data.passes.BatchWork`): :func:`examples_part` of
    ``layers`` under no gradients. ``encode`` must pickle when the pass runs on Ray."""

    layers: tuple[str, ...]
    encode: Encoder | None = None
    firing: bool = False
    finite: bool = False

    @contextmanager
    def open(self, model: Model) -> Iterator[Callable[[Batch], dict[str, np.ndarray]]]:
        with torch.no_grad(), model.frozen(), LayerTap(model, list(self.layers), detach=True) as tap:
            yield lambda batch: examples_part(tap(batch.images.to(model.device, non_blocking=True)), batch.indices,
                                              self.layers, self.encode, self.firing, self.finite)


def examples_pass(model: Model, imageset: ImageSet, layer: str, encode: Encoder | None = None,
                  run: PassSettings = PassSettings(), desc: str = "examples") -> tuple[dict, list[tuple[str, str]]]:
    """The examples pass of one layer over every image, kept in memory (a features site; the Microscope streams
    the same :class:`ExamplesWork` parts into a sharded store): ``({"image" [I], "peak" [I, N], "argmax" [I, N],
    "fires" [I, N]}, skipped)`` over the ``I`` readable images in order, ``skipped`` the ``(name, reason)`` of the
    unreadable ones. Activations holding NaN or infinity raise :class:`NonFiniteActivationsError` naming the image.
    """
    parts: list[dict] = []
    skipped: list[tuple[str, str]] = []

    def keep(shard: int, shard_parts: list, shard_skipped: list[tuple[str, str]]) -> None:
        parts.extend(shard_parts)
        skipped.extend(shard_skipped)

    work = ExamplesWork((layer,), encode, firing=True, finite=True)
    try:
        stream(model, imageset, [0], max(len(imageset), 1), work, keep, run, desc)
    except NonFiniteActivationsError as error:
        if error.index is None:
            raise
        raise NonFiniteActivationsError(f"activations of {layer} hold NaN or infinity for image "
                                        f"{imageset.name(error.index)}: check that image; remove it from the set to "
                                        "go on", error.index) from None
    if not parts:
        raise ValueError(f"none of the {len(imageset)} images could be read "
                         f"({'; '.join(f'{a}: {b}' for a, b in skipped[:3])})")
    key = layer_key(layer)
    return ({"image": np.concatenate([p["image"] for p in parts]),
             "peak": np.concatenate([p[f"peak.{key}"] for p in parts]),
             "argmax": np.concatenate([p[f"argmax.{key}"] for p in parts]),
             "fires": np.concatenate([p[f"fires.{key}"] for p in parts])}, skipped)


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


def layers(site_or_store: str | os.PathLike | Examples) -> list[tuple[str, int]]:
    """``[(layer, number of units)]`` of a collected site, in forward order."""
    examples = open_examples(site_or_store)
    return [(info["name"], int(info["channels"])) for info in examples.store.manifest["layers"]]


def site_kind(site: str | os.PathLike, layer: str | None = None) -> str | None:
    """What a site folder (or its ``data`` folder) holds: ``"image"`` (a Microscope's examples store), ``"text"``
    (a text Microscope), ``"features"`` (a features site; of ``layer`` when given), or None."""
    path = Path(site).expanduser()
    for data in (path / "data", path, path.parent):
        if (data / EXAMPLES / MANIFEST).is_file():
            return "image"
        if (data / TEXT / MANIFEST).is_file():
            return "text"
        if layer is not None and (data / layer_key(layer) / FEATURE_EXAMPLES).is_file():
            return "features"
    return None


def top_examples(site: str | os.PathLike | Examples, layer: str, unit: int, k: int | None = None,
                 which: str = "top") -> list[dict]:
    """The inputs that excite ``unit`` of ``layer`` most, best first, from any site.

    * an image Microscope: ``[{"image", "value", "y", "x", "index"}]``: ``image`` the original file (or
      ``dataset[i]``), ``value`` the unit's maximum over positions there, ``(y, x)`` where (in the layer's grid);
      ``which="bottom"``: the lowest maxima, lowest first; ``which="quantiles"``: samples from each activation
      stratum, lowest first (with ``"stratum"`` and ``"quantile"``; see the module docstring);
    * a text Microscope: ``[{"text", "position", "value", "index", "source", "token"}]`` (``position``: the
      token where the unit peaks); ``which="quantiles"``: samples across the range (each with its ``quantile``);
    * a features site (``unit`` a feature): ``[{"image", "value", "y", "x", "index", "name"}]``, the inputs where
      it fires; ``k`` defaults to the site's ``--top``.
    """
    if isinstance(site, Examples):
        return site.top_examples(layer, unit, k, which)
    kind = site_kind(site, layer)
    if kind == "text":
        return _text_top_examples(site, layer, unit, k, which)
    if kind == "features":
        return _feature_top_examples(site, layer, unit, k, which)
    return open_examples(site).top_examples(layer, unit, k, which)


def _feature_top_examples(site: str | os.PathLike, layer: str, feature: int, k: int | None, which: str
                          ) -> list[dict]:
    if which != "top":
        raise ValueError(f"which={which!r}: a features site lists its top examples (which='top')")
    path = Path(site).expanduser()
    folder = next(d / layer_key(layer) for d in (path / "data", path, path.parent)
                  if (d / layer_key(layer) / FEATURE_EXAMPLES).is_file())
    with np.load(folder / FEATURE_EXAMPLES, allow_pickle=False) as saved:
        examples = {name: saved[name] for name in saved.files}
    n = examples["peak"].shape[1]
    if not 0 <= int(feature) < n:
        raise IndexError(f"feature {feature} is out of range: the dictionary of {layer} has {n} (0..{n - 1})")
    if k is None:
        meta = folder / "site.json"
        k = json.loads(meta.read_text()).get("top_k") if meta.is_file() else None
    return ranked(examples, feature, k)


def ranked(examples: dict, feature: int, k: int | None = None) -> list[dict]:
    """A unit's (a feature's) images where it fires, by its maximum over positions, best first (ties: the lower
    image index): ``[{"image", "value", "y", "x", "index", "name"}]``. ``examples`` holds per-image maxima as a
    features site saves them: ``peak`` ``[I, N]``, ``argmax`` ``[I, N]`` (flat ``y * W + x``), ``image`` ``[I]``,
    ``grid``, ``paths``, ``names``."""
    peak = examples["peak"][:, int(feature)]
    order = np.argsort(-peak, kind="stable")
    width = int(examples["grid"][1])
    out = []
    for row in order[:k] if k is not None else order:
        if not peak[row] > 0:
            break
        index = int(examples["image"][row])
        flat = int(examples["argmax"][row, int(feature)])
        out.append({"image": str(examples["paths"][index]), "value": float(peak[row]), "y": flat // width,
                    "x": flat % width, "index": index, "name": str(examples["names"][index])})
    return out


def quantile_samples(examples: dict, feature: int, quantiles: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                     exclude: Sequence[int] = ()) -> list[dict]:
    """Images at quantiles of the feature's maximum among the images where it fires (not those in ``exclude``),
    each with ``"quantile"``; the same dicts as :func:`ranked`."""
    firing = [e for e in ranked(examples, feature) if e["index"] not in set(exclude)]
    out, seen = [], set()
    for q in quantiles:
        if not firing:
            break
        e = firing[::-1][min(len(firing) - 1, int(q * len(firing)))]
        if e["index"] not in seen:
            seen.add(e["index"])
            out.append({**e, "quantile": q})
    return out


def _text_top_examples(site: str | os.PathLike, layer: str, unit: int, k: int | None = None, which: str = "top"
                       ) -> list[dict]:
    """The texts that excite ``unit`` of ``layer`` most, best first: ``[{"text", "position", "value", "index",
    "source", "token"}]`` (``position``: the token, for ``char_rnn`` the character, where the unit peaks);
    ``which="quantiles"``: the samples across the range of peaks (each with its ``quantile``)."""
    if which not in ("top", "quantiles"):
        raise ValueError(f"which must be 'top' or 'quantiles', not {which!r}")
    path = Path(site).expanduser()
    store = next(d / TEXT for d in (path / "data", path) if (d / TEXT / MANIFEST).is_file())
    path = store / layer_key(layer) / "summary.json"
    if not path.is_file():
        done = json.loads((store / "manifest.json").read_text()).get("layers", [])
        raise KeyError(f"layer {layer!r} is not in this text Microscope; it has {', '.join(done)}")
    summary = json.loads(path.read_text())
    for s in summary["units"]:
        if s["unit"] == int(unit):
            rows = [{"text": e["text"], "position": e["position"], "value": e["value"], "index": e["index"],
                     "source": e["source"], "token": e["context"]["tokens"][e["context"]["peak"]],
                     **({"quantile": e["quantile"]} if "quantile" in e else {})} for e in s[which]]
            return rows[:k] if k is not None else rows
    shown = [s["unit"] for s in summary["units"]]
    raise IndexError(f"unit {unit} of {layer!r} has no page in this site (units {shown[0]}..{shown[-1]} do); "
                     "rebuild with --units covering it")


# ----- merging ---------------------------------------------------------------------------------------------------


def summary_path(data_dir: str | os.PathLike, layer: str) -> Path:
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
