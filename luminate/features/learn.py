"""Learn a dictionary of a layer: activations at spatial positions from the activation store, a held-out split by
image, a resumable training run, held-out metrics, stability across seeds.

Rows come from :func:`luminate.atlas.collect` (``positions_per_image`` positions of every image, no attributions)
and are read from the sharded store: into memory when they fit (``memory_rows``), otherwise batch by batch from the
memory-mapped shards, with the same batches either way. Every ``holdout_every``-th image is held out: the metrics
are computed on its positions only, which the training never sees.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from luminate.data.store import ActivationStore
from luminate.features.dictionary import FILE, Dictionary, read_dictionary, stability
from luminate.features.sae import TrainSettings, fit_nmf, settings_key, train_sae
from luminate.models.base import Model, as_model
from luminate.units.examples import NonFiniteActivationsError

logger = logging.getLogger("luminate.features")

#: training rows needed per feature; fewer and the dictionary memorizes positions instead of finding directions
ROWS_PER_FEATURE = 4
STORE = "store"
CHECKPOINT = "checkpoint.pt"


def _layer_grid(model: Model, layer: str) -> tuple[int, int, int]:
    shape = tuple(model.layer_info(layer).shape)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} of {model.name} has output shape {shape}; a dictionary of positions needs "
                         "a convolutional layer [C, H, W] (`luminate layers MODEL` lists them)")
    return int(shape[0]), int(shape[1]), int(shape[2])


def open_store(model: Model, images_or_store, layer: str, folder: Path, positions_per_image: int | None,
               seed: int, progress: bool, num_workers: int | None) -> ActivationStore:
    """The activation store of ``layer``: the one given (checked against the model), or one collected into
    ``folder/store`` (resumed when it exists)."""
    given = images_or_store
    if isinstance(given, ActivationStore) or (isinstance(given, (str, os.PathLike))
                                             and (Path(given) / "manifest.json").is_file()):
        store = given if isinstance(given, ActivationStore) else ActivationStore(given)
        if layer not in store.layers:
            raise KeyError(f"layer {layer!r} was not collected in {store.path}; it holds {', '.join(store.layers)}")
        weights = store.settings.get("weights")
        if store.model_name != model.name or (weights and weights != model.weights_fingerprint()):
            raise ValueError(f"the store {store.path} holds activations of {store.model_name}, not of {model.name} "
                             "(or of other weights): collect this model's activations")
        return store
    from luminate.atlas.collect import collect

    channels, h, w = _layer_grid(model, layer)
    positions = min(h * w, positions_per_image or 256)
    return collect(model, given, layer, folder / STORE, positions_per_image=positions, attribute=False,
                   shard_size=positions * 64, seed=seed, progress=progress, num_workers=num_workers)


def check_finite(store: ActivationStore, layer: str) -> None:
    """Raise :class:`NonFiniteActivationsError` naming the first image whose activations hold NaN / infinity."""
    key = store.layer_info(layer)["key"]
    for first, shard in store.iter_shards([f"acts.{key}", "image"]):
        acts = np.asarray(shard[f"acts.{key}"])
        bad = ~np.isfinite(acts).all(1)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            index = int(shard["image"][row])
            n_bad = len(np.unique(np.asarray(shard["image"])[bad]))
            raise NonFiniteActivationsError(
                f"activations of {layer} hold NaN or infinity for image {store.image_names()[index]} (index {index}; "
                f"{n_bad} image(s) of that shard): check that image and the model (inputs in range, weights "
                "finite); remove it from the set to go on")


def split_rows(store: ActivationStore, holdout_every: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training rows, held-out rows)`` of the store: rows of every ``holdout_every``-th image are held out."""
    images = store.read("image")
    held = (images % holdout_every) == holdout_every - 1 if holdout_every > 1 else np.zeros(len(images), bool)
    return np.nonzero(~held)[0], np.nonzero(held)[0]


def row_reader(store: ActivationStore, layer: str, rows: np.ndarray, memory_rows: int
               ) -> Callable[[np.ndarray], torch.Tensor]:
    """``read(indices) -> [len, C]`` float32 for indices into ``rows``: from memory when ``len(rows) <=
    memory_rows``, else from the memory-mapped shards (the same values either way)."""
    field = f"acts.{store.layer_info(layer)['key']}"
    if len(rows) <= memory_rows:
        data = torch.from_numpy(np.ascontiguousarray(store.read(field, rows), dtype=np.float32))
        return lambda idx: data[torch.from_numpy(np.asarray(idx, dtype=np.int64))]
    return lambda idx: torch.from_numpy(np.ascontiguousarray(store.read(field, rows[np.asarray(idx)]),
                                                             dtype=np.float32))


def moments(read: Callable[[np.ndarray], torch.Tensor], n: int, chunk: int = 65536) -> tuple[torch.Tensor, float]:
    """Mean ``[C]`` and the mean distance to it (the input scale) over ``n`` rows, streamed."""
    total, count = None, 0
    for lo in range(0, n, chunk):
        x = read(np.arange(lo, min(n, lo + chunk))).double()
        total = x.sum(0) if total is None else total + x.sum(0)
        count += len(x)
    mean = (total / count).float()
    dist = 0.0
    for lo in range(0, n, chunk):
        x = read(np.arange(lo, min(n, lo + chunk)))
        dist += float((x - mean).norm(dim=1).double().sum())
    return mean, max(dist / count, 1e-8)


