"""The inputs of a collection: image sets (a folder, a list of files, any torch ``Dataset``) and text sets.

An :class:`ImageSet` numbers its images ``0..N-1`` and names each one (a path relative to the folder, a
path, or ``dataset[i]``). :func:`image_loader` decodes and preprocesses them in background workers
(a torch ``DataLoader``): every image becomes ``[C, H, W]`` in [0, 1] at the model's native size through
``model.contract.preprocess`` (centre crop + resize). An item that cannot be read (a corrupt JPEG, a
text file named ``.png``, an empty file, a dataset item that raises) is *dropped from its batch and
reported* (index and reason), never fatal.

Text sets: :func:`read_texts` is the one reader of a text file (one text per line) or a folder of ``.txt`` files,
with the same policy: an empty or non-UTF-8 line (or file) is skipped and named in :attr:`Texts.skipped`.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from luminate.images import IMAGE_EXTENSIONS, UnreadableImageError, find_images, needed_side, to_tensor
from luminate.models.contract import InputContract


class ImageSet:
    """Numbered, named images. Subclasses implement :meth:`raw` and :meth:`name`.

    ``raw(i)`` returns ``(image_like, label)`` where ``image_like`` is anything
    :func:`luminate.images.to_tensor` reads (path, PIL image, array, tensor) and ``label`` an int
    (``-1`` when there is none).
    """

    #: a short description for manifests and logs
    source: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def raw(self, index: int) -> tuple[Any, int]:
        raise NotImplementedError

    def name(self, index: int) -> str:
        raise NotImplementedError

    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]

    def fingerprint(self) -> str:
        """A hash that changes when the list of images changes (names and, for files, sizes)."""
        digest = hashlib.sha256(f"{type(self).__name__}\n{len(self)}\n".encode())
        for i in range(len(self)):
            digest.update(f"{self.name(i)}\t{self._size(i)}\n".encode())
        return digest.hexdigest()

    def _size(self, index: int) -> int:
        return -1

    def load(self, index: int, contract: InputContract | None = None) -> torch.Tensor:
        """Image ``index`` as ``[C, H, W]`` in [0, 1] (preprocessed by ``contract`` when given).

        Raises :class:`~luminate.images.UnreadableImageError` when the item cannot be read.
        """
        image, _ = _prepare(self, index, contract)
        return image


class ImageList(ImageSet):
    """Images from an explicit list of file paths, in the given order; names are the paths as given."""

    def __init__(self, paths: Iterable[str | os.PathLike]):
        self.paths = [Path(p).expanduser() for p in paths]
        if not self.paths:
            raise ValueError("the list of image paths is empty")
        self.source = f"list of {len(self.paths)} paths"

    def __len__(self) -> int:
        return len(self.paths)

    def raw(self, index: int) -> tuple[Any, int]:
        return self.paths[index], -1

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def path(self, index: int) -> Path:
        return self.paths[index]

    def _size(self, index: int) -> int:
        try:
            return self.paths[index].stat().st_size
        except OSError:
            return -1


class ImageFolder(ImageList):
    """Every image file under ``root``, recursively, sorted by path.

    Files are selected by extension (``luminate.images.IMAGE_EXTENSIONS``: jpg, png, webp, gif, bmp,
    tiff, ppm); names are paths relative to ``root`` with ``/`` separators.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        paths = find_images(self.root)
        if not paths:
            raise FileNotFoundError(f"no images found under {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)} "
                                    "files, recursively)")
        super().__init__(paths)
        self.source = f"folder {self.root}"

    def name(self, index: int) -> str:
        return self.paths[index].relative_to(self.root).as_posix()


