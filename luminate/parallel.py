"""One engine for long, shardable jobs: run idempotent tasks in this process or as Ray tasks.

A job (atlas collection, Microscope collection, Microscope rendering) is cut into tasks whose results are
files written atomically (a store shard, a render-cache entry). A task that finds its result already on disk
does nothing, so a task retried after its worker died, or a task run twice, loses and duplicates nothing;
the driver merges the files once every task is done.

:func:`run_tasks` runs ``fn(*args)`` for each entry of a task list:

* ``ray=None`` (the default): one after the other, in this process (no Ray needed);
* ``ray="local"``: a local Ray instance with ``num_cpus`` CPUs (default: the CPUs this process may use),
  without the dashboard;
* ``ray="ray://host:10001"`` or ``"host:6379"`` (any address ``ray.init`` accepts; ``"auto"`` joins the
  cluster this machine belongs to): that cluster. Luminate must be importable on its workers (install it
  there, or pass a ``runtime_env`` through ``ray_init``).

Every Ray task reserves ``threads`` CPUs and sets ``torch.set_num_threads(threads)`` before it runs, so N
concurrent tasks on N*threads cores never oversubscribe them (two torch processes with two threads each on
two cores can run tens of times slower than one). Failed tasks are retried ``max_retries`` times (a worker
killed mid-task included); a task that keeps failing raises its error in the driver.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from luminate.runtime import cpu_count


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--ray needs the Ray extra: pip install 'luminate[ray]' (or pip install ray)") from exc
    return ray


def _run_with_threads(fn: Callable, threads: int, *args: Any) -> Any:
    """Inside a Ray worker: limit torch's threads to the CPUs the task reserved, then run the task."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return fn(*args)


class RayContext:
    """``ray.init`` for one job and ``ray.shutdown`` after it, unless Ray was already initialized."""

    def __init__(self, address: str, num_cpus: int | None = None, ray_init: dict | None = None):
        self.address = address
        self.num_cpus = num_cpus
        self.ray_init = dict(ray_init or {})
        self.started = False

    def __enter__(self):
        ray = _require_ray()
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            options.update(self.ray_init)
            if self.address == "local":
                cpus = self.num_cpus or cpu_count()
                # workers inherit the driver's environment: keep OpenMP from spinning on shared cores
                env = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                runtime_env = dict(options.pop("runtime_env", None) or {})
                runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
                ray.init(num_cpus=cpus, runtime_env=runtime_env, **options)
            else:
                ray.init(address=self.address, **options)
            self.started = True
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()


def run_tasks(fn: Callable, tasks: Sequence[tuple], *, ray: str | None = None, num_cpus: int | None = None,
              threads: int = 1, max_retries: int = 3, progress: bool = True, desc: str = "tasks",
              unit: str = "task", weights: Sequence[float] | None = None, ray_init: dict | None = None,
              shared: dict | None = None) -> list:
    """``[fn(*args) for args in tasks]``, in this process or as Ray tasks; results in task order.

    Args:
        fn: a module-level function (Ray pickles it by reference). It must be idempotent: write its result
            atomically and do nothing when the result exists.
        tasks: one argument tuple per task.
        ray: ``None`` (in-process), ``"local"`` or a cluster address; see the module docstring.
        num_cpus: CPUs of a local Ray instance (default: all this process may use).
        threads: torch threads (and reserved CPUs) per Ray task.
        max_retries: retries of a task whose worker died or that raised.
        progress: a tqdm bar advanced by ``weights[i]`` (default 1) as task ``i`` finishes.
        shared: ``{name: object}`` put once into Ray's object store (a model, say); an argument that *is*
            one of these objects is passed by reference instead of being pickled into every task.
    """
    from tqdm.auto import tqdm

    tasks = [tuple(t) for t in tasks]
    weights = list(weights) if weights is not None else [1.0] * len(tasks)
    bar = tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress or not tasks)
    try:
        if ray is None or not tasks:
            results = []
            for args, weight in zip(tasks, weights):
                results.append(fn(*args))
                bar.update(weight)
            return results
        with RayContext(ray, num_cpus, ray_init) as ray_module:
            refs = {id(obj): ray_module.put(obj) for obj in (shared or {}).values()}
            remote = ray_module.remote(num_cpus=threads, max_retries=max_retries,
                                       retry_exceptions=max_retries > 0)(_run_with_threads)
            pending = {}
            for i, args in enumerate(tasks):
                args = tuple(refs.get(id(a), a) for a in args)
                pending[remote.remote(fn, threads, *args)] = i  # top-level refs are resolved
            results: list = [None] * len(tasks)
            waiting = list(pending)
            while waiting:
                done, waiting = ray_module.wait(waiting, num_returns=1)
                for ref in done:
                    i = pending[ref]
                    results[i] = ray_module.get(ref)
                    bar.update(weights[i])
            return results
    finally:
        bar.close()


# ----- Ray Data: the Microscope's collection as a streaming batch-inference pipeline ----------------------------


def _decode_batch(row: dict, imageset, contract) -> dict:
    """Ray Data task (``Dataset.map``): decode and preprocess one batch of the plan, images ``[start, stop)``.
    The pixels travel pickled (one batch per row) so that batches of any size share one Arrow schema."""
    import pickle

    import numpy as np

    from luminate.atlas.imageset import _Prepared, collate_images

    prepared = _Prepared(imageset, contract)
    batch = collate_images([prepared[i] for i in range(int(row["start"]), int(row["stop"]))])
    payload = (batch.indices.numpy(), batch.images.numpy() if len(batch.indices) else np.zeros(0, np.float32),
               [(imageset.name(i), reason) for i, reason in batch.skipped])
    return {"batch": int(row["batch"]), "shard": int(row["shard"]), "payload": pickle.dumps(payload, protocol=5)}


