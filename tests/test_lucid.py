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
    render.render_vis(model, channel(476) + channel(465), thresholds=T, verbose=False)
    assert render.render_vis.last_result.settings["objective"].count("mixed4a_pre_relu") == 2
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
    assert len(render.render_vis.last_result.history) == 3  # max(thresholds) steps


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
    assert torch.equal(render.render_vis.last_result.image, direct.image)