def metrics(dictionary: Dictionary, read: Callable[[np.ndarray], torch.Tensor], n: int, chunk: int = 16384) -> dict:
    """Held-out quality of ``dictionary`` on ``n`` rows: ``r2`` (explained variance, 1 - SSE / total sum of squares
    around the rows' mean), ``l0`` (mean number of non-zero codes per position), ``dead`` (fraction of features
    that are zero on every row), ``rows``; and ``firing`` ``[N]``, each feature's fraction of non-zero rows."""
    if n == 0:
        raise ValueError("no held-out positions to measure the dictionary on: use more images (every "
                         "holdout_every-th image is held out)")
    sse = 0.0
    total = None
    squares = 0.0
    nonzero = 0
    fires = torch.zeros(dictionary.n_features, dtype=torch.float64)
    for lo in range(0, n, chunk):
        x = read(np.arange(lo, min(n, lo + chunk)))
        z = dictionary.encode(x)
        x_hat = dictionary.decode(z)
        sse += float((x - x_hat).double().pow(2).sum())
        xd = x.double()
        total = xd.sum(0) if total is None else total + xd.sum(0)
        squares += float(xd.pow(2).sum())
        active = z > 0
        nonzero += int(active.sum())
        fires += active.sum(0).double()
    sst = squares - float(total.pow(2).sum()) / n
    firing = (fires / n).float()
    return {"r2": 1.0 - sse / max(sst, 1e-12), "l0": nonzero / n, "dead": float((fires == 0).float().mean()),
            "rows": int(n), "firing": firing.tolist()}


def learn(model, images_or_store, layer: str, n_features: int | None = None, k: int | None = None,
          method: str | None = None, *, settings: TrainSettings = TrainSettings(),
          out: str | os.PathLike | None = None, progress: bool = True, num_workers: int | None = None,
          **fields) -> Dictionary:
    """Learn a sparse dictionary of ``n_features`` directions of ``layer``'s activation space.

    Args:
        model: a Model or a zoo name.
        images_or_store: images (a folder, a list of paths, a Dataset; collected into ``out/store``) or an
            :class:`~luminate.atlas.ActivationStore` (or its folder) holding ``layer``.
        layer: a convolutional layer; every position of every image is one training vector.
        n_features, k, method: dictionary size (default 256), active codes per position (16) and ``"topk"`` (TopK
            SAE, the default), ``"batchtopk"`` (BatchTopK SAE) or ``"nmf"`` (scikit-learn NMF of the positive and
            negative parts); given, they override ``settings``.
        settings: :class:`~luminate.features.sae.TrainSettings`: the training run (``steps``, ``batch_size``,
            ``lr``, ``aux_weight``, ``dead_steps``; see :mod:`luminate.features.sae`), ``seed`` (the same seed gives
            the same dictionary), ``holdout_every`` (every ``holdout_every``-th image is held out for the metrics),
            ``positions_per_image`` (default: all, at most 256), ``stability_seed`` (also train with this seed and
            store the mean cosine of Hungarian-matched directions as ``metrics["stability"]``),
            ``checkpoint_every``, ``memory_rows`` (read the training rows into memory when there are at most this
            many, else stream them from the store's shards). ``fields`` override its fields (``steps=500``).
        out: a folder for the store, the checkpoint (every ``checkpoint_every`` steps, atomic; a killed run resumes
            from it) and ``dictionary.safetensors``. A dictionary there made with the same settings is loaded, not
            retrained. Default: a temporary folder (nothing kept).

    Returns:
        the :class:`Dictionary`, with ``metrics`` on the held-out images' positions (``r2``, ``l0``, ``dead``,
        ``stability`` when asked, ``firing`` per feature).
    """
    given = {"n_features": n_features, "k": k, "method": method}
    settings = settings.replace(**{name: v for name, v in given.items() if v is not None}, **fields)
    model = as_model(model)
    channels, _, _ = _layer_grid(model, layer)
    temporary = None
    if out is None:
        temporary = tempfile.TemporaryDirectory(prefix="luminate-features-")
        out = temporary.name
    out = Path(out)
    try:
        store = open_store(model, images_or_store, layer, out, settings.positions_per_image, settings.seed, progress,
                           num_workers)
        record = training_record(store, layer, settings)
        key = settings_key(record)
        saved = out / FILE
        if saved.is_file():
            try:
                found = read_dictionary(saved)
            except (OSError, ValueError) as exc:   # damaged: never used, learned again, and said so
                logger.warning("%s; learning it again", exc)
                found = None
            if found is not None and found.info.get("key") == key:
                return found
            if found is not None:   # another run's settings: replaced, out loud
                logger.warning("%s was learned with other settings (%s); learning a new one in its place", saved,
                               describe_change(found.info.get("settings", {}), record))
        check_finite(store, layer)
        train_rows, held_rows = split_rows(store, settings.holdout_every)
        _check_rows(store, layer, settings, len(train_rows))
        read = row_reader(store, layer, train_rows, settings.memory_rows)
        start = time.perf_counter()
        runs = [settings.seed] + ([settings.stability_seed] if settings.stability_seed is not None else [])
        dictionaries = []
        for i, run_seed in enumerate(runs):
            run_key = settings_key({**record, "run_seed": run_seed})
            dictionaries.append(_train(model, layer, read, len(train_rows), channels, settings.replace(seed=run_seed),
                                       out / (CHECKPOINT if i == 0 else f"checkpoint-seed{run_seed}.pt"), run_key,
                                       progress, "train" if i == 0 else "second seed"))
        seconds = time.perf_counter() - start
        dictionary = dictionaries[0]
        held = row_reader(store, layer, held_rows, settings.memory_rows)
        dictionary.metrics = metrics(dictionary, held, len(held_rows))
        if len(dictionaries) > 1:
            dictionary.metrics["stability"] = stability(dictionaries[0], dictionaries[1])
        dictionary.info = {"key": key, "settings": record, "training rows": int(len(train_rows)),
                           "held-out rows": int(len(held_rows)), "seconds": round(seconds, 1),
                           "store": str(store.path)}
        if temporary is None:
            dictionary.save(saved)
            for i, run_seed in enumerate(runs):   # the finished dictionary replaces its checkpoints
                (out / (CHECKPOINT if i == 0 else f"checkpoint-seed{run_seed}.pt")).unlink(missing_ok=True)
        return dictionary
    finally:
        if temporary is not None:
            temporary.cleanup()


