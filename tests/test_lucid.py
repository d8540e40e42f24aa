"""The Lucid compatibility layer: the beginner's-guide tutorial runs with only its imports changed."""

import numpy as np
import pytest
import torch

import luminate
from luminate.lucid import objectives, param, render, transform

T = (2,)  # tiny thresholds: the tutorial's calls, not its pictures


@pytest.fixture(scope="module")
def model():
    return luminate.models.load("inception_v1", weights=False)


@pytest.mark.slow
def test_the_beginners_guide_runs_with_changed_imports(model, capsys):
    # "Let's visualize a neuron": a string objective with Lucid's layer name
    out = render.render_vis(model, "mixed4a_pre_relu:476", thresholds=T)
    assert isinstance(out, list) and len(out) == 1
    assert isinstance(out[0], np.ndarray) and out[0].shape == (1, 128, 128, 3)
    assert capsys.readouterr().out.startswith("2 ")  # Lucid printed the objective at each threshold
    # objectives and their sums
    channel = lambda n: objectives.channel("mixed4a_pre_relu", n)
    assert len(render.render_vis(model, channel(476) + channel(465), thresholds=T, verbose=False)) == 1
    # transforms: none, and Lucid's standard list (a list, extended the Lucid way)
    assert isinstance(transform.standard_transforms, list)
    render.render_vis(model, "mixed4a_pre_relu:476", transforms=[], thresholds=T, verbose=False)
    render.render_vis(model, "mixed4a_pre_relu:476", transforms=transform.standard_transforms + [transform.jitter(2)],
                      thresholds=T, verbose=False)
    # param_f as the third positional argument, and several thresholds
    param_f = lambda: param.image(64, fft=False, decorrelate=False)
    out = render.render_vis(model, "mixed4a_pre_relu:2", param_f, thresholds=(1, 3), verbose=False)
    assert [a.shape for a in out] == [(1, 64, 64, 3)] * 2
    assert 0 <= out[-1].min() and out[-1].max() <= 1 and not np.array_equal(out[0], out[1])


def test_lucid_layer_names_are_inception_layers(model):
    assert model.layer("mixed4a_pre_relu") is model.layer("mixed4a.pre_relu")
    assert model.layer_info("mixed4b_3x3_bottleneck_pre_relu").channels == 112
    with pytest.raises(IndexError, match=r"0\.\.507"):
        model.check_channel("mixed4a_pre_relu", 508)
    with pytest.raises(KeyError, match="Closest names"):
        model.layer("mixed4z_pre_relu")


def test_render_vis_is_luminate_render(model):
    """The shim adds no second implementation: same seed, same picture as luminate.render."""
    out = render.render_vis(model, "mixed3a:5", lambda: param.image(32), thresholds=(2,), use_fixed_seed=True,
                            verbose=False)
    # render_vis keeps Lucid's transforms; render's default differs
    direct = luminate.render(model, "mixed3a:5", param=param.image(32), steps=2,
                             transforms=transform.standard_transforms, seed=0, progress=False)
    assert np.array_equal(out[0], direct.image.permute(0, 2, 3, 1).numpy())
    assert not hasattr(render.render_vis, "last_result")      # no state kept between calls


def test_lucid_meanings(model):
    """neuron's x is the row, class_logit takes (layer, label), one-argument transforms work, the low-level
    parameterizations take Lucid's NHWC shapes; features Lucid has and Luminate lacks fail clearly."""
    from luminate.objectives import as_objective

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    acts = luminate.activations(model, x, "mixed3a")
    feed = {"mixed3a": acts, "input": x, "step": torch.zeros((), dtype=torch.long)}
    c = int((acts[0, :, 1, 3] - acts[0, :, 3, 1]).abs().argmax())      # a channel where row/column order shows
    value = float(as_objective(objectives.neuron("mixed3a", c, x=1, y=3)).bind(model)(feed).sum())
    assert abs(value - float(acts[0, c, 1, 3])) < 1e-5 and abs(value - float(acts[0, c, 3, 1])) > 1e-6
    logit = as_objective(objectives.class_logit("output", 7)).bind(model)
    with torch.no_grad():
        assert abs(float(logit({"output": model(x), "input": x, "step": feed["step"]}).sum())
                   - float(model(x)[0, 7])) < 1e-4
    seen = []
    out = render.render_vis(model, objectives.channel("mixed3a", 1), lambda: param.fft_image((1, 32, 32, 3)),
                            transforms=[lambda t: seen.append(t.shape) or t[..., 1:-1, 1:-1], transform.jitter(2)],
                            thresholds=(2,), verbose=False)
    assert out[0].shape == (1, 32, 32, 3) and seen == [(1, 3, 32, 32)] * 2
    p = param.to_valid_rgb(param.lowres_tensor((2, 32, 32, 3), (1, 8, 8, 3)), decorrelate=True)
    images = p()
    assert images.shape == (2, 3, 32, 32) and torch.equal(images[0], images[1])   # one shared low-res variable
    nhwc = param.to_valid_rgb(torch.zeros(1, 8, 8, 3))
    assert nhwc.shape == (1, 8, 8, 3) and torch.allclose(nhwc, torch.full_like(nhwc, 0.5), atol=0.1)
    with pytest.raises(AttributeError, match="no Luminate equivalent"):
        objectives.neuron_weight
    with pytest.raises(NotImplementedError, match="offset"):
        param.lowres_tensor((1, 8, 8, 3), (1, 2, 2, 3), offset=True)
    with pytest.raises(ValueError, match="NHWC"):
        param.fft_image((32, 32, 3))


def test_parameterization_expressions_of_lucid_notebooks(model):
    """Sums, differences, products with numbers and Python's sum() (which starts from 0) of raw parameterizations,
    squashed once by to_valid_rgb, as Lucid's aligned-interpolation and neuron-interaction notebooks write them."""
    def interpolate_param_f():
        unique = param.fft_image((2, 32, 32, 3))
        shared = [param.lowres_tensor((2, 32, 32, 3), (1, 32 // 2, 32 // 2, 3)),
                  param.lowres_tensor((2, 32, 32, 3), (2, 32 // 4, 32 // 4, 3))]
        return param.to_valid_rgb(unique + sum(shared), decorrelate=True)

    p = interpolate_param_f()
    assert p().shape == (2, 3, 32, 32) and len(list(p.parameters())) == 3
    a, b = param.fft_image((1, 16, 16, 3)), param.lowres_tensor((1, 16, 16, 3), (1, 4, 4, 3))
    with torch.no_grad():
        for part in (a.raw, b.raw):
            for t in part.parameters():
                t.normal_(0, 1)
        ra, rb = a.raw(), b.raw()
        for expression, want in ((a + b, ra + rb), (a - b, ra - rb), (-a, -ra), (0.7 * a + b * 0.5, 0.7 * ra + 0.5 * rb),
                                 (a / 4, ra / 4), (sum([a, b]), ra + rb), (2 * a - 0.5 * sum([a, b]), 1.5 * ra - 0.5 * rb)):
            assert isinstance(expression, param.RawParam)
            assert torch.allclose(expression.raw(), want, atol=1e-6)
    out = render.render_vis(model, "mixed3a:3", interpolate_param_f, thresholds=(1,), verbose=False)
    assert out[0].shape == (2, 32, 32, 3)
    with pytest.raises(TypeError):
        a + "not an image"
