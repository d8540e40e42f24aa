"""The one page writer of the sites (Microscope, features, text Microscope): a file is written only when its bytes
change (:func:`luminate.cache.write_if_changed`, atomic), and :class:`PageRecord` remembers which files a
site's pages were written as under a stamp of their inputs, so a rerun of a finished site writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from luminate.cache import write_if_changed   # the one writer of pages (re-exported for the views)


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
        """Save the record, and remove the pages of the previous record that this one no longer has (a site
        rebuilt with other settings keeps no page of features or units it does not show)."""
        try:
            before = json.loads(self.record.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError):
            before = []
        for stale in set(before) - set(self.files):
            path = self.root / stale
            if path.suffix in (".html", ".png", ".jpg", ".json") and path.resolve().is_relative_to(self.root.resolve()):
                path.unlink(missing_ok=True)
        write_if_changed(self.record, json.dumps({"stamp": self.stamp, "files": sorted(self.files)}, indent=1).encode())


__all__ = ["PageRecord", "write_if_changed"]
