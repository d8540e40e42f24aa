"""One disk cache for rendered images, addressed by what made them.

Every feature visualization that Luminate keeps between runs (channel icons for the Building Blocks pages, atlas
cell icons, Microscope units, feature pages; all rendered by :func:`luminate.units.render_directions`, whose settings
value is the key) goes through :class:`RenderCache`. An **entry** is named by a **key**, the SHA-256 of
everything the images depend on (model name and weights fingerprint, layer, objective, every render setting; see
:meth:`RenderCache.key`), so new weights or settings never meet stale images, and a rerun finds what an earlier
run made. An entry holds one or more equally sized images in numbered **slots** (the tiles of one direction: one
for a channel or atlas icon, five per feature, six per Microscope unit) and optionally a score per slot.

On disk: ``<folder>/<key[:2]>/<key>.png``, the images as 8-bit tiles of one PNG (slot ``s`` at row ``s // cols``,
column ``s % cols``), and ``<key>.json`` beside it, an index for people and tools (slots present, scores,
settings). The PNG carries the same index in a text chunk and is the one that is read, so the image and its index
always agree. Writes are atomic (temporary file, then rename): a reader sees a whole entry or the previous one, an
interrupted run leaves nothing broken, and :meth:`RenderCache.put` merges into the entry as it is on disk, so
several processes filling one entry lose nothing but a race's last write. Images come back quantized to 8 bits
(:func:`quantize`); callers return the quantized image on a miss too, so a hit and a miss give the same tensor.

The folder: ``$LUMINATE_CACHE`` (one environment variable for everything Luminate keeps, weights included), else
``~/.cache/luminate``; rendered images go to its ``renders`` subfolder (:func:`cache_dir`).

Example (the mechanics; :func:`luminate.units.render_directions` does this for every direction it renders)::

    from luminate import models, objectives as obj, param, render
    from luminate.cache import RenderCache, dequantize, quantize

    model = models.load("efficientnet_lite0")
    cache = RenderCache()                                   # $LUMINATE_CACHE/renders, or a folder you give
    settings = {"objective": "channel", "layer": "blocks.9", "size": 64, "steps": 256, "seed": 0}
    key = RenderCache.key(settings, model=model)            # name + weights fingerprint join the settings
    hit = cache.get(key, [0, 1, 2, 3])                      # None when the entry does not exist yet
    have = hit.images if hit is not None else {}            # {slot: [3, 64, 64] float in [0, 1]}
    todo = [c for c in range(4) if c not in have]
    if todo:
        result = render(model, obj.channels("blocks.9", todo), param.image(64, batch=len(todo)), steps=256)
        fresh = dict(zip(todo, dequantize(quantize(result.image))))
        cache.put(key, fresh, settings=settings, cols=4)   # merged into the entry; atomic
        have.update(fresh)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Mapping, Protocol

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from torch import Tensor


#: The one environment variable that moves everything Luminate keeps on disk.
ENV_VAR = "LUMINATE_CACHE"

#: Version of the on-disk entry format (stored in each index).
FORMAT = 1

_INDEX_CHUNK = "luminate-index"

logger = logging.getLogger("luminate.cache")


class StorageError(OSError):
    """A write failed for a reason the user can fix: a full disk, a read-only folder, no permission. ``errno`` and
    ``filename`` are set; the message names the path and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


