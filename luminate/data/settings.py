"""Settings values of a collection: what a store's rows depend on, how a pass runs, which layers and units.

A collection's result depends on the model (name, weights, input contract), the layers, the inputs and how they are
cut into shards, plus a product's own choices (the atlas's positions and seed, the Microscope's kind of rows).
:class:`CollectionSettings` holds exactly that, frozen: it is what goes into a store's manifest and what a rerun
compares (a store made with other settings is refused or replaced with a warning naming the differences,
:func:`luminate.data.store.differences`). :class:`PassSettings` holds how a pass runs (batch size, decoding workers,
progress, Ray): results never depend on it, so it never enters a manifest.

:class:`LayerSpec` is a collected layer (name, file key, channels, grid); :func:`resolve_layers` and
:func:`parse_units` are the one reader of layer names and unit specs (``"0:64"``, ``"3,7,9"``) of every site and of
the command line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import torch
from torch import nn

from luminate.data.inputs import DatasetImages, ImageFolder, ImageSet
from luminate.data.store import layer_key
from luminate.models.base import Model, as_model


@dataclass(frozen=True)
class PassSettings:
    """How a streaming pass runs; results do not depend on any of it.

    Attributes:
        batch_size: images per forward pass.
        num_workers: image-decoding worker processes (default ``min(2, CPUs)``; 0: decode in this process).
        progress: show a progress bar.
        ray: ``None`` (this process), ``"local"`` or a Ray cluster address.
        num_cpus: CPUs of a local Ray instance (default: those this process may use).
        engine: on Ray, ``"data"`` (a Ray Data pipeline: decode tasks and a pool of model actors) or ``"tasks"``
            (one Ray task per shard).
        threads: torch threads (and reserved CPUs) per Ray actor or task.
        actors: model actors of a Ray Data pipeline (default: the cluster's CPUs / ``threads``).
        num_gpus: GPUs (a fraction) per Ray Data actor.
        max_retries: retries of a failed Ray task (``engine="tasks"``; Ray Data restarts dead actors and retries their
            batches by its own policy).
    """

    batch_size: int = 32
    num_workers: int | None = None
    progress: bool = True
    ray: str | None = None
    num_cpus: int | None = None
    engine: str = "data"
    threads: int = 1
    actors: int | None = None
    num_gpus: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.engine not in ("data", "tasks"):
            raise ValueError(f"engine={self.engine!r}: 'data' (Ray Data) or 'tasks' (one Ray task per shard)")


def split_options(options: dict, *kinds: type) -> list[dict]:
    """Share keyword options among settings classes by field name: ``[{field: value} for each kind]``; a name no
    kind has raises a ``TypeError`` listing the names there are."""
    out: list[dict] = [{} for _ in kinds]
    for name, value in options.items():
        for i, kind in enumerate(kinds):
            if name in {f.name for f in fields(kind)}:
                out[i][name] = value
                break
        else:
            known = sorted({f.name for kind in kinds for f in fields(kind)})
            raise TypeError(f"unknown option {name!r}; the options are {', '.join(known)}")
    return out


def with_options(value, kind: type, options: dict):
    """``value`` (an instance of the frozen dataclass ``kind``, or None for its defaults) with ``options`` set."""
    value = kind() if value is None else value
    if not isinstance(value, kind):
        raise TypeError(f"settings must be a {kind.__name__}, not {type(value).__name__}")
    return replace(value, **options) if options else value


@dataclass(frozen=True)
class LayerSpec:
    """A layer of a collection: its ``name``, file ``key`` (:func:`~luminate.data.store.layer_key`), ``channels``
    and ``grid`` (rows, columns; ``(1, 1)`` for a ``[C]`` layer), and the ``module`` that produces it."""

    name: str
    key: str
    channels: int
    grid: tuple[int, int]
    module: nn.Module = field(repr=False, compare=False)

    @classmethod
    def of(cls, model: Model, name: str) -> "LayerSpec":
        """The spec of layer ``name`` of ``model``: ``[C, H, W]`` or ``[C]`` outputs (anything else is refused)."""
        if name == "input":
            raise ValueError("'input' cannot be collected: choose a layer of the network (luminate layers MODEL)")
        module = model.layer(name)
        shape = model.layer_info(name).shape
        if len(shape) == 3:
            grid = (int(shape[1]), int(shape[2]))
        elif len(shape) == 1:
            grid = (1, 1)
        else:
            raise ValueError(f"layer {name!r} has output shape {shape}; collection needs [C, H, W] or [C]")
        return cls(name, layer_key(name), int(shape[0]), grid, module)

    def record(self) -> dict:
        """The layer's entry in a store manifest."""
        return {"name": self.name, "key": self.key, "channels": self.channels, "grid": list(self.grid)}


def output_width(model: Model) -> int:
    """Number of classes: from the labels when the model has them (checked on the first batch), else from one
    forward pass."""
    if model.labels is not None:
        return len(model.labels)
    with torch.no_grad():
        out = model(torch.full((1, model.contract.channels, *model.size), 0.5, device=model.device))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{model.name} returns {shape}; collection needs a classifier returning logits [N, classes]")
    return int(out.shape[1])


@dataclass(frozen=True)
class CollectionSettings:
    """What the rows of a store depend on: the model (name, weights fingerprint, input contract), the layers, the
    inputs (fingerprint and count), the images per shard, and a product's own ``extra`` choices.

    :meth:`manifest` is the ``settings`` of the store manifest; two collections with equal settings hold the same
    rows, so a rerun with equal settings resumes and one with other settings is told which differ.
    """

    model: str
    weights: str
    input: str
    layers: tuple[str, ...]
    images: str
    n_images: int
    shard_images: int
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, model: Model, imageset: ImageSet, layers: Sequence[str], shard_images: int,
           **extra: Any) -> "CollectionSettings":
        return cls(model.name, model.weights_fingerprint(), model.contract.describe(), tuple(layers),
                   imageset.fingerprint(), len(imageset), int(shard_images), tuple(extra.items()))

    def manifest(self) -> dict:
        return {"model": self.model, "weights": self.weights, "input": self.input, "layers": list(self.layers),
                "n_images": self.n_images, "images": self.images, "shard_images": self.shard_images,
                **dict(self.extra)}

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_images)

    def header(self, model: Model, imageset: ImageSet, specs: Sequence[LayerSpec], n_classes: int,
               **fields_: Any) -> dict:
        """The manifest of a new store (without shards): the settings plus what a reader shows (layers, classes,
        labels, where the images came from) and a product's ``fields_`` outside the settings."""
        kind = "folder" if isinstance(imageset, ImageFolder) else "dataset" if isinstance(imageset, DatasetImages) \
            else "list"
        return {"model": model.name, "input": model.contract.describe(), "layers": [s.record() for s in specs],
                "n_classes": n_classes, "labels": list(model.labels.entries) if model.labels is not None else None,
                "images": {"count": self.n_images, "kind": kind, "source": imageset.source,
                           "root": str(imageset.root) if isinstance(imageset, ImageFolder) else None},
                "settings": self.manifest(), "n_shards": self.n_shards, "shard_images": self.shard_images,
                **fields_}

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Images ``[lo, hi)`` of shard ``shard``."""
        return shard * self.shard_images, min((shard + 1) * self.shard_images, self.n_images)


def resolve_layers(model, layers: str | Sequence[str] | None) -> list[str]:
    """The layer names of a run, checked against ``model`` before any work starts.

    ``None``: the model's default layer; ``"all"`` (or ``["all"]``): every layer of its layer-by-layer list
    (:meth:`~luminate.models.Model.default_layers`: stem, each block, head, in forward order); otherwise the
    names given, in order without repeats. Every unknown name is reported at once, with the closest names.
    """
    model = as_model(model)
    if layers is None:
        return [model.default_layer("visualization")]
    names = [layers] if isinstance(layers, str) else list(layers)
    if [n.strip().lower() for n in names] == ["all"]:
        names = model.default_layers()
        if not names:
            names = [info.name for info in model.layers() if len(info.shape) == 3]
        if not names:
            raise ValueError(f"{model.name} has no [C, H, W] layers to show; name layers with --layers")
        return names
    names = list(dict.fromkeys(names))
    known = [info.name for info in model.layers()]
    bad = []
    for name in names:
        try:
            model.layer_info(name)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            bad.append(f"{name!r}" + (f" (closest: {', '.join(close)})" if close else f" ({exc})"))
    if bad:
        raise ValueError(f"unknown layer(s) for {model.name}: {'; '.join(bad)}. List the layers with "
                         f"`luminate layers {model.name}`, or give --layers all")
    return names


# ----- unit specs ------------------------------------------------------------------------------------------------

UNIT_SPEC_HELP = "give a slice like 0:64 (START:STOP), a list like 3,7,9, or all"


def _slice_parts(text: str) -> list[int | None]:
    """``"a:b[:c]"`` -> ``[a, b(, c)]`` (``None`` for an empty part); ValueError when malformed."""
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        parts = []
    if not 2 <= len(parts) <= 3 or (len(parts) == 3 and parts[2] == 0):
        raise ValueError(UNIT_SPEC_HELP)
    return parts


def _unit_list(text: str, channels: int, layer: str) -> list[int]:
    try:
        units = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(UNIT_SPEC_HELP) from None
    if not units:
        raise ValueError("no units given")
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise IndexError(f"unit {bad[0]} is out of range; {layer} has only {channels} units (0..{channels - 1})")
    return units


def parse_units(spec: str | Sequence[int] | range | None, channels: int) -> list[int]:
    """Unit indices from ``"0:64"`` (a slice, clipped to the layer), ``"3,7,9"``, a list or range; ``None`` or
    ``"all"``: all. Sorted, without repeats. A malformed spec raises ``ValueError``, an index out of range
    ``IndexError``."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(channels))
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                chosen = list(range(channels))[slice(*_slice_parts(text))]
                if not chosen:   # 20:30 past the layer, or 5:2: nothing to do must not pass without a word
                    raise IndexError(f"the slice selects nothing of {channels} units (0..{channels - 1})")
                return chosen
            units = _unit_list(text, channels, "the layer")
        except IndexError as exc:
            raise IndexError(f"units {spec!r}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"units {spec!r}: {exc}") from None
    else:
        units = [int(u) for u in spec]
        bad = [u for u in units if not 0 <= u < channels]
        if bad:
            raise IndexError(f"unit {bad[0]} is out of range for a layer with {channels} channels "
                             f"(0..{channels - 1})")
    return sorted(dict.fromkeys(units))


def check_unit_spec(spec: str, channels: int, layer: str, option: str = "units") -> tuple[str, str]:
    """The strict reading of a unit spec typed by a person, before any work: ``(spec to use, note)``.

    A slice that runs past the layer is clipped to it, with a note saying ``"layer L has only N units"`` (empty
    when nothing changed). An empty slice (``5:2``), a start past the layer, a malformed spec or an index out of
    range raise ``ValueError`` (``IndexError`` for the index) with the reason, for the caller to prefix with
    ``option`` and the spec.
    """
    text = spec.strip()
    last = channels - 1
    if ":" not in text:
        _unit_list(text, channels, f"layer {layer}")
        return spec, ""
    parts = _slice_parts(text)
    start, stop = parts[0], parts[1]
    if start is not None and start >= channels:
        raise ValueError(f"layer {layer} has only {channels} units (0..{last})")
    selected = list(range(channels))[slice(*parts)]
    if not selected:
        raise ValueError(f"selects no unit of {layer} (start must be below stop, e.g. 0:16; the layer has units "
                         f"0..{last})")
    if stop is not None and stop > channels:
        clipped = ":".join("" if p is None else str(p) for p in [start, channels] + parts[2:])
        return clipped, f"layer {layer} has only {channels} units: {option} {spec} is clipped to {clipped} " \
                        f"({len(selected)} units)"
    return spec, ""