def describe_change(before: dict, after: dict) -> str:
    """``"k 8 -> 4, steps 1500 -> 500"``: the training settings that differ between two records."""
    changed = [f"{name} {before.get(name)} -> {after.get(name)}" for name in after
               if name != "kind" and before.get(name) != after.get(name)]
    return ", ".join(changed) or "an older format"


def training_record(store: ActivationStore, layer: str, settings: TrainSettings) -> dict:
    """The settings a dictionary is keyed by and carries in its ``info``: the store it learned from and every
    training setting that changes the result (not ``checkpoint_every``, ``memory_rows`` or ``positions_per_image``,
    which the store's hash covers). The same record as before settings values: dictionaries made then still load."""
    record = {"kind": "luminate.features-v1", "store": store.manifest.get("settings_hash"),
              "shards": len(store.shards), "layer": layer, "method": settings.method,
              "n_features": int(settings.n_features), "k": int(settings.k), "steps": int(settings.steps),
              "batch_size": int(settings.batch_size), "lr": float(settings.lr), "seed": int(settings.seed),
              "holdout_every": int(settings.holdout_every), "aux_weight": float(settings.aux_weight),
              "dead_steps": int(settings.dead_steps), "stability_seed": settings.stability_seed}
    if settings.k_aux is not None:
        record["k_aux"] = int(settings.k_aux)
    return record


def _check_rows(store: ActivationStore, layer: str, settings: TrainSettings, n_train: int) -> None:
    """Enough training positions for the features, and ``k`` within them."""
    n_features, holdout_every = settings.n_features, settings.holdout_every
    need = ROWS_PER_FEATURE * n_features
    if n_train < need:
        per_image = store.settings["positions_per_image"]
        images = len(np.unique(store.read("image")))
        wanted = math.ceil(need / per_image * holdout_every / max(holdout_every - 1, 1))
        raise ValueError(
            f"{layer} gives {n_train} training positions ({images} images x {per_image} positions, every "
            f"{holdout_every}th image held out), but {n_features} features need at least {need} "
            f"({ROWS_PER_FEATURE} per feature): use more images (about {wanted}), or fewer features (at most "
            f"{n_train // ROWS_PER_FEATURE})")
    if settings.method != "nmf" and settings.k > n_features:
        raise ValueError(f"k = {settings.k} active codes exceeds the {n_features} features: give k <= n_features")


def _train(model: Model, layer: str, read, n_rows: int, channels: int, settings: TrainSettings, checkpoint: Path,
           key: str, progress: bool, desc: str) -> Dictionary:
    mean, scale = moments(read, n_rows)
    common = dict(layer=layer, model_name=model.name, weights=model.weights_fingerprint())
    if settings.method == "nmf":
        from luminate.features.sae import batch_rows

        rows = batch_rows(settings.seed, 0, n_rows, min(n_rows, 20000))    # a seeded sample: NMF is not streamed
        components = fit_nmf(read(rows).numpy(), settings.n_features, settings.seed)
        return Dictionary({"components": torch.from_numpy(components)}, "nmf", 0, **common)
    sae = train_sae(read, n_rows, channels, settings, mean=mean, scale=scale, checkpoint=checkpoint, key=key,
                    progress=progress, desc=desc)
    tensors = {"W_dec": sae.W_dec.detach(), "W_enc": sae.W_enc.detach(), "b_enc": sae.b_enc.detach(),
               "b_dec": sae.b_dec.detach(), "theta": sae.theta.detach().reshape(1)}
    return Dictionary(tensors, settings.method, settings.k, **common)
