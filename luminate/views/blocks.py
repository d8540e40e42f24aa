"""Building Blocks pages: semantic dictionary, activation grid, attribution, neuron groups, perception, explain.

Each ``*_view`` function turns a result computed in :mod:`luminate.analysis` (a semantic dictionary, an activation
grid, :class:`~luminate.analysis.explain.AttributionMaps`, neuron groups, layer views, an
:class:`~luminate.analysis.explain.Explanation`) into an :class:`~luminate.views.html.HTMLView` (``_repr_html_`` in
notebooks, ``.save(path)`` for a file); nothing here computes gradients or renders. Pages are one self-contained
file: images are inline data URLs, the CSS and vanilla JS (``luminate/views/assets/blocks.css``, ``blocks.js``) are
inline, nothing is loaded from the network.

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

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from luminate.images import ImageLike, data_url, to_tensor
from luminate.views.html import HTMLView, asset, esc, img_tag, json_script, page

PHOTO_WIDTH = 320

#: The Building Blocks pages' CSS and script (``luminate/views/assets/blocks.css``, ``blocks.js``).
BLOCKS_CSS = asset("blocks.css")
BLOCKS_JS = asset("blocks.js")


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


def _channel_card(maps, c: int, value: float, vmax: float, icon_px: int) -> str:
    bar = max(2, round(icon_px * abs(value) / vmax)) if vmax > 0 else 2
    color = "#e8772e" if value >= 0 else "#3b7dd8"
    icon = (img_tag(maps.icons[c], width=icon_px, alt=f"channel {c}")
            if c in maps.icons else f'<div style="width:{icon_px}px;height:{icon_px}px" class="muted">no icon</div>')
    return (f'<div class="lm-chan" data-channel="{c}" data-value="{value:.4g}">'
            f'<div class="lm-vbarwrap" style="height:{icon_px}px"><div class="lm-vbar" style="height:{bar}px;'
            f'background:{color}"></div></div>{icon}<div>channel {c}</div><div>{value:+.3g}</div></div>')


def channel_section(maps, n: int = 3, icon_px: int = 72) -> str:
    """Channel attribution: per class (and for the difference of the first two classes' logits, as Lucid's
    AttrChannel), the sorted distribution over channels and the top ``n`` positive and negative channels."""
    rows = []
    for name, values in maps.channel_rows():
        pos, neg = maps.extremes(values, n)
        vmax = float(values.abs().max())
        cards = "".join(_channel_card(maps, c, float(values[c]), vmax, icon_px) for c in pos + neg)
        rows.append(f'<div class="lm-channel-row"><h3 style="font-size:14px;margin:0">{esc(name)}: '
                    f'<span class="muted">{len(values)} channels of {esc(maps.layer)}, sorted</span></h3>'
                    f'{_distribution_svg(values)}<div class="lm-chans">{cards}</div></div>')
    return f'<div class="lm-channel-rows">{"".join(rows)}</div>'


def attribution_section(maps, width: int = PHOTO_WIDTH, n_channels: int = 3, wid: str = "attribution") -> str:
    """The spatial-attribution widget followed by channel attribution, for
    :class:`~luminate.analysis.explain.AttributionMaps`."""
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
    if maps.channel is None:
        return widget
    how = {"layer_integrated_gradients": "integrated gradients from zero activation",
           "gradcam": "Grad-CAM: each channel's mean gradient &times; its activation"}.get(
        maps.method, "activation &times; gradient (linear approximation)")
    channels = (f'<h3 style="margin-top:24px">Which channels of <code>{esc(maps.layer)}</code> carry each class</h3>'
                f'<p class="muted">Attribution ({how}) summed over positions. Orange bars raise the logit, blue bars '
                f"lower it; icons are feature visualizations of the channels.</p>" + channel_section(maps, n_channels))
    return widget + channels


def attribution_view(maps, n_channels: int = 3) -> HTMLView:
    """Page: where in the image each class comes from, and which channels carry it (``maps``:
    :class:`~luminate.analysis.explain.AttributionMaps`, from :func:`luminate.analysis.explain.attribution_maps`).

    Spatial attribution of each class lights up the photo; with two or more classes Lucid's orange/blue hint
    compares the first two. Hover a position to read every class's attribution there. Below, channel attribution:
    the sorted distribution and the top ``n_channels`` positive and negative channels, with their feature
    visualizations when ``maps.icons`` has them (:func:`luminate.analysis.explain.add_channel_icons`).
    """
    lede = (f"How much each position of <code>{esc(maps.layer)}</code> contributes to each class's logit. The photo "
            "is lit where a class's evidence lies; pick a class above the photo, and hover a cell for the numbers.")
    lucid = ("layer_integrated_gradients", "layer_gradient_x_activation")     # the page's own two, named below
    how = "" if maps.method in lucid else f", {maps.method.replace('_', ' ')}"
    title = f"Attribution: {maps.model_name} {maps.layer}{how}"
    return _blocks_page(title, _section("Where each class comes from", attribution_section(maps, n_channels=n_channels),
                                        lede))


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
def explain_view(explanation) -> HTMLView:
    """Page: one photo explained (``explanation``: :class:`~luminate.analysis.explain.Explanation`, from
    :func:`luminate.analysis.explain.explain`): top-5 classes, spatial and channel attribution of the top
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
