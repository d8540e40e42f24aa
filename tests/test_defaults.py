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
    torch.manual_seed(0)   # random weights, but the same ones whatever ran before (a dead ReLU block is skipped)
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
    assert model.default_layer("groups") == blocks[6]          # post-ReLU blocks: non-negative, NMF can use them
    assert model.default_layer("attribution") == blocks[-1]    # the last spatial layer
    assert default_layers(model) == ["stem", *blocks]          # the pooled 1x1 map is left out


def _cbr(i, o, k=3, s=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU6(inplace=True))


class _Bottleneck(nn.Module):  # MobileNetV2's inverted residual: its output is a linear projection (signed)
    def __init__(self, i, o, s):
        super().__init__()
        self.res = s == 1 and i == o
        self.conv = nn.Sequential(_cbr(i, 4 * i, 1), _cbr(4 * i, 4 * i, 3, s, 4 * i), nn.Conv2d(4 * i, o, 1),
                                  nn.BatchNorm2d(o))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


def _mobilenet_like(**kwargs):
    torch.manual_seed(0)
    features = nn.Sequential(_cbr(3, 8, 3, 2), _Bottleneck(8, 8, 1), _Bottleneck(8, 12, 2), _Bottleneck(12, 12, 1),
                             _Bottleneck(12, 16, 2), _cbr(16, 32, 1))
    net = nn.Sequential()
    net.add_module("features", features)
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    return models.wrap(net.eval(), 48, preset="imagenet", name="mbv2ish", **kwargs)


def test_inspected_defaults_pick_post_activation_layers_for_nmf():
    from luminate.activations import activations
    from luminate.models.defaults import nonnegative_layers

    model = _mobilenet_like()
    assert model.default_layer("attribution") == "features.5"             # last spatial layer
    assert model.default_layer() == "features.3"                           # visualization: any sign
    photo = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    for purpose in ("groups", "dictionary"):
        layer = model.default_layer(purpose)
        assert layer.startswith("features.3.conv.") and layer in nonnegative_layers(model)
        assert float(activations(model, photo, layer).min()) >= 0
    assert float(activations(model, photo, "features.3").min()) < 0      # the block output itself is signed
    assert "features.2" not in nonnegative_layers(model) and "features.5" in nonnegative_layers(model)


def test_declared_defaults_win_and_are_checked():
    model = _mobilenet_like(layer_defaults={"groups": "features.5"})
    assert model.default_layer("groups") == "features.5" and model.default_layer("attribution") == "features.5"
    with pytest.raises(KeyError, match="features"):
        _mobilenet_like(layer_defaults={"groups": "features.55"})
    with pytest.raises(ValueError, match="unknown purpose"):
        _mobilenet_like(layer_defaults={"icons": "features.5"})


def test_no_nonnegative_layer_is_an_error_naming_the_networks_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    model = models.wrap(net, 16, value_range=(-1, 1), name="linear")
    with pytest.raises(ValueError, match=r"non-negative.*spatial layers: 0, 1"):
        model.default_layer("groups")


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


def test_nmf_on_a_signed_layer_names_this_networks_usable_layers():
    from luminate.analysis.factorization import neuron_groups

    model = _mobilenet_like()
    with pytest.raises(ValueError, match=r"'features.3' of mbv2ish.*features\.3\.conv\.1") as err:
        neuron_groups(model, torch.rand(1, 3, 48, 48), "features.3", n_groups=2, classes=[0])
    assert "EfficientNet" not in str(err.value)
