"""Building Blocks analyses: sprite cache, semantic dictionary, activation grid, layer-by-layer view, neuron groups."""

import copy
import json

import pytest
import torch

from luminate import param as P
from luminate.activations import activations
from luminate.analysis import sprites
from luminate.analysis.dictionary import semantic_dictionary
from luminate.analysis.grid import Minibatch, activation_grid, direction_scores
from luminate.analysis.groups import explain_groups, group_icons
from luminate.analysis.perception import default_layers, layer_by_layer
from luminate.images import load_image
from luminate.units import render as units_render


class _Rendered:
    interrupted = False

    def __init__(self, image):
        self.image = image


@pytest.fixture
def render_calls(monkeypatch):
    """Count the renders the sprite cache makes (their batch sizes); the renders are real."""
    calls = []
    real = units_render.render

    def counting(model, objective, param, **kw):
        calls.append(param.batch)
        return real(model, objective, param, **kw)

    monkeypatch.setattr(units_render, "render", counting)
    return calls


@pytest.fixture
def fake_render(monkeypatch):
    """Replace the sprite cache's renders with random images (for tests about everything but the icons' pixels)."""
    calls = []

    def fake(model, objective, param, **kw):
        calls.append(param.batch)
        return _Rendered(torch.rand(param.batch, 3, *param.size, generator=torch.Generator().manual_seed(len(calls))))

    monkeypatch.setattr(units_render, "render", fake)
    return calls


def icons(model, channels, cache, **kw):
    kw = {"size": 16, "steps": 2, "progress": False, **kw}
    return sprites.channel_icons(model, "blocks.2", channels, cache_dir=cache, **kw)


def test_sprite_cache_renders_only_missing_channels(lite0, tmp_path, render_calls):
    first = icons(lite0, [0, 3, 5], tmp_path)
    assert render_calls == [3]
    assert sorted(first) == [0, 3, 5] and all(t.shape == (3, 16, 16) for t in first.values())
    assert all(t.min() >= 0 and t.max() <= 1 for t in first.values())

    again = icons(lite0, [5, 0, 3], tmp_path)
    assert render_calls == [3], "a cache hit must not render"
    for c in first:
        assert torch.equal(first[c], again[c])

    more = icons(lite0, [0, 3, 5, 7, 9], tmp_path)
    assert render_calls == [3, 2], "only the two missing channels are rendered"
    assert torch.equal(more[3], first[3])

    indexes = [json.loads(png.with_suffix(".json").read_text()) for png in tmp_path.rglob("*.png")]
    assert sorted(i["settings"]["name"] for i in indexes) == [f"unit {c}" for c in (0, 3, 5, 7, 9)]
    assert all(i["present"] == [0] and i["settings"]["layer"] == "blocks.2" for i in indexes)


def test_sprite_cache_misses_on_new_settings_or_weights(lite0, tmp_path, render_calls):
    icons(lite0, [1, 2], tmp_path)
    icons(lite0, [1, 2], tmp_path, steps=3)
    icons(lite0, [1, 2], tmp_path, seed=1)
    assert render_calls == [2, 2, 2]

    model = copy.deepcopy(lite0)
    assert model.weights_fingerprint() == lite0.weights_fingerprint()
    icons(model, [1, 2], tmp_path)
    assert render_calls == [2, 2, 2], "identical weights share the cache"
    with torch.no_grad():
        model.network.blocks[14].project.conv.weight[0, 0, 0, 0] += 1e-3   # a layer deeper than blocks.2
    assert model.weights_fingerprint() != lite0.weights_fingerprint()
    icons(model, [1, 2], tmp_path)
    assert render_calls == [2, 2, 2, 2]


def test_weights_fingerprint_is_memoized_and_follows_in_place_changes(lite0):
    model = copy.deepcopy(lite0)
    key = model.weights_fingerprint()
    assert model.weights_fingerprint() == key
    with torch.no_grad():
        model.network.stem.conv.weight[0, 0, 0, 0] += 1.0
    assert model.weights_fingerprint() != key
    with torch.no_grad():
        model.network.stem.conv.weight[0, 0, 0, 0] -= 1.0
    assert model.weights_fingerprint() == key


def test_semantic_dictionary_matches_topk(lite0, flower_path, tmp_path, fake_render):
    d = semantic_dictionary(lite0, flower_path, "blocks.11", k=4, icon_size=16, icon_steps=2, cache_dir=tmp_path,
                            progress=False)
    acts = activations(lite0, lite0.preprocess(flower_path), "blocks.11")[0]
    assert torch.allclose(d.activations, acts)
    assert d.top_channels.shape == (7, 7, 4) and d.top_channels.dtype == torch.int64
    assert torch.equal(d.top_channels[..., 0], acts.argmax(0))
    top = acts.topk(4, dim=0)
    assert torch.allclose(d.top_values, top.values.permute(1, 2, 0))
    assert (d.top_values[..., :-1] >= d.top_values[..., 1:]).all()
    assert set(d.icons) == set(d.top_channels.flatten().tolist())
    assert d.image.shape == (1, 3, 224, 224) and d.model_name == "efficientnet_lite0"
    r, c = d.strongest_position
    assert d.top_values[r, c, 0] == acts.max()
    assert sum(fake_render) == len(d.icons) and all(t.shape == (3, 16, 16) for t in d.icons.values())


