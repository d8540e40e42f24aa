"""Collect activations and their logit attributions over an image set into a resumable store.

For each image, ``positions_per_image`` spatial positions of each layer are drawn; each gives one row:
the activation vector there and (``attribute=True``) the position's attribution to every logit,

    attr[c] = J_c · a_masked = Σ_{ch,y,x} ∂logit_c/∂act[ch,y,x] · act[ch,y,x] · [(y,x) = position]

the linear estimate of how much that position adds to class ``c`` (Lucid's activation-atlas
collection notebook). It is computed with forward-mode AD in one pass for all classes: a forward
hook on the layer returns ``fwAD.make_dual(output, output masked to the position)``, and the logits'
tangent is the attribution ``[N, n_classes]``. With several positions per image there is one pass per
position index ``k``; with several layers, one per layer (the first pass's logits give each image's
top classes).

Positions: Lucid drew one position per image with ``randint(1, H)``, which never picks row or column
0 (a quirk); here positions are drawn uniformly over the whole grid, without repeats within an image,
from a generator seeded by ``(seed, image index)`` only — so the rows do not depend on batch size,
worker count, or on where an interrupted run resumed. With several layers of different grid sizes the
position is drawn on the finest grid and mapped to the others by its cell centre, so all layers see
the same image region (Lucid's "aligned" activations).

Storage: activations float32, attributions float16 by default. A row's attribution vector is
``n_classes`` wide (1000 for ImageNet: 2 kB in float16 against 4 kB) and is used for ranking and
filtering by class, where float16's 3 significant digits are plenty; activations feed the layout and
icon directions, so they keep full precision. Both are settings (:class:`CollectSettings`).

The pass itself (decoding, batches, shards, Ray Data) is :func:`luminate.data.passes.stream`; the store is
:mod:`luminate.data.store`. This module says what a batch gives: :class:`AtlasRows`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from contextlib import contextmanager
from dataclasses import InitVar, dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from luminate.analysis.lucid_attribution import dual_forward, position_mask  # noqa: F401 (shared, re-exported)
from luminate.data.inputs import Batch, image_set
from luminate.data.passes import stream
from luminate.data.settings import (CollectionSettings, LayerSpec, PassSettings, output_width, split_options,
                                    with_options)
from luminate.data.store import ActivationStore, StoreWriter
from luminate.models.base import Model, as_model

logger = logging.getLogger("luminate.atlas")


_RENAMED = "attribution= is now attribute= (the one spelling of the pipelines); the old name goes in the next release"


class UnreadableImagesWarning(UserWarning):
    """Some images of a collection could not be read and were skipped."""


@dataclass(frozen=True)
class CollectSettings:
    """What the rows of an atlas store depend on (besides the model, layers and images).

    Attributes:
        positions_per_image: rows per image (distinct positions; Lucid used 1).
        shard_size: rows per shard; a shard holds ``shard_size // positions_per_image`` images. At most one
            shard's rows are held in memory.
        seed: seeds the position draws (per image, from ``(seed, image index)``).
        attribute: also store each position's attribution to every logit (forward-mode AD). The old name
            ``attribution=`` is still accepted, with a ``DeprecationWarning``, for one release.
        top_k: how many of each image's top classes (by logit) to store.
        activation_dtype, attribution_dtype: storage dtypes (``"float32"`` / ``"float16"``).
    """

    positions_per_image: int = 1
    shard_size: int = 1024
    seed: int = 0
    attribute: bool = True
    top_k: int = 5
    activation_dtype: str = "float32"
    attribution_dtype: str = "float16"
    attribution: InitVar[bool | None] = None

    def __post_init__(self, attribution: bool | None = None) -> None:
        if attribution is not None:
            warnings.warn(_RENAMED, DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "attribute", bool(attribution))
        if self.positions_per_image < 1 or self.shard_size < 1:
            raise ValueError("positions_per_image, batch_size and shard_size must be at least 1")
        for dtype in (self.activation_dtype, self.attribution_dtype):
            if np.dtype(dtype).kind != "f":
                raise ValueError(f"storage dtypes must be float types like 'float32' or 'float16', not {dtype!r}")

    @property
    def shard_images(self) -> int:
        return max(1, self.shard_size // self.positions_per_image)


def collect(model: Model | str, images, layers: str | Sequence[str], out, settings: CollectSettings | None = None, *,
            run: PassSettings | None = None, overwrite: bool = False, shards: Iterable[int] | None = None,
            **options) -> ActivationStore:
    """Collect activations (and attributions) of ``layers`` over ``images`` into the store ``out``.

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name; images go through ``model.contract.preprocess``
            (centre crop, resize to the native size).
        images: a folder (searched recursively), a list of image paths, a torch ``Dataset`` of images
            or ``(image, label)`` tuples, or an :class:`~luminate.data.ImageSet`.
        layers: one dotted layer name or several.
        out: the store folder. Rerunning with the same settings resumes: finished shards are kept
            as they are and only missing ones are computed. Other settings raise
            :class:`~luminate.data.store.StoreSettingsError` unless ``overwrite=True``.
        settings: what the rows depend on (:class:`CollectSettings`: positions per image, shard size, seed,
            ``attribute``, top classes, storage dtypes).
        run: how the pass runs (:class:`~luminate.data.PassSettings`: ``batch_size``, decoding ``num_workers``,
            ``progress``, ``ray``: ``None`` this process, ``"local"`` or a Ray address: the pass runs on Ray Data,
            or one Ray task per shard with ``engine="tasks"``; results do not depend on any of it).
        overwrite: replace a store made with other settings.
        shards: compute only these shard indices (to split one collection across processes or machines
            writing to the same folder; shard ``k`` holds images ``k*S .. (k+1)*S - 1``).
        options: any field of either settings value by name (``positions_per_image=4, batch_size=16``).

    Returns:
        the :class:`~luminate.data.ActivationStore`. Unreadable images are skipped, never fatal: they are
        named in an :class:`UnreadableImagesWarning`, in ``store.skipped`` (``(name, reason)``) and in
        ``store.summary()``.
    """
    if "attribution" in options:
        warnings.warn(_RENAMED, DeprecationWarning, stacklevel=2)
        options["attribute"] = options.pop("attribution")
    mine, theirs = split_options(options, CollectSettings, PassSettings)
    settings, run = with_options(settings, CollectSettings, mine), with_options(run, PassSettings, theirs)
    model = as_model(model)
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("give at least one layer to collect, e.g. layers='blocks.10'")
    specs = [LayerSpec.of(model, name) for name in names]
    ref_grid = max((s.grid for s in specs), key=lambda g: g[0] * g[1])
    if settings.positions_per_image > ref_grid[0] * ref_grid[1]:
        raise ValueError(f"positions_per_image={settings.positions_per_image} exceeds the {ref_grid[0]}x"
                         f"{ref_grid[1]} positions of layer(s) {', '.join(names)}")
    n_classes = output_width(model)
    top_k = min(settings.top_k, n_classes)
    imageset = image_set(images)
    collection = CollectionSettings.of(
        model, imageset, names, settings.shard_images, positions_per_image=settings.positions_per_image,
        seed=settings.seed, sampling="uniform-v1", attribution=bool(settings.attribute),
        activation_dtype=settings.activation_dtype, attribution_dtype=settings.attribution_dtype, top_k=top_k)
    writer = StoreWriter(out, collection.header(model, imageset, specs, n_classes), imageset.names(),
                         overwrite=overwrite)
    done = writer.done()
    n_shards = collection.n_shards
    wanted = set(range(n_shards)) if shards is None else {int(k) for k in shards}
    todo = sorted(k for k in wanted - done if 0 <= k < n_shards)
    if done:
        logger.info("resuming %s: %d of %d shards already collected", out, len(done), n_shards)
    if todo and run.ray is not None and run.engine == "tasks":
        from luminate.parallel import run_tasks

        worker = PassSettings(batch_size=run.batch_size, num_workers=0, progress=False)
        sizes = [collection.shard_range(k)[1] - collection.shard_range(k)[0] for k in todo]
        run_tasks(_collect_shard, [(model, images, names, str(out), k, settings, worker) for k in todo],
                  ray=run.ray, num_cpus=run.num_cpus, max_retries=run.max_retries, progress=run.progress,
                  desc="collect", unit="img",
                  weights=sizes, shared={"model": model})
    elif todo:
        work = AtlasRows(names, settings, top_k, n_classes)

        def commit(shard: int, parts: list, skipped: list) -> None:
            for name, reason in skipped:
                logger.info("skipping unreadable image %s: %s", name, reason)
            arrays = {f: np.concatenate([p[f] for p in parts]) for f in parts[0]} if parts else \
                work.empty_rows(specs)
            if not writer.write_shard(shard, arrays, collection.shard_range(shard), skipped):
                logger.info("shard %d was finished by another writer meanwhile; kept that one", shard)

        stream(model, imageset, todo, collection.shard_images, work, commit, run)
    return _finished(out, collection.n_images)


def _finished(out, n_images: int) -> ActivationStore:
    store = ActivationStore(out)
    if store.skipped:
        shown = ", ".join(f"{name} ({reason})" for name, reason in store.skipped[:20])
        more = f" and {len(store.skipped) - 20} more" if len(store.skipped) > 20 else ""
        warnings.warn(f"skipped {len(store.skipped)} unreadable image(s): {shown}{more}", UnreadableImagesWarning,
                      stacklevel=3)
    if store.complete and len(store) == 0:
        reasons = "; ".join(f"{n}: {r}" for n, r in store.skipped[:3])
        raise ValueError(f"none of the {n_images} images could be read ({reasons}). Check the image set; the "
                         f"empty store in {out} can be removed.")
    return store


def _collect_shard(model, images, layers, out: str, shard: int, settings: CollectSettings, run: PassSettings) -> int:
    """One shard of :func:`collect`, in a Ray worker (idempotent: a listed shard is left as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImagesWarning)   # the driver reports them once
        collect(model, images, layers, out, settings, run=run, shards=[shard])
    return shard


