"""The seeds' remaining experiments: atlas-guided patches, DeepDream with octaves and tiles, Hinton diagrams,
caricatures and style transfer. Tiny networks written here where the answer must be known exactly; the real
model (at small sizes and few steps) where the behaviour is the point."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from luminate.analysis.hinton import HintonData, activation_matrix, weight_matrix
from luminate.atlas import patches
from luminate.dream import dream, octave_sizes, tiled_gradient
from luminate.models import wrap
from luminate.views.hinton import HintonView, hinton_svg


# ----- patches: flip-rate bookkeeping --------------------------------------------------------------------------


class CentreDetector(nn.Module):
    """Logits [1, 2 * mean brightness of the centre 4x4 pixels]: 'target' wins when the centre is mostly white."""

    def forward(self, x):
        centre = x[:, :, 14:18, 14:18].mean((1, 2, 3))
        return torch.stack([torch.ones_like(centre), 2 * centre], dim=1)


@pytest.fixture
def centre_model():
    return wrap(CentreDetector(), 32, value_range=(0, 1), labels=["plain", "target"])


def test_flip_rate_counts_exactly_the_trials_that_flip(centre_model):
    images = torch.zeros(4, 3, 32, 32)
    images[3] = 1.0  # a white image: the model already calls it 'target', so it is no source image
    chosen, top1 = patches.source_images(centre_model, images, "plain")
    assert chosen.tolist() == [0, 1, 2] and top1.tolist() == [0, 0, 0, 1]

    # a 12 px patch (0.375 of 32) that is white only in its middle 4x4; on a 3x3 grid its corners are at 0, 10, 20,
    # and only the middle place (10, 10) puts the white square on the image's centre (rows/cols 14..17)
    patch = torch.zeros(3, 12, 12)
    patch[:, 4:8, 4:8] = 1.0
    rate = patches.flip_rate(centre_model, images[chosen], patch, "target", size=0.375, positions=3)
    assert rate.side == 12 and rate.positions == [(y, x) for y in (0, 10, 20) for x in (0, 10, 20)]
    expected = torch.zeros(3, 9, dtype=torch.bool)
    expected[:, 4] = True
    assert torch.equal(rate.patch_flips, expected)
    assert rate.patch == pytest.approx(1 / 9) and rate.trials == 27
    # the control has the same pixels, shuffled: the 16 white ones scatter and the centre stays dark
    assert torch.equal(rate.control_patch.flatten(1).sort(1).values, patch.flatten(1).sort(1).values)
    assert rate.control == 0.0 and not rate.control_flips.any()


def test_no_source_images_is_a_clear_error(centre_model):
    with pytest.raises(ValueError, match="calls none of the 2 images 'target'"):
        patches.source_images(centre_model, torch.zeros(2, 3, 32, 32), "target")


def test_paste_places_the_patch_and_keeps_the_rest():
    images = torch.rand(2, 3, 20, 20)
    patch = torch.full((3, 5, 5), 0.25)
    out = patches.paste(images, patch, [0, 15], [3, 10])
    assert torch.equal(out[0, :, 0:5, 3:8], patch) and torch.equal(out[1, :, 15:20, 10:15], patch)
    mask = torch.ones(2, 1, 20, 20, dtype=torch.bool)
    mask[0, :, 0:5, 3:8] = False
    mask[1, :, 15:20, 10:15] = False
    assert torch.equal(out.masked_select(mask), images.masked_select(mask))
    with pytest.raises(ValueError, match="falls outside"):
        patches.paste(images, patch, 18, 0)


def test_refinement_raises_the_target_probability(centre_model):
    images = torch.zeros(3, 3, 32, 32)
    start = torch.full((3, 16, 16), 0.3)
    refined = patches.refine_patch(centre_model, images, start, "target", size=0.5, steps=30, lr=0.2,
                                   resolution=16, progress=False)
    before = patches.flip_rate(centre_model, images, start, "target", size=0.5, positions=1)
    after = patches.flip_rate(centre_model, images, refined, "target", size=0.5, positions=1)
    assert before.patch == 0.0 and after.patch == 1.0


class TinyClassifier(nn.Module):
    """A conv layer to build an atlas on, and CentreDetector's decision (plus a third, unrelated class)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.features(x))
        centre = x[:, :, 14:18, 14:18].mean((1, 2, 3))
        return torch.stack([1 + 0.01 * f.mean((1, 2, 3)), 2 * centre, 0.2 * f[:, 0].mean((1, 2))], 1)


