""":class:`LayerTable`: a model's layers as a list that prints as a table (and as HTML in a notebook)."""

from __future__ import annotations

import html
from typing import Iterable

from luminate.models.base import LayerInfo


class LayerTable(list):
    """A list of :class:`LayerInfo` that shows itself as a table: ``repr`` is aligned text (name, type,
    channels, shape), ``_repr_html_`` an HTML table for notebooks. Still a list (iterate, index, ``len``), and
    ``table["blocks.9"]`` finds a layer by name."""

    def __init__(self, infos: Iterable[LayerInfo] = (), title: str | None = None):
        super().__init__(infos)
        self.title = title

    def __getitem__(self, key):
        if isinstance(key, str):
            for info in self:
                if info.name == key:
                    return info
            import difflib

            close = difflib.get_close_matches(key, self.names(), n=5, cutoff=0.5)
            raise KeyError(f"no layer {key!r} in this table" + (f"; closest: {', '.join(close)}" if close else ""))
        item = super().__getitem__(key)
        return LayerTable(item, self.title) if isinstance(key, slice) else item

    def names(self) -> list[str]:
        """The layer names, in order."""
        return [info.name for info in self]

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(name, type, channels, shape)`` strings per layer."""
        return [(i.name, i.kind, str(i.channels) if i.shape else "", "x".join(map(str, i.shape))) for i in self]

    def __repr__(self) -> str:
        header = ("layer", "type", "channels", "shape")
        rows = self.rows()
        widths = [max([len(header[k])] + [len(r[k]) for r in rows]) for k in range(4)]

        def line(r):
            return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()

        out = ([f"# {self.title}"] if self.title else []) + [line(header)] + [line(r) for r in rows]
        return "\n".join(out)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><td><code>{html.escape(a)}</code></td><td>{html.escape(b)}</td>"
                        f"<td style='text-align:right'>{c}</td><td>{d}</td></tr>" for a, b, c, d in self.rows())
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return (f"<table>{caption}<thead><tr><th>layer</th><th>type</th><th>channels</th><th>shape</th></tr></thead>"
                f"<tbody>{cells}</tbody></table>")
