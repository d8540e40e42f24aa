"""Class labels: index <-> name, with lookup by any synonym and clear errors for unknown names."""

from __future__ import annotations

import difflib
from importlib import resources
from typing import Iterator, Sequence


class Labels(Sequence[str]):
    """An ordered list of class names.

    Each entry may hold comma-separated synonyms (``"daisy"``, ``"tiger cat"``,
    ``"crane"``); ``labels[i]`` is the first (display) name, and :meth:`index` accepts any synonym,
    case-insensitively, or an integer index.
    """

    def __init__(self, entries: Sequence[str]):
        self.entries = [e.strip() for e in entries]
        self.names = [e.split(",")[0].strip() for e in self.entries]
        self._lookup: dict[str, list[int]] = {}
        for i, entry in enumerate(self.entries):
            for synonym in {s.strip().lower() for s in entry.split(",") if s.strip()}:
                self._lookup.setdefault(synonym, []).append(i)

    def __getitem__(self, i):  # type: ignore[override]
        return self.names[i]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def index(self, label: str | int, *args) -> int:  # type: ignore[override]
        """Class index of ``label`` (a name, a synonym, a digit string or an int)."""
        if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
            i = int(label)
            if not 0 <= i < len(self):
                raise IndexError(f"class index {i} is out of range: this model has {len(self)} classes (0..{len(self) - 1})")
            return i
        key = label.strip().lower()
        hits = self._lookup.get(key, [])
        first_name_hits = [i for i in hits if self.names[i].lower() == key]
        if len(first_name_hits) == 1:
            return first_name_hits[0]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = "; ".join(f"{i}: {self.entries[i]}" for i in hits)
            raise ValueError(f"class name {label!r} is ambiguous ({options}); give the index instead")
        close = difflib.get_close_matches(key, list(self._lookup), n=5, cutoff=0.6)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise KeyError(f"unknown class {label!r}.{hint} Give a class name from model.labels or an index.")

    def __repr__(self) -> str:
        return f"Labels({len(self)}: {', '.join(self.names[:3])}, ...)"


def _read(filename: str) -> Labels:
    text = resources.files("luminate.models").joinpath("data", filename).read_text(encoding="utf-8")
    return Labels([line for line in text.splitlines() if line.strip()])


def imagenet_labels() -> Labels:
    """The 1000 ImageNet-1k classes in the standard order (as used by torchvision, timm and TF)."""
    return _read("imagenet1k.txt")
