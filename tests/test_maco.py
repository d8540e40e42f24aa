"""MACO: the magnitude spectrum stays fixed while the phase is optimized (measured on the rendered image), the
shipped prior resamples to any size, the transparency map accumulates, and MACO's transforms are seeded."""

import pytest
import torch

from luminate import param
from luminate.param.color import decorrelate_color_inverse
from luminate.param.maco import PRIOR_PATH, as_magnitude, natural_magnitude
from luminate.render import parameterization
from luminate.render import render
from luminate.transforms import compose, maco_transforms


def spectrum_of_image(image: torch.Tensor) -> torch.Tensor:
    """|rfft2| of the raw image recovered from the [0, 1] image (inverse sigmoid and colour mixing), float64."""
    raw = decorrelate_color_inverse(torch.logit(image.double()))
    return torch.fft.rfft2(raw).abs()


@pytest.mark.slow
def test_magnitude_stays_fixed_during_optimization(lite0):
    p = param.maco(32, batch=2)
    magnitude = p.raw.magnitude.double()
    inner = (slice(None), slice(None), slice(None), slice(1, -1))          # columns with a free phase
    result = render(lite0, "blocks.6:3", param=p, transforms=maco_transforms(), steps=12, lr=0.2, seed=0,
                    progress=False, thresholds=[0, 6, 12])
    frames = result.images
    assert not torch.allclose(frames[0], frames[-1], atol=1e-3)           # the image changed ...
    for image in frames:                                                    # ... its magnitude did not
        measured = spectrum_of_image(image)[inner]
        expected = magnitude.expand_as(spectrum_of_image(image))[inner]
        torch.testing.assert_close(measured, expected, rtol=2e-3, atol=2e-3 * float(magnitude.mean()))
    assert result.history[-1].sum() > result.history[0].sum()            # and the objective rose


def test_transparency_map_accumulates_and_resets(lite0):
    p = param.maco(32, batch=2)
    render(lite0, "blocks.6:3", param=p, transforms=maco_transforms(), steps=3, seed=0, progress=False)
    assert p.transparency.shape == (2, 3, 32, 32) and p.transparency.sum() > 0
    alpha = p.transparency_map()
    assert alpha.shape == (2, 1, 32, 32) and 0 <= alpha.min() and alpha.max() == 1
    p.reset_parameters(torch.Generator().manual_seed(1))
    assert p.transparency.sum() == 0


def test_prior_resamples_with_constant_contrast():
    assert PRIOR_PATH.exists() and PRIOR_PATH.stat().st_size < 400_000
    stds = []
    for size in (48, 224):
        mag = natural_magnitude(size)
        assert mag.shape == (3, size, size // 2 + 1) and mag[:, 0, 0].abs().max() == 0
        p = param.maco(size)
        p.reset_parameters(torch.Generator().manual_seed(0))
        stds.append(p.raw().std().item())
    assert stds[0] == pytest.approx(stds[1], rel=0.25)
    # low frequencies carry more energy than high ones, as in photos
    mag = natural_magnitude(64)
    assert mag[:, 1, 1].mean() > 10 * mag[:, 32, 32].mean()


def test_magnitude_from_your_photos_and_errors(flower_path, china_path):
    own = as_magnitude([flower_path, china_path], 32)
    assert own.shape == (3, 32, 17) and torch.isfinite(own).all()
    p = param.maco(32, magnitude=[flower_path])
    assert p().shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="non-negative"):
        param.maco(32, magnitude=-torch.ones(3, 8, 5))
    with pytest.raises(ValueError, match="fourier, maco, pixel"):
        parameterization("lucid", 32)


def test_maco_transforms_are_seeded_and_valid():
    t = compose(maco_transforms(scale=(0.5, 0.8)))
    x = torch.rand(3, 3, 40, 40)
    a, b = t(x, torch.Generator().manual_seed(4)), t(x, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, t(x, torch.Generator().manual_seed(5)))
