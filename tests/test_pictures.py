"""The pictures people look at (issue 30): guided unit images keyed and shown first, natural colour contrast, the
mirror drawn into the crop, same-padded stride-2 convolutions folded without a padded copy."""

import math

import pytest
import torch
from torch import nn

from luminate import param as P
from luminate.fold import folded_batchnorm
from luminate.models import wrap
from luminate.transforms import random_crop_resize, random_flip
from luminate.units import Directions, RenderSettings, direction_keys, render_directions
from luminate.units.render import Guide

LAYER = "2"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU())
    return wrap(net, 16, value_range=(0, 1))


def _photos(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g)


def test_chroma_scales_only_the_colour_difference_columns():
    plain, vivid = P.color_correlation(), P.color_correlation(chroma=2.0)
    torch.testing.assert_close(vivid[:, 0], plain[:, 0])
    torch.testing.assert_close(vivid[:, 1:], 2 * plain[:, 1:])
    a, b = P.image(16, chroma=1.0), P.image(16, chroma=2.0)
    b.load_state_dict(a.state_dict())
    grey_a, grey_b = a().mean(1, keepdim=True), b().mean(1, keepdim=True)
    assert float((b() - grey_b).abs().mean()) > 1.3 * float((a() - grey_a).abs().mean())   # more colour contrast
    assert "chroma=2" in repr(b) and "chroma" not in repr(a)
    with pytest.raises(ValueError, match="chroma"):
        P.image(16, chroma=0)


def test_render_default_image_has_natural_chroma(tiny):
    from luminate.render import render

    result = render(tiny, f"{LAYER}:1", steps=2, size=16, progress=False)
    assert f"chroma={P.NATURAL_CHROMA:g}" in result.settings["param"]


def test_the_mirror_drawn_into_the_crop_equals_a_crop_then_a_flip():
    x = torch.rand(6, 3, 20, 20)
    fused = random_crop_resize((0.5, 1.0), 0.15, flip=0.5)(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    two = random_flip(0.5)(random_crop_resize((0.5, 1.0), 0.15)(x, g), g)
    torch.testing.assert_close(fused, two, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fused, random_crop_resize((0.5, 1.0), 0.15)(x, torch.Generator().manual_seed(3)))


def test_a_zoom_below_one_shows_smaller_boxes_at_a_few_sizes_and_reaches_only_the_box():
    x = torch.rand(3, 3, 224, 224, requires_grad=True)
    t = random_crop_resize((0.5, 1.0), 0.15, flip=0.5, zoom=0.5)
    sides = set()
    for seed in range(12):
        y = t(x, torch.Generator().manual_seed(seed))
        assert y.shape[:2] == (3, 3) and y.shape[-1] == y.shape[-2] and y.shape[-1] % 16 == 0
        assert 224 * math.sqrt(0.5) - 16 <= y.shape[-1] <= 224     # a half-size box is shown at 71% of the side
        sides.add(y.shape[-1])
    assert len(sides) > 1                                           # the side varies from step to step
    torch.testing.assert_close(t(x, torch.Generator().manual_seed(4)), t(x, torch.Generator().manual_seed(4)))
    y = random_crop_resize((0.6, 0.6), 0.15, zoom=0.0)(x, torch.Generator().manual_seed(0))
    grad, = torch.autograd.grad(y.sum(), x)
    covered = (grad != 0).flatten(1).sum(1)
    assert covered.tolist() == [3 * round(0.6 * 224) ** 2] * 3     # zoom 0: a pure crop of each item's own box
    assert y.shape[-1] == 128                                       # 134 px rounded to a multiple of 16
    with pytest.raises(ValueError, match="zoom must lie in"):
        random_crop_resize(zoom=1.5)


def test_the_default_transforms_cost_less_than_full_size_steps():
    from luminate.transforms import default_transforms
    (t,) = default_transforms()
    assert t.zoom == 0.5 and t.flip == 0.5
    x = torch.rand(1, 3, 224, 224)
    areas = [t(x, torch.Generator().manual_seed(s)).shape[-1] ** 2 / 224 ** 2 for s in range(64)]
    assert 0.6 < sum(areas) / len(areas) < 0.9                      # about 0.75 of a full-size step's pixels


class _TFSame(nn.Conv2d):
    """TensorFlow "SAME" padding with F.pad, bias ignored (like EfficientNet-Lite's stride-2 convolutions)."""

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        pads = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:]]
        x = nn.functional.pad(x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2))
        return nn.functional.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


