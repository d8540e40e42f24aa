"""The sanity-check page: per unit, its visualization, its top natural examples, the layer-by-layer path similarity
(Geirhos et al. 2024) as a small chart, the activation ratio and a verdict. Drawing only: the numbers come from
:func:`luminate.analysis.sanity.sanity_scores`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from luminate.views.html import HTMLView, esc, img_tag, page

if TYPE_CHECKING:  # the view only reads the report's fields
    from luminate.analysis.sanity import SanityReport

CSS = """
table.sanity { border-collapse: collapse; margin-top: 12px; }
table.sanity td, table.sanity th { padding: 8px 10px; border-bottom: 1px solid #e3e3e3; vertical-align: middle;
  text-align: left; }
.verdict-ok { color: #1b7a34; font-weight: 600; }
.verdict-bad { color: #b3261e; font-weight: 600; }
.examples { white-space: nowrap; }
.examples img { margin-right: 3px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
"""

COLORS = {"visualization": "#d9480f", "top examples": "#1864ab", "unrelated": "#868e96"}


def path_chart(report: SanityReport, row: int, width: int = 260, height: int = 110) -> str:
    """An inline SVG: ``s_l`` (visualization), ``n_l`` (top examples) and ``b_l`` (unrelated) across the layers."""
    series = {"visualization": report.similarity[row], "top examples": report.natural[row],
              "unrelated": report.baseline[row]}
    n = len(report.path_layers)
    low = min(float(v.min()) for v in series.values())
    high = max(float(v.max()) for v in series.values())
    low, high = min(low, 0.0), max(high, 1.0)
    pad = 14

    def x(j: int) -> float:
        return pad + (width - 2 * pad) * (j / max(1, n - 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v - low) / max(1e-9, high - low)

    lines = []
    for name, values in series.items():
        points = " ".join(f"{x(j):.1f},{y(float(v)):.1f}" for j, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{COLORS[name]}" stroke-width="2" points="{points}">'
                     f"<title>{esc(name)}</title></polyline>")
    zero = f'<line x1="{pad}" x2="{width - pad}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#ccc" stroke-dasharray="3,3"/>'
    ticks = "".join(f'<text x="{x(j):.1f}" y="{height - 2}" font-size="8" text-anchor="middle">'
                    f"{esc(name.split('.')[-1])}</text>" for j, name in enumerate(report.path_layers))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="path similarity across layers">{zero}{"".join(lines)}{ticks}</svg>')


def sanity_view(report: SanityReport, n_examples: int = 3, thumb: int = 72) -> HTMLView:
    """The page for a :class:`~luminate.analysis.sanity.SanityReport`."""
    rows = []
    for i, unit in enumerate(report.units):
        examples = "".join(img_tag(report.images[int(j)], width=thumb, fmt="jpeg", alt=f"top example {int(j)}")
                           for j in report.top_examples[i][:n_examples])
        reasons = report.reasons(i)
        verdict = ('<span class="verdict-bad">unreliable</span>' if bool(report.flagged[i])
                   else '<span class="verdict-ok">passes</span>')
        notes = "<br>".join(esc(r) for r in reasons) or "its path follows its top photos"
        rows.append(
            f"<tr><td><b>{unit}</b></td><td>{img_tag(report.visualizations[i], width=thumb * 3 // 2, alt=f'unit {unit}')}"
            f'</td><td class="examples">{examples}</td><td>{path_chart(report, i)}</td>'
            f"<td>{float(report.path_score[i]):.2f}</td><td>{float(report.ratio[i]):.2f}</td>"
            f"<td>{verdict}<br><small>{notes}</small></td></tr>")
    legend = "".join(f'<span><i style="background:{c}"></i>{esc(name)}</span>' for name, c in COLORS.items())
    body = (f'<p class="legend">{legend}</p>'
            '<table class="sanity"><tr><th>unit</th><th>visualization</th><th>top natural examples</th>'
            "<th>similarity to the top examples, layer by layer</th><th>path score</th><th>activation ratio</th>"
            f"<th>verdict</th></tr>{''.join(rows)}</table>"
            f'<p class="muted">{report.settings.get("images", "?")} natural images, top {report.settings.get("top_k")} '
            f"examples per unit; layers compared: {esc(', '.join(report.path_layers))}. Path score: mean over the layers "
            "below the unit of where the visualization sits between unrelated photos (0) and the unit's top photos (1); "
            f"below {report.threshold:g} the unit is flagged. Activation ratio: the unit on its visualization divided "
            "by its best photo.</p>")
    lede = ("Can you trust these feature visualizations? Geirhos et al. (2024) showed that a visualization can reach a "
            "unit by a route natural images never take. For each unit, the chart compares the visualization's path "
            "through the layers below with its top natural examples' path.")
    title = f"Sanity check: {report.model_name} {report.layer}"
    return HTMLView(page(title, body, css=CSS, subtitle=lede), title)