class DatasetImages(ImageSet):
    """A torch ``Dataset`` (or any indexable with ``len``) whose items are images (tensor ``CHW``, PIL,
    ``HWC`` array, path) or ``(image, label, ...)`` tuples. Names are ``dataset[i]``.

    The fingerprint covers the dataset's type and length, plus its ``fingerprint`` attribute (or method)
    when it has one: a Dataset's contents cannot be hashed cheaply, so give it that attribute to make a
    resumed collection detect a changed dataset. In-memory batches (tensor, array) are hashed whole.
    """

    def __init__(self, dataset: Dataset | Sequence):
        try:
            self.size = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise TypeError("the dataset has no len(): collection needs a map-style Dataset "
                            "(an IterableDataset cannot be resumed)") from exc
        if self.size == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.source = f"dataset {type(dataset).__module__}.{type(dataset).__qualname__} ({self.size} items)"

    def __len__(self) -> int:
        return self.size

    def raw(self, index: int) -> tuple[Any, int]:
        item = self.dataset[index]
        label = -1
        if isinstance(item, (tuple, list)):
            if not item:
                raise UnreadableImageError(f"dataset[{index}] is an empty {type(item).__name__}")
            if len(item) > 1:
                label = _as_label(item[1])
            item = item[0]
        return item, label

    def name(self, index: int) -> str:
        return f"dataset[{index}]"

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.source}\n".encode())
        if isinstance(self.dataset, (torch.Tensor, np.ndarray)):  # an in-memory batch: hash its values
            array = self.dataset.detach().cpu().numpy() if isinstance(self.dataset, torch.Tensor) else self.dataset
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
        else:
            extra = getattr(self.dataset, "fingerprint", "")
            digest.update(str(extra() if callable(extra) else extra).encode())
        return digest.hexdigest()


def image_set(source: ImageSet | str | os.PathLike | Sequence[str | os.PathLike] | Dataset) -> ImageSet:
    """An :class:`ImageSet` from a folder, one image file, a list of paths, a torch ``Dataset``, or
    in-memory images (an ``[N, C, H, W]`` tensor, an ``[N, H, W, C]`` array, a list of PIL images)."""
    if isinstance(source, ImageSet):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            return ImageFolder(path)
        if path.is_file():
            return ImageList([path])
        raise FileNotFoundError(f"no such folder or image file: {path}")
    if isinstance(source, Dataset):
        return DatasetImages(source)
    if isinstance(source, (torch.Tensor, np.ndarray)) and source.ndim == 4:
        return DatasetImages(source)  # an image batch: NCHW tensor or NHWC array
    if isinstance(source, Sequence) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        return ImageList(source)
    if isinstance(source, Sequence) and source:
        return DatasetImages(source)  # in-memory images (PIL, arrays, tensors), indexable like a Dataset
    raise TypeError(f"cannot make an image set from {type(source).__name__}: give a folder, a list of image "
                    "paths, a torch Dataset of images or an image batch")


class Batch(NamedTuple):
    """One loaded batch: ``images`` ``[B, C, H, W]`` (``B`` may be 0), their set ``indices`` and
    ``labels`` ``[B]``, and the items of this batch that were dropped as ``(index, reason)``."""

    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[tuple[int, str]]


class PreparedImages(Dataset):
    """Item ``i`` -> ``(i, image [C,H,W] or None, label, reason or None)``; runs in loader workers."""

    def __init__(self, images: ImageSet, contract: InputContract):
        self.images = images
        self.contract = contract

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            image, label = _prepare(self.images, index, self.contract)
        except Exception as exc:  # an unreadable item must never end a long collection
            reason = str(exc) if isinstance(exc, UnreadableImageError) else f"{type(exc).__name__}: {exc}"
            return index, None, -1, reason
        return index, image, label, None


