"""One of each: the default-layer policy, the image-batch entry point, class resolution."""

import pytest
import torch
from torch import nn

from luminate import models
from luminate.analysis.attribution import resolve_classes
from luminate.analysis.explain import explain_layers
from luminate.analysis.perception import default_layers, image_input
from luminate.recipes import default_layer


def _tiny(name="tiny"):
    blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(9)])
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("blocks", blocks)
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    return models.wrap(net, 16, value_range=(0, 1), name=name)


def test_default_layer_per_purpose(lite0):
    assert {p: lite0.default_layer(p) for p in models.base.LAYER_PURPOSES} == {
        "visualization": "blocks.9", "dictionary": "blocks.10", "attribution": "blocks.10", "groups": "head"}
    assert default_layer(lite0) == lite0.default_layer() == "blocks.9"
    assert explain_layers(lite0) == {"attribution": "blocks.10", "groups": "head", "dictionary": "blocks.10"}
    with pytest.raises(ValueError, match="visualization"):
        lite0.default_layer("icons")


def test_default_layer_of_an_unknown_model_follows_its_blocks():
    model = _tiny()
    blocks = [f"blocks.{i}" for i in range(9)]
    assert model.default_layer() == blocks[int(0.6 * 8)] == "blocks.4"
    assert model.default_layer("attribution") == model.default_layer("groups") == blocks[6]
    assert default_layers(model) == ["stem", *blocks]          # the pooled 1x1 map is left out


def test_as_batch_is_the_one_image_entry_point(lite0, flower_path):
    photo = lite0.as_batch(flower_path)
    assert photo.shape == (1, 3, 224, 224) and torch.equal(photo, lite0.preprocess(flower_path))
    small = torch.rand(3, 40, 50)
    assert torch.equal(lite0.as_batch(small), small[None])      # tensors as they are: no crop or resize
    assert lite0.as_batch((small * 255).to(torch.uint8)).dtype == torch.float32
    assert torch.equal(image_input(lite0, small), small[None])
    with pytest.raises(ValueError, match="one image"):
        lite0.as_batch(torch.rand(2, 3, 8, 8), single=True)


def test_resolve_classes_top_k_digits_and_errors(lite0, flower_path):
    x = lite0.as_batch(flower_path)
    top3 = resolve_classes(lite0, None, x, top=3)
    logits = lite0(x)[0]
    assert top3 == logits.topk(3).indices.tolist() and resolve_classes(lite0, None, x) == top3[:1]
    assert resolve_classes(lite0, "985") == resolve_classes(lite0, 985) == [985]
    assert lite0.class_name(985) == "daisy" and _tiny().class_name(3) == "3"
    with pytest.raises(ValueError, match="no classes"):
        resolve_classes(lite0, [])
    with pytest.raises(ValueError, match="needs the image"):
        resolve_classes(lite0, None)
