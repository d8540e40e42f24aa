"""The one page writer of the sites (Microscope, features, text Microscope): a file is written only when its bytes
change (atomically, through :func:`luminate.cache.atomic_write`), and :class:`PageRecord` remembers which files a
site's pages were written as under a stamp of their inputs, so a rerun of a finished site writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from luminate.cache import atomic_write


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly that (a rerun leaves files untouched); returns
    whether it wrote. Folders are made as needed; the write is atomic (no half-written page is ever read)."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return True


class PageRecord:
    """The files a site's pages were written as, under a stamp of their inputs (``record``, a JSON file
    ``{"stamp", "files"}``): when the stamp and the files are current nothing needs writing (:meth:`current`);
    :meth:`put` writes a file (relative to ``root``) only when its bytes change; :meth:`finish` saves the record."""

    def __init__(self, root: str | os.PathLike, record: str | os.PathLike, inputs: str):
        self.root, self.record = Path(root), Path(record)
        self.stamp = hashlib.sha256(inputs.encode()).hexdigest()[:20]
        self.files: list[str] = []

    def current(self) -> bool:
        try:
            saved = json.loads(self.record.read_text())
            return saved.get("stamp") == self.stamp and all((self.root / f).is_file() for f in saved["files"])
        except (OSError, ValueError, KeyError):
            return False

    def put(self, relative: str, data: bytes) -> None:
        write_if_changed(self.root / relative, data)
        self.files.append(relative)

    def finish(self) -> None:
        write_if_changed(self.record, json.dumps({"stamp": self.stamp, "files": sorted(self.files)}, indent=1).encode())


__all__ = ["PageRecord", "write_if_changed"]
