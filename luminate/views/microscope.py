"""The Microscope's static pages: model page, layer pages (sprite grid + search), unit pages.

The pages are drawn from results computed by :mod:`luminate.microscope` (no gradients, no rendering here): unit
images, dataset examples with their activation maps, statistics and attributions. A site is a folder::

    SITE/index.html                  the model: layers, image set, settings
    SITE/<layer>/index.html          every unit of the layer as a sprite grid, searchable by unit or class
    SITE/<layer>/sprite.png          the units' positive visualizations (a relative file, one per layer)
    SITE/<layer>/unit-00007.html     one unit: visualizations, top / bottom / quantile examples, histogram,
                                     classes, inputs (layer below) and outputs (layer above), similar units
    SITE/images/000012.jpg           a thumbnail of each image some page shows (as the model saw it)

Every unit given a page gets one, rendered or not. Pages of rendered units show their top examples cropped with the
activation map overlaid (one forward pass per example); the other examples, and every example of units that are not
rendered, are thumbnails shared by all pages with a ring at the position of the unit's maximum, so writing thousands
of pages is templating only.

Every image is inline (data URLs) or a relative file inside the site; nothing is loaded from the network, so the
folder can be opened straight from disk or served by any static server.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from luminate.images import to_pil
from luminate.views.atlas import _patch
from luminate.views.html import esc, img_tag, json_script, page
from luminate.views.site import PageRecord

CSS = """
nav.crumbs { font-size: 14px; margin-bottom: 10px; } nav.crumbs a { color: var(--accent); text-decoration: none; }
a { color: var(--accent); }
.vis figure img { width: 128px; height: 128px; }
.vis .div img { width: 96px; height: 96px; }
.examples figure img { width: 128px; height: 128px; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
.grid a.unit { display: block; width: 76px; text-align: center; font-size: 12px; color: var(--ink);
  text-decoration: none; }
.grid a.unit .tile { display: block; width: 72px; height: 72px; border: 1px solid var(--line); border-radius: 4px;
  background-repeat: no-repeat; background-color: #ccc; }
.grid a.unit.dead .tile, .grid a.unit.constant .tile { background-image: none !important; background-color: #e4e6ea; }
.grid a.unit.hidden { display: none; }
.badge { display: inline-block; font-size: 12px; padding: 1px 7px; border-radius: 9px; background: #e4e6ea; }
.badge.dead { background: #f3d2c8; }
input#search { font-size: 15px; padding: 6px 10px; width: 320px; border: 1px solid var(--line); border-radius: 6px; }
.classes td.v { font-variant-numeric: tabular-nums; color: var(--muted); }
.similar a { display: inline-block; margin: 0 10px 8px 0; text-align: center; font-size: 12px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.thumb { position: relative; width: 96px; margin: 0; font-size: 11px; color: var(--muted); }
.thumb img { width: 96px; height: 96px; display: block; border-radius: 3px; }
.thumb .ring { position: absolute; width: 14px; height: 14px; margin: -8px 0 0 -8px; border: 2px solid #ff7a1a;
  border-radius: 50%; box-shadow: 0 0 0 1px #000a; pointer-events: none; }
.stratum { margin: 4px 0 10px; } .stratum h3 { font-size: 13px; margin: 0 0 4px; }
.links a.unit-link { display: inline-block; width: 84px; margin: 0 6px 8px 0; text-align: center; font-size: 12px;
  text-decoration: none; color: var(--ink); }
.links .icon { display: block; width: 72px; height: 72px; margin: 0 auto 2px; border: 1px solid var(--line);
  border-radius: 4px; background-repeat: no-repeat; background-color: #ccc; background-size: cover; }
"""

SEARCH_JS = """
const box = document.getElementById('search'), count = document.getElementById('count');
function filter() {
  const q = box.value.trim().toLowerCase(); let shown = 0;
  for (const a of document.querySelectorAll('a.unit')) {
    const unit = a.dataset.unit, classes = a.dataset.classes;
    const ok = !q || (/^\\d+$/.test(q) ? unit === q : classes.includes(q));
    a.classList.toggle('hidden', !ok); if (ok) shown++;
  }
  count.textContent = shown + ' unit' + (shown === 1 ? '' : 's');
}
box.addEventListener('input', filter); filter();
"""

#: tile side of the layer sprite, in pixels
SPRITE_TILE = 72


def unit_file(unit: int) -> str:
    return f"unit-{int(unit):05d}.html"


def layer_dir(key: str) -> str:
    return key


def _crumbs(parts: Sequence[tuple[str, str | None]]) -> str:
    links = [f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text) for text, href in parts]
    return f'<nav class="crumbs">{" / ".join(links)}</nav>'


def model_page(model: dict, layers: list[dict]) -> str:
    """``model``: ``{"name", "input", "images": {"count", "source", "skipped": [(name, reason)]}, "settings"}``;
    ``layers``: ``[{"name", "key", "channels", "grid", "units", "dead"}]``."""
    rows = "".join(f'<tr><td><a href="{esc(layer_dir(l["key"]))}/index.html">{esc(l["name"])}</a></td>'
                   f'<td>{l["channels"]} units, {l["grid"][0]}x{l["grid"][1]}</td>'
                   f'<td>{len(l["units"])} shown, {l["dead"]} dead or constant</td></tr>' for l in layers)
    images = model["images"]
    skipped = images.get("skipped", [])
    skipped_html = ""
    if skipped:
        items = "".join(f"<li><code>{esc(n)}</code>: {esc(r)}</li>" for n, r in skipped[:100])
        more = f"<li>... and {len(skipped) - 100} more</li>" if len(skipped) > 100 else ""
        skipped_html = f"<p>Skipped {len(skipped)} unreadable file(s):</p><ul>{items}{more}</ul>"
    settings = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>"
                       for k, v in model["settings"].items())
    body = (f'<div class="card"><h2>Layers</h2><table>{rows}</table></div>'
            f'<div class="card"><h2>Image set</h2><p>{images["count"]} images from {esc(images["source"])}; '
            f'{images["read"]} read.</p>{skipped_html}</div>'
            f'<div class="card"><h2>Settings</h2><table>{settings}</table></div>')
    return page(f"Microscope: {model['name']}", body, CSS,
                subtitle=f"Every unit of {len(layers)} layer(s) with its feature visualizations and the images of "
                         f"the set that excite it most. Input: {esc(model['input'])}.")


def sprite_sheet(tiles: dict[int, torch.Tensor], units: Sequence[int]) -> tuple[Image.Image, int]:
    """The layer sprite: ``tiles[unit]`` ``[3, S, S]`` at :data:`SPRITE_TILE` px, in ``units`` order, in rows of
    ``cols``; returns ``(image, cols)``. Units without a tile stay grey."""
    cols = max(1, math.ceil(math.sqrt(len(units))))
    rows = max(1, math.ceil(len(units) / cols))
    sheet = Image.new("RGB", (cols * SPRITE_TILE, rows * SPRITE_TILE), (204, 204, 204))
    for slot, unit in enumerate(units):
        if unit in tiles:
            tile = to_pil(tiles[unit].detach()).resize((SPRITE_TILE, SPRITE_TILE), Image.BICUBIC)
            sheet.paste(tile, ((slot % cols) * SPRITE_TILE, (slot // cols) * SPRITE_TILE))
    return sheet, cols


def layer_page(model_name: str, layer: dict, units: list[dict], cols: int) -> str:
    """``layer``: ``{"name", "channels", "grid"}``; ``units``: ``[{"unit", "status", "raised": [names]}]`` in
    sprite order (``cols`` tiles per sprite row, ``sprite.png`` beside the page)."""
    cells = []
    for slot, u in enumerate(units):
        x, y = (slot % cols) * SPRITE_TILE, (slot // cols) * SPRITE_TILE
        classes = " ".join(c.lower() for c in u["raised"])
        status = u["status"]
        label = f'{u["unit"]}' + ("" if status == "ok" else f" ({status})")
        cells.append(f'<a class="unit {status}" href="{unit_file(u["unit"])}" data-unit="{u["unit"]}" '
                     f'data-classes="{esc(classes)}" title="unit {u["unit"]}: {esc(", ".join(u["raised"][:3]))}">'
                     f'<span class="tile" style="background-image:url(sprite.png);background-position:-{x}px -{y}px">'
                     f'</span>{esc(label)}</a>')
    body = (_crumbs([(model_name, "../index.html"), (layer["name"], None)])
            + '<p><input id="search" type="search" placeholder="search: a unit number or a class, e.g. 7 or daisy" '
              'aria-label="search units"> <span id="count" class="muted"></span></p>'
            + f'<div class="grid">{"".join(cells)}</div>')
    return page(f"{layer['name']}: {len(units)} units", body, CSS, SEARCH_JS,
                subtitle=f"{model_name}, layer {esc(layer['name'])} ({layer['channels']} units, "
                         f"{layer['grid'][0]}x{layer['grid'][1]} positions). Click a unit for its page.")


def overlay(picture: torch.Tensor, act_map: torch.Tensor, top: float, alpha: float = 0.55) -> torch.Tensor:
    """``picture`` ``[3, H, W]`` with the unit's activation map ``[h, w]`` (scaled by ``top``, the unit's best
    value) drawn over it in orange, stronger where the unit fires more; darkened where it does not fire."""
    h, w = picture.shape[-2:]
    level = (act_map.float() / max(float(top), 1e-8)).clamp(0, 1)
    heat = Image.fromarray((level.numpy() * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    weight = torch.from_numpy(np.asarray(heat, dtype=np.float32) / 255)[None]        # [1, H, W]
    color = torch.tensor([1.0, 0.45, 0.1])[:, None, None]
    shaded = picture * (0.45 + 0.55 * weight)
    return (shaded * (1 - alpha * weight) + color * alpha * weight * weight).clamp(0, 1)


def _histogram_svg(counts: np.ndarray, edges: np.ndarray, marks: Sequence[float] = (), width: int = 420,
                   height: int = 120) -> str:
    counts = np.asarray(counts, dtype=np.float64)
    peak = max(counts.max(), 1)
    bw = width / len(counts)
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{height - 18 - c / peak * (height - 24):.1f}" width="{bw - 1:.1f}" '
                   f'height="{c / peak * (height - 24):.1f}" fill="#d0542b"><title>{edges[i]:.3g} to {edges[i + 1]:.3g}'
                   f': {int(c)} images</title></rect>' for i, c in enumerate(counts))
    lo, hi = float(edges[0]), float(edges[-1])
    ticks = []
    for v in marks:
        if lo <= v <= hi and hi > lo:
            x = (v - lo) / (hi - lo) * width
            ticks.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 18}" stroke="#1d2430" '
                         f'stroke-dasharray="3 3"/>')
    axis = (f'<text x="0" y="{height - 4}" font-size="11" fill="#5b6576">{lo:.3g}</text>'
            f'<text x="{width}" y="{height - 4}" font-size="11" fill="#5b6576" text-anchor="end">{hi:.3g}</text>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="histogram of the unit\'s maximum activation per image">{bars}{"".join(ticks)}{axis}</svg>')


def unit_page(model_name: str, layer: dict, unit: dict, prev_unit: int | None, next_unit: int | None) -> str:
    """One unit. ``unit``: ``{"unit", "status", "images": {"positive", "negative", "diversity"} or None,
    "examples": [{"name", "value", "picture" [3,H,W], "map" [h,w], "y", "x"}], "hist": {"counts", "edges",
    "firing", "mean", "std", "n_images"}, "raised"/"lowered": [(class, value)], "similar": [(unit, corr, has a page)],
    "sanity": optional text}``."""
    u = unit["unit"]
    parts = [_crumbs([(model_name, "../index.html"), (layer["name"], "index.html"), (f"unit {u}", None)])]
    steps = []
    if prev_unit is not None:
        steps.append(f'<a href="{unit_file(prev_unit)}" rel="prev">&larr; unit {prev_unit}</a>')
    if next_unit is not None:
        steps.append(f'<a href="{unit_file(next_unit)}" rel="next">unit {next_unit} &rarr;</a>')
    if steps:
        parts.append(f'<p>{" &middot; ".join(steps)}</p>')
    parts += _visualization_cards(unit)
    parts += _example_cards(unit, tuple(layer["grid"]))
    parts += _relation_cards(unit, layer)
    parts.append(_unit_json(layer, unit))
    return page(f"{layer['name']} unit {u}", "".join(parts), CSS, subtitle=f"{esc(model_name)}")


def _visualization_cards(unit: dict) -> list[str]:
    """The unit's status (dead / constant) and its feature visualizations, or a note that it was not rendered."""
    u, status, parts = unit["unit"], unit["status"], []
    if status != "ok":
        why = ("it never fires on the image set: its maximum is at most zero on every image"
               if status == "dead" else "its maximum is the same on every image of the set")
        parts.append(f'<div class="card"><span class="badge dead">{esc(status)} unit</span> Not rendered: {why}.'
                     f'</div>')
    images = unit.get("images")
    if images is None and status == "ok":
        parts.append(f'<div class="card vis"><h2>Feature visualizations</h2><p class="muted">Not visualized in this '
                     f'run: rerun with <code>--render-units</code> naming unit {u} to add them (the collected '
                     f'examples are reused).</p></div>')
    if images is not None:
        diversity = "".join(f'<figure class="div">{img_tag(im, alt=f"diverse {i + 1}")}</figure>'
                            for i, im in enumerate(images["diversity"]))
        sanity = f'<p class="muted">Sanity: {esc(unit["sanity"])}</p>' if unit.get("sanity") else ""
        scores = unit.get("shown") or {}
        guided = ""
        if images.get("guided") is not None:
            guided = (f'<figure>{img_tag(images["guided"], alt="guided")}<figcaption>guided by its top photos: '
                      f'maximizes the unit along their path{shown_score(scores.get("guided"))}</figcaption></figure>')
        first = "unguided: maximizes the unit" if guided else "positive: maximizes the unit"
        parts.append('<div class="card vis"><h2>Feature visualizations</h2><div class="row">'
                     f'{guided}<figure>{img_tag(images["positive"], alt="positive")}<figcaption>{first}'
                     f'{shown_score(scores.get("unguided"))}</figcaption></figure><figure>{img_tag(images["negative"], alt="negative")}<figcaption>'
                     'negative: minimizes it</figcaption></figure></div><h2>Diversity</h2><div class="row">'
                     f'{diversity}</div>{sanity}</div>')
    return parts


def shown_score(score: dict | None) -> str:
    """A caption's line with a shown image's sanity scores on photos held out from its guide (empty without)."""
    if not score:
        return ""
    verdict = "flagged" if score.get("flagged") else "passes"
    return (f'<br><span class="muted">path score {score["path_score"]:.2f}, activation ratio {score["ratio"]:.2f} '
            f'({verdict}, on held-out photos)</span>')


def _example_cards(unit: dict, grid: tuple[int, int]) -> list[str]:
    """Dataset examples: the top ones with activation maps (rendered units), top / bottom thumbnails, and samples
    across the range."""
    parts = []
    examples = unit.get("examples", [])
    if examples:
        top = max(max(e["value"] for e in examples), 1e-8)
        figs = []
        for rank, e in enumerate(examples, 1):
            crop = _patch(overlay(e["picture"], e["map"], top)[None], np.array([e["y"], e["x"]]), grid, 6.0, 128)[0]
            caption = f'#{rank} {e["value"]:.3g}: {e["name"]}'
            figs.append(f'<figure class="example" data-image="{esc(e["name"])}">'
                        f'{img_tag(crop, alt=caption, fmt="jpeg")}<figcaption>{esc(caption)}</figcaption></figure>')
        parts.append('<div class="card examples"><h2>Dataset examples</h2><p class="muted">The images where the unit '
                     'reaches its highest maximum, cropped around the position of that maximum, with the unit\'s '
                     f'activation map overlaid in orange.</p><div class="row">{"".join(figs)}</div></div>')
    for title, which, note in (
            ("Top examples", "top", "The images where the unit's maximum is highest (ring: where it is)."),
            ("Bottom examples", "bottom", "The images where the unit's maximum is lowest: most negative for units "
                                          "that go negative, the least excited otherwise.")):
        if which == "top" and examples:
            continue   # drawn above with activation maps
        if unit.get(which):
            parts.append(f'<div class="card examples-{which}"><h2>{title}</h2><p class="muted">{note}</p>'
                         f'<div class="thumbs">{_thumbs(unit[which], grid)}</div></div>')
    if unit.get("quantiles"):
        rows = []
        strata: dict[int, list] = {}
        for e in unit["quantiles"]:
            strata.setdefault(int(e["stratum"]), []).append(e)
        n = int(unit.get("strata", max(strata) + 1))
        for j in sorted(strata):
            rows.append(f'<div class="stratum"><h3>{100 * j // n}-{100 * (j + 1) // n}% of the range</h3>'
                        f'<div class="thumbs">{_thumbs(strata[j], grid)}</div></div>')
        parts.append('<div class="card examples-quantiles"><h2>Across the range</h2><p class="muted">Random samples '
                     'from each fifth of the distribution of the unit\'s maximum over the image set (lowest first): '
                     'what typical, not only extreme, activations look like.</p>' + "".join(rows) + '</div>')
    return parts


def _relation_cards(unit: dict, layer: dict) -> list[str]:
    """Inputs and outputs (units of the layers below and above), the histogram, classes, similar units."""
    parts = []
    for title, key, note in (("Inputs", "inputs", "the strongest units of the layer below"),
                             ("Outputs", "outputs", "the units of the layer above this unit drives most")):
        links = unit.get(key) or []
        if links:
            method = unit.get(f"{key}_method") or ""
            parts.append(f'<div class="card links {key}"><h2>{title}</h2><p class="muted">{note.capitalize()}'
                         f'{f" (by {esc(method)})" if method else ""}.</p>{_unit_links(links)}</div>')
    hist = unit.get("hist")
    if hist is not None:
        svg = _histogram_svg(hist["counts"], hist["edges"], [0.0])
        parts.append(f'<div class="card"><h2>Activation histogram</h2>{svg}'
                     f'<p class="muted">The unit\'s maximum over positions, over {hist["n_images"]} images: fires '
                     f'(maximum above 0) on {100 * hist["firing"]:.1f}% of them; mean {hist["mean"]:.3g}, '
                     f'spread {hist["std"]:.3g}.</p></div>')
    if unit.get("raised") or unit.get("lowered"):
        def table(entries):
            return "".join(f'<tr><td>{esc(name)}</td><td class="v">{value:+.3g}</td></tr>' for name, value in entries)
        parts.append('<div class="card classes"><h2>Classes</h2><p class="muted">The unit\'s attribution to each logit '
                     '(gradient x activation of its whole map), averaged over the image set.</p><div class="row">'
                     f'<div><h3>raises</h3><table>{table(unit.get("raised", []))}</table></div>'
                     f'<div><h3>lowers</h3><table>{table(unit.get("lowered", []))}</table></div></div></div>')
    similar = unit.get("similar", [])
    if similar:
        links = "".join((f'<a href="{unit_file(v)}">' if linked else '<a>') + f'unit {v}<br><span class="muted">'
                        f'r = {c:.2f}</span></a>' for v, c, linked in similar)
        parts.append(f'<div class="card similar"><h2>Similar units</h2><p class="muted">Units of {esc(layer["name"])} '
                     f'whose maxima rise and fall with this one\'s over the image set (correlation).</p>{links}</div>')
    return parts


def _unit_json(layer: dict, unit: dict) -> str:
    """The page's data for scripts and tests: examples, inputs and outputs as plain values."""
    def plain(items):
        return [{"image": e["name"], "value": round(float(e["value"]), 6), "y": e["y"], "x": e["x"]} for e in items]
    return json_script("unit-data", {"layer": layer["name"], "unit": unit["unit"], "status": unit["status"],
                                     "examples": plain(unit.get("examples", []) or unit.get("top") or []),
                                     "bottom": plain(unit.get("bottom") or []),
                                     "quantiles": plain(unit.get("quantiles") or []),
                                     "inputs": [{k: e[k] for k in ("layer", "unit", "weight")}
                                                for e in unit.get("inputs") or []],
                                     "outputs": [{k: e[k] for k in ("layer", "unit", "weight")}
                                                 for e in unit.get("outputs") or []]})


def thumb_file(index: int) -> str:
    return f"images/{int(index):06d}.jpg"


def _thumbs(items: list[dict], grid: tuple[int, int]) -> str:
    """Shared thumbnails (``../images/N.jpg``) with a ring at each example's arg-max position."""
    h, w = max(int(grid[0]), 1), max(int(grid[1]), 1)
    out = []
    for e in items:
        if e.get("index") is None:
            continue
        top, left = 100 * (e["y"] + 0.5) / h, 100 * (e["x"] + 0.5) / w
        out.append(f'<figure class="thumb" data-image="{esc(e["name"])}"><img src="../{thumb_file(e["index"])}" '
                   f'alt="{esc(e["name"])}" loading="lazy"><span class="ring" style="top:{top:.1f}%;left:{left:.1f}%">'
                   f'</span><figcaption>{e["value"]:.3g}: {esc(e["name"])}</figcaption></figure>')
    return "".join(out)


def _unit_links(links: list[dict]) -> str:
    """``[{"layer", "key", "unit", "weight", "page", "icon": css background or None}]`` as icon links."""
    out = []
    for e in links:
        icon = f'<span class="icon" style="{e["icon"]}"></span>' if e.get("icon") else '<span class="icon"></span>'
        label = f'{esc(e["layer"])} {e["unit"]}<br><span class="muted">{e["weight"]:+.3g}</span>'
        if e.get("page"):
            out.append(f'<a class="unit-link" href="../{esc(layer_dir(e["key"]))}/{unit_file(e["unit"])}">'
                       f'{icon}{label}</a>')
        else:
            out.append(f'<a class="unit-link">{icon}{label}</a>')
    return "".join(out)


#: bump when the pages change, so sites built before are rewritten
PAGES_VERSION = 3


class _Icons:
    """Where each unit's icon is: its tile in the layer's sprite (rendered units), else its top example's
    thumbnail; and every thumbnail the pages show (:attr:`thumbs`, written once at the end)."""

    def __init__(self, site):
        self.site = site
        self.keys = {info["name"]: info["key"] for info in site.layers}
        self.sprites = {info["name"]: ({u: slot for slot, u in enumerate(info["units"])},
                                       max(1, math.ceil(math.sqrt(len(info["units"])))),
                                       set(site.renders.get(info["name"], {}))) for info in site.layers}
        self.thumbs: set[int] = set()
        self.best: dict[tuple[str, int], int | None] = {}

    def icon(self, layer: str, unit: int) -> str | None:
        """A CSS background for the unit's icon, or ``None`` when it has neither a render nor an example."""
        slots, cols, rendered = self.sprites.get(layer, ({}, 1, set()))
        if unit in rendered and unit in slots:
            x, y = (slots[unit] % cols) * SPRITE_TILE, (slots[unit] // cols) * SPRITE_TILE
            return (f"background-image:url(../{layer_dir(self.keys[layer])}/sprite.png);"
                    f"background-position:-{x}px -{y}px;background-size:auto")
        if (layer, unit) not in self.best:
            top = self.site.examples_of(layer, unit, "top")[:1]
            self.best[layer, unit] = top[0]["index"] if top else None
        if self.best[layer, unit] is None:
            return None
        self.thumbs.add(self.best[layer, unit])
        return f"background-image:url(../{thumb_file(self.best[layer, unit])})"

    def named(self, items: list[dict]) -> list[dict]:
        """Examples with their image names; their thumbnails are to be written."""
        for e in items:
            self.thumbs.add(e["index"])
        return [dict(e, name=self.site.examples.image_name(e["index"])) for e in items]

    def linked(self, units: list[dict]) -> list[dict]:
        """Input / output units with their layer's folder key and icon."""
        return [dict(e, key=self.keys.get(e["layer"], e["layer"]), icon=self.icon(e["layer"], e["unit"]))
                for e in units]


def _unit_record(site, info: dict, u: int, detailed: dict, icons: _Icons, strata: int) -> dict:
    """Everything :func:`unit_page` draws for unit ``u`` of the layer ``info``."""
    name = info["name"]
    data = detailed.get(u)
    if data is None:
        raised, lowered = site.classes(name, u)
        data = {"unit": u, "status": site.status(name, u), "images": None, "examples": [],
                "hist": site.histogram(name, u), "raised": raised, "lowered": lowered,
                "similar": [(v, c, site.has_page(name, v)) for v, c in site.similar(name, u)],
                "sanity": None, "grid": info["grid"]}
    return dict(data, top=icons.named(site.examples_of(name, u, "top")),
                bottom=icons.named(site.examples_of(name, u, "bottom")),
                quantiles=icons.named(site.examples_of(name, u, "quantiles")), strata=strata,
                inputs=icons.linked(site.inputs(name, u)), outputs=icons.linked(site.outputs(name, u)),
                inputs_method=site.circuit_method(name),
                outputs_method=next((c["method"] for c in site.circuits.values() if c["lower"] == name), None))


def _write_layer(site, info: dict, put, icons: _Icons, bar) -> dict:
    """The layer's sprite, its grid page and one page per unit; returns the layer's entry of the model page."""
    name, key, units = info["name"], info["key"], info["units"]
    tiles = {u: r["positive"] for u, r in site.renders[name].items()}
    sheet, cols = sprite_sheet(tiles, units)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    put(f"{layer_dir(key)}/sprite.png", buffer.getvalue())
    grid_units = [{"unit": u, "status": site.status(name, u),
                   "raised": [c for c, _ in site.classes(name, u)[0]]} for u in units]
    put(f"{layer_dir(key)}/index.html", layer_page(site.model_name, info, grid_units, cols).encode())
    rendered = [u for u in units if u in site.renders.get(name, {})]
    detailed = {d["unit"]: d for d in site.unit_data(name, rendered)}
    strata = int(site.summaries[name].get("quant_strata", 5))
    for i, u in enumerate(units):
        data = _unit_record(site, info, u, detailed, icons, strata)
        prev_unit = units[i - 1] if i > 0 else None
        next_unit = units[i + 1] if i + 1 < len(units) else None
        put(f"{layer_dir(key)}/{unit_file(u)}", unit_page(site.model_name, info, data, prev_unit, next_unit).encode())
        if bar is not None:
            bar.update(1)
    return {**info, "dead": int(sum(1 for u in units if site.status(name, u) != "ok"))}


def write_site(site, progress: bool = True):
    """Write the pages of a :class:`luminate.microscope.Site` into ``site.path``; returns the path of
    ``index.html``. Pages already written for the same inputs (``SITE/data/pages.json``) are left alone, so a
    rerun of a finished site writes nothing."""
    from luminate import progress as progress_bars

    root = site.path
    pages = PageRecord(root, root / "data" / "pages.json", f"{site.stamp}:{PAGES_VERSION}")
    if pages.current():
        return root / "index.html"
    read = sum(int(s["n_images"]) for s in list(site.summaries.values())[:1])
    total = sum(len(info["units"]) for info in site.layers)
    icons = _Icons(site)
    bar = progress_bars.bar(total, "pages", unit="unit", enabled=progress and bool(total))
    try:
        layers = [_write_layer(site, info, pages.put, icons, bar) for info in site.layers]
        for index in sorted(icons.thumbs):
            picture = site.thumbnail(index)
            if picture is not None:
                buffer = io.BytesIO()
                to_pil(picture).save(buffer, format="JPEG", quality=85)
                pages.put(thumb_file(index), buffer.getvalue())
    finally:
        if bar is not None:
            bar.close()
    model = {"name": site.model_name, "input": site.model.contract.describe(), "settings": site.settings,
             "images": {"count": site.examples.store.n_images, "source": site.imageset.source, "read": read,
                        "skipped": site.examples.skipped}}
    pages.put("index.html", model_page(model, layers).encode())
    pages.finish()
    return root / "index.html"