class PeakActor:
    """Ray Data's stateful stage (``Dataset.map_batches`` over an actor pool): keeps the model loaded and turns
    decoded batches into the per-batch shard parts of :func:`luminate.microscope.collect.batch_results`
    (the same function the in-process pass uses). Torch runs ``threads`` threads per actor."""

    def __init__(self, model, layers: list[str], unit_map: dict, every: int, threads: int = 1):
        import torch

        from luminate.atlas.collect import _LayerSpec

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        self.model = model
        self.specs = [_LayerSpec(model, name) for name in layers]
        self.unit_map = unit_map
        self.every = every

    def __call__(self, batch: dict) -> dict:
        import pickle

        import numpy as np
        import torch

        from luminate.activations import LayerTap
        from luminate.microscope.collect import batch_results

        out = []
        with self.model.frozen(), LayerTap(self.model, [s.name for s in self.specs], detach=True) as tap:
            for payload in batch["payload"]:
                indices, pixels, skipped = pickle.loads(payload)
                if len(indices):
                    part, attr_part = batch_results(self.model, tap, self.specs, indices, torch.from_numpy(pixels),
                                                    self.unit_map, self.every)
                else:
                    part, attr_part = None, {}
                out.append(pickle.dumps((part, attr_part, skipped, len(indices) + len(skipped)), protocol=5))
        return {"batch": np.asarray(batch["batch"]), "shard": np.asarray(batch["shard"]),
                "result": np.array(out, dtype=object)}


def collect_with_ray_data(model, imageset, specs, unit_map: dict, examples, attribution, todo: Sequence[int],
                          shard_images: int, batch_size: int, every: int, n_classes: int, *, ray: str,
                          num_cpus: int | None = None, threads: int = 1, actors: int | None = None,
                          num_gpus: float = 0.0, progress: bool = True, max_retries: int = 3) -> None:
    """The shards ``todo`` of a Microscope collection as a Ray Data pipeline, written by this process.

    ``from_items`` (one row per batch of the in-process plan, :func:`luminate.atlas.imageset.shard_batches`)
    -> ``map`` decode tasks (image files read and preprocessed where the task runs: the paths must be readable on
    every node) -> ``map_batches`` over a pool of :class:`PeakActor` (``actors`` actors, default the cluster's
    CPUs / ``threads``; ``num_gpus`` a GPU fraction each) -> rows streamed back here, each shard written as soon as
    its batches are in, with the same function and the same batches as in-process, so the files are the same.
    Resumable: only missing shards are planned; a dead actor is restarted and its batches retried
    (``max_retries``).
    """
    import logging
    import pickle

    from tqdm.auto import tqdm

    from luminate.atlas.imageset import shard_batches
    from luminate.microscope.collect import write_shard_parts

    logger = logging.getLogger("luminate.microscope")
    n_images = len(imageset)
    plan = shard_batches(list(todo), shard_images, n_images, batch_size)
    items = [{"batch": i, "shard": shard, "start": b[0], "stop": b[-1] + 1} for i, (shard, b) in enumerate(plan)]
    expected: dict[int, int] = {}
    for shard, _ in plan:
        expected[shard] = expected.get(shard, 0) + 1
    names = [s.name for s in specs]
    with RayContext(ray, num_cpus) as ray_module:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cluster = int(ray_module.cluster_resources().get("CPU", 1))
        pool = actors or max(1, cluster // max(threads, 1))
        logger.warning("luminate microscope: collecting on Ray Data (%d batches, %d model actors x %d thread(s), "
                       "%d cluster CPUs)", len(items), pool, threads, cluster)
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        # decoding is light next to the forward pass: its tasks take no CPU reservation, so they run beside the actors
        ds = ds.map(_decode_batch, fn_kwargs={"imageset": imageset, "contract": model.contract}, num_cpus=0,
                    concurrency=max(2, pool), max_retries=max_retries)
        ds = ds.map_batches(PeakActor, batch_size=1, batch_format="numpy",
                            fn_constructor_kwargs={"model": model, "layers": names, "unit_map": unit_map,
                                                   "every": every, "threads": threads},
                            concurrency=pool, num_cpus=threads, num_gpus=num_gpus or None,
                            max_restarts=max_retries, max_task_retries=max_retries)
        pending: dict[int, dict[int, tuple]] = {}
        bar = tqdm(total=sum(len(b) for _, b in plan), unit="img", desc="collect (Ray Data)", disable=not progress)
        try:
            for row in ds.iter_rows():
                shard, batch = int(row["shard"]), int(row["batch"])
                part, attr_part, skipped, count = pickle.loads(row["result"])
                pending.setdefault(shard, {})[batch] = (part, attr_part, skipped)
                bar.update(count)
                if len(pending[shard]) == expected[shard]:
                    got = pending.pop(shard)
                    done = [got[b] for b in sorted(got)]
                    skipped_all = [s for _, _, sk in done for s in sk]
                    for name, reason in skipped_all:
                        logger.warning("skipping unreadable image %s: %s", name, reason)
                    write_shard_parts(examples, attribution, shard, [p for p, _, _ in done if p is not None],
                                      [a for _, a, _ in done if a], skipped_all, specs, unit_map, n_classes,
                                      shard_images, n_images)
        finally:
            bar.close()
    if pending:
        raise RuntimeError(f"Ray Data returned incomplete shards {sorted(pending)}; run again to finish them")
