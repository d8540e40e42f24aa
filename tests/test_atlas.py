"""Atlas back half: icons (batched, cached), the Atlas pipelines, the canvas, the zoomable page and the CLI."""

import contextlib
import io
import re
import sys

import numpy as np
import pytest
import torch

from luminate.atlas import ActivationStore
from luminate.atlas.atlas import (BAD_FILES, Atlas, AtlasCell, activation_atlas, auto_grid, auto_min_count,
                                  class_atlas, compare_atlas, demo_images)
from luminate.cli import main
from luminate.views.atlas import atlas_html, sample_thumbnails, write_atlas

icons_module = sys.modules["luminate.atlas.icons"]
render_icons = icons_module.render_icons

LAYER = "blocks.10"
N_IMAGES = 48
TINY = dict(icon_size=32, steps=2, progress=False)  # icons: 32 px, 2 steps (behaviour, not beauty)
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """``luminate collect`` over 48 generated images plus a corrupt JPEG, a text file named .png and an empty
    file: (exit code, stdout, stderr, store)."""
    root = tmp_path_factory.mktemp("atlas")
    images = demo_images(root / "images", N_IMAGES, seed=1, size=(64, 128), bad_files=True)
    code, out, err = run_cli(["collect", "efficientnet_lite0", str(images), "--layer", LAYER, "-o",
                              str(root / "store"), "--batch-size", "16", "--workers", "0", "--quiet"])
    return code, out, err, ActivationStore(root / "store")


@pytest.fixture(scope="module")
def store(collected):
    return collected[3]


@pytest.fixture(scope="module")
def atlas(store, lite0, tmp_path_factory):
    return activation_atlas(store, lite0, grid_size=3, min_count=1, cache_dir=tmp_path_factory.mktemp("icons"),
                            **TINY)


# ----- the CLI -----------------------------------------------------------------------------------------


def test_collect_cli_names_the_unreadable_files(collected):
    code, out, err, store = collected
    assert code == 0
    assert f"{N_IMAGES} rows" in out
    line = next(line for line in err.splitlines() if line.startswith("skipped"))
    assert line.startswith(f"skipped {len(BAD_FILES)} unreadable files: ")
    for name in BAD_FILES:
        assert f"{name} (" in line
    assert len(store) == N_IMAGES and {n for n, _ in store.skipped} == set(BAD_FILES)


def test_atlas_cli_writes_a_self_contained_page_and_png(store, tmp_path):
    html, png = tmp_path / "atlas.html", tmp_path / "atlas.png"
    code, out, err = run_cli(["atlas", str(store.path), "-o", str(html), "--png", str(png), "--grid", "3",
                              "--icon-size", "32", "--steps", "2", "--cache", str(tmp_path / "icons"), "--quiet"])
    assert code == 0, err
    text = html.read_text()
    assert html.stat().st_size > 20_000 and "data:image/jpeg;base64," in text
    assert not REMOTE.search(text)
    assert "atlas.html" in out
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (96, 96)
    code, _, err = run_cli(["atlas", str(store.path), "--class", "no such class", "-o", str(html)])
    assert code == 2 and "no such class" in err


# ----- icons ---------------------------------------------------------------------------------------------


def test_icon_cache_hit_renders_nothing(lite0, store, tmp_path, monkeypatch):
    calls = []
    from luminate.units import render as units_render

    real = units_render.render

    def counting(model, objective, param=None, **kwargs):
        calls.append(param.batch)
        return real(model, objective, param=param, **kwargs)

    monkeypatch.setattr(units_render, "render", counting)
    dirs = torch.from_numpy(store.activations(LAYER)[:5].copy())
    cache = tmp_path / "cache"
    first = render_icons(lite0, LAYER, dirs, size=32, steps=2, batch_size=4, cache_dir=cache, progress=False)
    assert calls == [4, 1] and first.shape == (5, 3, 32, 32)   # batched: one render per batch, not per icon
    assert len(list(cache.glob("*/*.png"))) == 5
    again = render_icons(lite0, LAYER, dirs, size=32, steps=2, batch_size=4, cache_dir=cache, progress=False)
    assert calls == [4, 1] and torch.equal(first, again)      # all five from the cache
    more = torch.cat([dirs, dirs[:1] * 2])
    render_icons(lite0, LAYER, more, size=32, steps=2, batch_size=4, cache_dir=cache, progress=False)
    assert calls == [4, 1, 1]                                  # only the new direction
    render_icons(lite0, LAYER, dirs[:2], size=32, steps=3, batch_size=4, cache_dir=cache, progress=False)
    assert calls == [4, 1, 1, 2]                               # other settings, other keys