def _prepare(images: ImageSet, index: int, contract: InputContract | None) -> tuple[torch.Tensor, int]:
    raw, label = images.raw(index)
    channels = contract.channels if contract is not None else 3
    side = needed_side(contract.size, contract.crop_fraction) if contract is not None else None
    tensor = to_tensor(raw, channels=channels, min_side=side)   # a huge JPEG decodes at reduced size
    if tensor.shape[0] != 1:
        raise UnreadableImageError(f"{images.name(index)} holds {tensor.shape[0]} images, expected one")
    if tensor.shape[1] != channels:
        raise UnreadableImageError(f"{images.name(index)} has {tensor.shape[1]} channels, expected {channels}")
    if not torch.isfinite(tensor).all():
        raise UnreadableImageError(f"{images.name(index)} contains NaN or infinite values")
    lo, hi = tensor.min().item(), tensor.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise UnreadableImageError(f"{images.name(index)} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; "
                                   "give raw images (not normalized ones): the model's contract converts them")
    if contract is not None:
        tensor = contract.preprocess(tensor.clamp(0, 1))
    return tensor[0].contiguous(), label


def collate_images(items: list) -> Batch:
    """Stack the readable items of a batch and list the others as ``(index, reason)``."""
    good = [item for item in items if item[1] is not None]
    skipped = [(int(item[0]), str(item[3])) for item in items if item[1] is None]
    if good:
        images = torch.stack([item[1] for item in good])
    else:
        images = torch.zeros(0)
    indices = torch.tensor([item[0] for item in good], dtype=torch.int64)
    labels = torch.tensor([item[2] for item in good], dtype=torch.int64)
    if torch.utils.data.get_worker_info() is not None:
        # in a loader worker: the batch goes to shared memory here, where a failure (a full /dev/shm, a file-size
        # limit) reaches the main process as this batch's error; in the queue's feeder thread it would be printed
        # and the batch lost, leaving the main process waiting for it
        for tensor in (indices, images, labels):
            tensor.share_memory_()
    return Batch(indices, images, labels, skipped)


#: Seconds the main process waits for one batch from the decoding workers before it stops the run (a worker
#: stuck or gone without a word); a batch of 32 huge photos on a busy machine takes well under this.
LOADER_TIMEOUT_S = 600


def default_workers() -> int:
    """``min(2, CPUs available)``: decoding overlaps the forward pass without starving it."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(2, cpus)


def shard_batches(shards: Sequence[int], shard_images: int, n_images: int,
                  batch_size: int) -> list[tuple[int, list[int]]]:
    """The batches of a sharded pass: ``(shard, image indices)`` per batch, in order; a batch never crosses a
    shard boundary, so each shard is written from whole batches (stores and the Microscope resume by shard)."""
    plan: list[tuple[int, list[int]]] = []
    for k in shards:
        lo, hi = k * shard_images, min((k + 1) * shard_images, n_images)
        plan += [(k, list(range(s, min(s + batch_size, hi)))) for s in range(lo, hi, batch_size)]
    return plan


def image_loader(images: ImageSet, contract: InputContract, batches: Sequence[Sequence[int]],
                 num_workers: int | None = None, pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` yielding one :class:`Batch` per entry of ``batches`` (lists of image indices), in order.

    ``num_workers`` background processes decode and preprocess (default :func:`default_workers`;
    0 decodes in this process; workers ignore Ctrl-C, which the main process handles). Unreadable items are
    dropped from their batch and listed in ``Batch.skipped``.
    """
    workers = default_workers() if num_workers is None else int(num_workers)
    return DataLoader(PreparedImages(images, contract), batch_sampler=[list(b) for b in batches],
                      collate_fn=collate_images, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=ignore_interrupts if workers else None,
                      timeout=LOADER_TIMEOUT_S if workers else 0)


