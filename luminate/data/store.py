"""The activation store: sharded, resumable, read lazily.

Layout on disk::

    STORE/
      manifest.json          what was collected, how, and the finished shards (see below)
      images.jsonl           one JSON string per line: the name of image i on line i
      shards/00000/          one folder per finished shard, each array a .npy file:
        image.npy              int64 [R]          index of the row's image in images.jsonl
        position.npy           int16 [R]          k, the row's position draw (0..positions_per_image-1)
        label.npy              int64 [R]          the dataset's label, -1 when none
        top_classes.npy        int32 [R, k]       the whole image's top-k classes, best first
        top_logits.npy         float32 [R, k]     their logits
        acts.<layer>.npy       [R, C]             activation vector at the position (float32 by default)
        attr.<layer>.npy       [R, n_classes]     the position's attribution to every logit (float16 default)
        yx.<layer>.npy         int16 [R, 2]       the position (row, column) in that layer's grid
      .lock                  advisory lock for manifest updates (POSIX)

Shard ``k`` holds the rows of images ``[k*S, (k+1)*S)`` (``S`` = ``shard_images`` in the manifest), so a
shard is an idempotent unit of work: its contents depend only on the settings and its images. A shard's
files are written into a temporary folder, flushed to disk, then renamed into place, and the shard is
listed in ``manifest.json`` (rewritten atomically: temporary file + ``os.replace``) only afterwards,
with its row count and each file's SHA-256. Anything not listed in the manifest does not exist for a
reader and is redone by the next run; a listed shard is never rewritten.

Reading is lazy: :class:`ActivationStore` memory-maps shard files and loads only what is asked for
(whole columns, chosen rows, or shard by shard with :meth:`ActivationStore.iter_shards`).

Damage is detected when a store is opened, not when a read dies: a reader checks every listed file's size
against the manifest (a ``stat`` per file), and a writer resuming a store also checks each file's SHA-256 (once
per process and file). A damaged shard is reported by name, dropped from the manifest and collected again, so the
result equals a clean run; a garbled manifest is named (reader) or the store is started again (writer). A failed
write (a full disk, a read-only folder, Ctrl-C) leaves no temporary file, and a full disk is reported as such
(:class:`StorageError`).

This module also holds what every site folder shares: :func:`layer_key` (the one layer-to-filename function),
:func:`file_lock` (the one advisory lock: a store's manifest updates, :func:`site_lock` for whole runs) and
:func:`update_manifest` (a field outside the settings, rewritten under the store's lock).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from luminate.cache import StorageError  # noqa: F401 (re-exported: a full disk is reported as one)
from luminate.cache import atomic_write, fsync_dir as _fsync_dir, storage_error

logger = logging.getLogger("luminate.data")

FORMAT = "luminate.activation_store"
VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.jsonl"
SHARDS = "shards"
LOCK = ".lock"
META_FIELDS = ("image", "position", "label", "top_classes", "top_logits")


class StoreSettingsError(ValueError):
    """The store holds a collection made with other settings than the ones asked for."""


class StoreDamagedError(ValueError, OSError):
    """A store's manifest cannot be read, or a file it lists is missing or has the wrong size or checksum (an
    ``OSError``, as a damaged file is, and a ``ValueError``, as an unreadable manifest was)."""


def layer_key(layer: str) -> str:
    """The part of a file name that stands for ``layer`` (dotted module names are kept as they are)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in layer)


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class ActivationStore:
    """A finished (or partly finished) collection, read lazily from ``path``.

    ``len(store)`` is the number of rows (one per image and position) in finished shards. Arrays come
    back as numpy arrays: ``activations(layer)`` ``[N, C]``, ``attributions(layer)`` ``[N, n_classes]``,
    ``positions(layer)`` ``[N, 2]`` (row, column in the layer's grid), ``meta()`` a dict of per-row
    columns. Each accepts ``rows`` (indices) to read only those rows. ``layer`` may be left out when
    the store has one layer.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._names: list[str] | None = None
        self.refresh()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ActivationStore":
        """Open a store written by :func:`luminate.atlas.collect` (any number of readers at once)."""
        return cls(path)

    def refresh(self) -> None:
        """Re-read the manifest (another process may have finished shards since)."""
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            hint = " (the folder does not exist)" if not self.path.exists() else ""
            raise FileNotFoundError(f"{self.path} is not an activation store: no {MANIFEST}{hint}. "
                                    "Make one with luminate.atlas.collect or `luminate collect`.")
        self.manifest = read_manifest(self.path)
        self.shards: list[dict] = sorted(self.manifest["shards"], key=lambda s: s["index"])
        for shard in self.shards:   # a stat per file: a truncated shard is named here, not by a failing mmap
            problem = shard_problem(self.path, shard, checksum=False)
            if problem:
                raise StoreDamagedError(f"{problem}: the store {self.path} is damaged; rerun the command that made "
                                        "it (`luminate collect` or `luminate microscope`, same arguments) to "
                                        "recompute the damaged shard")
        rows = np.array([s["rows"] for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)

    # ----- description -----------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.manifest["model"]

    @property
    def layers(self) -> list[str]:
        return [layer["name"] for layer in self.manifest["layers"]]

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def n_classes(self) -> int:
        return int(self.manifest["n_classes"])

    @property
    def has_attributions(self) -> bool:
        return bool(self.settings["attribution"])

    @property
    def complete(self) -> bool:
        """True when every shard has been collected."""
        return len(self.shards) == self.manifest["n_shards"]

    @property
    def n_images(self) -> int:
        """Images in the image set (readable or not, finished or not)."""
        return int(self.manifest["images"]["count"])

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(image name, reason)`` of every unreadable image in the finished shards."""
        return [(name, reason) for shard in self.shards for name, reason in shard["skipped"]]

    @property
    def labels(self):
        """The model's class names (:class:`luminate.models.Labels`), or None."""
        entries = self.manifest.get("labels")
        if not entries:
            return None
        from luminate.models.labels import Labels

        return Labels(entries)

    def class_index(self, label: str | int) -> int:
        """A class index from a name or index (names need the labels saved with the store)."""
        labels = self.labels
        if labels is not None:
            return labels.index(label)
        if isinstance(label, (int, np.integer)) and 0 <= int(label) < self.n_classes:
            return int(label)
        raise ValueError(f"this store has no class names, so give a class index in 0..{self.n_classes - 1}, "
                         f"not {label!r}")

    def layer_info(self, layer: str | None = None) -> dict:
        """``{"name", "key", "channels", "grid"}`` of a collected layer."""
        name = self._layer(layer)
        return next(info for info in self.manifest["layers"] if info["name"] == name)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, model={self.model_name!r}, layers={self.layers}, "
                f"rows={len(self)}, shards={len(self.shards)}/{self.manifest['n_shards']})")

    def summary(self, max_skipped: int = 50) -> str:
        """A few lines for people: what the store holds and which images were skipped, by name."""
        layers = ", ".join(f"{i['name']} ({i['channels']} channels, {i['grid'][0]}x{i['grid'][1]})"
                           for i in self.manifest["layers"])
        done_images = sum(s["images"][1] - s["images"][0] for s in self.shards)
        state = "complete" if self.complete else f"{len(self.shards)} of {self.manifest['n_shards']} shards done"
        lines = [f"activation store {self.path}: {self.model_name}, {layers}",
                 f"  {len(self)} rows from {done_images - len(self.skipped)} of {self.n_images} images "
                 f"({self.settings['positions_per_image']} position(s) per image"
                 + (f", attributions to {self.n_classes} classes" if self.has_attributions else "")
                 + f"); {len(self.shards)} shard(s), {state}"]
        skipped = self.skipped
        if skipped:
            lines.append(f"  skipped {len(skipped)} unreadable image(s):")
            lines += [f"    {name}: {reason}" for name, reason in skipped[:max_skipped]]
            if len(skipped) > max_skipped:
                lines.append(f"    ... and {len(skipped) - max_skipped} more (listed in {self.path / MANIFEST})")
        return "\n".join(lines)

    # ----- images ----------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        """Names of all images of the set, by index (relative paths for a folder)."""
        if self._names is None:
            with open(self.path / IMAGES, encoding="utf-8") as fh:
                self._names = [json.loads(line) for line in fh if line.strip()]
        return self._names

    def image_path(self, index: int) -> Path | None:
        """The file of image ``index`` (None for images that came from a Dataset)."""
        images = self.manifest["images"]
        name = self.image_names()[int(index)]
        if images.get("root"):
            return Path(images["root"]) / name
        return None if images.get("kind") == "dataset" else Path(name)

    # ----- arrays ----------------------------------------------------------------------------------

    def activations(self, layer: str | None = None, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Activation vectors ``[N, C]`` (all rows, or ``rows``)."""
        return self.read(f"acts.{self.layer_info(layer)['key']}", rows)

    def attributions(self, layer: str | None = None, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Attribution of each row's position to every logit, ``[N, n_classes]``."""
        if not self.has_attributions:
            raise ValueError(f"{self.path} was collected without attributions (attribute=False); "
                             "collect again with attribute=True into another folder")
        return self.read(f"attr.{self.layer_info(layer)['key']}", rows)

    def positions(self, layer: str | None = None, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Each row's position ``(row, column)`` in the layer's grid, ``[N, 2]`` int."""
        return self.read(f"yx.{self.layer_info(layer)['key']}", rows)

    def meta(self, rows: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-row columns: ``image`` (index into :meth:`image_names`), ``position`` (k), ``label``,
        ``top_classes`` ``[N, k]`` and ``top_logits`` ``[N, k]`` of the whole image."""
        return {name: self.read(name, rows) for name in META_FIELDS}

    def iter_shards(self, fields: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(first row, {field: memory-mapped array})`` for each finished shard, in row order.

        Fields are file stems: ``"acts.<layer>"``, ``"attr.<layer>"``, ``"yx.<layer>"`` or a meta field;
        default: all. Memory stays at one shard's pages however large the store.
        """
        for k, shard in enumerate(self.shards):
            names = fields if fields is not None else [f[:-4] for f in shard["files"]]
            yield int(self.offsets[k]), {name: self._load(shard, name) for name in names}

    def read(self, field: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """One field (a file stem, see :meth:`iter_shards`) for all rows or the given ``rows``."""
        if rows is None:
            parts = [self._load(shard, field) for shard in self.shards if shard["rows"]]
            if not parts:
                return self._empty(field, 0)
            return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row indices must be in 0..{n - 1}; this store has {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out = None
        for k in np.unique(shard_of):
            where = np.nonzero(shard_of == k)[0]
            values = self._load(self.shards[k], field)[rows[where] - self.offsets[k]]
            if out is None:
                out = np.empty((rows.size, *values.shape[1:]), dtype=values.dtype)
            out[where] = values
        return out if out is not None else self._empty(field, 0)

    def _load(self, shard: dict, field: str) -> np.ndarray:
        filename = f"{field}.npy"
        if filename not in shard["files"]:
            raise KeyError(f"no field {field!r} in {self.path}; fields: "
                           + ", ".join(f[:-4] for f in shard["files"]))
        path = self.path / SHARDS / f"{shard['index']:05d}" / filename
        if shard["rows"] == 0:
            return np.load(path)
        return np.load(path, mmap_mode="r")

    def _empty(self, field: str, n: int) -> np.ndarray:
        for shard in self.shards:
            return np.load(self.path / SHARDS / f"{shard['index']:05d}" / f"{field}.npy")[:0]
        kind, _, key = field.partition(".")
        width = {info["key"]: info["channels"] for info in self.manifest["layers"]}.get(key, 0)
        shapes = {"acts": ((n, width), self.settings.get("activation_dtype", "float32")),
                  "attr": ((n, self.n_classes), self.settings.get("attribution_dtype", "float16")),
                  "yx": ((n, 2), "int16")}
        shape, dtype = shapes.get(kind, ((n,), "int64"))
        return np.zeros(shape, dtype=dtype)

    def _layer(self, layer: str | None) -> str:
        names = self.layers
        if layer is None:
            if len(names) == 1:
                return names[0]
            raise ValueError(f"this store holds several layers ({', '.join(names)}): say which one")
        if layer not in names:
            raise KeyError(f"layer {layer!r} was not collected in {self.path}; it holds {', '.join(names)}")
        return layer

    def verify(self) -> None:
        """Check every listed file's size and SHA-256 against the manifest; raise naming the first bad one.
        (Rerunning the collection repairs it: a resuming writer drops damaged shards and collects them again.)"""
        for shard in self.shards:
            problem = shard_problem(self.path, shard, checksum=True, memo=False)
            if problem:
                raise StoreDamagedError(f"{problem}: it was changed or damaged after it was written; rerun the "
                                        "collection (same arguments) to recompute that shard")


# ----- writing -------------------------------------------------------------------------------------


class StoreWriter:
    """Creates or resumes a store and commits finished shards (the atlas, the Microscope, features).

    ``header`` is the manifest without shards: it must hold ``settings`` (everything the rows depend
    on) and ``n_shards``. When ``path`` already holds a store with the same ``settings_hash`` the
    writer resumes it; with another hash it raises :class:`StoreSettingsError` unless
    ``overwrite=True``, which deletes the old store's files (only those). Several writers may share a
    store (on one POSIX filesystem): manifest updates take an advisory lock and a shard that is
    already listed is never replaced.
    """

    def __init__(self, path: str | os.PathLike, header: dict, image_names: Sequence[str], overwrite: bool = False):
        self.path = Path(path)
        self.shards_dir = self.path / SHARDS
        header = dict(header, format=FORMAT, version=VERSION, settings_hash=settings_hash(header["settings"]))
        self.path.mkdir(parents=True, exist_ok=True)
        with self._lock():
            old = None
            if (self.path / MANIFEST).is_file():
                try:
                    old = read_manifest(self.path)
                except StoreDamagedError as exc:
                    logger.warning("damaged store manifest %s (%s): starting the store again, recomputing its shards "
                                   "(they cannot be trusted without their checksums)", self.path / MANIFEST,
                                   getattr(exc, "reason", exc))
                    self._remove_store()
                    self._create(header, image_names)
            if old is not None:
                if old["settings_hash"] != header["settings_hash"]:
                    changed = differences(old["settings"], header["settings"])
                    if not overwrite:
                        raise StoreSettingsError(
                            f"{self.path} already holds activations collected with other settings ({changed}). "
                            "Collect into another folder, or pass overwrite=True (--overwrite) to replace that store.")
                    logger.warning("replacing the store at %s: it was collected with other settings (%s)", self.path,
                                   changed)
                    self._remove_store()
                    self._create(header, image_names)
                else:
                    self._clean_uncommitted(old)
                    self._drop_damaged(old)
            elif not (self.path / MANIFEST).is_file():
                ours = (".lock", SHARDS, IMAGES)
                temporary = (f".{MANIFEST}.tmp-", f".{IMAGES}.tmp-")
                for p in self.path.iterdir():  # left by a first run killed while writing its manifest
                    if p.name.startswith(temporary):
                        p.unlink()
                foreign = [p.name for p in self.path.iterdir() if p.name not in ours]
                if foreign:
                    raise FileExistsError(f"{self.path} is not empty and is not an activation store (found "
                                          f"{', '.join(sorted(foreign)[:5])}); collect into a new or empty folder")
                self._create(header, image_names)

    def _create(self, header: dict, image_names: Sequence[str]) -> None:
        if self.shards_dir.exists():
            shutil.rmtree(self.shards_dir)
        self.shards_dir.mkdir(parents=True)
        atomic_write(self.path / IMAGES, "".join(json.dumps(name) + "\n" for name in image_names).encode("utf-8"),
                     durable=True)
        _write_manifest(self.path, dict(header, shards=[]))

    def _remove_store(self) -> None:
        for name in (MANIFEST, IMAGES):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        if self.shards_dir.exists():
            shutil.rmtree(self.shards_dir)

    def _clean_uncommitted(self, manifest: dict) -> None:
        """Remove shard folders the manifest does not list (a run killed between rename and listing)
        and temporary folders of dead writers on this host."""
        listed = {f"{s['index']:05d}" for s in manifest["shards"]}
        self.shards_dir.mkdir(exist_ok=True)
        host = _host()
        for entry in self.shards_dir.iterdir():
            if entry.name.startswith(".tmp-"):
                _, _, entry_host, pid = (entry.name.split("-", 3) + ["", "", ""])[:4]
                if entry_host == host and pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and entry.name not in listed:
                shutil.rmtree(entry, ignore_errors=True)

    def _drop_damaged(self, manifest: dict) -> None:
        """Check each listed shard (sizes, then SHA-256 once per process); drop a damaged one from the manifest and
        from disk, saying so by name, so this run collects it again."""
        damaged = {}
        for shard in manifest["shards"]:
            problem = shard_problem(self.path, shard, checksum=True)
            if problem:
                damaged[shard["index"]] = problem
        if not damaged:
            return
        for index, problem in sorted(damaged.items()):
            logger.warning("damaged store %s: %s; recomputing shard %d", self.path, problem, index)
            shutil.rmtree(self.shards_dir / f"{index:05d}", ignore_errors=True)
        manifest["shards"] = [s for s in manifest["shards"] if s["index"] not in damaged]
        _write_manifest(self.path, manifest)

    def done(self) -> set[int]:
        """Indices of the shards already listed in the manifest."""
        return {s["index"] for s in read_manifest(self.path)["shards"]}

    def write_shard(self, index: int, arrays: dict[str, np.ndarray], images: tuple[int, int],
                    skipped: Sequence[tuple[str, str]] = ()) -> bool:
        """Write shard ``index`` (``arrays``: file stem -> ``[R, ...]``) atomically and list it.

        Returns False (and writes nothing) when the shard is already listed.
        """
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"shard arrays have different row counts: {lengths}")
        rows = next(iter(lengths.values()), 0)
        tmp = self.shards_dir / f".tmp-{index:05d}-{_host()}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        files = {}
        try:
            tmp.mkdir(parents=True)
            for name, array in arrays.items():
                path = tmp / f"{name}.npy"
                with open(path, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
                files[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
            _fsync_dir(tmp)
        except BaseException as exc:   # a full disk, a read-only folder, Ctrl-C: no temporary folder survives
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and (translated := storage_error(exc, self.shards_dir)) is not None:
                raise translated from exc
            raise
        record = {"index": int(index), "images": [int(images[0]), int(images[1])], "rows": int(rows),
                  "files": files, "skipped": [[str(n), str(r)] for n, r in skipped]}
        with self._lock():
            manifest = read_manifest(self.path)
            if any(s["index"] == index for s in manifest["shards"]):
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            final = self.shards_dir / f"{index:05d}"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.shards_dir)
            manifest["shards"] = sorted(manifest["shards"] + [record], key=lambda s: s["index"])
            try:
                _write_manifest(self.path, manifest)
            except BaseException:   # not listed: the renamed folder is uncommitted work, removed here or next run
                shutil.rmtree(final, ignore_errors=True)
                raise
        return True

    def _lock(self) -> contextlib.AbstractContextManager:
        return file_lock(self.path / LOCK)


def read_manifest(path: str | os.PathLike) -> dict:
    """The store's manifest; a garbled one raises :class:`StoreDamagedError` naming the file and the fix."""
    path = Path(path)
    try:
        with open(path / MANIFEST, encoding="utf-8") as fh:
            manifest = json.load(fh)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
            raise ValueError("it is not a JSON object with a list of shards")
    except (ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
        damaged = StoreDamagedError(f"the store manifest {path / MANIFEST} is damaged ({exc}); rerun the command "
                                    "that made the store (same arguments) to rebuild it, or delete the folder")
        damaged.reason = str(exc)
        raise damaged from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path / MANIFEST} is not a luminate activation store manifest")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(f"{path} was written by a newer luminate (store version {manifest['version']}); upgrade "
                         "luminate to read it")
    return manifest


def shard_problem(store: str | os.PathLike, shard: dict, *, checksum: bool, memo: bool = True) -> str | None:
    """What is wrong with a listed shard (``"shard file X is missing"``, a wrong size or checksum), or None.

    Sizes are always checked (a ``stat``); ``checksum=True`` also compares each file's SHA-256 with the manifest.
    With ``memo`` a file whose checksum matched is not read again in this process while its size, time and inode
    stay the same, so a verified store costs one pass per process, not one per open.
    """
    folder = Path(store) / SHARDS / f"{int(shard['index']):05d}"
    for filename, info in shard["files"].items():
        path = folder / filename
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"shard file {path} is missing"
        expected = info.get("bytes")
        if expected is not None and stat.st_size != int(expected):
            return f"shard file {path} has {stat.st_size} bytes, {int(expected)} were written (truncated or replaced)"
        if checksum and info.get("sha256"):
            stamp = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, info["sha256"])
            if memo and stamp in _VERIFIED:
                continue
            if file_sha256(path) != info["sha256"]:
                return f"shard file {path} does not match its checksum (SHA-256) in {MANIFEST}: changed in place"
            _VERIFIED.add(stamp)
    return None


#: files whose SHA-256 matched their manifest in this process, by (path, size, mtime, inode, digest): a cache of
#: work done (a changed file has another key), so every opening of a store in one run hashes its files once
_VERIFIED: set[tuple] = set()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(path: Path, manifest: dict) -> None:
    manifest = dict(manifest, n_finished=len(manifest["shards"]))
    atomic_write(path / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"), durable=True)


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def differences(old: dict, new: dict) -> str:
    """The settings that differ, for people: ``"seed: 0 there, 1 now; ..."`` (what a replaced store's warning and
    a refusal name)."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs) or "same settings, other format"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----- the one lock ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True) -> Iterator[bool]:
    """Hold an advisory exclusive lock (POSIX ``flock``) on the file ``path`` (created empty, never written).

    ``wait=False`` does not wait for another holder: the context yields False then (and holds nothing). A folder
    that cannot be written (read-only, no permission) yields True without a lock: nothing can be written there, so
    there is no writer to exclude, and a write that is really needed fails with a clear error
    (:class:`~luminate.cache.StorageError`). Where ``fcntl`` does not exist (Windows) one writer at a time is the
    user's responsibility.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    fh = None
    if fcntl is not None:
        path = Path(path)
        try:
            fh = open(path, "a+")
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not path.parent.is_dir():
                raise
    if fh is None:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def lock_owner(path: str | os.PathLike) -> str:
    """The process holding the lock on ``path``: from ``/proc/locks`` (Linux), else ``"unknown"``."""
    with contextlib.suppress(OSError):
        inode = os.stat(path).st_ino
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    return fields[4]
    return "unknown"


class SiteInUseError(RuntimeError):
    """Another process is running into the same site folder (it owns the site until its last page is written)."""


#: site folders this process holds the lock of, with how many nested holders (a build inside the CLI's hold)
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def site_lock(out: str | os.PathLike) -> Iterator[None]:
    """Own the site folder ``out`` for a whole run (collection, renders, pages): a second run into it is refused
    with :class:`SiteInUseError` naming the owner's process id (the lock file, ``SITE/.lock``, stays empty and
    unchanged), so two runs with different settings never both report a result only one of them kept.
    Re-entrant within a process. On a read-only folder nothing can be written, so there is nothing to exclude:
    reading a finished site goes on without the lock."""
    path = Path(out)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not path.is_dir():
            raise
    with file_lock(path / LOCK, wait=False) as held:
        if not held:
            raise SiteInUseError(f"{path} is in use by process {lock_owner(path / LOCK)} (another luminate run into "
                                 "the same site); wait for it to finish and run again, or write to another folder "
                                 "with -o")
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]


def update_manifest(path: str | os.PathLike, field: str, value: Any) -> None:
    """Set ``field`` of the store manifest in ``path`` to ``value`` (a field outside the settings: it changes no
    shard), under the store's lock. The manifest is rewritten only when the value changed, so a rerun touches no
    file."""
    path = Path(path)
    value = json.loads(json.dumps(value))
    if read_manifest(path).get(field) == value:
        return
    with file_lock(path / LOCK):
        manifest = read_manifest(path)
        manifest[field] = value
        atomic_write(path / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"), durable=True)
