"""Units are directions: the one renderer of directions at a layer (luminate.units.render)."""

import pytest
import torch

from luminate import objectives as obj
from luminate import param as P
from luminate.cache import RenderCache, dequantize, quantize
from luminate.models import wrap
from luminate.transforms import compose, default_transforms
from luminate.units import Directions, RenderSettings, direction_keys, render_directions
from luminate.units import render as units_render

LAYER = "2"
SMALL = RenderSettings(size=16, steps=3, batch=4)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU())
    return wrap(net, 16, value_range=(0, 1))


@pytest.fixture
def calls(monkeypatch):
    """The keyword arguments of every render the renderer makes (the renders are real)."""
    seen = []
    real = units_render.render

    def counting(model, objective, param, **kw):
        seen.append({**kw, "batch": param.batch})
        return real(model, objective, param, **kw)

    monkeypatch.setattr(units_render, "render", counting)
    return seen


def test_a_one_hot_unit_is_rendered_with_the_channel_objective(tiny):
    units = Directions.for_units(LAYER, [1, 4], channels=6)
    images = render_directions(tiny, units, SMALL, cache=False, progress=False)
    plain = units_render.render(tiny, obj.channels(LAYER, [1, 4]), P.image(16, batch=2), steps=3, progress=False)
    assert images.shape == (2, 3, 16, 16)
    assert torch.equal(images, dequantize(quantize(plain.image[:, :3])))


def test_the_key_records_what_ran(tiny, calls, tmp_path):
    units = Directions.for_units(LAYER, [0, 2, 5], channels=6)
    render_directions(tiny, units, SMALL.replace(batch=2), cache=tmp_path, progress=False)
    assert [c["batch"] for c in calls] == [2, 1] and all(c["steps"] == 3 and c["seed"] == 0 for c in calls)
    fields = SMALL.replace(batch=2).key_fields(tiny)
    assert fields["transforms"] == repr(calls[0]["transforms"]) == repr(compose(default_transforms()))
    assert fields["steps"] == 3 and fields["batch"] == 2
    keys = direction_keys(tiny, units, SMALL.replace(batch=2))
    assert len(set(keys)) == 3 and all(key in RenderCache(tmp_path) for key in keys)
    assert RenderCache(tmp_path).get(keys[0]).settings["steps"] == 3
    for other in (SMALL.replace(batch=2, steps=4), SMALL.replace(batch=2, seed=1), SMALL.replace(batch=3),
                  SMALL.replace(batch=2, transforms="standard")):
        assert not set(direction_keys(tiny, units, other)) & set(keys), other
    vectors = Directions.for_vectors(LAYER, units.vectors, kind="feature")
    assert not set(direction_keys(tiny, vectors, SMALL.replace(batch=2))) & set(keys), "objective is keyed"


def test_cached_directions_render_nothing_and_a_damaged_entry_is_rendered_again(tiny, calls, tmp_path, caplog):
    units = Directions.for_units(LAYER, [0, 3], channels=6)
    first = render_directions(tiny, units, SMALL, cache=tmp_path, progress=False)
    again = render_directions(tiny, units, SMALL, cache=tmp_path, progress=False)
    assert len(calls) == 1 and torch.equal(first, again)
    png = RenderCache(tmp_path).path(direction_keys(tiny, units, SMALL)[1])
    data = bytearray(png.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = b"\0" * 16
    png.write_bytes(bytes(data))
    repaired = render_directions(tiny, units, SMALL, cache=tmp_path, progress=False)
    assert len(calls) == 2 and calls[-1]["batch"] == 1, "only the damaged entry is rendered"
    assert torch.equal(repaired[0], first[0]) and "damaged render-cache entry" in caplog.text
    assert torch.equal(render_directions(tiny, units, SMALL, cache=tmp_path, progress=False), repaired)
    assert len(calls) == 2, "the repaired entry is read back"
    assert render_directions(tiny, units, SMALL, cache=False, progress=False).shape == first.shape
    assert len(calls) == 3, "cache=False renders"


def test_a_unit_alone_and_among_others_is_the_same_picture_with_batch_one(tiny):
    alone = render_directions(tiny, Directions.for_units(LAYER, [3], 6), SMALL.replace(batch=1), cache=False,
                              progress=False)
    among = render_directions(tiny, Directions.for_units(LAYER, [1, 3, 5], 6), SMALL.replace(batch=1), cache=False,
                              progress=False)
    assert torch.equal(alone[0], among[1])


def test_tiles_negative_diversity_and_vectors(tiny, tmp_path):
    settings = SMALL.replace(negative=True, diversity=2, cossim_pow=1.0)
    assert settings.tiles == ("positive", "negative", "diversity 1", "diversity 2")
    units = render_directions(tiny, Directions.for_units(LAYER, [0, 1], 6), settings, cache=tmp_path, progress=False)
    assert units.shape == (2, 4, 3, 16, 16) and 0 <= units.min() and units.max() <= 1
    assert not torch.equal(units[:, 0], units[:, 1]), "the negative differs from the positive"
    vectors = Directions.for_vectors(LAYER, torch.randn(3, 6, generator=torch.Generator().manual_seed(0)))
    images, scores = render_directions(tiny, vectors, settings.replace(attempts=2), cache=tmp_path, progress=False,
                                       scores=True)
    assert images.shape == (3, 4, 3, 16, 16) and torch.isfinite(scores).all()
    cached, cached_scores = render_directions(tiny, vectors, settings.replace(attempts=2), cache=tmp_path,
                                              progress=False, scores=True)
    assert torch.equal(cached, images) and torch.allclose(cached_scores, scores)


def test_bad_directions_and_settings_are_refused_clearly(tiny):
    with pytest.raises(ValueError, match="6 channels"):
        render_directions(tiny, Directions.for_vectors(LAYER, torch.ones(2, 5)), SMALL, cache=False)
    with pytest.raises(ValueError, match="out of range"):
        Directions.for_units(LAYER, [6], 6)
    with pytest.raises(ValueError, match="NaN"):
        Directions.for_vectors(LAYER, torch.full((1, 6), float("nan")))
    with pytest.raises(ValueError, match="transforms 'lucid'"):
        RenderSettings(transforms="lucid")
    with pytest.raises(ValueError, match="at least 1"):
        RenderSettings(steps=0)
