"""The feature-visualization experiments and the gallery page (tiny settings: they test wiring, not beauty)."""

import torch

from luminate import recipes
from luminate.views.gallery import write_gallery


def test_strongest_channels_skip_dead_ones(lite0):
    channels = recipes.strongest_channels(lite0, "blocks.9", 3)
    assert len(set(channels)) == 3 and all(0 <= c < 112 for c in channels)


def test_default_layer_is_a_middle_block(lite0):
    assert recipes.default_layer(lite0) == "blocks.9"


def test_negative_image_moves_the_channel_both_ways(lite0):
    r = recipes.negative(lite0, "blocks.6", 5, size=48, steps=20, progress=False)
    assert r.image.shape[0] == 2
    # item 0 maximizes the channel, item 1 minimizes it: both contributions rise
    assert (r.history[-1] > r.history[0]).all()


def test_neuron_image_is_focused_channel_image_fills_the_frame(lite0):
    r = recipes.neuron_vs_channel(lite0, "blocks.6", 5, size=64, steps=40, progress=False)
    change = (r.image - 0.5).abs().mean(1)  # [2, H, W]: how far each pixel moved from the grey start
    h, w = change.shape[-2:]
    centre = change[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean((1, 2))
    whole = change.mean((1, 2))
    assert centre[0] / whole[0] > centre[1] / whole[1]


def test_gallery_page_has_every_experiment(lite0, tmp_path):
    experiments = recipes.gallery(lite0, steps=2, size=32, progress=False)
    keys = [e.key for e in experiments]
    assert keys == ["neuron_vs_channel", "channel_pair", "interpolate", "negative", "diverse", "class", "deepdream"]
    assert all(e.images.shape[0] == len(e.captions) for e in experiments)
    page = write_gallery(lite0, experiments, tmp_path / "gallery")
    html = page.read_text()
    assert html.count("<section") == len(experiments) and "http://" not in html and "https://" not in html
    assert (tmp_path / "gallery" / "interpolate.png").exists()
    assert torch.isfinite(experiments[2].images).all()


def test_gallery_opens_in_a_browser_with_every_caption(lite0, tmp_path, page):
    import numpy as np
    from PIL import Image

    experiments = recipes.gallery(lite0, steps=2, size=32, progress=False)
    path = write_gallery(lite0, experiments, tmp_path / "g")
    page.goto(path.as_uri())
    assert page.locator("section.card").count() == len(experiments)
    captions = page.locator("figcaption").all_inner_texts()
    assert captions[0].startswith("neuron blocks.9:") and any("DeepDream" in c for c in captions)
    sizes = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    assert sizes and min(sizes) > 0  # every inline image decoded
    shot = tmp_path / "shot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32).std() > 10
    assert page.remote_requests == []


def test_entry_points_share_one_vocabulary():
    """render, dream, accentuate, caricature and style transfer take seed (default 0), steps, lr, size, progress."""
    import inspect
    import warnings

    from luminate import dream
    from luminate.analysis import inversion
    from luminate.models import wrap
    from luminate.render import render

    entry = [render, dream.dream, recipes.accentuate, inversion.caricature, inversion.style_transfer]
    for fn in entry:
        params = inspect.signature(fn).parameters
        assert {"seed", "steps", "lr", "size", "progress"} <= set(params), fn.__name__
        assert params["seed"].default == 0, fn.__name__
    net = wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()), 16, value_range=(0, 1))
    photo = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    new = dream.dream(net, photo, "1", octaves=1, steps=2, lr=0.02, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = dream.dream(net, photo, "1", octaves=1, steps=2, step_size=0.02, progress=False)
    assert any(issubclass(w.category, DeprecationWarning) and "lr" in str(w.message) for w in caught)
    assert torch.equal(new.image, old.image) and new.settings["lr"] == 0.02
