"""Building Blocks pages (luminate.views.blocks, computed by luminate.analysis) and their commands (luminate.cli.blocks).

The browser tests open the generated pages in headless Chromium through the ``page`` fixture (which refuses every
network request), hover cells, groups and class buttons, and check that the page reacts and its images are not
blank. Pages are generated once per module with tiny settings (32 px icons, a few steps).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from luminate.analysis import explain as E
from luminate.analysis.attribution import resolve_classes
from luminate.views import blocks as B

LAYER = "blocks.12"
TINY_ICONS = dict(icon_size=32, icon_steps=4)


# ------------------------------------------------------------------------------------------- no browser
def test_orange_blue_colours_each_class():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    hint = B.orange_blue(a, b)
    assert hint.shape == (3, 2, 2)
    r, g, bl = hint[:, 0, 0]
    assert r > g > bl  # orange where a dominates
    r, g, bl = hint[:, 0, 1]
    assert bl > g > r  # blue where b dominates
    assert torch.allclose(hint[:, 1, 1], torch.full((3,), 0.3))  # neither: the 0.3 floor


def test_spotlight_and_red_mask_follow_the_map():
    photo = torch.full((3, 32, 32), 0.8)
    values = torch.zeros(4, 4)
    values[0, 0] = 1.0
    lit = B.spotlight(photo, values)
    assert lit[:, :4, :4].mean() > 2 * lit[:, -8:, -8:].mean()
    masked = B.red_mask(photo, values)
    corner, far = masked[:, :4, :4].mean((1, 2)), masked[:, -8:, -8:].mean((1, 2))
    assert corner[0] > corner[1] + 0.3  # red where the group fires
    assert abs(float(far[0] - far[1])) < 0.05  # untouched colour elsewhere


def test_resolve_classes_names_indices_and_errors(lite0):
    assert resolve_classes(lite0, ["daisy", "985", 1]) == [985, 985, 1]
    with pytest.raises(KeyError, match="daisy"):
        resolve_classes(lite0, ["daisyy"])


def test_daisy_attribution_lies_on_the_flower(lite0, flower_path):
    """Spatial attribution of "daisy" on flower.jpg puts more mass on the (bright, warm) flower than on the dark
    teal background; the flower mask comes from the photo itself."""
    maps = E.attribution_maps(lite0, flower_path, E.explain_layers(lite0)["attribution"], ["daisy"], n_steps=16)
    assert maps.classes == ["daisy"] and maps.spatial.shape == (1, 14, 14)
    x = maps.image[0]
    r, g, b = x
    flower = (r > 0.5) & (r > b + 0.15)
    assert 0.2 < flower.float().mean() < 0.7, "the flower mask should cover part of the photo"
    up = F.interpolate(maps.spatial[None], size=x.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    inside, outside = up[flower].mean(), up[~flower].mean()
    assert inside > outside
    assert inside > 1.5 * outside.clamp_min(0) and inside > 0
    # integrated gradients: attributions add up to about logit(image) - logit(zero activation) (positive here)
    assert maps.spatial.sum() > 0


# ------------------------------------------------------------------------------------------- pages
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sprites")


@pytest.fixture(scope="module")
def explain_page(tmp_path_factory, flower_path, cache_dir):
    """``luminate explain`` with tiny settings, through the CLI entry point: (path, stdout)."""
    import contextlib
    import io

    from luminate.cli import main

    out = tmp_path_factory.mktemp("explain") / "flower.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["explain", "efficientnet_lite0", flower_path, "-o", str(out), "--icon-size", "32",
                     "--icon-steps", "4", "--groups", "2", "--attribution-steps", "4", "-k", "2", "--top", "2",
                     "--cache", str(cache_dir), "--quiet"])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def pages(tmp_path_factory, lite0, flower_path, explain_page, cache_dir):
    """One page per view, from tiny computations (dictionary icons come from the explain run's cache)."""
    from luminate.analysis.dictionary import semantic_dictionary
    from luminate.analysis.grid import activation_grid
    from luminate.analysis.groups import explain_groups
    from luminate.analysis.perception import image_input, layer_by_layer

    folder = tmp_path_factory.mktemp("pages")
    x = image_input(lite0, flower_path)
    sd = semantic_dictionary(lite0, x, LAYER, k=3, cache_dir=cache_dir, progress=False, **TINY_ICONS)
    ag = activation_grid(lite0, x, LAYER, cell_size=16, n_groups=2, steps=2, minibatch=49, progress=False)
    ngv = explain_groups(lite0, x, "head", n_groups=2, classes=["daisy", "bee"], size=32, steps=4, progress=False)
    views = {
        "dictionary": B.dictionary_view(sd),
        "grid": B.grid_view(ag),
        "attribution": B.attribution_view(E.add_channel_icons(
            lite0, E.attribution_maps(lite0, x, LAYER, ["daisy", "bee"], n_steps=4), 3, TINY_ICONS["icon_size"],
            TINY_ICONS["icon_steps"], cache_dir, False)),
        "groups": B.groups_view(ngv),
        "perception": B.perception_view(layer_by_layer(lite0, x), x, lite0.name),
    }
    return {name: view.save(folder / f"{name}.html") for name, view in views.items()}


@pytest.mark.slow
def test_explain_cli_writes_a_self_contained_page(explain_page):
    path, stdout = explain_page
    html = path.read_text()
    assert "daisy" in stdout and "daisy" in html
    assert len(html.encode()) > 50_000
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html
    for kind in ("attribution", "groups", "dictionary"):
        assert f'data-kind="{kind}"' in html
    for section in ("top", "attribution", "groups", "dictionary", "layers"):
        assert f'id="{section}"' in html


def test_cli_bad_class_name_exits_2(flower_path, tmp_path, capsys):
    from luminate.cli import main

    out = tmp_path / "x.html"
    code = main(["explain", "efficientnet_lite0", flower_path, "--classes", "daisyy", "-o", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("luminate explain: error:") and "daisyy" in err and "daisy" in err.replace("daisyy", "")
    assert not out.exists()


def test_one_way_to_choose_the_attribution_method(flower_path, tmp_path, capsys):
    """``--method`` is the one flag (``--linear`` says what replaced it); ExplainSettings checks the name."""
    from luminate.cli import main

    out = tmp_path / "x.html"
    for command in ("attribute", "explain"):
        with pytest.raises(SystemExit) as exited:
            main([command, "efficientnet_lite0", flower_path, "--linear", "-o", str(out), "--quiet"])
        assert exited.value.code == 2
        assert "--linear was removed: use --method layer_gradient_x_activation" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exited:
            main([command, "efficientnet_lite0", flower_path, "--method", "ig", "-o", str(out), "--quiet"])
        assert exited.value.code == 2 and "valid methods: saliency" in capsys.readouterr().err
    assert not out.exists()
    assert E.ExplainSettings(method="Layer-Gradient-X-Activation").method == "layer_gradient_x_activation"
    with pytest.raises(ValueError, match="valid methods"):
        E.ExplainSettings(method="linear")


def test_cli_help_lists_the_commands(capsys):
    from luminate.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for command in ("dictionary", "grid", "attribute", "groups", "explain"):
        assert command in text


@pytest.mark.slow
def test_views_are_self_contained(pages):
    for name, path in pages.items():
        html = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html, re.I), name
        assert "data:image/" in html, name


# ------------------------------------------------------------------------------------------- browser
PIXEL_STD = """(sel) => Array.from(document.querySelectorAll(sel)).map((img) => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) { s += d[i + k]; s2 += d[i + k] * d[i + k]; n++; }
  const m = s / n; return n ? Math.sqrt(Math.max(0, s2 / n - m * m)) : 0;
})"""


def _open(page, path):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    return errors


def _stds(page, selector):
    values = page.evaluate(PIXEL_STD, selector)
    assert values, f"no images match {selector}"
    return values


def _other_cell(widget):
    """A cell of the widget's first grid other than the selected one (the last one, or the first)."""
    start = widget.get_attribute("data-cell")
    cells = widget.query_selector(".lm-grid").query_selector_all(".lm-cell")
    for cell in (cells[-1], cells[0]):
        y, x = cell.get_attribute("data-y"), cell.get_attribute("data-x")
        if f"{y},{x}" != start:
            return y, x
    raise AssertionError("no second cell")


def _hover_changes_detail(page, kind):
    widget = page.query_selector(f'.lm-widget[data-kind="{kind}"]')
    detail = widget.query_selector(".lm-detail")
    start, before = widget.get_attribute("data-cell"), detail.inner_html()
    assert start and before, f"{kind}: the detail panel starts filled at the strongest position"
    y, x = _other_cell(widget)
    widget.query_selector(f'.lm-cell[data-y="{y}"][data-x="{x}"]').hover()
    assert widget.get_attribute("data-cell") == f"{y},{x}"
    assert detail.get_attribute("data-cell") == f"{y},{x}"
    assert detail.inner_html() != before
    assert f"row {y}, column {x}" in detail.inner_text()
    assert widget.query_selector_all(".lm-cell.on")
    return widget, detail


@pytest.mark.slow
@pytest.mark.browser
def test_dictionary_page_hover(page, pages):
    errors = _open(page, pages["dictionary"])
    widget, detail = _hover_changes_detail(page, "dictionary")
    chans = detail.query_selector_all(".lm-chan")
    assert len(chans) == 3
    values = [float(c.get_attribute("data-value")) for c in chans]
    heights = [c.query_selector(".lm-vbar").bounding_box()["height"] for c in chans]
    assert values == sorted(values, reverse=True)
    assert heights == sorted(heights, reverse=True) and heights[0] > heights[-1] * 0.99
    assert min(_stds(page, ".lm-photo img.lm-base")) > 20
    assert min(_stds(page, ".lm-detail img")) > 1  # icons are images, not flat grey
    assert not errors and page.remote_requests == []


@pytest.mark.slow
@pytest.mark.browser
def test_grid_page_hover(page, pages):
    errors = _open(page, pages["grid"])
    widget, detail = _hover_changes_detail(page, "grid")
    data = json.loads(page.inner_text("#grid-data"))
    y, x = map(int, widget.get_attribute("data-cell").split(","))
    assert detail.query_selector("img").get_attribute("src") == data["cells"][y * data["w"] + x]
    # hovering the montage selects the same position in both grids
    montage = widget.query_selector_all(".lm-photo")[1]
    montage.query_selector('.lm-cell[data-y="0"][data-x="1"]').hover()
    assert widget.get_attribute("data-cell") == "0,1"
    assert len(widget.query_selector_all(".lm-cell.on")) == 2
    assert min(_stds(page, ".lm-photo img")) > 1 and min(_stds(page, ".lm-detail img")) > 1
    assert not errors and page.remote_requests == []


@pytest.mark.slow
@pytest.mark.browser
def test_attribution_page_hover_and_class_switch(page, pages):
    errors = _open(page, pages["attribution"])
    widget, detail = _hover_changes_detail(page, "attribution")
    text = detail.inner_text()
    assert "daisy" in text and "bee" in text
    overlay = widget.query_selector("img.lm-overlay")
    first = overlay.get_attribute("src")
    assert widget.get_attribute("data-overlay") == "daisy"
    widget.query_selector('.lm-pick[data-overlay="bee"]').hover()
    assert widget.get_attribute("data-overlay") == "bee" and overlay.get_attribute("src") != first
    assert min(_stds(page, ".lm-photo img")) > 10
    assert len(page.query_selector_all(".lm-channel-row")) == 3  # daisy, bee, daisy - bee
    assert min(_stds(page, ".lm-channel-row img")) > 1
    assert not errors and page.remote_requests == []


@pytest.mark.slow
@pytest.mark.browser
def test_groups_page_hover(page, pages):
    errors = _open(page, pages["groups"])
    widget, detail = _hover_changes_detail(page, "groups")
    data = json.loads(page.inner_text("#groups-data"))
    overlay = widget.query_selector("img.lm-overlay")
    widget.query_selector('.lm-group[data-g="1"]').hover()
    assert widget.get_attribute("data-group") == "1"
    assert overlay.get_attribute("src") == data["masks"][1]
    assert "Group 1" in detail.inner_text()
    assert min(_stds(page, ".lm-group img")) > 1 and min(_stds(page, ".lm-photo img")) > 10
    assert not errors and page.remote_requests == []


@pytest.mark.slow
@pytest.mark.browser
def test_perception_page(page, pages):
    errors = _open(page, pages["perception"])
    figures = page.query_selector_all(".lm-strip figure")
    assert len(figures) >= 10 and "blocks.12" in page.inner_text(".lm-strip")
    stds = _stds(page, ".lm-strip img")
    assert sum(s > 5 for s in stds) >= len(stds) - 1
    assert not errors and page.remote_requests == []


@pytest.mark.slow
@pytest.mark.browser
def test_explain_page_in_the_browser(page, explain_page):
    path, _ = explain_page
    errors = _open(page, path)
    for kind in ("attribution", "groups", "dictionary"):
        _hover_changes_detail(page, kind)
    shot = page.screenshot(full_page=True)
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20
    assert not errors and page.remote_requests == []