_ADVICE = {
    errno.ENOSPC: ("no space left on device", "free some space, or write to a folder on another disk (-o), then "
                                              "rerun the same command: finished work is kept"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota, then rerun the same command"),
    errno.EROFS: ("the folder is on a read-only file system", "write to a writable folder (-o), or remount it "
                                                             "read-write"),
    errno.EACCES: ("permission denied", "write to a folder you own (-o), or fix its permissions"),
    errno.EPERM: ("operation not permitted", "write to a folder you own (-o), or fix its permissions"),
    errno.EFBIG: ("the file is over this process's file-size limit (ulimit -f)", "raise the limit (ulimit -f "
                                                                                  "unlimited), then rerun the same "
                                                                                  "command: finished work is kept"),
}


def _file_size_limited() -> bool:
    """Whether this process has a finite file-size limit (``ulimit -f``): a short write is then that limit."""
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        return False


def storage_error(exc: OSError, path: str | os.PathLike) -> StorageError | None:
    """A :class:`StorageError` naming ``path`` for a write that failed on a full disk, a read-only folder or missing
    permission (numpy's ``"N requested and M written"``, which carries no errno, means a full disk); None for other
    errors. ``raise storage_error(exc, path) or exc``."""
    if isinstance(exc, StorageError):
        return exc
    code = exc.errno
    if code is None and "requested and" in str(exc) and "written" in str(exc):
        code = errno.EFBIG if _file_size_limited() else errno.ENOSPC
    if code not in _ADVICE:
        return None
    what, fix = _ADVICE[code]
    where = exc.filename or path
    return StorageError(code, f"cannot write {where}: {what}; {fix}", str(where))


class Fingerprinted(Protocol):
    """What :meth:`RenderCache.key` reads from a model (a :class:`luminate.models.Model` has both). This module is a
    leaf, imported by ``luminate.models`` for :func:`cache_dir`, so it names no Luminate class."""

    name: str

    def weights_fingerprint(self) -> str: ...
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def cache_dir(*parts: str) -> Path:
    """Luminate's cache folder, ``$LUMINATE_CACHE`` or else ``~/.cache/luminate``, joined with ``parts``.

    ``cache_dir()`` holds downloaded weights (``inception_v1.pth``); ``cache_dir("renders")`` is the default
    :class:`RenderCache` folder. Nothing is created here.
    """
    root = os.environ.get(ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "luminate"
    return base.joinpath(*parts)


def quantize(images: Tensor) -> Tensor:
    """Images in [0, 1] (any shape) -> uint8 of the same shape, ``floor(255 x + 0.5)`` after clamping (CPU)."""
    return (images.detach().cpu().float().clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)


def dequantize(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [0, 1] (``x / 255``), same shape."""
    return images.float() / 255.0


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], None], *,
                 durable: bool = False) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file) into a temporary file beside ``path``
    (``.<name>.tmp-<random>``), then rename it over ``path``: readers see the old file or the new one, never a
    part, and a failed write leaves the old file. The folder is created when missing.

    ``durable=True`` also flushes the file and its folder to disk before returning, so a crash right after cannot
    lose it (activation stores and their manifests); the render cache does without (a lost icon is rendered again).
    A full disk, a read-only folder or missing permission raises :class:`StorageError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    except OSError as exc:
        raise (storage_error(exc, path) or exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:   # a failed write (full disk, Ctrl-C) leaves the old file and no temporary one
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and (translated := storage_error(exc, path)) is not None:
            raise translated from exc
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that (a rerun leaves files untouched); returns
    whether it wrote. Folders are made as needed; the write is :func:`atomic_write` (no half-written file is ever
    read). The one writer of site pages and site metadata (:mod:`luminate.views.site`, the text Microscope)."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data)
    return True


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new and renamed files) to disk; a no-op where the platform cannot."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class CachedImages:
    """What :meth:`RenderCache.get` finds under a key.

    Attributes:
        images: ``{slot: [C, H, W]}`` float32 in [0, 1], 8-bit steps (CPU).
        scores: ``{slot: score}`` for the slots stored with a score.
        settings: the settings dict the writer stored with the entry.
    """

    images: dict[int, Tensor] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


class RenderCache:
    """Rendered images on disk, one entry per content key (see the module docstring for the format).

    Args:
        folder: where the entries live; default ``cache_dir("renders")`` (``$LUMINATE_CACHE/renders``).
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else cache_dir("renders")

    # -- keys ---------------------------------------------------------------------------------------------------

    @staticmethod
    def key(settings: Mapping, data: bytes | str | Tensor | np.ndarray = b"", *,
            model: Fingerprinted | None = None) -> str:
        """The entry key: SHA-256 (hex) of ``settings`` as canonical JSON followed by ``data``.

        Args:
            settings: JSON-able description of everything the images depend on (render settings, layer, objective
                name, Luminate version ...).
            data: what JSON cannot hold compactly: bytes as they are, a string as UTF-8, a tensor or array as its
                float32 little-endian bytes (an atlas direction ``[C]``, a whitening matrix).
            model: adds ``"model"`` (its name) and ``"weights"`` (:meth:`Model.weights_fingerprint`) to ``settings``.
        """
        if model is not None:
            settings = {**settings, "model": model.name, "weights": model.weights_fingerprint()}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        if isinstance(data, str):
            data = data.encode()
        elif isinstance(data, (Tensor, np.ndarray)):
            array = data.detach().cpu().numpy() if isinstance(data, Tensor) else data
            data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        digest.update(data)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """The entry's PNG: ``<folder>/<key[:2]>/<key>.png`` (the index is the same path with ``.json``)."""
        if not key or any(c in key for c in "/\\."):
            raise ValueError(f"a cache key is a hex digest like RenderCache.key(...) returns, got {key!r}")
        return self.folder / key[:2] / f"{key}.png"

    # -- reading ------------------------------------------------------------------------------------------------

    def get(self, key: str, slots: Iterable[int] | None = None) -> CachedImages | None:
        """The entry under ``key`` (only ``slots``, those of them present, when given), or None when there is no
        readable entry. A damaged entry counts as missing (a warning names it; it is rendered and written again)."""
        found = self._load(self.path(key))
        if found is None:
            return None
        index, tiles = found
        wanted = tiles.keys() if slots is None else {int(s) for s in slots} & tiles.keys()
        scores = index.get("scores", {})
        return CachedImages(images={s: dequantize(tiles[s]) for s in sorted(wanted)},
                            scores={s: float(scores[str(s)]) for s in sorted(wanted) if str(s) in scores},
                            settings=index.get("settings", {}))

    def get_many(self, keys: Iterable[str], slots: Iterable[int] | None = None) -> dict[str, CachedImages]:
        """``{key: entry}`` for the keys that have an entry (see :meth:`get`); missing keys are left out."""
        slots = None if slots is None else list(slots)
        found = {}
        for key in dict.fromkeys(keys):
            entry = self.get(key, slots)
            if entry is not None:
                found[key] = entry
        return found

    def __contains__(self, key: str) -> bool:
        """Whether an entry file exists under ``key`` (not whether it is readable: :meth:`get` checks that)."""
        return self.path(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.png")) if self.folder.is_dir() else 0

    def __repr__(self) -> str:
        return f"RenderCache({str(self.folder)!r}, {len(self)} entries)"

    # -- writing ------------------------------------------------------------------------------------------------

    def put(self, key: str, images: Mapping[int, Tensor] | Tensor, *, scores: Mapping[int, float] | None = None,
            settings: Mapping | None = None, cols: int | None = None) -> Path:
        """Store images under ``key``, merged with what the entry already holds (new slots win).

        Args:
            images: ``{slot: [C, H, W]}`` or a batch ``[N, C, H, W]`` (slots ``0..N-1``), in [0, 1]; C is 1, 3
                or 4, every image of an entry has the same shape.
            scores: optional ``{slot: float}`` kept with the images (e.g. the objective that chose an icon).
            settings: JSON-able settings stored in the index (for people and tools; the key already encodes them).
            cols: tiles per row of the sheet, fixed by the entry's first write (default ``ceil(sqrt(slots))``).

        Returns:
            The entry's PNG path.
        """
        if isinstance(images, Tensor):
            if images.ndim != 4:
                raise ValueError(f"a batch of images is [N, C, H, W], got shape {tuple(images.shape)}")
            images = dict(enumerate(images))
        if not images:
            raise ValueError("RenderCache.put needs at least one image")
        new = {int(s): quantize(img) for s, img in images.items()}
        shapes = {tuple(t.shape) for t in new.values()}
        shape = shapes.pop()
        if shapes or len(shape) != 3 or shape[0] not in _MODES:
            raise ValueError(f"the images of one cache entry are [C, H, W] of one shape with C in 1, 3, 4; got "
                             f"{sorted({tuple(t.shape) for t in new.values()})}")
        if min(new) < 0:
            raise ValueError(f"cache slots are non-negative integers, got {min(new)}")
        path = self.path(key)
        merged: dict[int, Tensor] = {}
        merged_scores: dict[str, float] = {}
        found = self._decode(path) if path.is_file() else None   # merge with the entry as it is on disk now
        if found is not None and tuple(found[0]["tile"]) == shape:
            index, merged = found
            merged_scores = {str(s): float(v) for s, v in index.get("scores", {}).items()}
            cols = int(index["cols"])
        merged.update(new)
        merged_scores.update({str(int(s)): float(v) for s, v in (scores or {}).items()})
        if cols is None:
            cols = max(1, math.ceil(math.sqrt(max(merged) + 1)))
        c, h, w = shape
        rows = max(merged) // cols + 1
        sheet = np.full((rows * h, cols * w, c), 255, dtype=np.uint8)
        for s, tile in merged.items():
            r, col = divmod(s, cols)
            sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = tile.permute(1, 2, 0).numpy()
        index = {"format": FORMAT, "key": key, "tile": [c, h, w], "cols": cols, "present": sorted(merged),
                 "scores": merged_scores, "settings": dict(settings or {})}
        text = json.dumps(index, sort_keys=True)
        info = PngImagePlugin.PngInfo()
        info.add_text(_INDEX_CHUNK, text)
        pixels = sheet[..., 0] if c == 1 else sheet
        atomic_write(path, lambda f: Image.fromarray(pixels, _MODES[c]).save(f, format="PNG", pnginfo=info))
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(index, indent=1).encode()))
        return path

    # -- internals ----------------------------------------------------------------------------------------------

    @staticmethod
    def _load(path: Path) -> tuple[dict, dict[int, Tensor]] | None:
        """``(index, {slot: uint8 [C, H, W]})`` of the entry at ``path``, or None when missing or damaged (decoding
        the PNG checks it: zlib and chunk checksums, the index chunk and the sheet's size)."""
        if not path.is_file():
            return None
        found = RenderCache._decode(path)
        if found is None:
            logger.warning("damaged render-cache entry %s (it does not decode): recomputing it", path)
        return found

    @staticmethod
    def _decode(path: Path) -> tuple[dict, dict[int, Tensor]] | None:
        try:
            with Image.open(path) as im:
                im.load()
                index = json.loads(im.info[_INDEX_CHUNK])
                c, h, w = (int(v) for v in index["tile"])
                cols = int(index["cols"])
                sheet = np.asarray(im.convert(_MODES[c]))
            present = [int(s) for s in index["present"]]
        except (OSError, ValueError, KeyError, TypeError, SyntaxError):
            return None
        sheet = sheet[..., None] if sheet.ndim == 2 else sheet
        tiles = {}
        for slot in present:
            r, col = divmod(slot, cols)
            tile = sheet[r * h:(r + 1) * h, col * w:(col + 1) * w]
            if tile.shape[:2] != (h, w):
                return None
            tiles[slot] = torch.from_numpy(tile.copy()).permute(2, 0, 1)
        return index, tiles

def save_keyed_npz(path: str | os.PathLike, arrays: dict, *, durable: bool = False) -> None:
    """Write ``arrays`` (one of them ``"key"``: the settings they were computed under) as one ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue(), durable=durable)


def load_keyed_npz(path: str | os.PathLike, key: str) -> dict | None:
    """The arrays of ``path`` when its ``"key"`` equals ``key``; ``None`` when missing, unreadable or made under
    other settings (the caller recomputes)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return {name: saved[name] for name in saved.files}
    except (OSError, ValueError, KeyError):
        pass
    return None


__all__ = ["ENV_VAR", "CachedImages", "RenderCache", "StorageError", "atomic_write", "cache_dir", "dequantize",
           "fsync_dir", "load_keyed_npz", "quantize", "save_keyed_npz", "storage_error", "write_if_changed"]