@dataclass(frozen=True)
class AtlasRows:
    """The atlas's work on a batch (:class:`luminate.data.passes.BatchWork`): ``positions_per_image`` rows per
    image, each the activation vector at a drawn position (and its attribution to every logit), in the storage
    dtypes; an overflow of a storage dtype is warned about once per pass."""

    layers: tuple[str, ...] | list[str]
    settings: CollectSettings
    top_k: int
    n_classes: int

    @contextmanager
    def open(self, model: Model) -> Iterator:
        specs = [LayerSpec.of(model, name) for name in self.layers]
        ref_grid = max((s.grid for s in specs), key=lambda g: g[0] * g[1])
        s = self.settings
        warned = []

        def rows_of(batch: Batch) -> dict[str, np.ndarray]:
            rows = _batch_rows(model, batch, specs, ref_grid, s.positions_per_image, s.seed, s.attribute,
                               self.top_k, self.n_classes)
            for field, value in rows.items():
                dtype = s.attribution_dtype if field.startswith("attr.") else s.activation_dtype \
                    if field.startswith("acts.") else None
                if dtype is not None:
                    stored = value.astype(dtype)
                    if not warned and not np.isfinite(stored).all() and np.isfinite(value).all():
                        warned.append(field)
                        warnings.warn(f"values of {field} overflow {dtype}; collect with a wider dtype "
                                      f"(activation_dtype / attribution_dtype='float32')", RuntimeWarning)
                    rows[field] = stored
            return rows

        with model.frozen():  # eval mode, frozen weights; the caller's network is put back as it was
            yield rows_of

    def empty_rows(self, specs: Sequence[LayerSpec]) -> dict[str, np.ndarray]:
        """The arrays of a shard without readable images."""
        s = self.settings
        rows: dict[str, np.ndarray] = {}
        for spec in specs:
            rows[f"acts.{spec.key}"] = np.zeros((0, spec.channels), dtype=s.activation_dtype)
            if s.attribute:
                rows[f"attr.{spec.key}"] = np.zeros((0, self.n_classes), dtype=s.attribution_dtype)
            rows[f"yx.{spec.key}"] = np.zeros((0, 2), dtype=np.int16)
        rows.update(image=np.zeros(0, np.int64), position=np.zeros(0, np.int16), label=np.zeros(0, np.int64),
                    top_classes=np.zeros((0, self.top_k), np.int32), top_logits=np.zeros((0, self.top_k), np.float32))
        return rows


