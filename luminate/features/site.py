"""A features site: a dictionary of one layer with everything its pages show, computed resumably.

:func:`build` runs, into ``SITE/data/<layer>/``:

1. activations at positions into the activation store (:func:`luminate.atlas.collect`), resumed by shard;
2. the dictionary (:func:`luminate.features.learn`, checkpointed; a finished one is loaded, not retrained), with
   a second seed for the stability figure;
3. the examples pass (:func:`luminate.units.examples.examples_pass`, the Microscope's with the dictionary's
   :meth:`Dictionary.encode` as encoder): every image's codes at every position, each feature's maximum over
   positions per image and where it is, and how many positions it fires at (``examples.npz``);
4. for the features given pages: their effect on the classes (forward-mode gradient x the feature's own share of
   the activations, ``code map x decoder direction``, on its top images) and feature visualizations of their
   directions (:func:`luminate.features.render.render_features`, in the render cache).

Each stage's result is keyed by its inputs, so a rerun of a finished site computes nothing; with
:func:`luminate.views.features.write_site` it writes no file either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from luminate.activations import LayerTap
from luminate.data.inputs import ImageList, ImageSet, image_set
from luminate.cache import atomic_write, load_keyed_npz, save_keyed_npz
from luminate.features.dictionary import Dictionary, dictionary_dir, load_dictionary
from luminate.features.learn import learn
from luminate.features.render import FEATURE_IMAGES
from luminate.features.sae import TrainSettings
from luminate.images import UnreadableImageError
from luminate.data.settings import LayerSpec, PassSettings, parse_units
from luminate.models.base import Model, as_model
from luminate.units.render import Directions, RenderSettings
from luminate.units.examples import examples_pass, quantile_samples, ranked
from luminate.units.examples import top_examples as _site_top_examples

EXAMPLES = "examples.npz"
EFFECTS = "effects.npz"
SHOWN = "shown.pt"
VERSION = 1

logger = logging.getLogger(__name__)


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _imageset_of(images, store) -> ImageSet:
    """The image set of a run: the images given, or the files of a store's images."""
    if images is not None:
        return image_set(images)
    paths = [store.image_path(i) for i in range(store.n_images)]
    if any(p is None for p in paths):
        raise ValueError(f"the store {store.path} was collected from a Dataset; pass the images themselves")
    return ImageList(paths)


def feature_examples(model: Model, dictionary: Dictionary, imageset: ImageSet, path: Path,
                     run: PassSettings = PassSettings()) -> dict:
    """The examples pass of the dictionary's features (:func:`luminate.units.examples.examples_pass` with the
    dictionary's ``encode``: its codes of every image at every position), as the site keeps it: ``peak`` ``[I, N]``
    (each feature's maximum over positions), ``argmax`` ``[I, N]`` (flat ``y * W + x``), ``image`` ``[I]``
    (indices of the readable images), ``fires`` ``[N]`` (positions where the feature is non-zero), ``positions``
    (their total), ``grid``, ``names``, ``paths`` and ``skipped``: saved in ``path`` and read back when the
    dictionary and images are the same."""
    key = _digest([VERSION, dictionary.info.get("key"), imageset.fingerprint(), model.weights_fingerprint()])
    found = load_keyed_npz(path, key)
    if found is not None:
        return found
    codes, skipped = examples_pass(model, imageset, dictionary.layer, dictionary.encode, run, "codes of every image")
    grid = LayerSpec.of(model, dictionary.layer).grid
    n = len(imageset)
    paths = [str(imageset.path(i)) if hasattr(imageset, "path") else imageset.name(i) for i in range(n)]
    result = {"key": np.array(key), "peak": codes["peak"], "argmax": codes["argmax"], "image": codes["image"],
              "fires": codes["fires"].sum(0, dtype=np.int64).astype(np.float64),
              "positions": np.array(len(codes["image"]) * grid[0] * grid[1]),
              "grid": np.array(grid, dtype=np.int64), "names": np.array(imageset.names()), "paths": np.array(paths),
              "skipped": np.array([f"{a}\t{b}" for a, b in skipped] or [""])}
    save_keyed_npz(path, result)
    return result