@pytest.mark.parametrize("kernel, groups", [(3, 8), (5, 8), (3, 1)])
def test_same_padded_stride_two_convolutions_fold_without_a_padded_copy(kernel, groups):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), _TFSame(8, 8, kernel, stride=2, groups=groups, bias=False),
                        nn.BatchNorm2d(8), nn.ReLU6()).eval().requires_grad_(False)
    net[2].running_mean.uniform_(-0.5, 0.5)
    net[2].running_var.uniform_(0.5, 2.0)
    for side in (16, 17, 15):
        x = torch.rand(2, 3, side, side + 1, requires_grad=True)
        plain = net(x)
        (g_plain,) = torch.autograd.grad(plain.sum(), x)
        with folded_batchnorm(net, size=(16, 16), channels_last=True) as info:
            assert info.pairs == [("1", "2")]
            assert "forward" in net[1].__dict__ and net[2].forward(torch.ones(1)) is not None
            folded = net(x)
            (g_folded,) = torch.autograd.grad(folded.sum(), x)
        torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g_folded, g_plain, rtol=1e-4, atol=1e-5)
        assert "forward" not in net[1].__dict__ and "forward" not in net[2].__dict__


def test_a_guide_is_keyed_by_its_photos_and_weight(tiny):
    units = Directions.for_units(LAYER, [1, 4], channels=6)
    plain = RenderSettings(size=16, steps=3, batch=2)
    guided = plain.replace(guide=Guide(_photos()), mean_colour=True)
    keys = {name: direction_keys(tiny, units, s) for name, s in [
        ("plain", plain), ("guided", guided), ("other photos", guided.replace(guide=Guide(_photos(seed=1)))),
        ("other weight", guided.replace(guide=Guide(_photos(), weight=3.0))), ("again", guided)]}
    assert keys["guided"] == keys["again"]
    assert len({tuple(v) for v in keys.values()}) == 4
    assert plain.kind == "unguided" and guided.kind == "guided"
    with pytest.raises(ValueError, match="negative or diversity"):
        guided.replace(negative=True)
    with pytest.raises(ValueError, match="at least 4"):
        Guide(_photos(2))


def test_a_guide_takes_every_other_top_photo_and_pulls_towards_them(tiny):
    photos = _photos(12)
    units = Directions.for_units(LAYER, [1, 4], channels=6)
    guide = Guide(photos, top_k=3, stride=2, layers=("0",))
    picked = guide.targets(tiny, units)
    from luminate.activations import activations

    pooled = activations(tiny, photos, [LAYER])[LAYER].flatten(2).mean(2)
    for unit, chosen in zip([1, 4], picked):
        order = pooled[:, unit].argsort(descending=True)
        assert chosen.tolist() == order[0:6:2].tolist()
    settings = RenderSettings(size=16, steps=24, batch=2, mean_colour=True)
    far = render_directions(tiny, units, settings, cache=False, progress=False)
    near = render_directions(tiny, units, settings.replace(guide=Guide(photos, weight=50.0, top_k=3, stride=2, layers=("0",))), cache=False,
                             progress=False)
    assert near.shape == far.shape == (2, 3, 16, 16)
    targets = torch.stack([photos[t].mean(0).mean((1, 2)) for t in picked])        # [2, 3] the photos' colour
    gap = lambda ims: float((ims.mean((2, 3)) - targets).abs().mean())
    assert gap(near) < gap(far)


def test_channels_last_weights_for_a_network_without_batchnorm_are_put_back():
    from luminate.fold import channels_last_weights

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3)).eval().requires_grad_(False)
    before = [p for p in net.parameters()]
    x = torch.rand(2, 3, 12, 12)
    plain = net(x)
    with channels_last_weights(net) as swapped:
        assert swapped == 2 and net[0].weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), plain)
    assert all(a is b for a, b in zip(net.parameters(), before))
    with channels_last_weights(net.train()) as swapped:
        assert swapped == 0


