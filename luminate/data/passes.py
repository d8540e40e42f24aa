"""The one streaming pass over an image set: decoded batches through a model, shard by shard, in this process or
on Ray Data.

A product says what to do with each batch (a :class:`BatchWork`: the atlas's rows at random positions, the
Microscope's per-unit peaks) and how to keep a finished shard (``commit(shard, parts, skipped)``, usually
:meth:`luminate.data.store.StoreWriter.write_shard`); :func:`stream` does the rest:

* the plan: the batches of the shards to do (:func:`luminate.data.inputs.shard_batches`), a batch never crossing a
  shard boundary, so every engine runs the same batches and writes the same shards;
* in this process (``PassSettings.ray=None``): images decoded in loader workers
  (:func:`luminate.data.inputs.image_loader`), unreadable ones skipped and named;
* on Ray Data (``ray="local"`` or an address): ``from_items`` (one row per batch) -> ``map`` decode tasks (the
  files are read where the task runs: the paths must be readable on every node) -> ``map_batches`` over a pool of
  :class:`PassActor` (the model loaded once per actor; only named remote parameters: ``num_cpus``, ``num_gpus``,
  ``concurrency``, never the deprecated ``ray_remote_args``) -> rows streamed back here, each shard committed as
  soon as its batches are in. Ray Data's own policy restarts a dead actor and retries its batches (and retries a
  decode task whose worker died), so a pass survives a lost worker without arguments of ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np
import torch

from luminate import progress as progress_bars
from luminate.data.inputs import Batch, ImageSet, PreparedImages, collate_images, image_loader, shard_batches
from luminate.data.settings import PassSettings
from luminate.models.base import Model

logger = logging.getLogger("luminate.data")

#: ``commit(shard, parts, skipped)``: keep a finished shard from its batches' parts (in image order) and the
#: ``(name, reason)`` of its unreadable images
Commit = Callable[[int, list, list[tuple[str, str]]], None]


class BatchWork(Protocol):
    """What a pass does with each decoded batch. It must pickle (Ray ships it to its actors): keep layer names and
    settings in it, not modules."""

    def open(self, model: Model) -> ContextManager[Callable[[Batch], Any]]:
        """A context (hooks on the model, say) yielding ``fn(batch) -> part`` for the batches of a pass."""
        ...


def stream(model: Model, imageset: ImageSet, shards: Sequence[int], shard_images: int, work: BatchWork,
           commit: Commit, run: PassSettings, desc: str = "collect") -> None:
    """Run ``work`` over the images of ``shards`` (shard ``k``: images ``[k S, (k+1) S)``, ``S = shard_images``)
    and ``commit`` each shard once its batches are done: in this process, or on Ray Data when ``run.ray`` is set."""
    plan = shard_batches(list(shards), shard_images, len(imageset), run.batch_size)
    if not plan:
        return
    if run.ray is not None:
        _on_ray_data(model, imageset, plan, work, commit, run, desc)
    else:
        _in_process(model, imageset, plan, work, commit, run, desc)


def _shard_ends(plan: list[tuple[int, list[int]]]) -> list[bool]:
    return [step + 1 == len(plan) or plan[step + 1][0] != shard for step, (shard, _) in enumerate(plan)]


def _in_process(model: Model, imageset: ImageSet, plan, work: BatchWork, commit: Commit, run: PassSettings,
                desc: str) -> None:
    loader = image_loader(imageset, model.contract, [b for _, b in plan], num_workers=run.num_workers,
                          pin_memory=model.device.type == "cuda")
    bar = progress_bars.bar(sum(len(b) for _, b in plan), desc, unit="img", enabled=run.progress)
    parts: list = []
    skipped: list[tuple[str, str]] = []
    n_skipped = 0
    try:
        with work.open(model) as fn, _loader_failures(run):
            for ((shard, indices), batch), last in zip(zip(plan, loader), _shard_ends(plan)):
                skipped += [(imageset.name(i), reason) for i, reason in batch.skipped]
                n_skipped += len(batch.skipped)
                if len(batch.indices):
                    parts.append(fn(batch))
                if bar is not None:
                    bar.update(len(indices))
                    bar.set_postfix(skipped=n_skipped, refresh=False)
                if last:
                    commit(shard, parts, skipped)
                    parts, skipped = [], []
    finally:
        if bar is not None:
            bar.close()


class LoaderError(RuntimeError):
    """An image-decoding worker died or could not hand over its batch: the run stops, with the reason and the fix,
    instead of waiting for a batch that never comes."""


@contextlib.contextmanager
def _loader_failures(run: PassSettings):
    """Torch's DataLoader failures (a worker killed, a batch that could not go through shared memory, no batch
    within the loader's timeout) as one :class:`LoaderError` naming the likely cause and the fix."""
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if "DataLoader" not in text and "shared memory" not in text and "unable to resize file" not in text \
                and "_share_" not in text:
            raise
        cause = text.strip().splitlines()[-1][:300]
        raise LoaderError(f"an image-decoding worker failed ({cause}); the usual causes are a full /dev/shm, a "
                          "file-size limit (ulimit -f) or the memory limit killing the worker: free /dev/shm or "
                          "raise the limit (or decode in this process: `luminate collect --workers 0`, "
                          "PassSettings(num_workers=0)), then rerun the same command (finished shards are kept)"
                          ) from None