def test_no_cache_means_no_cache(lite0, store, tmp_path):
    """``cache_dir=False`` caches nothing (``None`` is the default cache): the renderer reads the same meaning."""
    import os
    from pathlib import Path

    renders = Path(os.environ["LUMINATE_CACHE"]) / "renders"
    before = sorted(renders.rglob("*.png")) if renders.is_dir() else []
    nothing = activation_atlas(store, lite0, grid_size=2, min_count=1, cache_dir=False, **TINY)
    assert nothing.settings["cache_dir"] is None and len(nothing.cells) >= 1
    assert (sorted(renders.rglob("*.png")) if renders.is_dir() else []) == before
    folder = activation_atlas(store, lite0, grid_size=2, min_count=1, cache_dir=tmp_path / "icons", **TINY)
    assert folder.settings["cache_dir"] == str(tmp_path / "icons") and any((tmp_path / "icons").rglob("*.png"))


def test_more_attempts_keep_the_best_icon(lite0, store):
    dirs = store.activations(LAYER)[:3]
    one, s1 = render_icons(lite0, LAYER, dirs, size=32, steps=2, attempts=1, progress=False, scores=True)
    two, s2 = render_icons(lite0, LAYER, dirs, size=32, steps=2, attempts=2, progress=False, scores=True)
    assert torch.all(s2 >= s1) and torch.isfinite(s2).all()
    kept = s2 == s1
    assert torch.equal(two[kept], one[kept])
    with pytest.raises(ValueError, match="112 channels"):
        render_icons(lite0, LAYER, dirs[:, :10], size=32, steps=1, progress=False)


# ----- the Atlas -----------------------------------------------------------------------------------------


def test_canvas_orientation_is_a_scatter_plot():
    red, green = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)
    red[0], green[1] = 1, 1
    cells = [AtlasCell(0, 0, 5, np.zeros(2), np.arange(5)), AtlasCell(2, 1, 6, np.zeros(2), np.arange(6))]
    atlas = Atlas("all", 3, cells, torch.stack([red, green]), np.zeros((11, 2)), np.arange(11))
    canvas = atlas.canvas()
    assert canvas.shape == (3, 12, 12)
    assert canvas[:, 8:12, 0:4].equal(red)      # (i=0, j=0): bottom-left
    assert canvas[:, 4:8, 8:12].equal(green)    # (i=2, j=1): right column, second row from the bottom
    assert canvas[:, 0:4, :].eq(1).all()        # the empty top row is white
    assert atlas.canvas_position(cells[1]) == (4, 8)


def test_grid_and_threshold_adapt_to_the_number_of_points():
    assert auto_grid(240) == 8 and auto_min_count(240, 8) == 1
    assert auto_grid(100_000) == 20 and auto_min_count(100_000, 20) == 10    # Lucid's notebook
    assert auto_grid(100_000, cap=8) == 8 and auto_min_count(400_000, 8, cap=4) == 4
    assert auto_grid(10) == 3


