"""How Luminate shares the CPU: OpenMP waiting, thread counts, busy-machine notices, interrupts.

PyTorch's CPU kernels run on OpenMP threads. By default a thread that runs out of work *spins* for a while
before sleeping; when more threads want the CPU than there are cores (two renders at once, a render beside
``pip``, Ray or data-loader workers), the spinning threads steal the cores the working ones need and a job
can become 40x slower instead of 2x. Two things avoid that cliff:

* **passive waiting** (``OMP_WAIT_POLICY=PASSIVE``): idle threads sleep at once. OpenMP reads the variable
  once, when torch's OpenMP runtime loads (at ``import torch``), so it must be set before that. The
  ``luminate`` command line sets it (unless you set it yourself) before torch loads (``luminate_launcher``);
  ``import luminate`` never writes the environment: in a script or notebook, start Python with
  ``OMP_WAIT_POLICY=PASSIVE``. Sleeping at once costs speed on an idle machine (a lite0 step at 224 px took
  1.6-2x as long), so the command line also lets a thread spin briefly first (``GOMP_SPINCOUNT``, see
  ``luminate_launcher.BRIEF_SPIN`` for the measured trade-off; ``benchmarks/concurrency.py`` measures it).
* **fewer threads per process** when several processes share the cores: :func:`share_cpu` for a notebook or
  script, :func:`worker_threads` for pools of workers (``workers x threads <= cores``).

This module imports nothing heavy (no torch at import time), so the policy can be chosen before torch loads.
"""

from __future__ import annotations

import contextvars
import os
import threading
import warnings

_WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_waiting() -> bool:
    """Whether torch's OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE`` in the environment, which
    OpenMP read when torch loaded)."""
    return os.environ.get(_WAIT_POLICY, "").strip().upper() == "PASSIVE"


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_load() -> float | None:
    """The 1-minute load average (runnable processes, averaged), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_notice(cores: int | None = None, load: float | None = None) -> str | None:
    """A one-line notice when other processes already keep every core busy (1-minute load average >= cores),
    else None. Call it before starting work: the load then counts only the others."""
    cores = cpu_count() if cores is None else cores
    load = cpu_load() if load is None else load
    if load is None or load < cores:
        return None
    advice = ("threads sleep when idle (OMP_WAIT_POLICY=PASSIVE), so expect a fair share, not a cliff"
              if passive_waiting() else
              "set OMP_WAIT_POLICY=PASSIVE before torch loads, or OMP_NUM_THREADS=1, to avoid a slowdown cliff")
    return (f"note: the CPU is busy (load {load:.1f} on {cores} core{'s' if cores != 1 else ''}): this will run "
            f"slower than on an idle machine; {advice}")


def worker_threads(n_workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``n_workers`` parallel workers so that ``workers x threads <= cores``
    (at least 1). Call ``torch.set_num_threads(worker_threads(n))`` in every worker."""
    cores = cpu_count() if cores is None else cores
    return max(1, cores // max(1, int(n_workers)))


def share_cpu(threads: int | None = None, jobs: int = 2) -> int:
    """Make this process a good neighbour on a shared CPU; returns the torch thread count now in use.

    Sets torch's intra-op threads to ``threads``, or by default to this process's share of the cores when
    ``jobs`` processes run at once (:func:`worker_threads`). When torch loaded without
    ``OMP_WAIT_POLICY=PASSIVE``, idle threads spin and only one thread per process avoids the slowdown cliff,
    so the default is then 1 (with a warning saying how to get passive waiting).

    Example (a notebook beside other jobs)::

        import luminate
        luminate.runtime.share_cpu()      # before the first render
    """
    import torch

    if threads is None:
        threads = worker_threads(jobs)
        if not passive_waiting():
            warnings.warn("OMP_WAIT_POLICY was not PASSIVE when torch loaded, so idle OpenMP threads spin; using "
                          "1 thread. For more, start Python with OMP_WAIT_POLICY=PASSIVE (the luminate command line "
                          "does), or pass threads=.", RuntimeWarning, stacklevel=2)
            threads = 1
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    return threads


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: every core this process may use); returns it."""
    import torch

    threads = cpu_count() if threads is None else max(1, int(threads))
    torch.set_num_threads(threads)
    return threads


#: The interrupt event of the running context (the command line's Ctrl-C handler sets it). A context variable, not
#: a process-wide flag: a thread or task started elsewhere has its own, and library calls outside a command never
#: see one set by another.
_INTERRUPT: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("luminate_interrupt",
                                                                                    default=None)


def interrupt_event() -> threading.Event:
    """This context's interrupt event (created on first use): set it to stop the running render with its partial
    result and make every later :func:`luminate.render` in the context raise KeyboardInterrupt."""
    event = _INTERRUPT.get()
    if event is None:
        event = threading.Event()
        _INTERRUPT.set(event)
    return event


def request_interrupt() -> None:
    """Set this context's interrupt event (the command line's Ctrl-C handler calls it)."""
    interrupt_event().set()


def clear_interrupt() -> None:
    """A fresh, unset interrupt event for this context (the command line calls it before each command)."""
    _INTERRUPT.set(threading.Event())


def interrupted() -> bool:
    """Whether this context's interrupt event is set."""
    event = _INTERRUPT.get()
    return event is not None and event.is_set()

