"""Argument checks made before any work, shared by the commands that collect, render and write folders.

Every check raises :class:`UsageError` (``luminate`` prints it as one line and exits 2) naming the option, the value
and what would be accepted, before a model runs or an output folder is made: ranges (``--steps 0``), sizes with
limits (``--size 100000``), unit specs against the layer (``--units 5:2``; ``0:100000`` on a 112-unit layer is
clipped with a warning that says so), the device against what this torch has (``--device cuda`` on a CPU build)
and a Ray address that must answer within a timeout (``--ray 127.0.0.1:1``). :func:`dash_hint` explains file names
that start with ``-``, which argparse reads as options.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Sequence

#: side of a feature visualization, in pixels (below 16 the deeper layers shrink to nothing; above 1024 a batch of
#: renders no longer fits a GPU, let alone a CPU)
VIS_SIZE = (16, 1024)
#: seconds a Ray address has to accept a connection
RAY_TIMEOUT = 5.0


class UsageError(ValueError):
    """An option's value is out of range or cannot work here; the message names the option and the fix."""


def at_least(option: str, value: int | None, low: int) -> None:
    """``option`` (None: not given) must be an integer ``>= low``."""
    if value is not None and value < low:
        raise UsageError(f"{option} {value}: must be at least {low}")


def within(option: str, value: int | None, low: int, high: int, why: str = "") -> None:
    """``option`` (None: not given) must lie in ``low..high``; ``why`` explains the limits."""
    if value is not None and not low <= value <= high:
        raise UsageError(f"{option} {value}: must be between {low} and {high}" + (f" ({why})" if why else ""))


def check_device(device: str | None, option: str = "--device") -> None:
    """Refuse a device this torch cannot use (``cuda`` without CUDA, ``cuda:3`` on a two-GPU machine, ``mps`` off
    Apple silicon, a misspelled name)."""
    if not device:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"{option} {device}: not a torch device ({exc}); use cpu, cuda, cuda:1 or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + (" (a CPU-only build)" if torch.version.cuda is None else "")
            raise UsageError(f"{option} {device}: CUDA is not available to {build}; use --device cpu, or install a "
                             "CUDA build of torch on a machine with an NVIDIA GPU")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"{option} {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"{option} {device}: Apple's MPS backend is not available here; use --device cpu")
    elif parsed.type != "cpu":
        try:
            torch.empty(1, device=parsed)
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"{option} {device}: this torch cannot use that device ({exc}); use --device cpu") \
                from None


def check_ray(address: str | None, option: str = "--ray", timeout: float = RAY_TIMEOUT) -> None:
    """A Ray address must answer: ``local`` (a new local instance) and ``auto`` pass; ``HOST:PORT`` or
    ``ray://HOST:PORT`` must accept a TCP connection within ``timeout`` seconds, checked before Ray starts (whose
    own attempts retry for minutes behind warnings). Ray itself must be installed."""
    if address is None:
        return
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"{option} needs Ray: pip install 'luminate[ray]'")
    text = address.strip()
    if text.lower() in ("local", "auto", ""):
        return
    bare = text.split("://", 1)[1] if "://" in text else text
    host, _, port = bare.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise UsageError(f"{option} {address}: give HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), 'local' "
                         "for a new local instance, or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise UsageError(f"{option} {address}: nothing answers at {host}:{port} ({reason}, waited up to {timeout:g} "
                         "s); start the cluster there (ray start --head), check the address, or use --ray local") \
            from None


def check_units(spec: str | None, channels: int, layer: str, option: str = "--units") -> tuple[str | None, str]:
    """Check a unit spec (``"0:64"``, ``"3,7,9"``, ``None`` or ``"all"``) against a layer of ``channels`` units.

    Returns ``(spec to use, warning)``: a slice that runs past the layer is clipped to it, with a warning saying
    ``"layer L has only N units"`` (empty when nothing was changed). An empty slice (``5:2``), a start past the
    layer, a malformed spec or an out-of-range index in a list raise :class:`UsageError`.
    """
    from luminate.data.settings import check_unit_spec

    if spec is None or spec.strip().lower() == "all":
        return spec, ""
    try:
        return check_unit_spec(spec, channels, layer, option)
    except (ValueError, IndexError) as exc:   # the reason, after the option as typed
        raise UsageError(f"{option} {spec}: {exc}") from None


def known_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its commands (``--steps``, ``-o``, ...)."""
    known = set()
    for action in parser._actions:
        known.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                for a in command._actions:
                    known.update(a.option_strings)
    return known


def dash_hint(argv: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """A hint for arguments that start with ``-`` but are file names (argparse took them for unknown options):
    ``put -- before them``. Empty when no argument looks like that."""
    known = known_options(parser)
    suspects = [a for a in argv if a.startswith("-") and a != "--" and a.split("=")[0] not in known
                and (os.path.exists(a) or Path(a).suffix)]
    if not suspects:
        return ""
    name = suspects[0]
    command = next((a for a in argv if not a.startswith("-")), "COMMAND")
    return (f"hint: {name!r} starts with '-', so it reads as an option; put -- before file names "
            f"(luminate {command} ... -- {name}) or write it as ./{name}")


# ----- per command: one call each, before any work ------------------------------------------------------------------


def validate_microscope(args: argparse.Namespace) -> None:
    """``luminate microscope``'s options that need no model: counts, sizes, the device, the Ray address."""
    at_least("--steps", getattr(args, "steps", None), 1)
    within("--size", getattr(args, "size", None), *VIS_SIZE, why="the side of each visualization in pixels")
    for option in ("top", "batch_size", "shard_size", "units_per_batch", "num_cpus"):
        at_least("--" + option.replace("_", "-"), getattr(args, option, None), 1)
    at_least("--attribution-images", getattr(args, "attribution_images", None), 0)
    check_device(getattr(args, "device", None))
    check_ray(getattr(args, "ray", None))


def validate_units(model, layers: Sequence[str] | None, spec: str | None, option: str = "--units") -> list[str]:
    """Check a unit spec against each of ``layers`` of ``model`` (None: its default layer); returns the warnings
    (a slice clipped to a layer). Layers the model cannot resolve are left to the command, which names them."""
    if layers is None:
        from luminate.recipes import default_layer

        layers = [default_layer(model)]
    warnings = []
    for layer in layers:
        try:
            shape = model.layer_info(layer).shape
        except Exception:  # noqa: BLE001 - an unknown layer is reported by the command with its close names
            continue
        if not shape:
            continue
        _, warning = check_units(spec, int(shape[0]), layer, option)
        if warning:
            warnings.append(warning)
    return warnings


def validate_collect(args: argparse.Namespace) -> None:
    """``luminate collect``'s options: counts, the device, the Ray address."""
    for option in ("positions", "batch_size", "shard_size", "num_cpus"):
        at_least("--" + option.replace("_", "-"), getattr(args, option, None), 1)
    at_least("--workers", getattr(args, "workers", None), 0)
    check_device(getattr(args, "device", None))
    check_ray(getattr(args, "ray", None))
