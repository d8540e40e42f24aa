"""The pages of a features site: the dictionary's index (quality figures, every feature, sortable) and one page per
feature, drawn like the Microscope's unit pages (and with its pieces: overlay, histogram, crumbs, page skeleton).

    SITE/index.html                       figures (R², L0, dead, stability), firing-frequency histogram, the features
    SITE/<layer>/feature-00007.html       visualizations, top examples, quantile samples, histogram, classes,
                                          neurons (linked to a Microscope site when given), similar features

Results come computed from :mod:`luminate.features` (no gradients, no renders here); every image is inline, so
the folder opens from disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from luminate.views.atlas import _patch
from luminate.views.html import esc, img_tag, json_script, page
from luminate.views.microscope import CSS as MICROSCOPE_CSS
from luminate.views.microscope import _crumbs, _histogram_svg, layer_dir, overlay, shown_score, unit_file
from luminate.views.site import PageRecord

CSS = MICROSCOPE_CSS + """
.figures { display: flex; gap: 28px; flex-wrap: wrap; }
.figures div.fig { text-align: center; } .figures .num { font-size: 26px; font-weight: 600; }
table.features { border-collapse: collapse; } table.features td, table.features th { padding: 3px 10px;
  text-align: left; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
table.features th button { font: inherit; font-weight: 600; background: none; border: none; cursor: pointer;
  color: var(--accent); padding: 0; }
table.features img { width: 40px; height: 40px; vertical-align: middle; }
.neurons td.v { font-variant-numeric: tabular-nums; color: var(--muted); }
"""

SORT_JS = """
const body = document.querySelector('table.features tbody');
for (const button of document.querySelectorAll('table.features th button')) {
  button.addEventListener('click', () => {
    const key = button.dataset.sort, down = button.dataset.dir !== 'desc';
    button.dataset.dir = down ? 'desc' : 'asc';
    const rows = [...body.querySelectorAll('tr')];
    rows.sort((a, b) => (parseFloat(a.dataset[key]) - parseFloat(b.dataset[key])) * (down ? -1 : 1)
                        || parseInt(a.dataset.feature) - parseInt(b.dataset.feature));
    for (const r of rows) body.appendChild(r);
  });
}
"""


def feature_file(feature: int) -> str:
    return f"feature-{int(feature):05d}.html"


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%" if x < 0.1 else f"{100 * x:.1f}%"


def index_page(info: dict, features: list[dict], layer_key: str) -> str:
    """``info``: ``{"model", "layer", "method", "n_features", "k", "channels", "metrics": {r2, l0, dead, stability},
    "settings", "images": {"count", "read", "skipped"}}``; ``features``: ``[{"feature", "firing", "max",
    "top_class", "thumb" (image or None), "page" (bool)}]``."""
    m = info["metrics"]
    figures = [("R²", f"{m['r2']:.3f}", "explained variance of held-out images' activations"),
               ("L0", f"{m['l0']:.1f}", "mean non-zero codes per position (held out)"),
               ("dead", _percent(m["dead"]), "features that never fire on held-out positions")]
    if m.get("stability") is not None:
        figures.append(("stability", f"{m['stability']:.3f}",
                        "mean cosine of Hungarian-matched directions, two seeds"))
    figs = "".join(f'<div class="fig" title="{esc(t)}"><div class="num" data-metric="{esc(n)}">{esc(v)}</div>'
                   f'<div class="muted">{esc(n)}</div></div>' for n, v, t in figures)
    firing = np.array([f["firing"] for f in features], dtype=np.float64)
    logs = np.log10(np.maximum(firing, 1e-6))
    counts, edges = np.histogram(logs, bins=24, range=(-6, 0))
    hist = _histogram_svg(counts, edges, [])
    rows = []
    for f in features:
        link = f'<a href="{esc(layer_key)}/{feature_file(f["feature"])}">{f["feature"]}</a>' if f["page"] \
            else str(f["feature"])
        thumb = img_tag(f["thumb"], alt=f"feature {f['feature']}", fmt="jpeg") if f.get("thumb") is not None else ""
        rows.append(f'<tr data-feature="{f["feature"]}" data-firing="{f["firing"]:.8g}" data-max="{f["max"]:.6g}">'
                    f'<td>{link}</td><td>{thumb}</td><td>{_percent(f["firing"])}</td><td>{f["max"]:.3g}</td>'
                    f'<td>{esc(f.get("top_class") or "")}</td></tr>')
    images = info["images"]
    skipped = images.get("skipped", [])
    skipped_html = ""
    if skipped:
        items = "".join(f"<li><code>{esc(n)}</code>: {esc(r)}</li>" for n, r in skipped[:100])
        skipped_html = f"<p>Skipped {len(skipped)} unreadable file(s):</p><ul>{items}</ul>"
    settings = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>"
                       for k, v in info["settings"].items())
    body = (f'<div class="card"><h2>Quality</h2><div class="figures">{figs}</div></div>'
            f'<div class="card"><h2>Firing frequency</h2>{hist}<p class="muted">How many features fire at a given '
            f'fraction of all positions of all images (log scale, 10<sup>-6</sup> to 1).</p></div>'
            f'<div class="card"><h2>Features</h2><p class="muted">Click a column to sort; features with pages link to '
            f'them.</p><table class="features"><thead><tr><th>feature</th><th></th>'
            f'<th><button data-sort="firing">firing frequency</button></th>'
            f'<th><button data-sort="max">max code</button></th><th>raises most</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            f'<div class="card"><h2>Image set</h2><p>{images["count"]} images, {images["read"]} read.</p>'
            f'{skipped_html}</div><div class="card"><h2>Settings</h2><table>{settings}</table></div>'
            + json_script("dictionary-data", {"layer": info["layer"], "metrics": m, "features": len(features)}))
    return page(f"Features of {info['model']} {info['layer']}", body, CSS, SORT_JS,
                subtitle=f"A {esc(info['method'])} dictionary of {info['n_features']} directions in the "
                         f"{info['channels']}-channel activation space of {esc(info['layer'])}, k = {info['k']} active "
                         "per position.")


def _examples_row(entries: list[dict], grid: tuple[int, int], top: float, rank: bool) -> str:
    figs = []
    for i, e in enumerate(entries, 1):
        crop = _patch(overlay(e["picture"], e["map"], top)[None], np.array([e["y"], e["x"]]), grid, 6.0, 128)[0]
        label = f'#{i}' if rank else f'q{round(100 * e["quantile"])}'
        caption = f'{label} {e["value"]:.3g}: {e["name"]}'
        figs.append(f'<figure class="example" data-image="{esc(e["name"])}">{img_tag(crop, alt=caption, fmt="jpeg")}'
                    f'<figcaption>{esc(caption)}</figcaption></figure>')
    return f'<div class="row">{"".join(figs)}</div>'


def feature_page(info: dict, data: dict, prev_feature: int | None, next_feature: int | None,
                 pages: set[int]) -> str:
    """One feature. ``info``: ``{"model", "layer", "microscope": relative link prefix or None}``; ``data``: see
    :meth:`luminate.features.FeatureSite.feature_data` (``feature``, ``images`` {positive, diversity, guided when
    the site guided them} or None, ``shown`` {guided / unguided: scores} or None,
    ``examples`` / ``samples`` [{name, value, picture, map, y, x}], ``hist``, ``raised`` / ``lowered``, ``neurons``
    [(channel, weight)], ``similar`` [(feature, cosine)], ``grid``)."""
    f = data["feature"]
    grid = tuple(data["grid"])
    parts = [_crumbs([(f"{info['model']} {info['layer']}", "../index.html"), (f"feature {f}", None)])]
    steps = []
    if prev_feature is not None:
        steps.append(f'<a href="{feature_file(prev_feature)}" rel="prev">&larr; feature {prev_feature}</a>')
    if next_feature is not None:
        steps.append(f'<a href="{feature_file(next_feature)}" rel="next">feature {next_feature} &rarr;</a>')
    if steps:
        parts.append(f'<p>{" &middot; ".join(steps)}</p>')
    images = data.get("images")
    if images is not None:
        diversity = "".join(f'<figure class="div">{img_tag(im, alt=f"diverse {i + 1}")}</figure>'
                            for i, im in enumerate(images["diversity"]))
        scores = data.get("shown") or {}
        guided = ""
        if images.get("guided") is not None:
            guided = (f'<figure>{img_tag(images["guided"], alt="guided")}<figcaption>guided by its top photos: '
                      f'follows the direction along their path{shown_score(scores.get("guided"))}</figcaption>'
                      '</figure>')
        first = "unguided: follows the direction" if guided else "follows the direction"
        parts.append('<div class="card vis"><h2>Feature visualization</h2><div class="row">'
                     f'{guided}<figure>{img_tag(images["positive"], alt="positive")}<figcaption>{first}'
                     f'{shown_score(scores.get("unguided"))}</figcaption></figure>{diversity}</div>'
                     '<p class="muted">Images optimized so that the layer\'s activations point along the feature\'s '
                     'direction (dot x cosine, every position); the four on the right are pushed apart from each '
                     'other in style. The guided image is also pulled, at the blocks below, towards half of the '
                     'feature\'s top photos; both are scored on the other half.</p></div>')
    else:
        parts.append('<div class="card"><span class="badge dead">silent feature</span> It never fires on the image '
                     'set, so it is not rendered.</div>')
    examples = data.get("examples", [])
    top = max([e["value"] for e in examples] or [1e-8])
    if examples:
        parts.append('<div class="card examples"><h2>Dataset examples</h2><p class="muted">The images where the '
                     'feature\'s code reaches its highest maximum over positions, cropped around that position, with '
                     f'its code map overlaid in orange.</p>{_examples_row(examples, grid, top, True)}</div>')
    samples = data.get("samples", [])
    if samples:
        parts.append('<div class="card examples"><h2>Quantile samples</h2><p class="muted">Images at quantiles '
                     '(q10 ... q90) of the feature\'s maximum among the images where it fires: what weaker '
                     f'activations look like.</p>{_examples_row(samples, grid, top, False)}</div>')
    hist = data["hist"]
    parts.append(f'<div class="card"><h2>Activation histogram</h2>{_histogram_svg(hist["counts"], hist["edges"])}'
                 f'<p class="muted">The feature\'s maximum code per image, over the {hist["n_images"]} images: it '
                 f'fires on {_percent(hist["images"])} of the images and at {_percent(hist["positions"])} of all '
                 f'positions (its firing frequency); mean maximum where it fires {hist["mean"]:.3g}.</p></div>')
    if data.get("raised") or data.get("lowered"):
        def table(entries):
            return "".join(f'<tr><td>{esc(name)}</td><td class="v">{value:+.3g}</td></tr>' for name, value in entries)
        parts.append('<div class="card classes"><h2>Classes</h2><p class="muted">What the feature adds to each logit: '
                     'the gradient of the logit times the feature\'s share of the activations (code map x decoder '
                     'direction), averaged over its top images.</p><div class="row">'
                     f'<div><h3>raises</h3><table>{table(data.get("raised", []))}</table></div>'
                     f'<div><h3>lowers</h3><table>{table(data.get("lowered", []))}</table></div></div></div>')
    link = info.get("microscope")
    rows = "".join(f'<tr><td>' + (f'<a href="{esc(link)}{unit_file(c)}">channel {c}</a>' if link else f'channel {c}')
                   + f'</td><td class="v">{w:+.3f}</td></tr>' for c, w in data.get("neurons", []))
    parts.append('<div class="card neurons"><h2>Neurons</h2><p class="muted">The channels with the largest weights in '
                 'the feature\'s (unit-length) direction' + (', linked to their Microscope pages' if link else '')
                 + f'.</p><table>{rows}</table></div>')
    similar = data.get("similar", [])
    if similar:
        links = "".join((f'<a href="{feature_file(v)}">' if v in pages else '<a>') + f'feature {v}<br>'
                        f'<span class="muted">cos {c:.2f}</span></a>' for v, c in similar)
        parts.append('<div class="card similar"><h2>Similar features</h2><p class="muted">Features whose directions '
                     f'are closest to this one\'s (cosine).</p>{links}</div>')
    parts.append(json_script("feature-data", {"layer": info["layer"], "feature": f,
                                              "examples": [{"image": e["name"], "value": round(float(e["value"]), 6),
                                                            "y": e["y"], "x": e["x"]} for e in examples]}))
    return page(f"{info['layer']} feature {f}", "".join(parts), CSS, subtitle=esc(info["model"]))


#: bump when the pages change, so sites built before are rewritten
PAGES_VERSION = 1


def _microscope_link(site, key: str) -> str | None:
    """The relative prefix from a feature page to the Microscope's unit pages of the layer, when they exist."""
    if site.microscope is None:
        return None
    target = Path(site.microscope) / layer_dir(key)
    if not target.is_dir():
        return None
    return os.path.relpath(target, site.path / key).replace(os.sep, "/") + "/"


def write_site(site, progress: bool = True) -> Path:
    """Write the pages of a :class:`luminate.features.FeatureSite` into ``site.path``; returns ``index.html``'s
    path. Pages already written for the same inputs are left alone (a rerun of a finished site writes nothing)."""
    from luminate import progress as progress_module
    from luminate.data.store import layer_key

    root = site.path
    key = layer_key(site.layer)
    pages_written = PageRecord(root, root / "data" / key / "pages.json", f"{site.stamp}:{PAGES_VERSION}")
    if pages_written.current():
        return root / "index.html"
    put = pages_written.put
    d = site.dictionary
    pages = list(site.pages)
    info = {"model": site.model.name, "layer": site.layer, "microscope": _microscope_link(site, key)}
    bar = progress_module.bar(len(pages), "pages", unit="feature", enabled=progress and bool(pages))
    top_class = {}
    try:
        for i, data in enumerate(site.feature_data(pages)):
            f = data["feature"]
            top_class[f] = data["raised"][0][0] if data["raised"] else ""
            html_text = feature_page(info, data, pages[i - 1] if i else None,
                                     pages[i + 1] if i + 1 < len(pages) else None, set(pages))
            put(f"{key}/{feature_file(f)}", html_text.encode())
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    firing = site.firing()
    peak = site.examples["peak"]
    shown = set(pages)
    features = [{"feature": f, "firing": float(firing[f]), "max": float(max(peak[:, f].max(), 0)),
                 "top_class": top_class.get(f, ""), "page": f in shown,
                 "thumb": site.renders[f]["positive"] if f in site.renders else None} for f in range(d.n_features)]
    index = {"model": site.model.name, "layer": site.layer, "method": d.method, "n_features": d.n_features,
             "k": d.k, "channels": d.channels,
             "metrics": {name: d.metrics.get(name) for name in ("r2", "l0", "dead", "stability")},
             "settings": site.settings,
             "images": {"count": len(site.imageset), "read": int(len(site.examples["image"])), "skipped": site.skipped}}
    put("index.html", index_page(index, features, key).encode())
    pages_written.finish()
    return root / "index.html"


__all__: Sequence[str] = ["feature_file", "feature_page", "index_page", "write_site"]