@pytest.mark.slow
def test_atlas_patches_end_to_end_and_a_rerun_optimizes_nothing(tmp_path):
    model = wrap(TinyClassifier(), 32, value_range=(0, 1), labels=["plain", "target", "other"])
    images = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.4
    kwargs = dict(layer="features", work_dir=tmp_path / "work", icon_size=16, icon_steps=4, class_steps=4,
                  refine_steps=20, size=0.375, sizes=(0.25, 0.375), progress=False)
    report = patches.atlas_patches(model, images, "plain", "target", **kwargs)
    kinds = [c.kind for c in report.candidates]
    assert kinds == ["atlas cell"] * 3 + ["class visualization", "refined"] and report.best.kind == "refined"
    gains = [c.gain for c in report.candidates[:3]]
    assert gains == sorted(gains, reverse=True) and gains[0] == pytest.approx(float(np.nanmax(report.gains)))
    assert report.n_source == 10 and [r.size for r in report.by_size] == [0.25, 0.375]
    assert report.best.rate.trials == 10 * 9 and re.fullmatch(r"flip rate: patch \d+%, control \d+%", report.line())
    cached = sorted(p.name for p in (tmp_path / "work" / "patches").rglob("*.png"))
    assert len(cached) == 2  # the class visualization and the refined patch, in the render cache's format
    again = patches.atlas_patches(model, images, "plain", "target", **kwargs)
    assert torch.equal(again.best.patch, report.best.patch)
    assert sorted(p.name for p in (tmp_path / "work" / "patches").rglob("*.png")) == cached

    from luminate.views.patch import patch_html

    html = patch_html(report)
    assert html.count('class="chosen"') == 3 and "flip rate: patch" in html and "http" not in html.split("<footer")[0]


# ----- DeepDream: octaves and tiles ------------------------------------------------------------------------------


@pytest.fixture
def small_conv():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1))
    return wrap(net, (40, 56), value_range=(0, 1))


def test_tiled_gradient_equals_untiled(small_conv):
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    whole, value = tiled_gradient(small_conv, x, ["2"], tile=1000)
    # layer "2" reads 2 px around each pixel; 4 px of context per tile covers it
    tiled, tiled_value = tiled_gradient(small_conv, x, ["2"], tile=16, overlap=4)
    assert torch.allclose(tiled, whole, atol=1e-6, rtol=1e-5) and tiled_value == pytest.approx(value, rel=1e-5)
    seams, _ = tiled_gradient(small_conv, x, ["2"], tile=16, overlap=0)
    assert (seams - whole).abs().max() > 1e-3  # without context the tile borders are wrong: the test can fail


def test_octave_dream_tiled_equals_untiled_and_keeps_the_size(small_conv):
    photo = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    kwargs = dict(octaves=3, octave_scale=1.3, steps=3, max_shift=6, seed=5, progress=False)
    untiled = dream(small_conv, photo, "2", tile=1000, **kwargs)
    tiled = dream(small_conv, photo, "2", tile=12, overlap=4, **kwargs)
    assert untiled.image.shape == photo.shape == tiled.image.shape
    assert torch.allclose(tiled.image, untiled.image, atol=1e-5)
    assert (untiled.image - photo).abs().mean() > 0.01  # it did dream
    assert untiled.settings["octave_sizes"] == octave_sizes(37, 53, 3, 1.3) == [(22, 32), (28, 41), (37, 53)]
    assert untiled.history.shape == (9, 1) and untiled.history[-1, 0] > untiled.history[0, 0]


def test_dream_errors_name_the_fix(small_conv):
    with pytest.raises(ValueError, match="octave_scale must be greater than 1"):
        octave_sizes(10, 10, 3, 1.0)
    with pytest.raises(ValueError, match="give a layer"):
        dream(small_conv, torch.rand(1, 3, 20, 20), [], progress=False)


# ----- Hinton diagrams ---------------------------------------------------------------------------------------------


def _squares(svg: str) -> list[tuple[float, float, float]]:
    return [(float(w), float(h), float(v)) for w, h, v in
            re.findall(r'class="sq"[^>]*width="([\d.]+)" height="([\d.]+)"[^>]*data-value="([-\d.e+]+)"', svg)]


def test_hinton_square_area_is_proportional_to_magnitude():
    values = np.array([[1.0, -0.25, 0.5], [-4.0, 0.0, 2.0]], dtype=np.float32)
    data = HintonData(values, ["a", "b"], ["x", "y", "z"], "test")
    svg = hinton_svg(data, cell=20)
    squares = _squares(svg)
    assert len(squares) == 6
    areas = np.array([w * h for w, h, _ in squares])
    shown = np.array([v for _, _, v in squares])
    assert np.allclose(shown, values.ravel())
    assert np.allclose(areas, 400 * np.abs(values.ravel()) / 4.0, rtol=1e-3)  # largest |value| fills the cell
    fills = re.findall(r'class="sq"[^>]*fill="(#[0-9a-f]+)"', svg)
    assert [f == "#ffffff" for f in fills] == [True, False, True, False, True, True]
    assert svg.count("<title>") == 6 and "a, column y: -0.25" in svg
    assert "<svg" in HintonView(data)._repr_html_()