def class_effects(model: Model, dictionary: Dictionary, pictures: torch.Tensor, features: Sequence[int],
                  batch_size: int = 16) -> torch.Tensor:
    """Each item's attribution to every logit of its feature's share of the layer: the forward-mode derivative of
    the logits along ``code_f(y, x) * direction_f`` at every position (gradient x the feature's reconstruction),
    for ``pictures[i]`` ``[B, 3, H, W]`` and ``features[i]``. Returns ``[B, classes]`` (CPU)."""
    from luminate.analysis.lucid_attribution import dual_forward

    directions = dictionary.directions
    out = []
    for lo in range(0, len(features), batch_size):
        chosen = torch.as_tensor(list(features[lo:lo + batch_size]), dtype=torch.long)
        images = pictures[lo:lo + batch_size].to(model.device)

        def mask(act: torch.Tensor, chosen=chosen) -> torch.Tensor:
            codes = dictionary.encode(act.float())                                   # [b, N, H, W]
            maps = codes[torch.arange(len(chosen)), chosen.to(codes.device)]          # [b, H, W]
            d = directions[chosen].to(act.device, act.dtype)                          # [b, C]
            return maps[:, None].to(act.dtype) * d[:, :, None, None]

        with model.frozen():
            _, _, tangent = dual_forward(model, images, dictionary.layer, mask=mask)
        out.append(tangent.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def load_pictures(model: Model, imageset: ImageSet, indices: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{index: preprocessed image [3, H, W]}`` of the readable ones among ``indices``."""
    out = {}
    for i in dict.fromkeys(int(i) for i in indices):
        try:
            out[i] = imageset.load(i, model.contract)
        except (UnreadableImageError, OSError, ValueError):   # the file changed since the examples pass
            continue
    return out


class FeatureSite:
    """Everything the pages of a features site show (see :func:`luminate.views.features.write_site`).

    Attributes: path, model, dictionary, examples (:func:`feature_examples`), pages (features given pages), renders
    ``{feature: {"positive", "diversity"}}``, effects ``{feature: [classes]}``, top_k, settings, microscope (a
    Microscope site to link neurons to, or None), shown ``{feature: {"guided" / "unguided": scores}}`` (the scores
    of the images a feature page shows, on photos held out from the guide), stamp (a hash of everything the pages
    depend on).
    """

    def __init__(self, path: Path, model: Model, imageset: ImageSet, dictionary: Dictionary, examples: dict,
                 pages: list[int], renders: dict, effects: dict, top_k: int, settings: dict,
                 microscope: Path | None = None, shown: dict | None = None):
        self.path, self.model, self.imageset = path, model, imageset
        self.dictionary, self.examples, self.pages = dictionary, examples, pages
        self.renders, self.effects, self.top_k = renders, effects, top_k
        self.settings, self.microscope, self.shown = settings, microscope, shown or {}
        payload = [VERSION, dictionary.info.get("key"), str(examples["key"]), pages, sorted(renders), top_k,
                   settings, str(microscope) if microscope else None, sorted(self.shown.items())]
        self.stamp = _digest(payload)

    @property
    def layer(self) -> str:
        return self.dictionary.layer

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [tuple(s.split("\t", 1)) for s in self.examples["skipped"].tolist() if s]

    def firing(self) -> np.ndarray:
        """Each feature's firing frequency: the fraction of all positions of all images where its code is > 0."""
        return self.examples["fires"] / max(int(self.examples["positions"]), 1)

    def top_examples(self, feature: int, k: int | None = None) -> list[dict]:
        return ranked(self.examples, feature, self.top_k if k is None else k)

    def class_name(self, k: int) -> str:
        labels = self.model.labels
        return str(labels[int(k)]).split(",")[0].strip() if labels is not None else f"class {int(k)}"

    def classes(self, feature: int, n: int = 6) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """Classes the feature raises and lowers most: ``([(class, mean attribution)], [...])``."""
        row = self.effects.get(int(feature))
        if row is None or not len(row):
            return [], []
        order = np.argsort(-row, kind="stable")
        raised = [(self.class_name(k), float(row[k])) for k in order[:n] if row[k] > 0]
        lowered = [(self.class_name(k), float(row[k])) for k in order[::-1][:n] if row[k] < 0]
        return raised, lowered

    def neurons(self, feature: int, n: int = 8) -> list[tuple[int, float]]:
        """The channels with the largest decoder weights of the feature: ``[(channel, weight)]``."""
        d = self.dictionary.directions[int(feature)]
        order = torch.argsort(-d.abs(), stable=True)[:n]
        return [(int(c), float(d[c])) for c in order]

    def similar(self, feature: int, n: int = 8) -> list[tuple[int, float]]:
        """The features with the most similar directions (cosine), best first."""
        d = self.dictionary.directions
        cos = d @ d[int(feature)]
        cos[int(feature)] = -2
        order = torch.argsort(-cos, stable=True)[:n]
        return [(int(f), float(cos[f])) for f in order]

    def histogram(self, feature: int, bins: int = 32) -> dict:
        """Histogram of the feature's maximum per image over the images where it fires, with firing figures."""
        peak = self.examples["peak"][:, int(feature)]
        on = peak[peak > 0]
        if len(on):
            lo, hi = float(on.min()), float(on.max())
            counts, edges = np.histogram(on, bins=bins, range=(lo, hi if hi > lo else lo + 1))
        else:
            counts, edges = np.zeros(bins, np.int64), np.linspace(0, 1, bins + 1)
        return {"counts": counts, "edges": edges, "images": float(len(on) / max(len(peak), 1)),
                "positions": float(self.firing()[int(feature)]), "n_images": int(len(peak)),
                "mean": float(on.mean()) if len(on) else 0.0}

    def load_pictures(self, indices: Sequence[int]) -> dict[int, torch.Tensor]:
        return load_pictures(self.model, self.imageset, indices)

    def code_maps(self, pictures: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """``{image index: codes [N, h, w]}`` (CPU) of the given preprocessed pictures."""
        keys = list(pictures)
        out = {}
        with torch.no_grad(), self.model.frozen(), LayerTap(self.model, [self.layer], detach=True) as tap:
            for lo in range(0, len(keys), 32):
                part = keys[lo:lo + 32]
                act = tap(torch.stack([pictures[i] for i in part]).to(self.model.device))[self.layer]
                out.update(zip(part, self.dictionary.encode(act.float().cpu())))
        return out

    def feature_data(self, features: Sequence[int], batch_size: int = 16) -> Iterator[dict]:
        """Per-feature page data (see :func:`luminate.views.features.feature_page`), a few features at a time."""
        features = list(features)
        for lo in range(0, len(features), batch_size):
            chunk = features[lo:lo + batch_size]
            tops = {f: self.top_examples(f) for f in chunk}
            samples = {f: quantile_samples(self.examples, f, exclude=[t["index"] for t in tops[f]]) for f in chunk}
            pictures = self.load_pictures([e["index"] for f in chunk for e in tops[f] + samples[f]])
            maps = self.code_maps(pictures) if pictures else {}

            def shown(entries, f):
                return [{**e, "picture": pictures[e["index"]], "map": maps[e["index"]][f]} for e in entries
                        if e["index"] in pictures]
            for f in chunk:
                raised, lowered = self.classes(f)
                yield {"feature": f, "images": self.renders.get(f), "shown": self.shown.get(f),
                       "examples": shown(tops[f], f),
                       "samples": shown(samples[f], f), "hist": self.histogram(f), "raised": raised,
                       "lowered": lowered, "neurons": self.neurons(f), "similar": self.similar(f),
                       "grid": [int(g) for g in self.examples["grid"]]}


@dataclass(frozen=True)
class FeatureSettings:
    """What a features site depends on besides the model, images and layer.

    Attributes:
        training: the dictionary (:class:`~luminate.features.sae.TrainSettings`; with ``stability`` a second one is
            trained with ``seed + 1`` for the stability figure).
        images: the feature visualizations (:class:`~luminate.units.RenderSettings`, default
            :data:`~luminate.features.render.FEATURE_IMAGES`).
        top_k: dataset examples per feature. pages: features given pages (``"0:64"``, a list, None: all).
        stability: train the second dictionary.
        guided: render each page's guided image (shown first) from half of each feature's top photos among a sample
            of the images, and score it and the unguided one on the others (:mod:`luminate.analysis.shown`).
    """

    training: TrainSettings = TrainSettings()
    images: RenderSettings = FEATURE_IMAGES
    top_k: int = 9
    pages: str | tuple[int, ...] | None = "0:64"
    stability: bool = True
    guided: bool = True

    def replace(self, **fields) -> "FeatureSettings":
        """A copy with ``fields``: ``top_k``, ``pages``, ``stability``; ``steps``, ``size`` and
        ``features_per_batch`` of the visualizations; ``train_steps`` and every other training setting
        (``batch_size``, ``lr``, ...); ``seed`` seeds both."""
        top = {name: fields.pop(name) for name in ("top_k", "pages", "stability", "training", "images", "guided")
               if name in fields}
        if isinstance(top.get("pages"), list):
            top["pages"] = tuple(top["pages"])
        images = {name: fields.pop(key) for key, name in (("steps", "steps"), ("size", "size"),
                                                          ("features_per_batch", "batch")) if key in fields}
        if "train_steps" in fields:
            fields["steps"] = fields.pop("train_steps")
        if "seed" in fields:
            images["seed"] = fields["seed"]
        training = top.pop("training", self.training).replace(**fields)
        return dataclasses.replace(self, training=training, images=top.pop("images", self.images).replace(**images),
                                   **top)


def build(model, images, out: str | os.PathLike, layer: str, n_features: int | None = None, k: int | None = None,
          method: str | None = None, *, settings: FeatureSettings = FeatureSettings(),
          microscope: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, num_workers: int | None = None, dictionary: str | os.PathLike | None = None,
          **fields) -> FeatureSite:
    """Learn a dictionary of ``layer`` over ``images`` and compute everything its site shows, into ``out``.

    Args:
        model: Model or zoo name. images: a folder, list of paths, Dataset, or an activation store.
        out: the site folder (``out/data/<layer>/`` holds the store, the dictionary and the examples).
        n_features, k, method: the dictionary (:func:`luminate.features.learn`); given, they override ``settings``.
        settings: :class:`FeatureSettings`; ``fields`` override it (``top_k=4, pages="0:4", steps=128,
            train_steps=500, seed=1``; see :meth:`FeatureSettings.replace`).
        microscope: a Microscope site of the same model whose unit pages the neurons link to.
        cache_dir: the render cache (default ``$LUMINATE_CACHE/renders``; ``False``: none).
        dictionary: a dictionary made elsewhere (a SAELens folder, or a Luminate ``dictionary.safetensors``), shown
            instead of learning one (:func:`luminate.features.saelens.adopt`).
    """
    from luminate import progress as progress_module
    from luminate.data.store import ActivationStore
    from luminate.features.render import render_features

    given = {"n_features": n_features, "k": k, "method": method}
    settings = settings.replace(**{name: v for name, v in given.items() if v is not None}, **fields)
    training = settings.training.replace(stability_seed=settings.training.seed + 1 if settings.stability else None)
    visuals, top_k = settings.images, settings.top_k
    model = as_model(model)
    out = Path(out)
    folder = dictionary_dir(out, layer)
    store_given = isinstance(images, ActivationStore) or (isinstance(images, (str, os.PathLike))
                                                         and (Path(images) / "manifest.json").is_file())
    with progress_module.Job("features", stages=["activations and dictionary", "codes of every image",
                                                 "classes", "feature visualizations", "guided images"],
                             enabled=progress, unit="feature") as job:
        job.stage("activations and dictionary", f"{training.n_features} features, k = {training.k}, "
                                                f"{training.method} on {layer}")
        if dictionary is not None:   # made elsewhere: measured and shown, not learned
            from luminate.features.saelens import adopt

            dictionary = adopt(dictionary, model, images, layer, folder, progress=progress, num_workers=num_workers)
        else:
            dictionary = learn(model, images, layer, settings=training, out=folder, progress=progress,
                               num_workers=num_workers)
        if store_given:
            imageset = _imageset_of(None, images if isinstance(images, ActivationStore) else ActivationStore(images))
        else:
            imageset = image_set(images)
        job.stage("codes of every image", f"{len(imageset)} images")
        examples = feature_examples(model, dictionary, imageset, folder / EXAMPLES,
                                    PassSettings(progress=progress, num_workers=num_workers))
        chosen = parse_units(list(settings.pages) if isinstance(settings.pages, tuple) else settings.pages,
                             dictionary.n_features)
        job.stage("classes", f"{len(chosen)} features")
        effects = _effects(model, dictionary, imageset, examples, chosen, top_k, folder / EFFECTS)
        job.stage("feature visualizations", f"{len(chosen)} features, {visuals.steps} steps")
        live = [f for f in chosen if ranked(examples, f, 1)]
        renders = render_features(model, layer, dictionary.directions, live, settings=visuals, cache_dir=cache_dir,
                                  progress=progress) if live else {}
        job.stage("guided images", f"{len(renders)} features" if settings.guided else "off")
        scores = _shown(model, folder, dictionary, imageset, examples, renders, cache_dir,
                        progress) if settings.guided and renders else {}
    record = json.dumps({"top_k": int(top_k), "pages": chosen}).encode()
    meta = folder / "site.json"
    if not meta.is_file() or meta.read_bytes() != record:
        atomic_write(meta, record)
    m = dictionary.metrics
    shown = {"model": model.name, "weights": model.weights_fingerprint(), "input": model.contract.describe(),
             "layer": layer, "method": training.method, "features": dictionary.n_features, "k": dictionary.k,
             "training": f"{training.steps} steps, seed {training.seed}, {dictionary.info.get('training rows')} "
                         f"positions of {len(imageset)} images, every 5th image held out "
                         f"({dictionary.info.get('held-out rows')} positions)",
             "visualizations": f"{visuals.size} px, {visuals.steps} steps, seed {visuals.seed}, direction x cosine, "
                               "4 diverse",
             "shown first": ("guided by half of each feature's top photos (ranks 0, 2, 4, 6 of a sample), scored on "
                             "the others" if scores else "the unguided visualization"),
             "top examples": top_k, "metrics": {k2: m.get(k2) for k2 in ("r2", "l0", "dead", "stability")}}
    return FeatureSite(out, model, imageset, dictionary, examples, chosen, renders, effects, top_k, shown,
                       Path(microscope) if microscope else None, scores)


def _shown(model: Model, folder: Path, dictionary: Dictionary, imageset: ImageSet, examples: dict, renders: dict,
           cache_dir, progress: bool) -> dict[int, dict]:
    """``{feature: {name: scores}}``: each rendered feature's guided image (added to ``renders`` as ``"guided"``)
    and the scores of the guided and unguided images on the photos held out from its guide, kept in
    ``folder/shown.pt`` (a rerun with the same images scores nothing again)."""
    from luminate.analysis import shown as pages

    if not pages.can_guide(model, dictionary.layer):
        logger.warning("luminate features: %s has no block below it to guide feature images along; the pages show "
                       "the unguided images", dictionary.layer)
        return {}
    skipped = [s.split("\t", 1)[0] for s in examples["skipped"].tolist() if s]
    photos = pages.photo_sample(model, imageset, skipped)
    if photos.shape[0] < pages.MIN_PHOTOS:
        logger.warning("luminate features: %d photos are too few to guide feature images (%d needed); the pages "
                       "show the unguided images", photos.shape[0], pages.MIN_PHOTOS)
        return {}
    features = sorted(renders)
    directions = Directions.for_vectors(dictionary.layer, dictionary.directions[features], kind="feature",
                                        names=[f"feature {f}" for f in features])
    guided = pages.render_guided(model, directions, photos, cache_dir, progress=progress)
    shown = {f: {"guided": g, "unguided": renders[f]["positive"]} for f, g in zip(features, guided)}
    path = folder / SHOWN
    scores = pages.saved_scores(path, shown)
    if scores is None:
        scores = dict(zip(features, pages.score_shown(model, directions, [shown[f] for f in features], photos)))
    pages.save_shown(path, shown, scores, layer=dictionary.layer)
    for f in features:
        renders[f]["guided"] = shown[f]["guided"]
    return scores


def shown_images(site: str | os.PathLike, layer: str, feature: int) -> list[torch.Tensor]:
    """The images the feature's page shows, ``[3, H, W]`` in [0, 1], the one shown first first: the guided image
    and the unguided one (a site built with ``guided`` and enough photos), else the unguided one alone."""
    from luminate.analysis.shown import read_shown

    path = dictionary_dir(site, layer) / SHOWN
    if path.is_file():
        return list(read_shown(path, feature, f"feature {feature} of {layer}")[0].values())
    raise FileNotFoundError(f"no guided images of {layer} in {site}: build the site with `luminate features` "
                            "(at least 12 readable images, guided images on)")


def shown_scores(site: str | os.PathLike, layer: str, feature: int) -> dict:
    """``{name: {"path_score", "ratio", "flagged"}}`` of the images :func:`shown_images` returns (empty without)."""
    from luminate.analysis.shown import read_shown

    path = dictionary_dir(site, layer) / SHOWN
    return read_shown(path, feature)[1] if path.is_file() else {}


def _effects(model: Model, dictionary: Dictionary, imageset: ImageSet, examples: dict, features: list[int],
             top_k: int, path: Path) -> dict[int, np.ndarray]:
    """``{feature: mean attribution to every class over its top images}`` (saved, keyed by its inputs)."""
    key = _digest([VERSION, str(examples["key"]), features, top_k])
    found = load_keyed_npz(path, key)
    if found is not None:
        return {int(f): row for f, row in zip(found["features"], found["effects"])}
    pairs = [(f, e["index"]) for f in features for e in ranked(examples, f, top_k)]
    pictures = load_pictures(model, imageset, [i for _, i in pairs])
    pairs = [(f, i) for f, i in pairs if i in pictures]
    result: dict[int, np.ndarray] = {}
    if pairs:
        effect = class_effects(model, dictionary, torch.stack([pictures[i] for _, i in pairs]),
                               [f for f, _ in pairs]).numpy()
        for f in features:
            rows = [j for j, (g, _) in enumerate(pairs) if g == f]
            if rows:
                result[f] = effect[rows].mean(0)
    width = next((len(v) for v in result.values()), 0)
    save_keyed_npz(path, {"key": np.array(key), "features": np.array(sorted(result), dtype=np.int64),
                     "effects": np.stack([result[f] for f in sorted(result)]) if result
                     else np.zeros((0, width), np.float32)})
    return result


def top_examples(site: str | os.PathLike, layer: str, feature: int, k: int | None = None) -> list[dict]:
    """The images where ``feature`` of the dictionary of ``layer`` in a features site fires most, best first:
    ``[{"image", "value", "y", "x", "index", "name"}]`` (the Microscope's shape): ``image`` the file, ``value`` the
    feature's maximum code over positions there, ``(y, x)`` where (in the layer's grid). ``k``: at most this many
    (default: the site's ``--top``). Read by :func:`luminate.units.examples.top_examples`."""
    path = dictionary_dir(site, layer) / EXAMPLES
    if not path.is_file():
        load_dictionary(site, layer)   # names what is missing
        raise FileNotFoundError(f"{path} does not exist: build the site with `luminate features ... -o {site}`")
    return _site_top_examples(site, layer, feature, k)
