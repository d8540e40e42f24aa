"""One engine for long, shardable jobs: run idempotent tasks in this process or as Ray tasks.

A job (a collection by shards, Microscope rendering) is cut into tasks whose results are
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
        progress: a progress bar advanced by ``weights[i]`` (default 1) as task ``i`` finishes.
        shared: ``{name: object}`` put once into Ray's object store (a model, say); an argument that *is*
            one of these objects is passed by reference instead of being pickled into every task.
    """
    from luminate import progress as progress_bars

    tasks = [tuple(t) for t in tasks]
    weights = list(weights) if weights is not None else [1.0] * len(tasks)
    bar = progress_bars.bar(sum(weights), desc, unit=unit, enabled=progress and bool(tasks))
    advance = bar.update if bar is not None else (lambda n: None)
    try:
        if ray is None or not tasks:
            results = []
            for args, weight in zip(tasks, weights):
                results.append(fn(*args))
                advance(weight)
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
                    advance(weights[i])
            return results
    finally:
        if bar is not None:
            bar.close()