def draw_positions(seed: int, image_index: int, grid: tuple[int, int], count: int) -> np.ndarray:
    """``count`` distinct positions ``[count, 2]`` (row, column) in ``grid`` for one image, uniform,
    from a generator seeded by ``(seed, image_index)`` alone."""
    key = hashlib.blake2b(f"luminate.collect:{seed}:{image_index}".encode(), digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
    cells = torch.randperm(grid[0] * grid[1], generator=generator)[:count].numpy()
    return np.stack([cells // grid[1], cells % grid[1]], axis=1)


def _map_positions(yx: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Cell centres of ``src``-grid positions, as cells of the ``dst`` grid."""
    if src == dst:
        return yx
    y = ((2 * yx[..., 0] + 1) * dst[0]) // (2 * src[0])
    x = ((2 * yx[..., 1] + 1) * dst[1]) // (2 * src[1])
    return np.stack([y, x], axis=-1)


def _batch_rows(model: Model, batch, specs, ref_grid, positions: int, seed: int, attribution: bool,
                top_k: int, n_classes: int) -> dict[str, np.ndarray]:
    """The rows of one batch: image-major, ``positions`` rows per image."""
    device = model.device
    images = batch.images.to(device, non_blocking=True)
    n = images.shape[0]
    indices = batch.indices.numpy()
    ref_yx = np.stack([draw_positions(seed, int(i), ref_grid, positions) for i in indices])  # [N, P, 2]
    rows: dict[str, np.ndarray] = {}
    logits = None
    if not attribution:
        acts, logits = _plain_forward(model, images, {s.name: s.module for s in specs})
    for spec in specs:
        yx = _map_positions(ref_yx, ref_grid, spec.grid)  # [N, P, 2]
        yx_t = torch.as_tensor(yx, device=device)
        vectors, attrs = [], []
        for k in range(positions):
            if attribution:
                act, out, tangent = dual_forward(model, images, spec.name, yx_t[:, k])
                logits = out if logits is None else logits
                attrs.append(tangent.float().cpu())
            else:
                act = acts[spec.name]
            vectors.append(_at(act, yx_t[:, k]).float().cpu())
        rows[f"acts.{spec.key}"] = torch.stack(vectors, 1).reshape(n * positions, -1).numpy()
        if attribution:
            rows[f"attr.{spec.key}"] = torch.stack(attrs, 1).reshape(n * positions, -1).numpy()
        rows[f"yx.{spec.key}"] = yx.reshape(n * positions, 2).astype(np.int16)
    if not isinstance(logits, torch.Tensor) or logits.shape != (n, n_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{model.name} returns {shape} for {n} images; collection needs logits [N, {n_classes}] "
                         f"(one per class label)")
    values, classes = torch.topk(logits.float(), top_k, dim=1)
    repeat = lambda a: np.repeat(a, positions, axis=0)  # noqa: E731
    rows["image"] = repeat(indices.astype(np.int64))
    rows["position"] = np.tile(np.arange(positions, dtype=np.int16), n)
    rows["label"] = repeat(batch.labels.numpy().astype(np.int64))
    rows["top_classes"] = repeat(classes.cpu().numpy().astype(np.int32))
    rows["top_logits"] = repeat(values.cpu().numpy().astype(np.float32))
    return rows


def _at(act: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """``act`` ``[N, C, H, W]`` at one position per item ``yx`` ``[N, 2]`` -> ``[N, C]`` (``[N, C]`` as is)."""
    if act.ndim == 2:
        return act
    return act[torch.arange(act.shape[0], device=act.device), :, yx[:, 0], yx[:, 1]]


def _plain_forward(model: Model, images: torch.Tensor, modules: dict[str, nn.Module]
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Activations of the layers named in ``modules`` (``"name#k"``: that call; token layers as grids) and the
    model's output, in one pass."""
    from luminate.activations import LayerTap

    with torch.no_grad(), LayerTap(model, [*modules, "output"], detach=True, check_inputs=False) as tap:
        acts = tap(images)
    out = acts.pop("output")
    return acts, out