def ignore_interrupts(worker_id: int = 0) -> None:
    """In a loader worker: ignore SIGINT. Ctrl-C in a terminal reaches the whole process group; the main process
    alone stops the run (and exits 130), while workers that died of it would print tracebacks of their own and
    turn the interrupt into a "worker exited unexpectedly" error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _as_label(value: Any) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, (int, bool)) else -1


# ----- text sets ---------------------------------------------------------------------------------------------


@dataclass
class Texts(Sequence):
    """Texts read from a file or folder, with what was left out and why.

    ``texts[i]`` is a ``str``; ``sources[i]`` says where it came from (``"file.txt:12"``); ``skipped`` lists
    ``(where, reason)`` for empty lines and lines that are not UTF-8.
    """

    texts: list[str]
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __getitem__(self, i):
        return self.texts[i]

    def __len__(self) -> int:
        return len(self.texts)

    def summary(self) -> str:
        empty = sum(1 for _, why in self.skipped if why == "empty")
        bad = [where for where, why in self.skipped if why != "empty"]
        parts = [f"{len(self.texts)} texts"]
        if empty:
            parts.append(f"{empty} empty lines skipped")
        if bad:
            parts.append(f"{len(bad)} lines skipped as not UTF-8 ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
        return ", ".join(parts)


def _as_utf8(raw: bytes) -> bytes:
    """A text file's bytes as UTF-8: a UTF-8 byte-order mark is dropped (it is not part of the first text), and a
    UTF-16 file (its BOM, or NULs in every other byte as UTF-16 without one has) is decoded; else as they are."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:]
    head = raw[:4096]
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else None
    if encoding is None and len(head) >= 4:
        odd, even = head[1::2].count(0), head[0::2].count(0)
        if max(odd, even) > 0.3 * (len(head) // 2) and min(odd, even) == 0:
            encoding = "utf-16-le" if odd else "utf-16-be"
    if encoding is None:
        return raw
    try:
        return raw.decode(encoding).encode("utf-8")
    except UnicodeDecodeError:
        return raw  # not UTF-16 after all: its lines are named as not UTF-8 below


def read_texts(path: str | os.PathLike | Iterable[str], per_line: bool | None = None) -> Texts:
    """Texts from a ``.txt`` file (one text per line), a folder of ``.txt`` files (one text per file; searched
    recursively) or a list of strings.

    Empty (or whitespace-only) texts are skipped; bytes that are not UTF-8 skip their line (or file), and each skip
    is listed in ``Texts.skipped`` with its place. Lines keep their content (only the line break is removed). A
    UTF-8 byte-order mark is dropped and UTF-16 files are decoded (:func:`_as_utf8`).
    """
    if not isinstance(path, (str, os.PathLike)):
        items = list(path)
        keep = [(t, f"text {i}") for i, t in enumerate(items) if isinstance(t, str) and t.strip()]
        skipped = [(f"text {i}", "empty") for i, t in enumerate(items) if isinstance(t, str) and not t.strip()]
        bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be str; item {bad[0]} is {type(items[bad[0]]).__name__}")
        return Texts([t for t, _ in keep], [s for _, s in keep], skipped)
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise FileNotFoundError(f"{p} holds no .txt files: give a text file (one text per line) or a folder of "
                                    ".txt files")
        per_line = False if per_line is None else per_line
    elif p.is_file():
        files, per_line = [p], True if per_line is None else per_line
    else:
        raise FileNotFoundError(f"no text file or folder at {p}")
    texts, sources, skipped = [], [], []
    for f in files:
        raw = _as_utf8(f.read_bytes())
        chunks = raw.split(b"\n") if per_line else [raw]
        if per_line and chunks and chunks[-1] == b"":
            chunks.pop()
        for n, chunk in enumerate(chunks, 1):
            where = f"{f.name}:{n}" if per_line else f.name
            try:
                s = chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                skipped.append((where, f"not UTF-8 (byte {e.start})"))
                continue
            s = s.removesuffix("\r") if per_line else s
            if not s.strip():
                skipped.append((where, "empty"))
                continue
            texts.append(s)
            sources.append(where)
    if not texts:
        raise ValueError(f"{p}: no text left to read ({len(skipped)} empty or unreadable lines)")
    return Texts(texts, sources, skipped)