def test_shown_images_come_from_the_site_guided_first(tmp_path):
    from luminate.microscope.shown import save_shown, shown_images, shown_scores

    guided, unguided = torch.rand(3, 12, 12), torch.rand(3, 8, 8)
    scores = {3: {"guided": {"path_score": 0.9, "ratio": 2.0, "flagged": False},
                  "unguided": {"path_score": 0.2, "ratio": 9.0, "flagged": True}}}
    path = save_shown(tmp_path, "blocks.9", {3: {"unguided": unguided, "guided": guided}}, scores)
    stamp = path.stat().st_mtime_ns
    first, second = shown_images(tmp_path, "blocks.9", 3)
    assert first.shape == (3, 12, 12) and second.shape == (3, 8, 8)
    assert float((first - guided).abs().max()) <= 0.5 / 255 + 1e-6
    assert shown_scores(tmp_path, "blocks.9", 3)["guided"]["path_score"] == 0.9
    save_shown(tmp_path, "blocks.9", {3: {"unguided": unguided, "guided": guided}}, scores)
    assert path.stat().st_mtime_ns == stamp                       # the same content is not written again
    with pytest.raises(KeyError, match="unit 4"):
        shown_images(tmp_path, "blocks.9", 4)
    with pytest.raises(FileNotFoundError, match="render-units"):
        shown_images(tmp_path, "blocks.10", 3)


def test_direction_scores_of_one_hot_directions_are_the_unit_scores(tiny):
    from luminate.activations import activations
    from luminate.analysis.sanity import direction_scores, sanity_scores

    photos, vis = _photos(12), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    units = sanity_scores(tiny, LAYER, [1, 4], photos, visualizations=vis)
    dirs = direction_scores(tiny, LAYER, torch.eye(6)[[1, 4]], photos, vis)
    torch.testing.assert_close(dirs.path_score, units.path_score)
    torch.testing.assert_close(dirs.ratio, units.ratio)
    assert torch.equal(dirs.top_examples, units.top_examples) and dirs.units == [0, 1]
    mixed = torch.tensor([[0.0, 0.6, 0.0, 0.0, 0.8, 0.0]])
    report = direction_scores(tiny, LAYER, mixed, photos, vis[:1])
    pooled = activations(tiny, vis[:1], LAYER).flatten(2).mean(2)                    # [1, 6]
    assert float(report.visualization_activation[0]) == pytest.approx(float(pooled[0] @ mixed[0]), rel=1e-5)
    natural = activations(tiny, report.images, LAYER).flatten(2).mean(2) @ mixed[0]  # [N]: ranks the photos
    assert int(report.top_examples[0, 0]) == int(natural.argmax())
    with pytest.raises(ValueError, match=r"\[U, 6\]"):
        direction_scores(tiny, LAYER, torch.ones(2, 5), photos, vis)
    with pytest.raises(ValueError, match="one per direction"):
        direction_scores(tiny, LAYER, torch.eye(6)[:3], photos, vis)


def test_a_first_layer_has_no_guided_images_and_says_so(tmp_path, caplog):
    """The natural-path guide compares the blocks below a layer; the first has none: its pages keep the unguided
    images (with a warning) while the layers above get guided ones."""
    import logging

    from luminate import microscope
    from luminate.analysis.shown import can_guide
    from test_serve import png_file, tiny_model

    model = tiny_model()
    assert not can_guide(model, "conv1") and can_guide(model, "relu2")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        png_file(photos / f"{i}.png", seed=30 + i)
    with caplog.at_level(logging.WARNING, logger="luminate"):
        site = microscope.build(model, photos, tmp_path / "site", layers=["conv1", "relu2"], units="0:2", top_k=3,
                                steps=2, size=32, progress=False)
    assert "conv1 has no block below it" in caplog.text
    assert len(microscope.shown_images(tmp_path / "site", "relu2", 1)) == 2          # guided, then unguided
    (only,) = microscope.shown_images(site, "conv1", 1)                              # the unguided image alone
    assert only.shape[0] == 3
