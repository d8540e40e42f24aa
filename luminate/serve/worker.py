"""Feature visualizations rendered in the background, never on a request thread.

A :class:`RenderWorker` owns a thread and its own copy of the model (the hooks of a render never see the forward
passes that answer requests). A request asks for a unit with :meth:`RenderWorker.request` and gets a
:class:`RenderJob` at once: queued, rendering (with its progress), done (a PNG) or failed (the reason). Units are
rendered with :func:`luminate.analysis.sprites.channel_icons`, so each lands in Luminate's render cache and a
unit rendered once (by the server, a page, the gallery) is read back instead of rendered. Queued units of the
same layer are rendered together, one batch. Finished PNGs are kept in memory for the ``keep`` most recent units.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from luminate.analysis.sprites import channel_icons
from luminate.images import png_bytes
from luminate.models.base import Model


@dataclass(eq=False)
class RenderJob:
    """One unit's visualization: ``status`` is ``"queued"``, ``"rendering"``, ``"done"`` or ``"failed"``;
    ``progress`` in [0, 1]; ``png`` the image when done; ``error`` the reason when failed."""

    layer: str
    unit: int
    status: str = "queued"
    progress: float = 0.0
    png: bytes | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)

    def state(self) -> dict:
        """What a client polls for: ``{"status", "progress", "layer", "unit"}`` (and ``"error"`` when failed)."""
        out = {"status": self.status, "progress": round(self.progress, 3), "layer": self.layer, "unit": self.unit}
        if self.error:
            out["error"] = self.error
        return out


class QueueFull(RuntimeError):
    """The render queue holds ``max_queued`` units already: ask again in ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class _Stopped(Exception):
    """Raised from a render's progress callback when the worker is closing: the batch ends mid-render."""


class RenderWorker:
    """Renders units of ``model`` in a background thread (see the module docstring).

    Args:
        model: the model; the worker renders with its own deep copy.
        size, steps, seed: the visualization's settings (:func:`~luminate.analysis.sprites.channel_icons`).
        dictionary: a feature dictionary: its features (layer ``features:L``) render as directions.
        keep: finished units kept in memory (oldest evicted); the render cache keeps them on disk.
        batch: most units rendered together.
        max_queued: most units waiting to render; a further request raises :class:`QueueFull` (any web page could
            otherwise queue every unit of a model).
    """

    def __init__(self, model: Model, *, size: int = 96, steps: int = 256, seed: int = 0, keep: int = 256,
                 batch: int = 8, dictionary=None, max_queued: int = 64):
        self.model = copy.deepcopy(model)
        self.dictionary = dictionary
        self.size, self.steps, self.seed, self.keep, self.batch = size, steps, seed, keep, batch
        self.max_queued = max_queued
        self._stop = threading.Event()
        self._jobs: OrderedDict[tuple[str, int], RenderJob] = OrderedDict()
        self._queue: queue.Queue[RenderJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="luminate-render", daemon=True)
        self._thread.start()

    def request(self, layer: str, unit: int) -> RenderJob:
        """The job of ``layer``'s ``unit``, queued if it is new (or failed before). Returns at once."""
        key = (layer, int(unit))
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.status != "failed":
                self._jobs.move_to_end(key)
                return job
            queued = sum(1 for j in self._jobs.values() if j.status == "queued")
            if queued >= self.max_queued:
                raise QueueFull(f"the render queue holds {queued} units already; ask again in a few seconds",
                                retry_after=max(1, queued // max(self.batch, 1)))
            job = self._jobs[key] = RenderJob(layer, int(unit))
            self._evict()
        self._queue.put(job)
        return job

    def close(self, timeout: float = 5.0) -> None:
        """Stop now: the batch being rendered ends at its next step, queued jobs are dropped (a render thread left
        running while the interpreter exits aborts the process)."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _evict(self) -> None:
        done = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
        for key in done[:max(0, len(done) - self.keep)]:
            del self._jobs[key]

    def _next_batch(self) -> list[RenderJob] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        held = []
        while len(jobs) < self.batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                held.append(job)
                break
            (jobs if job.layer == first.layer else held).append(job)
        for job in held:
            self._queue.put(job)
        return jobs

    def _render(self, jobs: list[RenderJob], progress) -> dict[RenderJob, torch.Tensor]:
        """``{job: [3, S, S]}`` for jobs of one layer: a layer's units by channel_icons (with step progress), the
        features of the dictionary (``features:L``) by :func:`luminate.features.render_features`."""
        layer, units = jobs[0].layer, [j.unit for j in jobs]
        if layer.startswith("features:") and self.dictionary is not None:
            from luminate.features import render_features

            images = render_features(self.model, self.dictionary.layer, self.dictionary.directions, units,
                                     size=self.size, steps=self.steps, seed=self.seed, progress=False,
                                     callback=progress)
            return {job: images[job.unit]["positive"] for job in jobs}
        icons = channel_icons(self.model, layer, units, size=self.size, steps=self.steps, seed=self.seed,
                              progress=False, callback=progress)
        return {job: icons[job.unit] for job in jobs}

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._next_batch()
            if jobs is None or self._stop.is_set():
                return
            total = max(1, self.steps)
            for job in jobs:
                job.status = "rendering"

            def progress(step, images, scores, jobs=jobs) -> None:
                if self._stop.is_set():
                    raise _Stopped("the server is stopping")
                for job in jobs:
                    job.progress = min(step / total, 0.999)

            try:
                for job, image in self._render(jobs, progress).items():
                    job.png = png_bytes(image)
                    job.progress, job.status = 1.0, "done"
            except Exception as exc:   # the job carries the reason to the client; the worker keeps serving
                for job in jobs:
                    job.error, job.status = f"{type(exc).__name__}: {exc}", "failed"
            finally:
                for job in jobs:
                    job.finished.set()
                with self._lock:
                    self._evict()
