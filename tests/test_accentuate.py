"""Feature accentuation: the objective rises with the strength, and the image stays far closer to the photo than a
render from noise that reaches the same objective."""

import pytest
import torch

from luminate import param
from luminate.analysis.accentuate import accentuate, per_item, regularization_layer
from luminate.images import resize
from luminate.objectives import parse
from luminate.render import render

OBJECTIVE = "blocks.9:7"


@pytest.fixture(scope="module")
def photo(lite0, china_path):
    return resize(lite0.preprocess(china_path), 64)


@pytest.fixture(scope="module")
def accented(lite0, photo):
    return accentuate(lite0, photo, OBJECTIVE, strengths=(0.01, 0.1), steps=24, progress=False)


def test_strength_raises_the_objective_and_the_distance(accented):
    assert accented.images.shape == (2, 3, 64, 64) and accented.sheet().shape == (3, 3, 64, 64)
    assert accented.layer == "blocks.4"                    # halfway to blocks.9
    low, high = accented.objective_values.tolist()
    assert accented.photo_value < low < high
    assert accented.distances[0] < accented.distances[1]


@pytest.mark.slow
def test_stays_closer_to_the_photo_than_a_render_from_noise(lite0, photo, accented):
    """At an equal objective (the noise render stops once it reaches the accentuated value), the accentuated image
    is much nearer the photo in pixels and in the regularization layer's activations."""
    goal = accented.objective_values[1].item()
    reached = {}

    def stop(step, images, scores):
        reached["value"] = scores.sum().item()
        return reached["value"] >= goal

    noise = render(lite0, OBJECTIVE, param=param.image(64), steps=300, seed=0, progress=False, callback=stop)
    assert reached["value"] >= goal, "the render from noise never reached the accentuated objective"

    def pixel_distance(x):
        return (x - photo).square().mean().sqrt().item()

    ours, theirs = pixel_distance(accented.images[1:2]), pixel_distance(noise.image)
    assert ours < 0.5 * theirs, (ours, theirs)
    from luminate.activations import activations

    ref = activations(lite0, photo, "blocks.4")
    rel = [((activations(lite0, x, "blocks.4") - ref).square().mean() / ref.square().mean()).item()
           for x in (accented.images[1:2], noise.image)]
    assert rel[0] < 0.5 * rel[1], rel


def test_per_item_values_ignore_batch_averaging(lite0):
    objective = parse(OBJECTIVE).bind(lite0)
    acts = {"blocks.9": torch.rand(3, 112, 4, 4), "step": torch.zeros((), dtype=torch.long)}
    values = per_item(objective, acts, 3)
    torch.testing.assert_close(values, acts["blocks.9"][:, 7].mean((1, 2)))
    assert regularization_layer(lite0, parse("class:daisy").bind(lite0)) == "blocks.8"


def test_bad_input(lite0, photo):
    with pytest.raises(ValueError, match="at least one strength"):
        accentuate(lite0, photo, OBJECTIVE, strengths=(), steps=1, progress=False)
    with pytest.raises(KeyError):
        accentuate(lite0, photo, OBJECTIVE, layer="blocks.99", steps=1, progress=False)
