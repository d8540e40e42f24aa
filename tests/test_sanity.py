"""The visualization sanity check (Geirhos et al. 2024): a hand-built "fooling circuit" makes one unit's
visualization show a pattern no natural image contains, while the unit still answers to red on natural images; the
check flags that unit and passes its honest twin."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from luminate import objectives as obj
from luminate import param
from luminate.analysis.sanity import load_images, path_layers_below, sanity_scores
from luminate.models import wrap
from luminate.render import render


class FoolingNet(nn.Module):
    """conv1 detects red, green, blue and a 3x3 checkerboard (zero-sum filter, so smooth images never drive it);
    unit 0 of conv2 is red + 20 x checkerboard (the fooling circuit), unit 1 is red alone."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate")
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.bias.zero_()
            for out, colour in ((0, 0), (1, 1), (3, 2)):          # colour opponents at the centre pixel
                self.conv1.weight[out, :, 1, 1] = -0.5
                self.conv1.weight[out, colour, 1, 1] = 1.0
            checker = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 0.0, -1.0], [1.0, -1.0, 1.0]])
            self.conv1.weight[2] = checker / 3
            self.conv1.bias[2] = -0.2
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, 0] = 1.0
            self.conv2.weight[0, 2] = 20.0
            self.conv2.weight[1, 0] = 1.0

    def forward(self, x):
        return self.flat(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))))


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: random 4x4 colour fields upsampled smoothly (no fine texture)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def fooled():
    return wrap(FoolingNet(), 32, value_range=(0, 1))


def test_fooling_circuit_is_flagged(fooled):
    natural = smooth_images(24)
    with torch.no_grad():                                           # natural images never reach the checkerboard
        assert fooled.network.relu1(fooled.network.conv1(natural))[:, 2].max() == 0
    # rendered without transforms: a 1-pixel checkerboard does not survive Lucid's random rescaling at 32 px
    objective = obj.channel("relu2", 0, batch=0) + obj.channel("relu2", 1, batch=1)
    vis = render(fooled, objective, param=param.image(32, batch=2), transforms=[], steps=128, seed=0,
                 progress=False).image
    report = sanity_scores(fooled, "relu2", [0, 1], natural, visualizations=vis, top_k=4, path_layers=["relu1"])
    assert report.path_layers == ["relu1", "relu2"] and report.similarity.shape == (2, 2)
    assert report.ratio.min() > 1                                  # both visualizations out-activate every photo
    assert bool(report.flagged[0]) and not bool(report.flagged[1]), report
    assert report.path_score[1] > report.path_score[0] + 0.3
    # the same top examples for both units: the fooled unit behaves like the honest one on natural images
    assert set(report.top_examples[0].tolist()) == set(report.top_examples[1].tolist())
    assert "path" in report.reasons(0)[0] and report.reasons(1) == []
    assert report.score(0)["flagged"] and not report.score(1)["flagged"]
    from luminate.views.sanity import sanity_view

    page = sanity_view(report).document
    assert page.count("verdict-bad") == 2 and page.count("<polyline") == 6 and "http" not in page.split("<body>")[1]


def test_layers_images_and_errors(fooled, lite0):
    assert path_layers_below(lite0, "blocks.3") == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    grown = load_images(fooled, smooth_images(3), min_images=8)
    assert grown.shape == (8, 3, 32, 32) and 0 <= grown.min() and grown.max() <= 1
    with pytest.raises(ValueError, match="one per unit"):
        sanity_scores(fooled, "relu2", [0, 1], smooth_images(8), visualizations=torch.rand(1, 3, 32, 32),
                      path_layers=["relu1"])
    with pytest.raises(ValueError, match="at least one"):
        sanity_scores(fooled, "relu2", [], smooth_images(8))


def test_natural_statistics_pulls_each_item_to_its_targets():
    from luminate.activations import activations
    from luminate.priors import natural_statistics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    model = wrap(net, 16, value_range=(0, 1), name="prior-net")
    photos = torch.rand(8, 3, 16, 16)
    warm, cool = photos.clone(), photos.clone()
    warm[:, 0] = 0.9
    cool[:, 2] = 0.9
    both = torch.cat([warm, cool])
    prior = natural_statistics(model, both, ["1"], targets=[warm[:4], cool[:4]])
    swapped = natural_statistics(model, both, ["1"], targets=[cool[:4], warm[:4]])
    result = render(model, -prior, param=param.image(16, batch=2, mean_colour=True), transforms=[], steps=60, seed=0,
                    lr=0.1, progress=False)
    acts = activations(model, result.image, ["1"])
    own, other = prior(acts), swapped(acts)
    assert (own < 0.5 * other).all()                                     # each item nearer its own targets
    assert -result.history[-1].sum() < 0.5 * -result.history[0].sum()    # the penalty halved (history is -penalty)
    with pytest.raises(ValueError, match="at least 2 photos"):
        natural_statistics(model, photos[:1], ["1"])
