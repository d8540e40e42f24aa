"""The render loop: seeds repeat, objectives rise, thresholds, interruption, results that save and show."""

import pytest
import torch

from luminate import objectives as obj
from luminate import param as P
from luminate.activations import activations
from luminate.render import render


def quick(model, objective, **kw):
    kw.setdefault("steps", 12)
    kw.setdefault("size", 48)
    return render(model, objective, progress=False, **kw)


def test_same_seed_same_image_other_seed_other_image(lite0):
    a = quick(lite0, "blocks.4:3", seed=5)
    b = quick(lite0, "blocks.4:3", seed=5)
    c = quick(lite0, "blocks.4:3", seed=6)
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.history, b.history)
    assert not torch.equal(a.image, c.image)
    assert a.settings["seed"] == 5


def test_seed_none_is_recorded_and_repeatable(lite0):
    a = quick(lite0, "blocks.4:3", seed=None, steps=3)
    b = quick(lite0, "blocks.4:3", seed=a.settings["seed"], steps=3)
    assert torch.equal(a.image, b.image)


def test_render_leaves_global_rng_alone(lite0):
    state = torch.get_rng_state()
    quick(lite0, "blocks.4:3", seed=1, steps=2)
    assert torch.equal(state, torch.get_rng_state())


def test_channel_objective_rises(lite0):
    r = quick(lite0, obj.channel("blocks.6", 11), steps=40, size=64, seed=0)
    assert r.history.shape == (40, 1)
    assert r.history[-5:].mean() > r.history[:3].mean() + 1.0


def test_thresholds_record_images_after_that_many_steps(lite0):
    r = quick(lite0, "blocks.4:3", steps=10, thresholds=(0, 4, 10), seed=0)
    assert r.thresholds == [0, 4, 10] and len(r.images) == 3
    again = quick(lite0, "blocks.4:3", steps=4, seed=0)
    assert torch.equal(r.images[1], again.image)
    assert r.images[0].std() < r.images[2].std()  # starts near uniform grey


def test_callback_can_stop_and_the_result_keeps_what_was_made(lite0):
    seen = []
    r = quick(lite0, "blocks.4:3", steps=50, callback=lambda step, images, scores: seen.append(step) or step >= 5)
    assert r.interrupted and len(r.history) == 5 and r.thresholds == [5]
    assert seen == [1, 2, 3, 4, 5]


def test_bad_channel_fails_before_any_step(lite0):
    with pytest.raises(IndexError, match=r"0\.\.111"):
        quick(lite0, "blocks.9:500")
    with pytest.raises(KeyError, match="blocks.9"):
        quick(lite0, "block.9:5")


def test_batch_targets_and_expression(lite0):
    objective = obj.parse("blocks.5:3 - 0.5*blocks.5:7")
    r = quick(lite0, objective, batch=2, steps=8)
    assert r.image.shape == (2, 3, 48, 48)
    r = quick(lite0, obj.channel("blocks.5", 3, batch=0) - obj.channel("blocks.5", 3, batch=1),
              param=P.image(40, batch=2), steps=20)
    assert r.history.shape == (20, 2)
    assert r.history[-1, 0] > r.history[0, 0] and r.history[-1, 1] > r.history[0, 1]


def test_result_saves_gif_and_png(lite0, tmp_path):
    r = quick(lite0, "blocks.4:3", steps=6, frames_every=2)
    assert len(r.frames) == 3
    assert r.save(tmp_path / "x.png").stat().st_size > 0
    assert r.save_gif(tmp_path / "x.gif").stat().st_size > 0
    assert r._repr_png_().startswith(b"\x89PNG")
    assert "blocks.4" in repr(r)


def test_custom_param_and_no_transforms(lite0):
    r = quick(lite0, "blocks.4:3", param=P.image(32, fft=False, decorrelate=False), transforms=[], steps=5)
    assert r.image.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_channel_visualization_beats_every_sample_photo(lite0, flower_path, china_path):
    layer, channel = "blocks.9", None
    photos = torch.cat([lite0.preprocess(flower_path), lite0.preprocess(china_path)])
    photo_acts = activations(lite0, photos, layer)
    channel = int(photo_acts.mean((0, 2, 3)).argmax())
    r = render(lite0, obj.channel(layer, channel), size=128, steps=128, seed=0, progress=False)
    vis_act = activations(lite0, r.image, layer)[:, channel].mean()
    assert vis_act > photo_acts[:, channel].mean((1, 2)).max()
