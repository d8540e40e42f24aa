"""The toolbox's circuit panel: ``GET /api/circuit?image=ID&target=NAME[&layers=a,b]`` -> the attribution graph's
JSON (:meth:`luminate.circuits.Graph.to_json`), traced in a background thread: 202 with ``{"status",
"progress", "stage"}`` while it runs, 200 with the graph when done (kept for the most recent graphs), 400 for a
bad target or layer, 500 with the reason when it failed. ``POST /api/circuit/intervene`` with ``{"image", "target",
"nodes": ["head/17", ...], "factor": 0}`` reruns that graph's photo with the nodes removed (0) or scaled, live.

The tracer works on its own copy of the model, so the requests that read activations meanwhile never meet its
hooks."""

from __future__ import annotations

import copy
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from luminate.circuits import CircuitSettings, Graph, parse_target, trace

router = APIRouter()


@dataclass(eq=False)
class CircuitJob:
    """One graph: ``status`` ``"queued"``, ``"tracing"``, ``"done"`` or ``"failed"``."""

    image: str
    target: str
    layers: tuple[str, ...] | None
    status: str = "queued"
    progress: float = 0.0
    stage: str = "waiting for the tracer"
    graph: Graph | None = None
    result: dict | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def state(self) -> dict:
        out = {"status": self.status, "progress": self.progress, "stage": self.stage, "image": self.image,
               "target": self.target}
        if self.error:
            out["error"] = self.error
        return out


class CircuitWorker:
    """Traces graphs one at a time in a background thread, on its own copy of the model; keeps ``keep`` graphs."""

    def __init__(self, model, settings: CircuitSettings = CircuitSettings(), keep: int = 16):
        self.model = copy.deepcopy(model)
        self.settings, self.keep = settings, keep
        self.jobs: OrderedDict[tuple, CircuitJob] = OrderedDict()
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()   # the copy's hooks: one trace or intervention at a time
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="luminate-circuits", daemon=True)
        self.thread.start()

    def request(self, image: str, pixels, target: str, layers: tuple[str, ...] | None) -> CircuitJob:
        key = (image, target, layers)
        with self.lock:
            job = self.jobs.get(key)
            if job is not None and job.status != "failed":
                self.jobs.move_to_end(key)
                return job
            job = self.jobs[key] = CircuitJob(image, target, layers)
            while len(self.jobs) > self.keep:
                self.jobs.popitem(last=False)
        self.queue.put((job, pixels))
        return job

    def find(self, image: str, target: str) -> CircuitJob | None:
        with self.lock:
            return next((j for j in reversed(self.jobs.values())
                         if j.image == image and j.target == target and j.status == "done"), None)

    def _run(self) -> None:
        while True:
            job, pixels = self.queue.get()
            job.status, job.progress = "tracing", 0.02

            def on_stage(done: float, name: str, job: CircuitJob = job) -> None:
                job.progress, job.stage = 0.95 * done, name   # the last 5%: the graph's JSON

            try:
                with self.model_lock:
                    job.graph = trace(self.model, pixels, job.target, layers=list(job.layers) if job.layers else None,
                                      settings=self.settings, on_stage=on_stage)
                job.result = {**job.graph.to_json(), "image": job.image}
                job.progress, job.stage, job.status = 1.0, "done", "done"
            except Exception as exc:   # the job carries the reason to the client; the worker keeps serving
                job.error, job.status = f"{type(exc).__name__}: {exc}", "failed"
            finally:
                job.done.set()


def _worker(request: Request) -> CircuitWorker:
    state = request.app.state
    with _START:
        if getattr(state, "circuits", None) is None:
            state.circuits = CircuitWorker(state.toolbox.model)
    return state.circuits


_START = threading.Lock()


def _checked(box, target: str, layers: str | None) -> tuple[str, tuple[str, ...] | None]:
    try:
        parse_target(box.model, target)
        names = tuple(n.strip() for n in layers.split(",") if n.strip()) if layers else None
        for name in names or ():
            box.layer(name)
    except (KeyError, ValueError, IndexError) as exc:
        raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
    return target, names


@router.get("/api/circuit")
def circuit(request: Request, image: str, target: str, layers: str | None = None):
    box = request.app.state.toolbox
    item = box.image(image)
    target, names = _checked(box, target, layers)
    job = _worker(request).request(image, item.pixels, target, names)
    job.done.wait(0.25)
    if job.status == "done":
        return job.result
    if job.status == "failed":
        return JSONResponse(job.state(), status_code=500)
    return JSONResponse(job.state(), status_code=202, headers={"Retry-After": "2"})


class Intervention(BaseModel):
    image: str
    target: str
    nodes: list[str]
    factor: float = 0.0


@router.post("/api/circuit/intervene")
def intervene(request: Request, body: Intervention) -> dict:
    job = _worker(request).find(body.image, body.target)
    if job is None or job.graph is None:
        raise HTTPException(404, "no finished graph for this image and target: GET /api/circuit first")
    try:
        with _worker(request).model_lock:
            return job.graph.amplify(body.nodes, body.factor)
    except (KeyError, ValueError, IndexError) as exc:
        raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
