"""Pages of a text Microscope: coloured contexts (each character or word piece shaded by the unit's activation,
the peak outlined), quantile samples, histogram, output effect, similar units and token attribution.

Only draws: the summaries come from :mod:`luminate.text.microscope`. Pages are written only when their content
changed, so a rerun of a finished site changes no file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from luminate.views.html import esc, page
from luminate.views.site import write_if_changed

CSS = """
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:1.9;white-space:pre-wrap;
     word-break:break-all;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px 8px;margin:4px 0}
.tok{border-radius:2px}
.tok.peak{outline:2px solid #000;outline-offset:1px}
.meta{color:#666;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;background:#fafafa}
table.eff td{padding:1px 8px;font-family:ui-monospace,monospace}
.unk{background:#fdd;padding:0 3px;border-radius:3px}
"""


def shade(value: float, scale: float) -> str:
    """The background of a token with activation ``value``: orange for positive, blue for negative, opacity
    ``|value| / scale`` (clipped to 1)."""
    alpha = 0.0 if scale <= 0 else min(1.0, abs(float(value)) / scale)
    rgb = "255,140,0" if value >= 0 else "40,120,255"
    return f"rgba({rgb},{alpha:.3f})"


def _show(token: str, kind: str, first: bool) -> str:
    if kind == "word pieces":
        if token.startswith("##"):
            return token[2:]
        return token if first else " " + token
    return token.replace("\n", "\u21b5")


def coloured_text(tokens: Sequence[str], values: Sequence[float], scale: float, peak: int | None = None,
                  kind: str = "characters", clipped: tuple[bool, bool] = (False, False)) -> str:
    """HTML of ``tokens`` each shaded by its value (see :func:`shade`), hover shows the value, ``peak`` outlined."""
    spans = []
    for k, (tok, v) in enumerate(zip(tokens, values)):
        cls = "tok peak" if k == peak else "tok"
        spans.append(f'<span class="{cls}" style="background:{shade(v, scale)}" title="{float(v):.3f}">'
                     f"{esc(_show(tok, kind, k == 0))}</span>")
    left, right = ("\u2026" if clipped[0] else ""), ("\u2026" if clipped[1] else "")
    return f'<div class="ctx">{left}{"".join(spans)}{right}</div>'


def histogram_svg(counts: Sequence[int], edges: Sequence[float], width: int = 320, height: int = 80) -> str:
    """Bars of an activation histogram as inline SVG (zero marked)."""
    top = max(max(counts), 1)
    n = len(counts)
    bw = width / n
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{height - 14 - (height - 16) * c / top:.1f}" width="{bw - 1:.1f}" '
                   f'height="{(height - 16) * c / top:.1f}" fill="#e8891c"><title>{edges[i]:.3g}..{edges[i + 1]:.3g}: '
                   f'{c}</title></rect>' for i, c in enumerate(counts))
    lo, hi = edges[0], edges[-1]
    zero = "" if not lo < 0 < hi else (f'<line x1="{width * (0 - lo) / (hi - lo):.1f}" x2="{width * (0 - lo) / (hi - lo):.1f}" '
                                       f'y1="0" y2="{height - 14}" stroke="#333" stroke-dasharray="2,2"/>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="histogram">{bars}{zero}'
            f'<text x="0" y="{height - 2}" font-size="10">{lo:.3g}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{hi:.3g}</text></svg>')


def unit_file(layer: str, unit: int) -> str:
    return f"units/{layer.replace('/', '_').replace('#', '@')}_{unit}.html"


def layer_file(layer: str) -> str:
    return f"layer_{layer.replace('/', '_').replace('#', '@')}.html"


def _example(e: dict, scale: float, kind: str, extra: str = "") -> str:
    c = e["context"]
    return (f'<div class="meta">{esc(e["source"])} &middot; peak {e["value"]:.3f} at token {e["position"]}'
            f'{extra}</div>' + coloured_text(c["tokens"], c["values"], scale, c["peak"], kind,
                                            (c["clipped_left"], c["clipped_right"])))


def unit_page(site, layer: dict, s: dict) -> str:
    kind = site.kind
    scale = max(abs(s["max"]), abs(s["min"]), 1e-6)
    name = layer["name"]
    body = [f'<p><a href="../index.html">{esc(site.model_name)}</a> / <a href="../{layer_file(name)}">{esc(name)}</a>'
            f' / unit {s["unit"]}</p>',
            f'<p class="meta">max {s["max"]:.3f}, min {s["min"]:.3f}, mean {s["mean"]:.3f}; fires (&gt; 0) on '
            f'{100 * s["density"]:.1f}% of tokens' + (" &middot; <b>dead</b>" if s["dead"] else "")
            + (" &middot; <b>constant</b>" if s["constant"] else "") + "</p>",
            "<h2>Top contexts</h2>", "".join(_example(e, scale, kind) for e in s["top"])]
    if s.get("attribution"):
        a = s["attribution"]
        top = s["top"][0]["context"]
        ascale = max(max((abs(x) for x in a["scores"]), default=0), 1e-6)
        body += ["<h2>Which tokens drive the top context</h2>",
                 f'<p class="meta">integrated gradients on the token embeddings (Captum), {esc(a["what"])}: value '
                 f'{a["value"]:.3f} vs {a["baseline"]:.3f} on the padding baseline (completeness error '
                 f'{abs(a["delta"]):.3g})</p>',
                 coloured_text(top["tokens"], a["scores"], ascale, top["peak"], kind,
                               (top["clipped_left"], top["clipped_right"]))]
    body += ["<h2>Across the range</h2>",
             "".join(_example(e, scale, kind, f' &middot; text at the {round(100 * e["quantile"])}th percentile of '
                              "peaks") for e in s["quantiles"]),
             "<h2>Histogram</h2>", '<p class="meta">activations of sampled tokens</p>',
             histogram_svg(s["histogram"]["counts"], s["histogram"]["edges"])]
    if s.get("effect"):
        rows = lambda items: "".join(f"<tr><td>{esc(repr(t))}</td><td>{w:+.3f}</td></tr>" for t, w in items)
        body += ["<h2>Output effect</h2>",
                 '<p class="meta">the next-token logits this unit raises and lowers directly, through the readout'
                 + (" (word embeddings, as a tied MLM head would decode it)" if kind == "word pieces" else "")
                 + "</p>",
                 f'<div class="grid"><div><b>raises</b><table class="eff">{rows(s["effect"]["raises"])}</table></div>'
                 f'<div><b>lowers</b><table class="eff">{rows(s["effect"]["lowers"])}</table></div></div>']
    shown = {u["unit"] for u in layer["units"]}
    sim = "".join(f'<li>{f"<a href=../{unit_file(name, v)}>unit {v}</a>" if v in shown else f"unit {v}"}: '
                  f"correlation {r:+.2f}</li>" for v, r in s["similar"])
    body += ["<h2>Similar units</h2>", f"<ul>{sim}</ul>"]
    return page(f"{site.model_name} {name} unit {s['unit']}", "".join(body), CSS)


def layer_page(site, layer: dict) -> str:
    cards = []
    for s in layer["units"]:
        scale = max(abs(s["max"]), abs(s["min"]), 1e-6)
        e = s["top"][0] if s["top"] else None
        ctx = _example(e, scale, site.kind) if e else ""
        cards.append(f'<div class="card" data-unit="{s["unit"]}"><a href="{unit_file(layer["name"], s["unit"])}">'
                     f'unit {s["unit"]}</a>{ctx}</div>')
    return page(f"{site.model_name} {layer['name']}", f'<p><a href="index.html">{esc(site.model_name)}</a></p>'
                f'<div class="grid">{"".join(cards)}</div>', CSS,
                subtitle=f"{len(layer['units'])} of {layer['channels']} units; the top context of each")


def index_page(site) -> str:
    items = "".join(f'<li><a href="{layer_file(l["name"])}">{esc(l["name"])}</a>: {len(l["units"])} of '
                    f'{l["channels"]} units</li>' for l in site.layers)
    notes = [site.texts.summary()]
    if site.unknown:
        shown = ", ".join(f'<span class="unk">{esc(repr(ch))}</span> x{n}' for ch, n in
                          sorted(site.unknown.items(), key=lambda kv: -kv[1])[:20])
        notes.append(f"{sum(site.unknown.values())} characters outside the vocabulary (read as unknown): {shown}")
    if site.long_texts:
        notes.append(f"{site.long_texts} texts longer than the model's window were read in consecutive windows")
    body = f"<ul>{items}</ul>" + "".join(f'<p class="meta">{n}</p>' for n in notes)
    return page(f"{site.model_name}: text Microscope", body, CSS,
                subtitle=f"{len(site.texts)} texts read as {site.kind}")


def write_site(site) -> Path:
    """Write ``index.html``, a page per layer and a page per unit under ``site.root``; returns the index path."""
    root = Path(site.root)
    for layer in site.layers:
        write_if_changed(root / layer_file(layer["name"]), layer_page(site, layer).encode("utf-8"))
        for s in layer["units"]:
            write_if_changed(root / unit_file(layer["name"], s["unit"]), unit_page(site, layer, s).encode("utf-8"))
    index = root / "index.html"
    write_if_changed(index, index_page(site).encode("utf-8"))
    return index


def attribution_page(model_name: str, att, kind: str = "characters") -> str:
    """A page of one token attribution (:class:`luminate.text.attribution.TokenAttribution`) as coloured text."""
    scale = max(max((abs(x) for x in att.scores), default=0), 1e-6)
    body = (f'<p class="meta">integrated gradients on the token embeddings (Captum) of {esc(att.what)}: value '
            f"{att.value:.3f} on the text, {att.baseline:.3f} on the padding baseline, completeness error "
            f"{abs(att.delta):.3g}. Orange tokens raise it, blue lower it.</p>"
            + coloured_text(att.tokens, att.scores, scale, None, kind))
    return page(f"{model_name}: token attribution", body, CSS)
