"""Hinton diagrams as SVG: one square per value, its **area** proportional to ``|value|``, white for positive and
black for negative on a grey ground (the classic look). Hovering a square shows its row, column and value (an SVG
``<title>``). :class:`HintonView` displays inline in a notebook; :func:`write_hinton` writes a page."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from luminate.views.html import esc, page, write

if TYPE_CHECKING:
    from luminate.analysis.hinton import HintonData

__all__ = ["hinton_svg", "hinton_html", "write_hinton", "HintonView", "square_side"]

POSITIVE, NEGATIVE, GROUND = "#ffffff", "#111111", "#8a8f98"


def square_side(value: float, vmax: float, cell: float) -> float:
    """The side of a value's square: ``cell * sqrt(|value| / vmax)``, so that its area is proportional to
    ``|value|`` and the largest magnitude fills the cell."""
    if vmax <= 0:
        return 0.0
    return cell * math.sqrt(min(abs(value), vmax) / vmax)


def hinton_svg(data: HintonData, cell: int = 12, label_width: int = 64, max_labels: int = 64,
               vmax: float | None = None) -> str:
    """An ``<svg>`` of ``data``: ``cell`` px per value, row labels on the left and column labels above
    (every label when there are at most ``max_labels``, else every k-th). ``vmax``: the magnitude that fills a
    cell (default the largest ``|value|``)."""
    values = np.asarray(data.values, dtype=np.float64)
    rows, cols = values.shape
    vmax = float(np.abs(values).max()) if vmax is None else float(vmax)
    longest = max((len(label) for label in data.col_labels), default=0)
    top = int(min(96, 12 + 4.6 * longest))
    width, height = label_width + cols * cell + 8, top + rows * cell + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hinton" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-vmax="{vmax:.6g}" data-cell="{cell}" '
             f'font-family="system-ui, sans-serif" font-size="9">',
             f'<rect x="{label_width}" y="{top}" width="{cols * cell}" height="{rows * cell}" fill="{GROUND}"/>']
    row_step = max(1, math.ceil(rows / max_labels))
    col_step = max(1, math.ceil(cols / max_labels))
    for r in range(0, rows, row_step):
        parts.append(f'<text x="{label_width - 4}" y="{top + r * cell + cell * 0.75:.1f}" text-anchor="end" '
                     f'fill="#555">{esc(data.row_labels[r])}</text>')
    for c in range(0, cols, col_step):
        x = label_width + c * cell + cell / 2
        parts.append(f'<text transform="translate({x:.1f},{top - 4}) rotate(-60)" fill="#555">'
                     f"{esc(data.col_labels[c])}</text>")
    for r in range(rows):
        for c in range(cols):
            v = float(values[r, c])
            side = square_side(v, vmax, cell)
            x = label_width + c * cell + (cell - side) / 2
            y = top + r * cell + (cell - side) / 2
            colour = POSITIVE if v >= 0 else NEGATIVE
            tip = f"{data.row_name} {data.row_labels[r]}, {data.col_name} {data.col_labels[c]}: {v:.4g}"
            # a transparent cell-sized target keeps tiny squares hoverable
            parts.append(f'<g><title>{esc(tip)}</title>'
                         f'<rect x="{label_width + c * cell}" y="{top + r * cell}" width="{cell}" height="{cell}" '
                         f'fill="transparent"/>'
                         f'<rect class="sq" x="{x:.3f}" y="{y:.3f}" width="{side:.4f}" height="{side:.4f}" '
                         f'fill="{colour}" data-value="{v:.6g}"/></g>')
    parts.append("</svg>")
    return "".join(parts)


def _caption(data: HintonData) -> str:
    return (f'<p class="muted" style="font-size:13px">{esc(data.description)}. Square area is proportional to '
            f"|value| (largest: a full cell); white positive, black negative. Hover a square for its value.</p>")


def hinton_html(data: HintonData, cell: int | None = None) -> str:
    """A whole page with the diagram (cells shrink for large matrices)."""
    cell = cell or max(6, min(16, 900 // max(data.values.shape[1], 1)))
    body = f'<div class="card">{_caption(data)}<div style="overflow:auto">{hinton_svg(data, cell)}</div></div>'
    return page(data.title, body, subtitle="A Hinton diagram.")


def write_hinton(data: HintonData, path: str | Path, cell: int | None = None) -> Path:
    """Write the page for ``data`` to ``path``."""
    return write(path, hinton_html(data, cell))


class HintonView:
    """A Hinton diagram that displays inline in a notebook (the SVG itself, no iframe) and saves as a page."""

    def __init__(self, data: HintonData, cell: int = 10):
        self.data = data
        self.cell = cell

    def _repr_html_(self) -> str:
        return (f"<div><b>{esc(self.data.title)}</b>{_caption(self.data)}"
                f'<div style="overflow:auto">{hinton_svg(self.data, self.cell)}</div></div>')

    def save(self, path: str | Path) -> Path:
        return write_hinton(self.data, path, self.cell)

    def __repr__(self) -> str:
        return f"HintonView({self.data!r})"
