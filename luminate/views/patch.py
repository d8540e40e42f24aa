"""The atlas-guided patch report: the comparison atlas with the chosen cells, every candidate patch and its flip
rate, before/after examples with their top-5 classes, and the flip rate by patch size. One self-contained page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from luminate.views.html import HTMLView, esc, img_tag, page, write

if TYPE_CHECKING:
    from luminate.atlas.patches import PatchReport

__all__ = ["patch_html", "write_patch_report", "patch_view"]

PATCH_CSS = """
.atlas-wrap { position: relative; display: inline-block; }
.atlas-wrap img { display: block; }
.chosen { position: absolute; border: 3px solid var(--accent); box-shadow: 0 0 0 1px #fff; pointer-events: none; }
.chosen span { position: absolute; left: 2px; top: 0; background: var(--accent); color: #fff; font-size: 11px;
               padding: 0 4px; border-radius: 0 0 4px 0; }
.axis-row { display: flex; justify-content: space-between; font-size: 13px; color: var(--muted); }
.cand { width: 200px; }
.cand.best figure img { border: 2px solid var(--accent); }
.rate { font-size: 13px; margin: 4px 0; }
.ex { display: flex; gap: 14px; align-items: flex-start; }
.ex ol { margin: 4px 0 0; padding-left: 18px; font-size: 13px; text-align: left; }
.ex li.target { font-weight: 600; color: var(--accent); }
table.sizes td, table.sizes th { padding: 4px 14px 4px 0; }
"""


def _bar(value: float, colour: str = "var(--accent)") -> str:
    return (f'<div style="background:#eef1f5;border-radius:4px;width:160px"><div class="bar" '
            f'style="width:{100 * value:.1f}%;background:{colour}"></div></div>')


def _top5(top: list[tuple[str, float]], target: str) -> str:
    items = "".join(f'<li class="{"target" if name == target else ""}">{esc(name)} ({p:.2f})</li>'
                    for name, p in top)
    return f"<ol>{items}</ol>"


def patch_html(report: PatchReport, atlas_width: int = 560) -> str:
    """The whole page as one HTML string."""
    atlas = report.atlas
    canvas = atlas.canvas()[None]
    side = atlas.grid_size * max(atlas.icon_size, 1)
    scale = atlas_width / side
    boxes = []
    for rank, k in enumerate(report.chosen, 1):
        cell = atlas.cells[k]
        r, c = atlas.canvas_position(cell)
        s = atlas.icon_size * scale
        boxes.append(f'<div class="chosen" style="left:{c * scale:.1f}px;top:{r * scale:.1f}px;width:{s:.1f}px;'
                     f'height:{s:.1f}px" title="cell ({cell.i}, {cell.j}): gain {report.gains[k]:+.3g}">'
                     f"<span>{rank}</span></div>")
    atlas_block = (f'<div class="card"><h2>1. The comparison atlas</h2><p class="muted">{esc(atlas.title())}. '
                   f"{esc(atlas.description())}. Left: points that favour <b>{esc(report.source)}</b>; right: "
                   f"<b>{esc(report.target)}</b> (x is the attribution difference). Cells are ranked by the mean "
                   f"attribution to {esc(report.target)} minus {esc(report.source)} of their points; the "
                   f"{len(report.chosen)} best are outlined and numbered.</p>"
                   f'<div class="atlas-wrap">{img_tag(canvas, atlas_width, "comparison atlas")}{"".join(boxes)}'
                   f'</div><div class="axis-row" style="width:{atlas_width}px"><span>← {esc(report.source)}</span>'
                   f"<span>{esc(report.target)} →</span></div></div>")

    cards = []
    for cand in report.candidates:
        rate = cand.rate
        control = rate.control_patch if rate.control_patch is not None else cand.patch
        gain = f", gain {cand.gain:+.3g}" if cand.kind == "atlas cell" else ""
        best = " best" if cand is report.best else ""
        cards.append(f'<div class="cand{best}"><figure>{img_tag(cand.patch[None], 96, cand.name, pixelated=False)}'
                     f"<figcaption>{esc(cand.name)} ({esc(cand.kind)}{esc(gain)})</figcaption></figure>"
                     f'<figure>{img_tag(control[None], 48, "control: the same pixels shuffled")}'
                     f"<figcaption>control</figcaption></figure>"
                     f'<div class="rate">patch {100 * rate.patch:.0f}% of {rate.trials}</div>{_bar(rate.patch)}'
                     f'<div class="rate">control {100 * rate.control:.0f}%</div>{_bar(rate.control, "#8894a8")}'
                     f"</div>")
    size = report.settings.get("size")
    candidates_block = (f'<div class="card"><h2>2. Candidate patches</h2><p class="muted">Each candidate pasted at '
                        f"a side of {size:g} of the image onto the {report.n_source} photos the model calls "
                        f"{esc(report.source)}, at a grid of places; the flip rate is the share of trials whose "
                        f"top-1 class became {esc(report.target)}. The control is the same patch with its pixels "
                        f"shuffled. The refined patch starts from the best atlas candidate and is optimized for "
                        f"{esc(report.target)} on the same photos (at random places and sizes).</p>"
                        f'<div class="row">{"".join(cards)}</div></div>')

    examples = []
    for ex in report.examples:
        examples.append(f'<div class="ex"><figure>{img_tag(ex.before[None], 180, ex.name, fmt="jpeg")}'
                        f"<figcaption>{esc(ex.name)}: before</figcaption>{_top5(ex.top_before, report.target)}"
                        f'</figure><figure>{img_tag(ex.after[None], 180, ex.name + " with the patch", fmt="jpeg")}'
                        f"<figcaption>after</figcaption>{_top5(ex.top_after, report.target)}</figure></div>")
    examples_block = (f'<div class="card"><h2>3. Before and after</h2><p class="muted">Photos with the best patch '
                      f"({esc(report.best.name)}), top-5 classes before and after.</p>"
                      f'<div class="row">{"".join(examples)}</div></div>')

    rows = "".join(f"<tr><td>{r.size:g} ({r.side} px)</td><td>{100 * r.patch:.0f}%</td><td>{_bar(r.patch)}</td>"
                   f'<td>{100 * r.control:.0f}%</td><td>{_bar(r.control, "#8894a8")}</td><td>{r.trials}</td></tr>'
                   for r in report.by_size)
    sizes_block = (f'<div class="card"><h2>4. Flip rate by patch size</h2><table class="sizes"><tr><th>side</th>'
                   f"<th>patch</th><th></th><th>control</th><th></th><th>trials</th></tr>{rows}</table></div>")
    subtitle = (f"{esc(report.model_name)}, layer {esc(report.layer)}: turning {esc(report.source)} into "
                f"{esc(report.target)}. {report.n_source} of {report.n_images} photos are called "
                f"{esc(report.source)}. <b>{esc(report.line())}</b> ({esc(report.best.name)}, side {size:g}). "
                f"{report.seconds:.0f} s.")
    return page(f"Atlas-guided patch: {report.source} → {report.target}",
                atlas_block + candidates_block + examples_block + sizes_block, PATCH_CSS, subtitle=subtitle)


def write_patch_report(report: PatchReport, path: str | Path) -> Path:
    """Write the report page to ``path``."""
    return write(path, patch_html(report))


def patch_view(report: PatchReport) -> HTMLView:
    """The report for a notebook (displays inline) or to :meth:`~luminate.views.html.HTMLView.save`."""
    return HTMLView(patch_html(report), f"patch {report.source} -> {report.target}")