def test_hinton_activations_pool_positions_and_channels():
    net = nn.Sequential(nn.Conv2d(3, 10, 1))
    model = wrap(net, 16, value_range=(0, 1))
    x = torch.rand(1, 3, 16, 16)
    data = activation_matrix(model, x, "0", max_rows=5, max_cols=16)
    with torch.no_grad():
        act = net(x)[0]  # [10, 16, 16]
    expected = torch.nn.functional.adaptive_avg_pool2d(act, (4, 4)).reshape(10, 16)
    expected = expected.reshape(5, 2, 16).mean(1)
    assert data.shape == (5, 16) and np.allclose(data.values, expected.numpy(), atol=1e-6)
    assert data.row_labels[0] == "ch 0-1" and data.col_labels[0] == "(0-3, 0-3)"


def test_hinton_weights_of_a_convolution_sum_each_kernel():
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Sequential(nn.Conv2d(6, 6, 3, groups=6), nn.BatchNorm2d(6)))
    model = wrap(net, 16, value_range=(0, 1))
    data = weight_matrix(model, "0")
    assert np.allclose(data.values, net[0].weight.detach().sum((2, 3)).numpy(), atol=1e-6)
    depthwise = weight_matrix(model, "1")  # the block's only weighted layer: the depthwise convolution
    assert depthwise.shape == (6, 9) and depthwise.title.endswith("1.0")
    with pytest.raises(ValueError, match="no weight matrix"):
        weight_matrix(wrap(nn.Sequential(nn.ReLU()), 8, value_range=(0, 1)), "0")


# ----- caricature and style transfer (the real model, small) ----------------------------------------------------


@pytest.mark.slow
def test_caricature_matches_the_photo_better_than_its_start(lite0, flower_path):
    from luminate.analysis.inversion import caricature

    result = caricature(lite0, flower_path, ["blocks.3", "blocks.6"], steps=24, size=96, progress=False)
    assert result.images.shape == (2, 3, 64, 96)  # flower.jpg is 640x427: longer side 96
    assert (result.match > result.start_match + 0.1).all(), (result.match, result.start_match)
    assert result.sheet().shape[-1] > 2 * result.images.shape[-1]


@pytest.mark.slow
def test_style_transfer_lowers_both_losses(lite0, china_path, flower_path):
    from luminate.analysis.inversion import style_transfer

    result = style_transfer(lite0, china_path, flower_path, steps=12, size=80, progress=False)
    history = result.result.history.sum(1)
    assert history[-1] > history[0]  # the objective is minus the losses
    assert result.image.shape == result.content.shape == result.style.shape


# ----- command line -------------------------------------------------------------------------------------------


def test_experiment_commands_document_every_flag():
    from luminate.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    for name in ("patch", "hinton", "caricature", "style", "dream"):
        parser = choices[name]
        assert parser.description and parser.epilog, name
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"luminate {name} {action.option_strings[0]} has no help"


def test_dream_command_keeps_the_size_and_makes_a_sheet(tmp_path, china_path, tiny_steps):
    from PIL import Image

    from luminate.cli import main

    photo = tmp_path / "wide.jpg"
    Image.open(china_path).resize((150, 96)).save(photo)
    assert main(tiny_steps(["dream", "efficientnet_lite0", str(photo), "--layer", "blocks.4", "--octaves", "2",
                            "--tile", "64", "-o", str(tmp_path / "d.png"), "--quiet"])) == 0
    assert Image.open(tmp_path / "d.png").size == (150, 96)
    assert main(tiny_steps(["dream", "efficientnet_lite0", str(photo), "--layers", "blocks.2", "blocks.4",
                            "--octaves", "1", "-o", str(tmp_path / "sheet.png"), "--quiet"])) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] > 3 * 150 * 320 / 96 * 0.9  # photo + 2 dreams at 320 px high


def test_hinton_command_writes_an_svg_page(tmp_path, flower_path, capsys):
    from luminate.cli import main

    out = str(tmp_path / "h.html")
    assert main(["hinton", "efficientnet_lite0", flower_path, "--layer", "blocks.2", "-o", out]) == 0
    html = (tmp_path / "h.html").read_text()
    assert "<svg" in html and html.count('class="sq"') == 24 * 64 and "<title>" in html
    assert main(["hinton", "efficientnet_lite0", "--weights", "--layer", "blocks.2", "-o", out]) == 2
    assert "blocks.2.project.conv" in capsys.readouterr().err  # the error lists the block's weighted layers


def test_patch_command_says_when_no_photo_is_the_source_class(tmp_path, china_path, capsys):
    from luminate.atlas.patches import photo_crops
    from luminate.cli import main

    photo_crops(china_path, tmp_path / "palace", 2)
    assert main(["patch", "efficientnet_lite0", str(tmp_path / "palace"), "--source", "daisy", "--target", "bee",
                 "-o", str(tmp_path / "p.html"), "--quiet"]) == 2
    assert "calls none of the 2 images 'daisy'" in capsys.readouterr().err