def test_minibatch_view_draws_distinct_items():
    inner = P.image(8, batch=10)
    view = Minibatch(inner, 4, torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(20):
        assert view().shape == (4, 3, 8, 8)
        assert len(set(view.index.tolist())) == 4
        seen.update(view.index.tolist())
        view.advance()
    assert seen == set(range(10))
    view.select([9, 0, 1, 2])
    assert torch.allclose(view(), inner()[[9, 0, 1, 2]])


def test_activation_grid_optimizes_every_cell(lite0, flower_path):
    x = load_image(flower_path, 96)                       # blocks.11 is 3 x 3 at 96 px
    grid = activation_grid(lite0, x, "blocks.11", cell_size=16, n_groups=3, steps=24, minibatch=4, progress=False)
    assert grid.activations.shape == (192, 3, 3)
    assert grid.cells.shape == (3, 3, 3, 16, 16)
    assert grid.cells.min() >= 0 and grid.cells.max() <= 1
    assert grid.groups.shape == (3, 3, 3) and torch.allclose(grid.groups.flatten(0, 1).max(0).values, torch.ones(3))
    assert grid.settings["minibatch"] == 4 and grid.settings["steps"] == 24
    assert (grid.scores > grid.initial_scores).all(), "every cell's direction objective must rise"
    cells = grid.cells.flatten(0, 1).flatten(1)
    dist = torch.cdist(cells, cells)
    assert dist[~torch.eye(9, dtype=torch.bool)].min() > 0.1, "cells differ from each other"
    assert grid.montage().shape == (3, 48, 48)


def test_layer_by_layer(lite0, flower_path):
    views = layer_by_layer(lite0, flower_path)
    names = [v.name for v in views]
    assert names == ["stem"] + [f"blocks.{i}" for i in range(16)] + ["head"] == default_layers(lite0)
    for v in views:
        info = lite0.layer_info(v.name)
        assert tuple(v.activations.shape) == info.shape
        assert v.summary.shape == (3, *info.shape[1:]) and v.summary.dtype == torch.float32
        assert v.summary.min() >= 0 and v.summary.max() <= 1
        assert v.summary.std() > 0.05, f"{v.name}: summary is flat"
        assert 0 < v.explained <= 1
    norm = layer_by_layer(lite0, flower_path, layers=["blocks.5"], summary="norm")[0]
    assert torch.equal(norm.summary[0], norm.summary[2])
    n = norm.activations.norm(dim=0)
    assert norm.summary[0].flatten()[n.flatten().argmax()] == 1
    with pytest.raises(ValueError, match="spatial"):
        layer_by_layer(lite0, flower_path, layers=["logits"])


def _raw_scores(model, layer, dirs, size, seed=0):
    start = P.image(size, batch=dirs.shape[0])
    start.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return direction_scores(model, start(), layer, dirs)


def test_group_icons_raise_their_directions(lite0, flower_path):
    acts = activations(lite0, lite0.preprocess(flower_path), "blocks.11")[0]      # [192, 7, 7]
    dirs = acts.flatten(1)[:, [0, 24, 48]].T.clamp_min(0)                         # three positions' vectors
    out = group_icons(lite0, "blocks.11", dirs, size=32, steps=16, progress=False)
    assert out.shape == (3, 3, 32, 32)
    before = _raw_scores(lite0, "blocks.11", dirs, 32)
    after = direction_scores(lite0, out, "blocks.11", dirs)
    assert (after > before).all()


def test_explain_groups(lite0, flower_path):
    layer = "blocks.11.depthwise"                                                  # post-ReLU6: NMF-ready
    view = explain_groups(lite0, flower_path, layer, n_groups=3, size=32, steps=8, progress=False)
    c = lite0.layer_info(layer).channels
    assert view.spatial.shape == (3, 7, 7) and view.directions.shape == (3, c)
    assert view.icons.shape == (3, 3, 32, 32) and view.icons.min() >= 0 and view.icons.max() <= 1
    assert view.attributions.shape == (3, 3) and len(view.classes) == 3
    assert view.classes[0] == "daisy" and view.class_indices[0] == lite0.class_index("daisy")
    assert view.image.shape == (1, 3, 224, 224) and view.model_name == "efficientnet_lite0"
    # the group directions are the NMF components of the activations
    acts = activations(lite0, view.image, layer)[0]
    rebuilt = torch.einsum("ghw,gc->chw", view.spatial, view.directions)
    assert (rebuilt - acts).norm() < 0.9 * acts.norm()
    named = explain_groups(lite0, view.image, layer, n_groups=3, classes=[985, "bee"], size=32, steps=1,
                           progress=False)
    assert named.classes == ["daisy", "bee"] and named.attributions.shape == (3, 2)
    assert torch.equal(named.spatial, view.spatial)
    assert torch.allclose(named.attributions[:, 0], view.attributions[:, 0], rtol=1e-4, atol=1e-4)
