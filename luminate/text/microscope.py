"""The Microscope for text units: every unit's top contexts, quantile samples, histogram, output effect, similar
units and token attribution, collected once into a resumable store and drawn by :mod:`luminate.views.text`.

Collection streams the texts through the model in shards of ``shard_texts`` texts; each shard file holds, per text
and unit, the maximum activation and its token position, the minimum, plus per unit the number of tokens above zero
and an evenly spaced sample of token activations (for histograms, quantiles and unit similarity). A shard that
exists is not recomputed, so an interrupted build continues where it stopped; a store made with another model,
other weights or other texts is refused; one written by an older Luminate (another store ``version``: layer folders
were named differently) is replaced with a warning, never half-read. Shapes: ``max``/``argmax``/``min`` ``[n_texts, C]``, ``sample``
``[S, C]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from luminate import progress as progress_bars
from luminate.cache import atomic_write, write_if_changed
from luminate.data.inputs import Texts, read_texts
from luminate.data.settings import parse_units, split_options, with_options
from luminate.data.store import MANIFEST, differences, layer_key, site_lock
from luminate.text.core import LongTextWarning, activations, as_text_model
from luminate.units.examples import TEXT as STORE, site_kind, top_examples as _top_examples

logger = logging.getLogger("luminate.text")
SAMPLE_PER_TEXT = 8
#: the store's layout: 2 names layer folders with :func:`luminate.data.store.layer_key` (1 used "@" for "#")
VERSION = 2


def is_text_site(site: str | os.PathLike) -> bool:
    """True when ``site`` (a site folder or its data folder) holds a text Microscope."""
    return site_kind(site) == "text"


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def _collect_shard(model, texts: Sequence[str], layer: str) -> dict[str, np.ndarray]:
    acts = activations(model, list(texts), layer)
    c = acts[0].shape[1]
    mx = np.stack([a.max(0).values.numpy() if len(a) else np.full(c, -np.inf, np.float32) for a in acts])
    am = np.stack([a.argmax(0).numpy() if len(a) else np.zeros(c, np.int64) for a in acts])
    mn = np.stack([a.min(0).values.numpy() if len(a) else np.full(c, np.inf, np.float32) for a in acts])
    picks = []
    for a in acts:
        if len(a):
            idx = np.unique(np.linspace(0, len(a) - 1, min(SAMPLE_PER_TEXT, len(a))).round().astype(int))
            picks.append(a[idx].numpy())
    allv = np.concatenate([a.numpy() for a in acts if len(a)])
    return {"max": mx.astype(np.float32), "argmax": am.astype(np.int64), "min": mn.astype(np.float32),
            "sample": np.concatenate(picks).astype(np.float32), "fires": (allv > 0).sum(0).astype(np.int64),
            "tokens": np.array(len(allv), dtype=np.int64), "sum": allv.sum(0).astype(np.float64)}


@dataclass
class TextSite:
    """A built text Microscope: ``root`` folder, the model's name, the texts, and per layer the unit summaries
    (``layers``: ``[{"name", "channels", "units": [summary, ...]}]``) that :mod:`luminate.views.text` draws."""

    root: Path
    model_name: str
    texts: Texts
    layers: list[dict]
    kind: str
    unknown: dict[str, int] = field(default_factory=dict)
    long_texts: int = 0


def collect(model, texts: Texts, out: Path, layers: Sequence[str], shard_texts: int = 256,
            progress: bool = True) -> Path:
    """Collect every shard missing from ``out/data/text`` (see the module docstring); returns that folder."""
    model = as_text_model(model)
    store = out / "data" / STORE
    store.mkdir(parents=True, exist_ok=True)
    manifest = {"model": model.name, "weights": model.weights_fingerprint(), "texts": _texts_digest(texts.texts),
                "n_texts": len(texts), "shard_texts": int(shard_texts), "version": VERSION}
    path = store / MANIFEST
    layers_done = list(layers)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("version") != VERSION:
            logger.warning("replacing the text Microscope store at %s: it was written by another Luminate (%s)", store,
                           differences({"version": old.get("version")}, {"version": VERSION}))
            shutil.rmtree(store)
            store.mkdir(parents=True)
        else:
            diff = [k for k in manifest if old.get(k) != manifest[k]]
            if diff:
                raise ValueError(f"{out} holds a text Microscope made with other {', '.join(diff)} "
                                 f"({old.get('model')}, {old.get('n_texts')} texts): use another -o folder, or delete "
                                 f"{out} to start over")
            layers_done = list(dict.fromkeys(old.get("layers", []) + list(layers)))
    write_if_changed(path, json.dumps({**manifest, "layers": layers_done}, indent=1).encode())
    write_if_changed(store / "texts.json", json.dumps({"texts": texts.texts, "sources": texts.sources,
                                                        "skipped": texts.skipped}).encode())
    n_shards = (len(texts) + shard_texts - 1) // shard_texts
    todo = [(layer, s) for layer in layers for s in range(n_shards)
            if not (store / layer_key(layer) / f"shard_{s:05d}.npz").is_file()]
    bar = progress_bars.bar(len(todo), "collect", unit="shard", enabled=progress and bool(todo))
    try:
        for layer, s in todo:
            data = _collect_shard(model, texts.texts[s * shard_texts:(s + 1) * shard_texts], layer)
            atomic_write(store / layer_key(layer) / f"shard_{s:05d}.npz", lambda fh, data=data: np.savez(fh, **data))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return store


def _load_layer(store: Path, layer: str, n_shards: int) -> dict[str, np.ndarray]:
    parts = [np.load(store / layer_key(layer) / f"shard_{s:05d}.npz") for s in range(n_shards)]
    return {"max": np.concatenate([p["max"] for p in parts]), "argmax": np.concatenate([p["argmax"] for p in parts]),
            "min": np.concatenate([p["min"] for p in parts]), "sample": np.concatenate([p["sample"] for p in parts]),
            "fires": sum(p["fires"] for p in parts), "tokens": int(sum(int(p["tokens"]) for p in parts)),
            "sum": sum(p["sum"] for p in parts)}


def _context(model, text: str, values: torch.Tensor, position: int, radius: int) -> dict:
    """The tokens within ``radius`` of ``position`` with their activations, for drawing."""
    enc = model.encode(text)
    a, b = max(0, position - radius), min(len(enc.tokens), position + radius + 1)
    return {"tokens": enc.tokens[a:b], "values": [round(float(v), 4) for v in values[a:b]], "peak": position - a,
            "start": a, "clipped_left": a > 0, "clipped_right": b < len(enc.tokens)}


def summarize(model, texts: Texts, store: Path, layer: str, units: Sequence[int], top_k: int = 9,
              quantiles: int = 5, radius: int = 40, attribute: bool = True, n_steps: int = 16) -> dict:
    """Per-unit summaries of one collected layer: top contexts (recomputed activations, coloured per token),
    quantile samples, histogram, firing density, output effect, similar units and token attribution of the top
    context. Written to ``store/<layer>/summary.json`` and returned."""
    model = as_text_model(model)
    manifest = json.loads((store / MANIFEST).read_text())
    n_shards = (manifest["n_texts"] + manifest["shard_texts"] - 1) // manifest["shard_texts"]
    data = _load_layer(store, layer, n_shards)
    mx, am, sample = data["max"], data["argmax"], data["sample"]
    channels = mx.shape[1]
    readout = model.readout(layer)
    std = sample.std(0)
    corr = np.corrcoef(sample.T) if sample.shape[0] > 1 else np.eye(channels)
    corr = np.nan_to_num(corr)
    # the contexts to draw: every top and quantile text of every unit, their activations computed once
    picks: dict[int, dict[str, list[int]]] = {}
    wanted: set[int] = set()
    for u in units:
        order = np.lexsort((-np.arange(len(mx)), -mx[:, u]))  # value descending, earlier text first on ties
        top = [int(i) for i in order[:top_k]]
        ranked = np.argsort(mx[:, u], kind="stable")
        qs = [int(ranked[int(round(q * (len(ranked) - 1)))]) for q in np.linspace(0.1, 0.9, quantiles)]
        picks[u] = {"top": top, "quantiles": qs}
        wanted.update(top + qs)
    wanted_list = sorted(wanted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LongTextWarning)
        recomputed = dict(zip(wanted_list, activations(model, [texts[i] for i in wanted_list], layer)))
    summaries = []
    for u in units:
        def example(i: int) -> dict:
            values = recomputed[i][:, u]
            pos = int(values.argmax())
            return {"index": i, "source": texts.sources[i], "text": texts[i], "position": pos,
                    "value": float(values[pos]), "stored_value": float(mx[i, u]),
                    "context": _context(model, texts[i], values, pos, radius)}
        top = [example(i) for i in picks[u]["top"]]
        quant = [{**example(i), "quantile": float(q)} for i, q in zip(picks[u]["quantiles"],
                                                                      np.linspace(0.1, 0.9, quantiles))]
        counts, edges = np.histogram(sample[:, u], bins=30)
        s = {"unit": int(u), "max": float(mx[:, u].max()), "min": float(data["min"][:, u].min()),
             "mean": float(data["sum"][u] / max(data["tokens"], 1)), "density": float(data["fires"][u] / max(data["tokens"], 1)),
             "dead": bool(mx[:, u].max() <= 0 and data["min"][:, u].min() >= 0), "constant": bool(std[u] < 1e-7),
             "top": top, "quantiles": quant, "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
             "similar": [(int(v), float(corr[u, v])) for v in np.argsort(-np.abs(corr[u])) if v != u][:5]}
        if readout is not None:
            w = readout[u].float()
            up, down = torch.topk(w, 10).indices.tolist(), torch.topk(-w, 10).indices.tolist()
            s["effect"] = {"raises": [(model.contract.decode(i), float(w[i])) for i in up],
                           "lowers": [(model.contract.decode(i), float(w[i])) for i in down]}
        if attribute and top:
            from luminate.text.attribution import attribute_tokens

            best = top[0]
            att = attribute_tokens(model, best["text"], layer, u, best["position"], n_steps=n_steps)
            a = best["context"]["start"]
            n = len(best["context"]["tokens"])
            s["attribution"] = {"scores": [round(x, 5) for x in att.scores[a:a + n]], "what": att.what,
                                "delta": att.delta, "value": att.value, "baseline": att.baseline}
        summaries.append(s)
    out = {"layer": layer, "channels": int(channels), "units": summaries, "n_texts": int(len(mx)),
           "tokens": int(data["tokens"])}
    atomic_write(store / layer_key(layer) / "summary.json", json.dumps(out).encode())
    return out


@dataclass(frozen=True)
class TextMicroscopeSettings:
    """What a text Microscope shows (besides the model, texts and layers).

    Attributes:
        units: the units given pages (``"0:64"``, ``"3,7"``, a list, ``None``: every unit).
        top_k: top contexts per unit.
        shard_texts: texts per shard (the unit of resumption; a shard's texts go through the model together).
        attribute: token attribution (integrated gradients) of each unit's top context.
    """

    units: str | tuple[int, ...] | None = "0:64"
    top_k: int = 9
    shard_texts: int = 256
    attribute: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.units, list):
            object.__setattr__(self, "units", tuple(self.units))
        if self.top_k < 1 or self.shard_texts < 1:
            raise ValueError(f"top_k and shard_texts must be at least 1, not {self.top_k} and {self.shard_texts}")


def build(model, texts, out: str | os.PathLike, settings: TextMicroscopeSettings | None = None, *,
          layers: str | Sequence[str] | None = None, progress: bool = True, **options) -> TextSite:
    """Collect (resumable) and summarize a text Microscope; draw it with ``luminate.views.text.write_site``.

    Args:
        model: a text model or its zoo name.
        texts: a ``.txt`` file (one text per line), a folder of ``.txt`` files, or a list of strings.
        out: the site folder (created or continued; one run at a time owns it: :func:`luminate.data.site_lock`).
        settings: :class:`TextMicroscopeSettings` (units with pages, top contexts, shard size, attribution).
        layers: layer names (default the model's default text layer).
        options: any field of the settings by name (``units="0:3", top_k=5, attribute=False``); the old
            ``attribution=`` is still accepted, with a ``DeprecationWarning``, for one release.
    """
    if "attribution" in options:
        warnings.warn("attribution= is now attribute= (the one spelling of the pipelines); the old name goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
        options["attribute"] = options.pop("attribution")
    if settings is not None and not isinstance(settings, TextMicroscopeSettings):
        raise TypeError(f"settings must be a TextMicroscopeSettings, not {type(settings).__name__}: give the layers "
                        "by name (build(model, texts, out, layers='rnn_1'))")
    settings = with_options(settings, TextMicroscopeSettings, split_options(options, TextMicroscopeSettings)[0])
    model = as_text_model(model)
    texts = texts if isinstance(texts, Texts) else read_texts(texts)
    names = [layers] if isinstance(layers, str) else list(layers or [model.default_text_layer])
    for name in names:
        model.layer_info(name)  # unknown or non-token layers fail before any work
    out = Path(out)
    with site_lock(out):
        return _build(model, texts, out, names, settings, progress)


def _build(model, texts: Texts, out: Path, names: list[str], settings: TextMicroscopeSettings,
           progress: bool) -> TextSite:
    store = collect(model, texts, out, names, settings.shard_texts, progress)
    unknown: dict[str, int] = {}
    long_texts = 0
    for t in texts.texts:
        enc = model.encode(t)
        for ch, n in enc.unknown_chars.items():
            unknown[ch] = unknown.get(ch, 0) + n
        window = model.contract.max_length - len(model.prefix) - len(model.suffix)
        long_texts += (not model.recurrent) and len(enc.ids) > window
    units = list(settings.units) if isinstance(settings.units, tuple) else settings.units
    summaries = []
    for name in names:
        info = model.layer_info(name)
        chosen = parse_units(units, info.channels)
        summary = summarize(model, texts, store, name, chosen, settings.top_k, attribute=settings.attribute)
        summaries.append({"name": name, "channels": info.channels, "units": summary["units"]})
    return TextSite(out, model.name, texts, summaries, model.contract.kind, unknown, long_texts)


def top_examples(site: str | os.PathLike, layer: str, unit: int, k: int | None = None, which: str = "top"
                 ) -> list[dict]:
    """The texts that excite ``unit`` of ``layer`` most, best first (:func:`luminate.units.examples.top_examples`:
    ``[{"text", "position", "value", "index", "source", "token"}]``; ``which="quantiles"``: samples across the range
    of peaks)."""
    if not is_text_site(site):
        raise FileNotFoundError(f"{site} holds no text Microscope (no data/{STORE}/{MANIFEST}): build one with "
                                "`luminate microscope char_rnn TEXTS.txt -o SITE`")
    return _top_examples(site, layer, unit, k, which)
