"""Progress that tells a story: one helper for every loop's bar, and :class:`Job` for multi-stage work.

A single render shows one bar. A job made of many renders (a semantic dictionary, ``explain``, the gallery,
an atlas) opens a :class:`Job`: it prints each stage as it starts (``[2/5] semantic dictionary of
blocks.10``), keeps an overall bar with the stage count and the units done (``icons: 12 rendered, 30 from
cache``), labels the per-render bars with the stage they belong to, and ends with a one-line summary.
Library code reports units with :func:`units` (a no-op outside a job), so it needs no job of its own.

    with progress.Job("explain", stages=5) as job:
        job.stage("attribution", "blocks.10 for daisy, bee")
        ...
"""

from __future__ import annotations

import contextvars
import sys
import time
from typing import Sequence

#: The job of the running context (a context variable: threads and asyncio tasks each see their own).
_CURRENT: contextvars.ContextVar["Job | None"] = contextvars.ContextVar("luminate_progress_job", default=None)


def current() -> "Job | None":
    """The job running in this context (thread / task), or None."""
    return _CURRENT.get()


def bar(total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True):
    """A tqdm bar for a loop of ``total`` steps (None when ``enabled`` is False). Inside a :class:`Job` the
    description names the job's current stage and the bar sits under the job's overall bar."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    job = _CURRENT.get()
    if job is not None and job.enabled and job.stage_name:
        desc = f"{job.stage_name}: {desc}"
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False,
                position=1 if job is not None and job.enabled else None)


def units(rendered: int = 0, cached: int = 0, unit: str | None = None) -> None:
    """Count work done for the running job (e.g. icons rendered vs read from the cache); no-op outside a job."""
    job = _CURRENT.get()
    if job is not None:
        job.count(rendered=rendered, cached=cached, unit=unit)


class Job:
    """A multi-stage job's progress on stderr: stage lines, an overall bar, unit counts and a summary.

    Args:
        title: the job's name (``"explain"``).
        stages: the stage names in order, or how many there will be (names then come from :meth:`stage`).
        enabled: False prints nothing (``--quiet``); units are still counted.
        unit: what :func:`units` counts (``"icon"``).
    """

    def __init__(self, title: str, stages: Sequence[str] | int | None = None, enabled: bool = True,
                 unit: str = "icon"):
        self.title = title
        self.names = list(stages) if isinstance(stages, (list, tuple)) else []
        self.total = len(self.names) if self.names else (stages if isinstance(stages, int) else None)
        self.enabled = enabled
        self.unit = unit
        self.index = 0
        self.stage_name = ""
        self.rendered = 0
        self.cached = 0
        self.start = time.perf_counter()
        self._bar = None
        self._token: contextvars.Token | None = None

    # -- context --------------------------------------------------------------------------------------------
    def __enter__(self) -> "Job":
        self._token = _CURRENT.set(self)
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.title, unit="stage", position=0, leave=False,
                             bar_format="{desc} |{bar}| stage {n_fmt}/{total_fmt} {postfix} [{elapsed}]"
                             if self.total else "{desc}: stage {n_fmt} {postfix} [{elapsed}]")
        return self

    def __exit__(self, kind, value, tb) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        if self._bar is not None:
            self._bar.close()
        if self.enabled:
            how = "interrupted" if kind is KeyboardInterrupt else ("failed" if kind is not None else "done")
            self._print(f"{self.title} {how} after {time.perf_counter() - self.start:.0f}s: {self.summary()}")

    # -- reporting ------------------------------------------------------------------------------------------
    def stage(self, name: str, detail: str = "") -> None:
        """Start the next stage: prints ``[i/n] name: detail`` and advances the overall bar."""
        if self.index and self._bar is not None:
            self._bar.update(1)
        self.index += 1
        self.stage_name = name
        if self.total is not None and self.index > self.total:
            self.total = self.index
            if self._bar is not None:
                self._bar.total = self.total
        count = f"{self.index}/{self.total}" if self.total else f"{self.index}"
        if self.enabled:
            self._print(f"[{count}] {name}" + (f": {detail}" if detail else ""))
            if self._bar is not None:
                self._bar.set_description_str(f"{self.title} [{name}]", refresh=True)

    def log(self, message: str) -> None:
        """A ``log=`` callback for library functions: each message starts a stage."""
        self.stage(message)

    def count(self, rendered: int = 0, cached: int = 0, unit: str | None = None) -> None:
        self.rendered += int(rendered)
        self.cached += int(cached)
        if unit:
            self.unit = unit
        if self._bar is not None:
            self._bar.set_postfix_str(self.summary(), refresh=True)

    def summary(self) -> str:
        if not (self.rendered or self.cached):
            return f"{self.index} stage{'s' if self.index != 1 else ''}"
        return f"{self.unit}s: {self.rendered} rendered, {self.cached} from cache"

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)