def test_activation_atlas_cells(atlas, store):
    assert atlas.kind == "all" and atlas.grid_size == 3 and len(atlas.cells) >= 2
    assert atlas.icons.shape == (len(atlas.cells), 3, 32, 32)
    assert sum(c.count for c in atlas.cells) <= len(store) == len(atlas.rows)
    acts = store.activations(LAYER)
    for cell in atlas.cells:
        assert cell.count == len(cell.rows) > 1
        np.testing.assert_allclose(cell.mean, acts[cell.rows].mean(0), rtol=1e-4, atol=1e-5)
        assert 1 <= len(cell.samples) <= 6 and set(cell.samples) <= set(cell.rows.tolist())
        # top classes are the largest mean attributions over the cell's rows
        mean_attr = store.attributions(LAYER, cell.rows).astype(np.float64).mean(0)
        assert cell.top_classes[0][0] == int(mean_attr.argmax())
        assert cell.top_classes[0][1] == store.labels[int(mean_attr.argmax())]
    samples = atlas.sample_images(atlas.cells[0], store)
    assert len(samples) == len(atlas.cells[0].samples)
    grid = store.layer_info(LAYER)["grid"]
    for name, path, (y, x) in samples:
        assert name not in BAD_FILES and path.is_file() and 0 <= y < grid[0] and 0 <= x < grid[1]
    assert "Activation atlas" in atlas._repr_html_() and atlas._repr_png_()[:4] == b"\x89PNG"


def test_class_and_comparison_atlases(store, lite0, tmp_path):
    attr = store.attributions(LAYER).astype(np.float32)
    winners = np.bincount(attr.argmax(1), minlength=attr.shape[1])
    a, b = (int(c) for c in np.argsort(-winners)[:2])
    cls = class_atlas(store, store.labels[a], lite0, grid_size=3, min_count=0, attempts=1, cache_dir=tmp_path, **TINY)
    assert cls.kind == "class" and cls.labels == [store.labels[a]] and len(cls.cells) >= 1
    assert set(np.nonzero(attr.argmax(1) == a)[0]) <= set(cls.rows.tolist())

    cmp = compare_atlas(store, a, b, lite0, grid_size=4, min_count=0, attempts=1, cache_dir=tmp_path, **TINY)
    assert cmp.kind == "compare" and cmp.labels == [store.labels[a], store.labels[b]] and len(cmp.cells) >= 2
    assert cmp.extent == ((-1.0, 1.0), (0.0, 1.0)) and cmp.layout[:, 0].min() >= -1 and cmp.layout[:, 0].max() <= 1
    # cells further right hold points that add more to b than to a
    diff = {c.i: (attr[c.rows, b] - attr[c.rows, a]).mean() for c in cmp.cells}
    left, right = min(diff), max(diff)
    assert right > left and diff[right] > diff[left]


# ----- the page ------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_page_hover_shows_the_cell(atlas, store, tmp_path, page):
    path = write_atlas(atlas, tmp_path / "atlas.html", store)
    text = path.read_text()
    assert not REMOTE.search(text)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("img.icon").count() == len(atlas.cells)
    k = max(range(len(atlas.cells)), key=lambda n: atlas.cells[n].count)
    cell = atlas.cells[k]
    page.hover(f'img.icon[data-cell="{k}"]')
    assert page.get_attribute("#detail", "data-cell") == str(k)
    detail = page.inner_text("#detail")
    assert f"Cell ({cell.i}, {cell.j})" in detail and f"{cell.count} points" in detail
    assert cell.top_classes[0][1] in detail
    assert page.locator("#detail .thumbs img").count() == len(cell.samples)
    assert page.evaluate("document.querySelector('#detail .thumbs img').src").startswith("data:image/jpeg")
    zoom = float(page.get_attribute("#viewport", "data-zoom"))
    page.click("#zoom-in")
    assert float(page.get_attribute("#viewport", "data-zoom")) == pytest.approx(zoom * 1.25, rel=1e-3)
    page.mouse.move(300, 400)
    page.mouse.wheel(0, 400)
    assert float(page.get_attribute("#viewport", "data-zoom")) < zoom * 1.25
    assert page.remote_requests == []


def test_thumbnails_skip_missing_images(atlas, store):
    rows = [r for c in atlas.cells for r in c.samples]
    path = store.image_path(store.meta(rows[:1])["image"][0])
    moved = path.with_suffix(".moved")
    path.rename(moved)
    try:
        thumbs, missing = sample_thumbnails(atlas, store)
        html = atlas_html(atlas, store)
    finally:
        moved.rename(path)
    assert missing >= 1 and rows[0] not in thumbs and len(thumbs) == len(set(rows)) - missing
    assert "could not be read" in html
