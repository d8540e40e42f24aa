"""Building Blocks pages: semantic dictionary, activation grid, attribution, neuron groups, perception, explain.

Each ``*_view`` function returns an :class:`~luminate.views.html.HTMLView` (``_repr_html_`` in notebooks,
``.save(path)`` for a file). Pages are one self-contained file: images are inline data URLs, CSS and vanilla JS
are inline, nothing is loaded from the network.

The interactive pieces are *widgets*: a ``<div class="lm-widget" data-kind="...">`` holding the photo with a grid
of hoverable cells (one per spatial position of the layer) and a detail panel (``.lm-detail``). Hovering a cell
highlights it and redraws the detail panel; the selected position is mirrored in ``data-cell="row,col"`` on the
widget and on its detail panel, and the neuron-groups widget mirrors the hovered group in ``data-group``. Each
widget reads its data from a JSON block (``<script type="application/json" id="{kind}-data">``).

This follows the Svelte components of Lucid's Building Blocks notebooks (REFERENCE.md section 10):

* semantic dictionary: the top channels at the hovered position, each as its icon with a bar whose height is
  proportional to the activation (Lucid scaled bars by ``v / 1000``; here by the largest top activation of the
  image, so any layer's scale fits);
* activation grid: the hovered cell's feature visualization, next to the tiled grid;
* spatial attribution: the photo lit by each class's attribution, Lucid's orange/blue hint for two classes, and
  the per-class values at the hovered position; channel attribution: the sorted distribution and the top positive
  and negative channels as icons;
* neuron groups: each group's icon next to the photo with its spatial factor as a red mask (normalized by its
  99th percentile, as Lucid), and its attribution to each class.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from luminate.images import ImageLike, data_url, to_tensor
from luminate.models.base import Model, as_model, block_layers
from luminate.views.html import HTMLView, esc, img_tag, json_script, page

ClassLike = int | str

#: Per-model default layers of :func:`explain` (and of the single-block commands), matched against the model's
#: name with shell wildcards. ``groups`` must be non-negative for NMF: EfficientNet's block outputs are signed
#: (linear projections), its ``head`` is after a ReLU6. Other models: see :func:`explain_layers`.
EXPLAIN_LAYERS: dict[str, dict[str, str]] = {
    "efficientnet_lite*": {"attribution": "blocks.10", "groups": "head", "dictionary": "blocks.10"},
    "inception_v1": {"attribution": "mixed4d", "groups": "mixed4d", "dictionary": "mixed4d"},
}

PHOTO_WIDTH = 320

BLOCKS_CSS = """
.card > h2:first-child { margin-top: 0; }
.lm-widget { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.lm-photo { position: relative; flex: none; border-radius: 4px; overflow: hidden; border: 1px solid var(--line); }
.lm-photo img { position: absolute; left: 0; top: 0; width: 100%; height: 100%; border: 0; border-radius: 0; }
.lm-grid { position: absolute; inset: 0; display: grid; }
.lm-cell { border: 1px solid rgba(255,255,255,0.10); cursor: crosshair; }
.lm-cell:hover, .lm-cell.on { border: 2px solid #fff; box-shadow: 0 0 0 1px rgba(0,0,0,.7) inset,
                                0 0 0 1px rgba(0,0,0,.7); }
.lm-detail { flex: 1 1 300px; min-width: 280px; min-height: 120px; }
.lm-detail h3, .lm-side h3 { font-size: 14px; margin: 0 0 8px; color: var(--muted); font-weight: 600; }
.lm-chans { display: flex; gap: 10px; align-items: flex-end; flex-wrap: wrap; }
.lm-chan { display: flex; flex-direction: column; align-items: center; font-size: 12px; color: var(--muted); }
.lm-chan img, .lm-icon { border-radius: 4px; border: 1px solid var(--line); display: block; }
.lm-vbarwrap { display: flex; align-items: flex-end; margin-bottom: 4px; }
.lm-vbar { width: 14px; background: var(--accent); border-radius: 3px 3px 0 0; }
.lm-hrow { display: grid; grid-template-columns: 150px 1fr 64px; gap: 8px; align-items: center; font-size: 13px;
           margin: 3px 0; }
.lm-hbar { position: relative; height: 12px; background: #eef1f5; border-radius: 3px; }
.lm-hbar span { position: absolute; top: 0; bottom: 0; border-radius: 3px; }
.lm-hbar span.pos { left: 50%; background: #e8772e; } .lm-hbar span.neg { right: 50%; background: #3b7dd8; }
.lm-hbar.plain span.pos { left: 0; }
.lm-picks { display: flex; gap: 6px; flex-wrap: wrap; margin: 8px 0; }
.lm-pick { font: inherit; font-size: 12px; padding: 3px 10px; border: 1px solid var(--line); border-radius: 12px;
           background: white; cursor: pointer; }
.lm-pick.on { background: var(--ink); color: white; border-color: var(--ink); }
.lm-groups { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.lm-group { border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: white; cursor: pointer;
            width: 260px; }
.lm-group.on { border-color: #d62728; box-shadow: 0 0 0 2px rgba(214,39,40,.25); }
.lm-group .pair { display: flex; gap: 6px; margin-bottom: 6px; }
.lm-group .lm-hrow { grid-template-columns: 88px 1fr 48px; font-size: 12px; }
.lm-strip { display: flex; flex-wrap: wrap; gap: 10px; }
.lm-strip figure img { image-rendering: pixelated; }
.lm-legend { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 12px; }
.lm-legend img { border-radius: 3px; }
.lm-channel-rows { display: flex; flex-wrap: wrap; gap: 8px 36px; }
.lm-channel-row { margin: 14px 0 12px; }
.lm-channel-row .lm-chans { align-items: flex-start; }
.lm-dist { display: block; background: #f5f7fa; border-radius: 4px; margin: 4px 0 8px; }
.lm-top5 .lm-hrow { grid-template-columns: 180px 1fr 56px; }
.lm-big { image-rendering: pixelated; }
"""

BLOCKS_JS = r"""
(function () {
  function fmt(v) {
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 || a === 0 ? v.toFixed(2) : v.toExponential(1);
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }
  function hbar(label, v, vmax, signed) {
    var pct = vmax > 0 ? Math.min(100, 100 * Math.abs(v) / vmax) : 0;
    var span = signed ? '<span class="' + (v >= 0 ? 'pos' : 'neg') + '" style="width:' + (pct / 2).toFixed(1) + '%"></span>'
                      : '<span class="pos" style="width:' + Math.max(0, pct).toFixed(1) + '%"></span>';
    return '<div class="lm-hrow"><div>' + label + '</div><div class="lm-hbar' + (signed ? '' : ' plain') + '">' + span +
           '</div><div>' + fmt(v) + '</div></div>';
  }
  var R = {};
  R.dictionary = function (d, y, x) {
    var top = d.top[y][x], s = d.icon;
    var h = '<h3>' + esc(d.layer) + ' at row ' + y + ', column ' + x + ': the ' + top.length + ' strongest channels</h3><div class="lm-chans">';
    top.forEach(function (cv) {
      var c = cv[0], v = cv[1], bar = Math.max(2, Math.round(s * Math.max(0, v) / d.vmax));
      h += '<div class="lm-chan" data-channel="' + c + '" data-value="' + v + '"><div class="lm-vbarwrap" style="height:' + s + 'px">' +
           '<div class="lm-vbar" style="height:' + bar + 'px"></div></div>' +
           (d.icons[c] ? '<img src="' + d.icons[c] + '" width="' + s + '" height="' + s + '" alt="channel ' + c + '">' : '') +
           '<div>channel ' + c + '</div><div>' + fmt(v) + '</div></div>';
    });
    return h + '</div>';
  };
  R.grid = function (d, y, x) {
    var i = y * d.w + x;
    return '<h3>' + esc(d.layer) + ' at row ' + y + ', column ' + x + '</h3>' +
           '<img class="lm-icon lm-big" src="' + d.cells[i] + '" width="' + d.big + '" height="' + d.big + '" alt="cell">' +
           '<p class="muted">An image optimized to produce this position\'s activation vector (norm ' + fmt(d.norms[i]) + ').</p>';
  };
  R.attribution = function (d, y, x) {
    var v = d.values[y][x], h = '<h3>Attribution at row ' + y + ', column ' + x + ' of ' + esc(d.layer) + '</h3>';
    d.classes.forEach(function (c, k) { h += hbar(esc(c), v[k], d.vmax, true); });
    return h + '<p class="muted">Orange: this position raises the class logit; blue: it lowers it.</p>';
  };
  R.groups = function (d, y, x, w) {
    var g = w.dataset.group;
    if (w.dataset.focus === 'group' && g !== '' && g !== undefined) {
      g = +g;
      var h = '<h3>Group ' + g + ' of ' + esc(d.layer) + '</h3><div class="lm-chans"><img src="' + d.icons[g] +
              '" width="' + d.big + '" height="' + d.big + '" alt="group ' + g + '"></div><p></p>';
      d.classes.forEach(function (c, k) { h += hbar(esc(c), d.attributions[g][k], d.amax, true); });
      return h;
    }
    var here = d.spatial.map(function (s, gi) { return [gi, s[y][x]]; }).sort(function (a, b) { return b[1] - a[1]; });
    var h2 = '<h3>Groups at row ' + y + ', column ' + x + ' of ' + esc(d.layer) + '</h3>';
    here.forEach(function (p) {
      h2 += '<div class="lm-hrow" data-group="' + p[0] + '"><div><img src="' + d.icons[p[0]] + '" width="28" height="28" ' +
            'style="vertical-align:middle" alt=""> group ' + p[0] + '</div><div class="lm-hbar plain"><span class="pos" ' +
            'style="width:' + (100 * Math.min(1, p[1])).toFixed(1) + '%;background:#d62728"></span></div><div>' + fmt(p[1]) + '</div></div>';
    });
    return h2;
  };
  function setup(w) {
    var d = JSON.parse(document.getElementById(w.dataset.src).textContent);
    var detail = w.querySelector('.lm-detail');
    var overlay = w.querySelector('img.lm-overlay');
    var cur = d.start;
    function draw() {
      detail.innerHTML = R[w.dataset.kind](d, cur[0], cur[1], w);
      detail.dataset.cell = cur[0] + ',' + cur[1];
    }
    function select(y, x) {
      cur = [y, x];
      w.dataset.cell = y + ',' + x;
      w.querySelectorAll('.lm-cell.on').forEach(function (c) { c.classList.remove('on'); });
      w.querySelectorAll('.lm-cell[data-y="' + y + '"][data-x="' + x + '"]').forEach(function (c) { c.classList.add('on'); });
      w.dataset.focus = 'cell';
      draw();
    }
    function pick(key) {
      if (!overlay || !d.overlays || !(key in d.overlays)) return;
      overlay.src = d.overlays[key];
      w.dataset.overlay = key;
      w.querySelectorAll('.lm-pick').forEach(function (b) { b.classList.toggle('on', b.dataset.overlay === key); });
    }
    function group(g) {
      w.dataset.group = g;
      w.dataset.focus = 'group';
      w.querySelectorAll('.lm-group').forEach(function (c) { c.classList.toggle('on', c.dataset.g === String(g)); });
      if (overlay && d.masks) { overlay.src = d.masks[g]; }
      draw();
    }
    w.addEventListener('mouseover', function (e) {
      var c = e.target.closest('.lm-cell');
      if (c && w.contains(c)) { select(+c.dataset.y, +c.dataset.x); return; }
      var b = e.target.closest('.lm-pick');
      if (b && w.contains(b)) { pick(b.dataset.overlay); return; }
      var g = e.target.closest('.lm-group');
      if (g && w.contains(g)) { group(+g.dataset.g); }
    });
    w.addEventListener('click', function (e) {
      var b = e.target.closest('.lm-pick');
      if (b && w.contains(b)) pick(b.dataset.overlay);
    });
    if (d.overlays) pick(d.first);
    if (d.masks) { w.dataset.group = 0; w.querySelectorAll('.lm-group')[0].classList.add('on'); if (overlay) overlay.src = d.masks[0]; }
    select(d.start[0], d.start[1]);
  }
  document.querySelectorAll('.lm-widget').forEach(setup);
})();
"""


# ------------------------------------------------------------------------------------------------ pieces
def _photo(image: ImageLike) -> torch.Tensor:
    """The first image of ``image`` as ``[3, H, W]`` in [0, 1] on the CPU."""
    return to_tensor(image)[0].detach().cpu().float().clamp(0, 1)


def _upsample(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[h, w]`` (or ``[C, h, w]``) -> bilinear ``[H, W]`` (``[C, H, W]``)."""
    v = values.detach().cpu().float()
    squeeze = v.ndim == 2
    v = v[None, None] if squeeze else v[None]
    out = F.interpolate(v, size=size, mode="bilinear", align_corners=False)[0]
    return out[0] if squeeze else out


def _nested(values: torch.Tensor, digits: int = 4) -> list:
    """A tensor as nested lists of rounded floats (compact JSON)."""
    return torch.round(values.detach().cpu().double(), decimals=digits).tolist()


def _photo_box(photo_url: str, h: int, w: int, width: int, aspect: float, overlay_url: str | None = None) -> str:
    """The photo (and an overlay image) under an ``h x w`` grid of hoverable cells."""
    height = round(width * aspect)
    overlay = f'<img class="lm-overlay" src="{overlay_url}" alt="">' if overlay_url else ""
    cells = "".join(f'<div class="lm-cell" data-y="{y}" data-x="{x}"></div>' for y in range(h) for x in range(w))
    return (f'<div class="lm-photo" style="width:{width}px;height:{height}px">'
            f'<img class="lm-base" src="{photo_url}" alt="photo">'
            f"{overlay}"
            f'<div class="lm-grid" style="grid-template-columns:repeat({w},1fr);grid-template-rows:repeat({h},1fr)">'
            f"{cells}</div></div>")


def _widget(kind: str, inner: str, payload: dict[str, Any], wid: str | None = None) -> str:
    wid = wid or kind
    return (f'<div class="lm-widget" data-kind="{esc(kind)}" data-src="{esc(wid)}-data" data-cell="">{inner}</div>'
            f"{json_script(wid + '-data', payload)}")


def _icon_urls(icons: dict[int, torch.Tensor]) -> dict[str, str]:
    return {str(int(c)): data_url(icon) for c, icon in icons.items()}


def _signed_row(label: str, value: float, vmax: float, signed: bool = True) -> str:
    """A label, a bar (signed: orange right of centre / blue left; else orange from the left) and the value."""
    pct = min(100.0, 100.0 * abs(value) / vmax) if vmax > 0 else 0.0
    if signed:
        span = f'<span class="{"pos" if value >= 0 else "neg"}" style="width:{pct / 2:.1f}%"></span>'
    else:
        span = f'<span class="pos" style="width:{max(0.0, pct):.1f}%"></span>'
    return (f'<div class="lm-hrow"><div>{esc(label)}</div><div class="lm-hbar{"" if signed else " plain"}">{span}</div>'
            f"<div>{value:.3g}</div></div>")


def _section(title: str, body: str, lede: str = "", sid: str = "") -> str:
    ident = f' id="{esc(sid)}"' if sid else ""
    intro = f"<p>{lede}</p>" if lede else ""
    return f'<section class="card"{ident}><h2>{esc(title)}</h2>{intro}{body}</section>'


def _blocks_page(title: str, body: str, subtitle: str = "") -> HTMLView:
    return HTMLView(page(title, body, css=BLOCKS_CSS, script=BLOCKS_JS, subtitle=subtitle), title)


# ------------------------------------------------------------------------------------- semantic dictionary
def dictionary_section(sd, width: int = PHOTO_WIDTH, icon_px: int = 96, wid: str = "dictionary") -> str:
    """The semantic-dictionary widget for a :class:`~luminate.analysis.dictionary.SemanticDictionary`."""
    photo = _photo(sd.image)
    h, w, k = sd.top_channels.shape
    values = sd.top_values.float()
    vmax = float(values[..., 0].max().clamp_min(1e-8))
    top = [[[[int(sd.top_channels[y, x, i]), round(float(values[y, x, i]), 4)] for i in range(k)]
            for x in range(w)] for y in range(h)]
    start = list(sd.strongest_position)
    counts = torch.bincount(sd.top_channels.flatten(), minlength=sd.activations.shape[0])
    legend_channels = [c for c in counts.argsort(descending=True).tolist() if counts[c] > 0 and c in sd.icons]
    legend = "".join(img_tag(sd.icons[c], width=44, alt=f"channel {c}",
                             attrs=f'title="channel {c}: among the top {k} at {int(counts[c])} positions"')
                     for c in legend_channels)
    payload = {"layer": sd.layer, "top": top, "icons": _icon_urls(sd.icons), "vmax": vmax, "icon": icon_px,
               "start": start, "h": h, "w": w}
    inner = (_photo_box(data_url(photo), h, w, width, photo.shape[1] / photo.shape[2])
             + '<div class="lm-detail"></div>'
             + f'<div style="flex-basis:100%"><h3 class="muted" style="font-size:13px;margin:0">'
               f"All {len(legend_channels)} channels of the dictionary, most frequent first</h3>"
               f'<div class="lm-legend">{legend}</div></div>')
    return _widget("dictionary", inner, payload, wid)


def dictionary_view(sd) -> HTMLView:
    """Page: a semantic dictionary (``sd``: :class:`~luminate.analysis.dictionary.SemanticDictionary`).

    Hover a cell of the photo to see the layer's strongest channels at that position, each as its feature
    visualization with a bar proportional to its activation.
    """
    h, w, k = sd.top_channels.shape
    lede = (f"Each cell of the photo is one position of <code>{esc(sd.layer)}</code> ({h}&times;{w}). Hover a cell: "
            f"the {k} channels that fire most there appear as feature visualizations, with bars proportional to "
            "their activation. The dictionary turns a vector of numbers into pictures of what the network detects.")
    return _blocks_page(f"Semantic dictionary: {sd.model_name} {sd.layer}", _section("Semantic dictionary",
                        dictionary_section(sd), lede))


# --------------------------------------------------------------------------------------- activation grid
def grid_section(ag, width: int = PHOTO_WIDTH, big: int = 192, wid: str = "grid") -> str:
    """The activation-grid widget for an :class:`~luminate.analysis.grid.ActivationGrid`."""
    photo = _photo(ag.image)
    h, w = ag.cells.shape[:2]
    norms = ag.activations.float().norm(dim=0)
    start = list(divmod(int(norms.argmax()), w))
    cells = [data_url(ag.cells[y, x]) for y in range(h) for x in range(w)]
    montage = ag.montage() if hasattr(ag, "montage") else _montage(ag.cells)
    aspect = photo.shape[1] / photo.shape[2]
    grid_width = min(560, max(width, montage.shape[2]))
    payload = {"layer": ag.layer, "cells": cells, "norms": _nested(norms.flatten(), 3), "w": w, "h": h,
               "start": start, "big": big}
    inner = (_photo_box(data_url(photo), h, w, width, aspect)
             + _photo_box(data_url(montage, "jpeg"), h, w, grid_width, montage.shape[1] / montage.shape[2])
             + '<div class="lm-detail"></div>')
    return _widget("grid", inner, payload, wid)


def _montage(cells: torch.Tensor) -> torch.Tensor:
    h, w, c, s, _ = cells.shape
    return cells.permute(2, 0, 3, 1, 4).reshape(c, h * s, w * s)


def grid_view(ag) -> HTMLView:
    """Page: an activation grid (``ag``: :class:`~luminate.analysis.grid.ActivationGrid`).

    The photo and the grid of feature visualizations side by side; hovering a cell of either highlights the same
    position in both and shows its visualization large.
    """
    h, w = ag.cells.shape[:2]
    lede = (f"Every position of <code>{esc(ag.layer)}</code> ({h}&times;{w}) has an activation vector; each cell of "
            "the grid is an image optimized to produce that vector. Hover the photo or the grid.")
    return _blocks_page(f"Activation grid: {ag.model_name} {ag.layer}",
                        _section("Activation grid", grid_section(ag), lede))


# ------------------------------------------------------------------------------------------ attribution
@dataclass
class AttributionMaps:
    """Attribution of class logits to the positions and channels of one layer, for one image.

    Attributes:
        image: ``[1, 3, H, W]`` in [0, 1], the input the model saw (CPU).
        layer: the layer.
        classes: class names (``K`` of them); ``class_indices`` their indices.
        spatial: ``[K, h, w]`` attribution per position (summed over channels).
        channel: ``[K, C]`` attribution per channel (summed over positions).
        probabilities: ``[K]`` the model's softmax probability of each class.
        icons: ``{channel: [3, s, s]}`` feature visualizations of the channels shown (may be empty).
        method: ``"integrated"`` or ``"linear"``.
    """

    image: torch.Tensor
    layer: str
    classes: list[str]
    class_indices: list[int]
    spatial: torch.Tensor
    channel: torch.Tensor
    probabilities: torch.Tensor
    model_name: str
    method: str = "integrated"
    icons: dict[int, torch.Tensor] = field(default_factory=dict)

    def shown_channels(self, n: int = 3) -> list[int]:
        """Every channel :func:`attribution_section` shows (top ``n`` positive and negative per row)."""
        return sorted({c for _, values in self._rows() for side in _extremes(values, n) for c in side})

    def _rows(self) -> list[tuple[str, torch.Tensor]]:
        rows = [(name, self.channel[k]) for k, name in enumerate(self.classes)]
        if len(self.classes) >= 2:
            rows.append((f"{self.classes[0]} \u2212 {self.classes[1]}", self.channel[0] - self.channel[1]))
        return rows

    def __repr__(self) -> str:
        h, w = self.spatial.shape[1:]
        return f"AttributionMaps({self.model_name}, {self.layer}, {h}x{w}, classes {self.classes}, {self.method})"


def _extremes(values: torch.Tensor, n: int) -> tuple[list[int], list[int]]:
    order = values.argsort(descending=True).tolist()
    return [c for c in order[:n] if values[c] > 0], [c for c in reversed(order[-n:]) if values[c] < 0]


def resolve_classes(model: Model, classes: Sequence[ClassLike] | ClassLike | None, image: torch.Tensor | None = None,
                    top: int = 3) -> list[int]:
    """Class indices for names or indices (``None``: the ``top`` predicted classes of ``image`` ``[1, 3, H, W]``).

    Strings of digits count as indices (as the command line passes them); a bad name raises ``KeyError`` listing
    the closest names.
    """
    if classes is None:
        if image is None:
            raise ValueError("classes=None means the image's top classes, which needs the image")
        with torch.no_grad():
            logits = model(image.to(model.device))
        return logits[0].topk(min(top, logits.shape[1])).indices.tolist()
    items = [classes] if isinstance(classes, (int, str)) else list(classes)
    if not items:
        raise ValueError("no classes given: name at least one class, or pass None for the top predicted classes")
    out = []
    for c in items:
        if isinstance(c, str) and c.strip().isdigit():
            c = int(c)
        out.append(model.class_index(c))
    return out


def class_name(model: Model, index: int) -> str:
    return model.labels[index] if model.labels is not None else str(index)


def attribution_maps(model: Model | str, image: ImageLike, layer: str,
                     classes: Sequence[ClassLike] | ClassLike | None = None, *, top: int = 3,
                     integrated: bool = True, n_steps: int = 32) -> AttributionMaps:
    """Spatial ``[K, h, w]`` and channel ``[K, C]`` attribution of ``classes`` at ``layer`` for one image.

    ``integrated=True`` (default) uses integrated gradients in the layer's activation space from zero activation
    (:func:`luminate.analysis.attribution.layer_integrated_gradients`, ``n_steps`` left Riemann steps), so each
    class's attributions sum to about ``logit(image) - logit(zero activation)``. **Differs from Lucid's
    AttrSpatial**, which used the linear approximation ``acts * grad`` (``integrated=False``): at EfficientNet's
    residual block outputs (signed activations) the linear sum over channels comes out *negative* on the object
    (measured on flower.jpg, ``daisy``, ``blocks.10``: mean -0.025 on the flower vs +0.001 elsewhere; ``blocks.12``:
    -0.05 vs -0.02), while the integrated map is positive and concentrated on it (``blocks.10``: 0.06 vs 0.019;
    ``blocks.12``: 0.26 vs 0.08). For layers that feed the logits linearly
    (``head`` of EfficientNet, after the last ReLU6) both methods agree.

    ``image``: a path / PIL image / array (through ``model.preprocess``) or a ``[1, 3, H, W]`` tensor (as is).
    ``classes``: names or indices; ``None``: the ``top`` predicted classes.
    """
    from luminate.analysis import attribution as A

    model = as_model(model)
    x = A.as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"attribution maps take one image, got a batch of {x.shape[0]}")
    indices = resolve_classes(model, classes, x, top)
    batch = x.expand(len(indices), -1, -1, -1)
    if integrated:
        attr = A.layer_integrated_gradients(model, batch, layer, target=indices, n_steps=n_steps)
    else:
        attr = A.layer_gradient_x_activation(model, batch, layer, target=indices)
    if attr.ndim != 4:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(attr.shape[1:])}, not [C, h, w]; "
                         "choose a convolutional layer (see `luminate layers MODEL`)")
    with torch.no_grad():
        probs = model(x).softmax(-1)[0, indices].cpu()
    return AttributionMaps(image=x.detach().cpu(), layer=layer, classes=[class_name(model, i) for i in indices],
                           class_indices=indices, spatial=attr.sum(1), channel=attr.sum((2, 3)), probabilities=probs,
                           model_name=model.name, method="integrated" if integrated else "linear")


def spotlight(photo: torch.Tensor, values: torch.Tensor, floor: float = 0.15) -> torch.Tensor:
    """The photo ``[3, H, W]`` lit where ``values`` ``[h, w]`` is positive (dimmed to ``floor`` elsewhere).

    The positive part is scaled by its 99th percentile (clipped to 1), so one hot position does not leave the
    rest of the evidence in the dark."""
    light = _upsample(_unit99(values), tuple(photo.shape[1:])).clamp(0, 1)
    return photo * (floor + (1 - floor) * light)


def orange_blue(a: torch.Tensor, b: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Lucid's two-class hint ``[3, h, w]``: red = ``a``, green = ``(a + b) / 2``, blue = ``b`` (clipped at 0),
    divided by ``0.01 + max / 1.5``, plus 0.3. Orange where ``a`` dominates, blue where ``b`` does.

    **Differs from Lucid** in one detail: ``a`` and ``b`` are first divided by their common largest magnitude, so
    the ``0.01`` guard is relative to the data rather than to the attribution's units. Values can exceed 1.
    """
    a, b = a.float(), b.float()
    if clip:
        a, b = a.clamp_min(0), b.clamp_min(0)
    scale = torch.stack([a.abs().max(), b.abs().max()]).max().clamp_min(1e-12)
    arr = torch.stack([a, (a + b) / 2, b]) / scale
    return arr / (1e-2 + arr.abs().max() / 1.5) + 0.3


def orange_blue_overlay(photo: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The photo ``[3, H, W]`` tinted by :func:`orange_blue` of two maps ``[h, w]`` (upsampled)."""
    hint = _upsample(orange_blue(a, b), tuple(photo.shape[1:]))
    return (photo * hint).clamp(0, 1)


def _distribution_svg(values: torch.Tensor, width: int = 360, height: int = 64) -> str:
    """The sorted values as a filled area (Lucid's BarsWidget), zero line included."""
    v = values.float().sort(descending=True).values
    n = v.numel()
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    span = (hi - lo) or 1.0

    def y(t: float) -> float:
        return round(height - 2 - (t - lo) / span * (height - 4), 1)

    zero = y(0.0)
    step = width / max(n, 1)
    points = [f"0,{zero}"] + [f"{round(i * step, 1)},{y(float(t))} {round((i + 1) * step, 1)},{y(float(t))}"
                              for i, t in enumerate(v.tolist())] + [f"{width},{zero}"]
    return (f'<svg class="lm-dist" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polygon points="{" ".join(points)}" fill="#e8772e" fill-opacity="0.8"/>'
            f'<line x1="0" x2="{width}" y1="{zero}" y2="{zero}" stroke="#5b6576" stroke-width="1"/></svg>')


def _channel_card(maps: AttributionMaps, c: int, value: float, vmax: float, icon_px: int) -> str:
    bar = max(2, round(icon_px * abs(value) / vmax)) if vmax > 0 else 2
    color = "#e8772e" if value >= 0 else "#3b7dd8"
    icon = (img_tag(maps.icons[c], width=icon_px, alt=f"channel {c}")
            if c in maps.icons else f'<div style="width:{icon_px}px;height:{icon_px}px" class="muted">no icon</div>')
    return (f'<div class="lm-chan" data-channel="{c}" data-value="{value:.4g}">'
            f'<div class="lm-vbarwrap" style="height:{icon_px}px"><div class="lm-vbar" style="height:{bar}px;'
            f'background:{color}"></div></div>{icon}<div>channel {c}</div><div>{value:+.3g}</div></div>')


def channel_section(maps: AttributionMaps, n: int = 3, icon_px: int = 72) -> str:
    """Channel attribution: per class (and for the difference of the first two classes' logits, as Lucid's
    AttrChannel), the sorted distribution over channels and the top ``n`` positive and negative channels."""
    rows = []
    for name, values in maps._rows():
        pos, neg = _extremes(values, n)
        vmax = float(values.abs().max())
        cards = "".join(_channel_card(maps, c, float(values[c]), vmax, icon_px) for c in pos + neg)
        rows.append(f'<div class="lm-channel-row"><h3 style="font-size:14px;margin:0">{esc(name)}: '
                    f'<span class="muted">{len(values)} channels of {esc(maps.layer)}, sorted</span></h3>'
                    f'{_distribution_svg(values)}<div class="lm-chans">{cards}</div></div>')
    return f'<div class="lm-channel-rows">{"".join(rows)}</div>'


def attribution_section(maps: AttributionMaps, width: int = PHOTO_WIDTH, n_channels: int = 3,
                        wid: str = "attribution") -> str:
    """The spatial-attribution widget followed by channel attribution, for :class:`AttributionMaps`."""
    photo = _photo(maps.image)
    k, h, w = maps.spatial.shape
    overlays = {name: data_url(spotlight(photo, maps.spatial[i]), "jpeg") for i, name in enumerate(maps.classes)}
    picks = [(name, f"{name} ({float(p):.0%})") for name, p in zip(maps.classes, maps.probabilities)]
    if k >= 2:
        key = f"{maps.classes[0]} / {maps.classes[1]}"
        overlays[key] = data_url(orange_blue_overlay(photo, maps.spatial[0], maps.spatial[1]), "jpeg")
        picks.append((key, f"orange: {maps.classes[0]}, blue: {maps.classes[1]}"))
    values = maps.spatial.permute(1, 2, 0)
    start = list(divmod(int(maps.spatial[0].argmax()), w))
    payload = {"layer": maps.layer, "classes": maps.classes, "values": _nested(values, 4),
               "vmax": float(maps.spatial.abs().max().clamp_min(1e-12)), "overlays": overlays,
               "first": maps.classes[0], "start": start, "h": h, "w": w}
    buttons = "".join(f'<button class="lm-pick" data-overlay="{esc(key)}">{esc(label)}</button>'
                      for key, label in picks)
    aspect = photo.shape[1] / photo.shape[2]
    thumbs = "".join(f"<figure>{img_tag(spotlight(photo, maps.spatial[i]), width=120, fmt='jpeg', alt=name)}"
                     f"<figcaption>{esc(name)}</figcaption></figure>" for i, name in enumerate(maps.classes))
    inner = (f'<div><div class="lm-picks">{buttons}</div>'
             + _photo_box(data_url(photo), h, w, width, aspect, overlay_url=next(iter(overlays.values())))
             + f'<div class="row" style="margin-top:10px">{thumbs}</div></div>'
             + '<div class="lm-detail"></div>')
    widget = _widget("attribution", inner, payload, wid)
    how = ("integrated gradients from zero activation" if maps.method == "integrated"
           else "activation &times; gradient (linear approximation)")
    channels = (f'<h3 style="margin-top:24px">Which channels of <code>{esc(maps.layer)}</code> carry each class</h3>'
                f'<p class="muted">Attribution ({how}) summed over positions. Orange bars raise the logit, blue bars '
                f"lower it; icons are feature visualizations of the channels.</p>" + channel_section(maps, n_channels))
    return widget + channels


def attribution_view(model: Model | str, image: ImageLike | AttributionMaps, layer: str | None = None,
                     classes: Sequence[ClassLike] | ClassLike | None = None, *, top: int = 3,
                     integrated: bool = True, n_steps: int = 32, n_channels: int = 3, icons: bool = True,
                     icon_size: int = 64, icon_steps: int = 128, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> HTMLView:
    """Page: where in the image each class comes from, and which channels carry it.

    Spatial attribution of each class at ``layer`` (see :func:`attribution_maps`) lights up the photo; with two
    or more classes Lucid's orange/blue hint compares the first two. Hover a position to read every class's
    attribution there. Below, channel attribution: the sorted distribution and the top ``n_channels`` positive and
    negative channels, with their feature visualizations when ``icons`` (rendered by
    :func:`luminate.analysis.sprites.channel_icons` at ``icon_size`` px, ``icon_steps`` steps, cached).

    ``image`` may also be precomputed :class:`AttributionMaps` (then nothing but missing icons is computed).
    ``layer`` defaults to :func:`explain_layers`'s ``"attribution"`` layer.
    """
    model = as_model(model)
    if isinstance(image, AttributionMaps):
        maps = image
    else:
        layer = layer or explain_layers(model)["attribution"]
        maps = attribution_maps(model, image, layer, classes, top=top, integrated=integrated, n_steps=n_steps)
    if icons:
        add_channel_icons(model, maps, n_channels, icon_size, icon_steps, cache_dir, progress)
    lede = (f"How much each position of <code>{esc(maps.layer)}</code> contributes to each class's logit. The photo "
            "is lit where a class's evidence lies; pick a class above the photo, and hover a cell for the numbers.")
    title = f"Attribution: {maps.model_name} {maps.layer}"
    return _blocks_page(title, _section("Where each class comes from", attribution_section(maps, n_channels=n_channels),
                                        lede))


def add_channel_icons(model: Model, maps: AttributionMaps, n: int, size: int, steps: int,
                      cache_dir: str | os.PathLike | None, progress: bool) -> AttributionMaps:
    """Render (or read from the sprite cache) icons for every channel the channel-attribution section shows."""
    from luminate.analysis.sprites import channel_icons

    missing = [c for c in maps.shown_channels(n) if c not in maps.icons]
    if missing:
        maps.icons.update(channel_icons(model, maps.layer, missing, size=size, steps=steps, cache_dir=cache_dir,
                                        progress=progress))
    return maps


# ---------------------------------------------------------------------------------------- neuron groups
def red_mask(photo: torch.Tensor, spatial: torch.Tensor, strength: float = 0.75) -> torch.Tensor:
    """The photo ``[3, H, W]`` under a red mask where ``spatial`` ``[h, w]`` is large (normalized by its 99th
    percentile and clipped to 1, as Lucid's GroupWidget); elsewhere the photo is dimmed a little."""
    m = _unit99(spatial)
    m = _upsample(m, tuple(photo.shape[1:])).clamp(0, 1)
    red = torch.tensor([0.86, 0.1, 0.1]).view(3, 1, 1)
    return photo * (1 - strength * m) * (0.55 + 0.45 * m) + strength * m * red


def _unit99(values: torch.Tensor) -> torch.Tensor:
    v = values.float().clamp_min(0)
    q = torch.quantile(v.flatten(), 0.99) if v.numel() > 1 else v.max()
    return (v / q.clamp_min(1e-12)).clamp(0, 1)


def groups_section(ngv, width: int = PHOTO_WIDTH, big: int = 128, wid: str = "groups") -> str:
    """The neuron-groups widget for a :class:`~luminate.analysis.groups.NeuronGroupsView`."""
    photo = _photo(ngv.image)
    g_count, h, w = ngv.spatial.shape
    spatial = torch.stack([_unit99(s) for s in ngv.spatial])
    masks = [data_url(red_mask(photo, s), "jpeg") for s in ngv.spatial]
    icons = [data_url(icon) for icon in ngv.icons]
    attributions = ngv.attributions.float()
    amax = float(attributions.abs().max().clamp_min(1e-12))
    start = list(divmod(int(spatial.sum(0).argmax()), w))
    payload = {"layer": ngv.layer, "classes": list(ngv.classes), "spatial": _nested(spatial, 3),
               "attributions": _nested(attributions, 4), "amax": amax, "icons": icons, "masks": masks,
               "start": start, "h": h, "w": w, "big": big}
    cards = []
    for g in range(g_count):
        bars = "".join(_signed_row(c, float(attributions[g, k]), amax) for k, c in enumerate(ngv.classes))
        cards.append(f'<div class="lm-group" data-g="{g}"><div class="pair">'
                     f'<img class="lm-icon" src="{icons[g]}" width="110" height="110" alt="group {g} icon">'
                     f'<img class="lm-icon" src="{masks[g]}" width="110" height="110" alt="group {g} mask"></div>'
                     f'<div class="muted" style="font-size:12px">group {g}: attribution to</div>{bars}</div>')
    aspect = photo.shape[1] / photo.shape[2]
    inner = (_photo_box(data_url(photo), h, w, width, aspect, overlay_url=masks[0]) + '<div class="lm-detail"></div>'
             + f'<div class="lm-groups" style="flex-basis:100%">{"".join(cards)}</div>')
    return _widget("groups", inner, payload, wid)


def groups_view(ngv) -> HTMLView:
    """Page: neuron groups (``ngv``: :class:`~luminate.analysis.groups.NeuronGroupsView`).

    Each group: its icon, the photo under a red mask where the group fires, and its attribution to each class.
    Hover a group to show its mask on the large photo; hover a cell to list the groups present there.
    """
    g = ngv.spatial.shape[0]
    lede = (f"The activations of <code>{esc(ngv.layer)}</code> factorized (NMF) into {g} groups of neurons that fire "
            "together. Each group has a feature visualization (left), a spatial mask of where it fires (red), and an "
            "attribution to each class: how much it raises or lowers that class's logit.")
    return _blocks_page(f"Neuron groups: {ngv.model_name} {ngv.layer}",
                        _section("Neuron groups", groups_section(ngv), lede))


# ----------------------------------------------------------------------------------- layer by layer
def _input_figure(photo: torch.Tensor, size: int = 96) -> str:
    return f"<figure>{img_tag(photo, width=size, alt='input')}<figcaption><b>input</b></figcaption></figure>"


def perception_section(layer_views: Sequence, size: int = 96, first: str = "") -> str:
    """A strip with each layer's colour summary (``LayerView.summary`` ``[3, h, w]``), in forward order, after the
    HTML ``first`` (e.g. the input photo)."""
    figures = [first]
    for lv in layer_views:
        c, h, w = lv.activations.shape
        explained = getattr(lv, "explained", float("nan"))
        note = f", PCA {explained:.0%}" if explained == explained else ""
        figures.append(f"<figure>{img_tag(lv.summary, width=size, alt=lv.name, pixelated=True)}"
                       f"<figcaption><b>{esc(lv.name)}</b><br>{c}&times;{h}&times;{w}{note}</figcaption></figure>")
    return f'<div class="lm-strip">{"".join(figures)}</div>'


def perception_view(layer_views: Sequence, image: ImageLike | None = None, model_name: str = "") -> HTMLView:
    """Page: the layer-by-layer strip (``layer_views``: list of :class:`~luminate.analysis.perception.LayerView`).

    Each layer's activations are summarized by their three leading principal components as red, green and blue:
    positions the layer sees alike get alike colours. ``image`` (optional) is shown first.
    """
    if not layer_views:
        raise ValueError("no layers to show: pass the list that luminate.analysis.perception.layer_by_layer returns")
    photo = _input_figure(_photo(image)) if image is not None else ""
    lede = ("From the input to the last layer: each square is one layer's activations, coloured by their first three "
            "principal components, so you can watch resolution drop and regions group into objects.")
    return _blocks_page(f"Layer by layer{': ' + model_name if model_name else ''}",
                        _section("Layer by layer", perception_section(layer_views, first=photo),
                                 lede))


# --------------------------------------------------------------------------------------------- explain
def explain_layers(model: Model) -> dict[str, str]:
    """Default layers ``{"attribution": ..., "groups": ..., "dictionary": ...}`` for :func:`explain`.

    From :data:`EXPLAIN_LAYERS` for known models (EfficientNet-Lite: attribution and dictionary at ``blocks.10``,
    the last block with a 14x14 grid at 224 px, as Lucid's ``mixed4d``; groups at ``head``, 7x7, non-negative;
    InceptionV1: ``mixed4d``, as Lucid). Otherwise the top-level block about 75% of the way
    through the network for attribution and groups, and :func:`luminate.recipes.default_layer` (about 60%) for the
    dictionary.
    """
    from luminate.recipes import default_layer

    for pattern, layers in EXPLAIN_LAYERS.items():
        if fnmatch.fnmatch(model.name, pattern):
            return dict(layers)
    blocks = block_layers(model)
    late = blocks[int(0.75 * (len(blocks) - 1))]
    return {"attribution": late, "groups": late, "dictionary": default_layer(model)}


@dataclass
class Explanation:
    """Everything :func:`explain` computed for one photo (CPU tensors); :meth:`view` makes the page."""

    image: torch.Tensor
    model_name: str
    predictions: list[tuple[str, float]]
    attribution: AttributionMaps
    groups: Any
    dictionary: Any
    layers: list
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def view(self) -> HTMLView:
        return explain_view(self)


def explain_view(explanation: Explanation) -> HTMLView:
    """Page: one photo explained (see :func:`explain`): top-5 classes, spatial and channel attribution of the top
    classes, neuron groups, a semantic dictionary and the layer-by-layer strip."""
    e = explanation
    photo = _photo(e.image)
    pmax = max(p for _, p in e.predictions) if e.predictions else 1.0
    top5 = "".join(_signed_row(name, p, pmax, signed=False) for name, p in e.predictions)
    head = (f'<div class="row"><figure>{img_tag(photo, width=224, alt="photo")}<figcaption>the input, as the model '
            f'sees it</figcaption></figure><div class="lm-top5" style="flex:1;min-width:320px">'
            f"<h3>Top {len(e.predictions)} classes (probability)</h3>{top5}</div></div>")
    a, g, d = e.attribution, e.groups, e.dictionary
    sections = [
        _section("What the model sees", head, sid="top"),
        _section("Where each class comes from", attribution_section(a),
                 f"Attribution of the top classes' logits to the positions of <code>{esc(a.layer)}</code>: the photo "
                 "is lit where each class's evidence lies. Pick a class above the photo; hover a cell for the numbers.",
                 sid="attribution"),
        _section("Which neuron groups carry it", groups_section(g),
                 f"The activations of <code>{esc(g.layer)}</code> factorized into {g.spatial.shape[0]} groups of "
                 "neurons that fire together: each group's feature visualization, where it fires (red) and how much "
                 "it contributes to each class. Hover a group or a cell.", sid="groups"),
        _section(f"Semantic dictionary of {d.layer}", dictionary_section(d),
                 f"Hover a cell: the {d.top_channels.shape[2]} channels of <code>{esc(d.layer)}</code> that fire most "
                 "there, as feature visualizations with bars proportional to their activation.", sid="dictionary"),
        _section("Layer by layer", perception_section(e.layers, first=_input_figure(photo)),
                 "Each layer's activations coloured by their first three principal components, from the input to "
                 "the last layer.", sid="layers"),
    ]
    total = sum(e.seconds.values())
    settings = "; ".join(f"{k}: {v}" for k, v in e.settings.items())
    footer = (f'<p class="muted">Computed in {total:.0f} s ({", ".join(f"{k} {v:.0f} s" for k, v in e.seconds.items())}'
              f"). Settings: {esc(settings)}.</p>") if e.seconds else ""
    title = f"What {e.model_name} sees in this photo"
    best = e.predictions[0][0] if e.predictions else ""
    subtitle = (f"The model's answer: <b>{esc(best)}</b>. Below, where that answer comes from, which groups of neurons "
                "carry it, what the neurons at each position detect, and how the image is seen layer by layer.")
    return _blocks_page(title, "".join(sections) + footer, subtitle)


def explain(model: Model | str, image: ImageLike, layer: str | None = None,
            classes: Sequence[ClassLike] | ClassLike | None = None, n_groups: int = 6, *,
            groups_layer: str | None = None, dictionary_layer: str | None = None, top: int = 5, n_classes: int = 3,
            k: int = 4, icon_size: int = 64, icon_steps: int = 128, group_steps: int | None = None,
            attribution_steps: int = 32, integrated: bool = True, n_channels: int = 3,
            cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
            log: Callable[[str], None] | None = None, return_data: bool = False) -> HTMLView | Explanation:
    """Explain one photo: everything the Building Blocks show, computed and laid out on one page.

    * the ``top`` (5) predicted classes;
    * where each of ``classes`` (default: the ``n_classes`` top predictions) comes from: spatial attribution at
      ``layer`` overlaid on the photo (:func:`attribution_maps`: integrated gradients with ``attribution_steps``
      steps, or activation x gradient with ``integrated=False``), and channel attribution with the top
      ``n_channels`` positive and negative channels as icons;
    * which neuron groups carry them: :func:`luminate.analysis.groups.explain_groups` at ``groups_layer`` with
      ``n_groups`` groups, ``icon_size`` px icons and ``group_steps`` steps (default ``icon_steps``);
    * a semantic dictionary of ``dictionary_layer`` (top ``k`` channels per position);
    * the layer-by-layer strip (:func:`luminate.analysis.perception.layer_by_layer`).

    Layers default to :func:`explain_layers` (EfficientNet-Lite: attribution and dictionary at ``blocks.10``,
    groups at ``head``, whose activations are non-negative as NMF needs; InceptionV1: ``mixed4d``). When ``layer``
    is given, the dictionary defaults to it too. The dictionary's and the channel attribution's icons come from
    the sprite cache (``cache_dir``, see :func:`luminate.analysis.sprites.channel_icons`): with both on one layer,
    channels are rendered once, and a later run renders only channels no earlier run needed.

    Cost: the channel icons dominate (about 90 for a 14x14 dictionary with ``k=4``, rendered 32 per batch for
    ``icon_steps`` steps); the group icons add one batch of ``n_groups``. Measured for EfficientNet-Lite0 and
    flower.jpg on 2 CPU cores (torch 2 threads, idle machine, empty sprite cache): 81 s wall with the defaults
    (dictionary 66 s, groups 10 s, attribution 2 s); ``icon_steps=256`` roughly doubles the icon time. Returns
    the page, or the :class:`Explanation` with ``return_data=True``.
    """
    from luminate.analysis.dictionary import semantic_dictionary
    from luminate.analysis.groups import explain_groups
    from luminate.analysis.perception import image_input, layer_by_layer

    say = log or (lambda message: None)
    model = as_model(model)
    defaults = explain_layers(model)
    dictionary_layer = dictionary_layer or layer or defaults["dictionary"]
    layer = layer or defaults["attribution"]
    groups_layer = groups_layer or defaults["groups"]
    for name in (layer, groups_layer, dictionary_layer):
        model.layer_info(name)  # unknown names fail here, with the closest names, before any work
    x = image_input(model, image)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise ValueError(f"{model.name} does not output class logits [N, classes]; explain needs a classifier")
    probs = logits.softmax(-1)[0].cpu()
    values, indices = probs.topk(min(top, probs.numel()))
    predictions = [(class_name(model, i), float(p)) for i, p in zip(indices.tolist(), values.tolist())]
    wanted = resolve_classes(model, classes, x, n_classes)
    say(f"top classes: {', '.join(f'{n} {p:.2f}' for n, p in predictions)}")

    say(f"attribution at {layer} for {', '.join(class_name(model, i) for i in wanted)}")
    maps = attribution_maps(model, x, layer, wanted, integrated=integrated, n_steps=attribution_steps)
    lap("attribution")
    say(f"semantic dictionary of {dictionary_layer}")
    dictionary = semantic_dictionary(model, x, dictionary_layer, k=k, icon_size=icon_size, icon_steps=icon_steps,
                                     cache_dir=cache_dir, progress=progress)
    if dictionary_layer == layer:
        maps.icons.update(dictionary.icons)
    lap("dictionary")
    say("channel icons for attribution")
    add_channel_icons(model, maps, n_channels, icon_size, icon_steps, cache_dir, progress)
    lap("channel icons")
    say(f"neuron groups at {groups_layer}")
    groups = explain_groups(model, x, groups_layer, n_groups=n_groups, classes=wanted, size=icon_size,
                            steps=group_steps or icon_steps, seed=seed, progress=progress)
    lap("groups")
    layers = layer_by_layer(model, x)
    lap("layers")
    method = f"integrated gradients, {attribution_steps} steps" if integrated else "activation x gradient"
    settings = {"attribution": f"{layer} ({method})", "groups": f"{n_groups} at {groups_layer}",
                "dictionary": f"top {k} at {dictionary_layer}", "icons": f"{icon_size} px, {icon_steps} steps",
                "seed": seed}
    result = Explanation(image=x.detach().cpu(), model_name=model.name, predictions=predictions, attribution=maps,
                         groups=groups, dictionary=dictionary, layers=layers, settings=settings, seconds=seconds)
    return result if return_data else explain_view(result)