# ----- Ray Data --------------------------------------------------------------------------------------------------


def _decode_batch(row: dict, imageset: ImageSet, contract) -> dict:
    """Ray Data task (``Dataset.map``): decode and preprocess one batch of the plan, images ``[start, stop)``.
    The pixels travel pickled (one batch per row) so that batches of any size share one Arrow schema."""
    prepared = PreparedImages(imageset, contract)
    batch = collate_images([prepared[i] for i in range(int(row["start"]), int(row["stop"]))])
    payload = (batch.indices.numpy(), batch.images.numpy() if len(batch.indices) else np.zeros(0, np.float32),
               batch.labels.numpy(), [(imageset.name(i), reason) for i, reason in batch.skipped])
    return {"batch": int(row["batch"]), "shard": int(row["shard"]), "payload": pickle.dumps(payload, protocol=5)}


class PassActor:
    """Ray Data's stateful stage (``Dataset.map_batches`` over an actor pool): keeps the model loaded and runs a
    :class:`BatchWork` on decoded batches, the same work as in this process. Torch runs ``threads`` threads."""

    def __init__(self, model: Model, work: BatchWork, threads: int = 1):
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        self.model = model
        self.work = work

    def __call__(self, rows: dict) -> dict:
        out = []
        with self.work.open(self.model) as fn:
            for payload in rows["payload"]:
                indices, pixels, labels, skipped = pickle.loads(payload)
                part = None
                if len(indices):
                    batch = Batch(torch.from_numpy(indices), torch.from_numpy(pixels), torch.from_numpy(labels), [])
                    part = fn(batch)
                out.append(pickle.dumps((part, skipped, len(indices) + len(skipped)), protocol=5))
        return {"batch": np.asarray(rows["batch"]), "shard": np.asarray(rows["shard"]),
                "result": np.array(out, dtype=object)}


def _on_ray_data(model: Model, imageset: ImageSet, plan, work: BatchWork, commit: Commit, run: PassSettings,
                 desc: str) -> None:
    from luminate.parallel import RayContext

    items = [{"batch": i, "shard": shard, "start": b[0], "stop": b[-1] + 1} for i, (shard, b) in enumerate(plan)]
    expected: dict[int, int] = {}
    for shard, _ in plan:
        expected[shard] = expected.get(shard, 0) + 1
    pending: dict[int, dict[int, tuple]] = {}
    with RayContext(run.ray, run.num_cpus) as ray_module:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        cluster = int(ray_module.cluster_resources().get("CPU", 1))
        pool = run.actors or max(1, cluster // max(run.threads, 1))
        logger.warning("luminate: %s on Ray Data (%d batches, %d model actors x %d thread(s), %d cluster CPUs)", desc,
                       len(items), pool, run.threads, cluster)
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        # decoding is light next to the forward pass: its tasks take no CPU reservation, so they run beside the actors
        ds = ds.map(_decode_batch, fn_kwargs={"imageset": imageset, "contract": model.contract}, num_cpus=0,
                    concurrency=max(2, pool))
        ds = ds.map_batches(PassActor, batch_size=1, batch_format="numpy",
                            fn_constructor_kwargs={"model": model, "work": work, "threads": run.threads},
                            concurrency=pool, num_cpus=run.threads, num_gpus=run.num_gpus or None)
        bar = progress_bars.bar(sum(len(b) for _, b in plan), f"{desc} (Ray Data)", unit="img",
                                enabled=run.progress)
        try:
            for row in ds.iter_rows():
                shard, batch = int(row["shard"]), int(row["batch"])
                part, skipped, count = pickle.loads(row["result"])
                pending.setdefault(shard, {})[batch] = (part, skipped)
                if bar is not None:
                    bar.update(count)
                if len(pending[shard]) == expected[shard]:
                    done = [entry for _, entry in sorted(pending.pop(shard).items())]
                    commit(shard, [p for p, _ in done if p is not None], [s for _, sk in done for s in sk])
        finally:
            if bar is not None:
                bar.close()
    if pending:
        raise RuntimeError(f"Ray Data returned incomplete shards {sorted(pending)}; run again to finish them")
