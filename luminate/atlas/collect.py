"""Collect activations and their logit attributions over an image set into a resumable store.

For each image, ``positions_per_image`` spatial positions of each layer are drawn; each gives one row:
the activation vector there and (``attribution=True``) the position's attribution to every logit,

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
icon directions, so they keep full precision. Both are parameters.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from luminate.analysis.lucid_attribution import dual_forward, position_mask  # noqa: F401 (shared, re-exported)
from luminate.atlas.imageset import DatasetImages, ImageFolder, ImageSet, image_loader, image_set, shard_batches
from luminate.atlas.store import ActivationStore, StoreWriter, layer_key
from luminate.models.base import Model, as_model

logger = logging.getLogger("luminate.atlas")


class UnreadableImagesWarning(UserWarning):
    """Some images of a collection could not be read and were skipped."""


def collect(model, images, layers: str | Sequence[str], out_dir, positions_per_image: int = 1,
            batch_size: int = 32, shard_size: int = 1024, seed: int = 0, attribution: bool = True,
            progress: bool = True, num_workers: int | None = None, *, top_k: int = 5,
            activation_dtype: str = "float32", attribution_dtype: str = "float16", overwrite: bool = False,
            shards: Iterable[int] | None = None, ray: str | None = None, num_cpus: int | None = None
            ) -> ActivationStore:
    """Collect activations (and attributions) of ``layers`` over ``images`` into the store ``out_dir``.

    Args:
        model: a :class:`~luminate.models.Model`, a zoo name or a module; images go through
            ``model.contract.preprocess`` (centre crop, resize to the native size).
        images: a folder (searched recursively), a list of image paths, a torch ``Dataset`` of images
            or ``(image, label)`` tuples, or an :class:`~luminate.atlas.ImageSet`.
        layers: one dotted layer name or several.
        out_dir: the store folder. Rerunning with the same settings resumes: finished shards are kept
            as they are and only missing ones are computed. Other settings raise
            :class:`~luminate.atlas.store.StoreSettingsError` unless ``overwrite=True``.
        positions_per_image: rows per image (distinct positions; Lucid used 1).
        batch_size: images per forward pass (results do not depend on it).
        shard_size: rows per shard; a shard holds ``shard_size // positions_per_image`` images. At most
            one shard's rows are held in memory.
        seed: seeds the position draws (per image, from ``(seed, image index)``).
        attribution: also store each position's attribution to every logit (forward-mode AD).
        progress: show a tqdm progress bar.
        num_workers: image-decoding worker processes (default ``min(2, CPUs)``; 0: decode here).
        top_k: how many of each image's top classes (by logit) to store.
        activation_dtype, attribution_dtype: storage dtypes (``"float32"`` / ``"float16"``).
        overwrite: replace a store made with other settings.
        shards: compute only these shard indices (to split one collection across processes or machines
            writing to the same folder; shard ``k`` holds images ``k*S .. (k+1)*S - 1``).
        ray: ``None`` (this process), ``"local"`` (a local Ray instance with ``num_cpus`` CPUs) or a Ray cluster
            address: each missing shard becomes a Ray task (:mod:`luminate.parallel`) writing the same shard
            files; a retried task duplicates nothing.

    Returns:
        the :class:`~luminate.atlas.ActivationStore`. Unreadable images are skipped, never fatal: they are
        named in an :class:`UnreadableImagesWarning`, in ``store.skipped`` (``(name, reason)``) and in
        ``store.summary()``.
    """
    model = as_model(model)
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("give at least one layer to collect, e.g. layers='blocks.10'")
    if positions_per_image < 1 or batch_size < 1 or shard_size < 1:
        raise ValueError("positions_per_image, batch_size and shard_size must be at least 1")
    for dtype in (activation_dtype, attribution_dtype):
        if np.dtype(dtype).kind != "f":
            raise ValueError(f"storage dtypes must be float types like 'float32' or 'float16', not {dtype!r}")
    specs = [_LayerSpec(model, name) for name in names]
    ref_grid = max((s.grid for s in specs), key=lambda g: g[0] * g[1])
    if positions_per_image > ref_grid[0] * ref_grid[1]:
        raise ValueError(f"positions_per_image={positions_per_image} exceeds the {ref_grid[0]}x{ref_grid[1]} "
                         f"positions of layer(s) {', '.join(names)}")
    n_classes = _output_width(model)
    top_k = min(top_k, n_classes)

    imageset = image_set(images)
    n_images = len(imageset)
    shard_images = max(1, shard_size // positions_per_image)
    n_shards = math.ceil(n_images / shard_images)
    settings = {
        "model": model.name, "weights": model.weights_fingerprint(), "input": model.contract.describe(),
        "layers": names, "positions_per_image": positions_per_image, "seed": seed, "sampling": "uniform-v1",
        "shard_images": shard_images, "attribution": bool(attribution), "activation_dtype": activation_dtype,
        "attribution_dtype": attribution_dtype, "top_k": top_k, "n_images": n_images,
        "images": imageset.fingerprint(),
    }
    kind = "folder" if isinstance(imageset, ImageFolder) else "dataset" if isinstance(imageset, DatasetImages) \
        else "list"
    header = {
        "model": model.name, "input": model.contract.describe(),
        "layers": [{"name": s.name, "key": s.key, "channels": s.channels, "grid": list(s.grid)} for s in specs],
        "n_classes": n_classes, "labels": list(model.labels.entries) if model.labels is not None else None,
        "images": {"count": n_images, "kind": kind, "source": imageset.source,
                   "root": str(imageset.root) if isinstance(imageset, ImageFolder) else None},
        "settings": settings, "n_shards": n_shards, "shard_images": shard_images,
    }
    writer = StoreWriter(out_dir, header, imageset.names(), overwrite=overwrite)
    done = writer.done()
    wanted = set(range(n_shards)) if shards is None else {int(k) for k in shards}
    todo = sorted(k for k in wanted - done if 0 <= k < n_shards)
    if done:
        logger.info("resuming %s: %d of %d shards already collected", out_dir, len(done), n_shards)

    if todo and ray is not None:
        from luminate.parallel import run_tasks

        options = dict(positions_per_image=positions_per_image, batch_size=batch_size, shard_size=shard_size,
                       seed=seed, attribution=attribution, progress=False, num_workers=0, top_k=top_k,
                       activation_dtype=activation_dtype, attribution_dtype=attribution_dtype)
        sizes = [min((k + 1) * shard_images, n_images) - k * shard_images for k in todo]
        run_tasks(_collect_shard, [(model, images, names, str(out_dir), k, options) for k in todo], ray=ray,
                  num_cpus=num_cpus, progress=progress, desc="collect", unit="img", weights=sizes,
                  shared={"model": model})
    elif todo:
        with model.frozen():  # eval mode, frozen weights; the caller's network is put back as it was
            _run(model, imageset, specs, ref_grid, writer, todo, shard_images, batch_size, positions_per_image,
                 seed, attribution, top_k, activation_dtype, attribution_dtype, n_classes, progress, num_workers)

    store = ActivationStore(out_dir)
    if store.skipped:
        shown = ", ".join(f"{name} ({reason})" for name, reason in store.skipped[:20])
        more = f" and {len(store.skipped) - 20} more" if len(store.skipped) > 20 else ""
        warnings.warn(f"skipped {len(store.skipped)} unreadable image(s): {shown}{more}", UnreadableImagesWarning,
                      stacklevel=2)
    if store.complete and len(store) == 0:
        reasons = "; ".join(f"{n}: {r}" for n, r in store.skipped[:3])
        raise ValueError(f"none of the {n_images} images could be read ({reasons}). Check the image set; the "
                         f"empty store in {out_dir} can be removed.")
    return store


def _collect_shard(model, images, layers, out_dir: str, shard: int, options: dict) -> int:
    """One shard of :func:`collect`, in a Ray worker (idempotent: a listed shard is left as it is)."""
    import warnings as _warnings

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UnreadableImagesWarning)   # the driver reports them once
        collect(model, images, layers, out_dir, shards=[shard], **options)
    return shard


class _LayerSpec:
    def __init__(self, model: Model, name: str):
        if name == "input":
            raise ValueError("'input' cannot be collected: choose a layer of the network (luminate layers MODEL)")
        self.name = name
        self.key = layer_key(name)
        self.module: nn.Module = model.layer(name)
        info = model.layer_info(name)
        if len(info.shape) == 3:
            self.grid = (int(info.shape[1]), int(info.shape[2]))
        elif len(info.shape) == 1:
            self.grid = (1, 1)
        else:
            raise ValueError(f"layer {name!r} has output shape {info.shape}; collection needs [C, H, W] or [C]")
        self.channels = int(info.shape[0])


def _output_width(model: Model) -> int:
    """Number of classes: from the labels when the model has them (checked on the first batch), else
    from one forward pass."""
    if model.labels is not None:
        return len(model.labels)
    with torch.no_grad():
        out = model(torch.full((1, model.contract.channels, *model.size), 0.5, device=model.device))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{model.name} returns {shape}; collection needs a classifier returning logits [N, classes]")
    return int(out.shape[1])


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


def _run(model, imageset: ImageSet, specs, ref_grid, writer: StoreWriter, todo: list[int], shard_images: int,
         batch_size: int, positions: int, seed: int, attribution: bool, top_k: int, act_dtype: str,
         attr_dtype: str, n_classes: int, progress: bool, num_workers: int | None) -> None:
    from tqdm.auto import tqdm

    n_images = len(imageset)
    plan = shard_batches(todo, shard_images, n_images, batch_size)
    loader = image_loader(imageset, model.contract, [b for _, b in plan], num_workers=num_workers,
                          pin_memory=model.device.type == "cuda")
    bar = tqdm(total=sum(len(b) for _, b in plan), unit="img", desc="collect", disable=not progress)
    parts: dict[str, list[np.ndarray]] = {}
    skipped: list[tuple[str, str]] = []
    n_skipped = 0
    overflow_warned = False
    try:
        for step, ((shard, indices), batch) in enumerate(zip(plan, loader)):
            for index, reason in batch.skipped:
                name = imageset.name(index)
                logger.info("skipping unreadable image %s: %s", name, reason)
                skipped.append((name, reason))
                n_skipped += 1
            if len(batch.indices):
                rows = _batch_rows(model, batch, specs, ref_grid, positions, seed, attribution, top_k, n_classes)
                for field, value in rows.items():
                    dtype = attr_dtype if field.startswith("attr.") else act_dtype if field.startswith("acts.") \
                        else None
                    if dtype is not None:
                        stored = value.astype(dtype)
                        if not overflow_warned and not np.isfinite(stored).all() and np.isfinite(value).all():
                            overflow_warned = True
                            warnings.warn(f"values of {field} overflow {dtype}; collect with a wider dtype "
                                          f"(activation_dtype / attribution_dtype='float32')", RuntimeWarning)
                        value = stored
                    parts.setdefault(field, []).append(value)
            bar.update(len(indices))
            bar.set_postfix(skipped=n_skipped, refresh=False)
            if step + 1 == len(plan) or plan[step + 1][0] != shard:
                lo, hi = shard * shard_images, min((shard + 1) * shard_images, n_images)
                arrays = {f: np.concatenate(v) for f, v in parts.items()} if parts else \
                    _empty_rows(specs, attribution, top_k, n_classes, act_dtype, attr_dtype)
                if not writer.write_shard(shard, arrays, (lo, hi), skipped):
                    logger.info("shard %d was finished by another writer meanwhile; kept that one", shard)
                parts, skipped = {}, []
    finally:
        bar.close()


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


def _empty_rows(specs, attribution: bool, top_k: int, n_classes: int, act_dtype: str, attr_dtype: str
                ) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    for spec in specs:
        rows[f"acts.{spec.key}"] = np.zeros((0, spec.channels), dtype=act_dtype)
        if attribution:
            rows[f"attr.{spec.key}"] = np.zeros((0, n_classes), dtype=attr_dtype)
        rows[f"yx.{spec.key}"] = np.zeros((0, 2), dtype=np.int16)
    rows.update(image=np.zeros(0, np.int64), position=np.zeros(0, np.int16), label=np.zeros(0, np.int64),
                top_classes=np.zeros((0, top_k), np.int32), top_logits=np.zeros((0, top_k), np.float32))
    return rows
