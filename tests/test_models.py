"""The zoo, the input contract, layer lookup and the default model's real predictions."""

import pytest
import torch

from luminate import models
from luminate.models.contract import InputContract
from luminate.models.efficientnet import EfficientNetLite, convert_lukemelas_keys, efficientnet_lite, weights_path


def top1(model, path):
    with torch.no_grad():
        return model.labels[model(model.preprocess(path)).argmax(-1).item()]


def test_default_model_classifies_the_sample_photos(lite0, china_path, flower_path):
    assert top1(lite0, china_path) == "palace"
    assert top1(lite0, flower_path) == "daisy"


def test_weights_load_strictly_and_every_key_is_used():
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert len(state) == 296
    converted = convert_lukemelas_keys(state)
    net = EfficientNetLite()
    missing, unexpected = net.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    assert sum(p.numel() for p in net.parameters()) == 4_652_008


def test_strict_loading_rejects_a_truncated_state_dict(tmp_path):
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    state.pop("_fc.bias")
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="logits.bias"):
        efficientnet_lite("efficientnet_lite0", tmp_path / "broken.pth")


def test_wrong_contracts_give_worse_predictions(lite0, china_path):
    """The same photo through the right and two wrong contracts: only the right one is confident 'palace'."""
    x = lite0.preprocess(china_path)
    palace = lite0.labels.index("palace")

    def palace_prob(contract):
        with torch.no_grad():
            return lite0.network(contract.normalize(x)).softmax(-1)[0, palace].item()

    right = palace_prob(lite0.contract)
    wrong = {"ImageNet mean/std": palace_prob(InputContract(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
             "raw [0, 1]": palace_prob(InputContract()),
             "BGR": palace_prob(InputContract(value_range=(-127 / 128, 1.0), channel_order="BGR"))}
    assert right > 0.25
    assert all(right > p for p in wrong.values()), wrong
    assert wrong["raw [0, 1]"] < right / 1.5


def test_squashing_the_whole_photo_instead_of_the_centre_crop_changes_the_answer(lite0, china_path):
    from luminate.images import load_image, resize

    squashed = resize(load_image(china_path), 224)
    with torch.no_grad():
        assert lite0.labels[lite0(squashed).argmax().item()] != "palace"


def test_contract_rejects_images_outside_unit_range(lite0):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lite0(torch.full((1, 3, 64, 64), 200.0))
    with pytest.raises(ValueError, match="shape"):
        lite0(torch.rand(1, 1, 64, 64))


def test_contract_repr_shows_the_range(lite0):
    text = repr(lite0)
    assert "224x224" in text and "-0.9922" in text and "1000 labels" in text


def test_contract_normalize_matches_the_reference_formula():
    contract = InputContract(value_range=(-127 / 128, 1.0))
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(contract.normalize(x), (255 * x - 127) / 128)
    meanstd = InputContract(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1))
    torch.testing.assert_close(meanstd.normalize(x), (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.2, 0.1]).view(1, 3, 1, 1))


def test_preprocess_centre_crops_the_short_side():
    contract = InputContract(size=(224, 224), crop_fraction=224 / 256)
    image = torch.rand(1, 3, 427, 640)
    out = contract.preprocess(image)
    assert out.shape == (1, 3, 224, 224)
    assert 0 <= out.min() and out.max() <= 1


def test_layers_table_of_the_default_model(lite0):
    infos = {info.name: info for info in models.layers(lite0)}
    assert infos["stem"].shape == (32, 112, 112)
    assert infos["blocks.9"].shape == (112, 14, 14)
    assert infos["blocks.15"].shape == (320, 7, 7)
    assert infos["blocks.9.depthwise"].channels == 672
    assert infos["head"].shape == (1280, 7, 7)
    assert infos["logits"].shape == (1000,)
    assert sum(name.count(".") == 1 and name.startswith("blocks.") for name in infos) == 16


def test_layers_at_other_and_non_square_sizes(lite0):
    infos = {info.name: info for info in lite0.layers((160, 256))}
    assert infos["stem"].shape == (32, 80, 128)
    assert infos["head"].shape == (1280, 5, 8)
    with torch.no_grad():
        assert lite0(torch.rand(1, 3, 97, 131)).shape == (1, 1000)


def test_unknown_layer_lists_close_names(lite0):
    with pytest.raises(KeyError) as info:
        lite0.layer("block.9")
    assert "blocks.9" in str(info.value)


def test_channel_out_of_range_gives_the_range(lite0):
    lite0.check_channel("blocks.9", 111)
    with pytest.raises(IndexError, match=r"0\.\.111"):
        lite0.check_channel("blocks.9", 112)


def test_labels_lookup(lite0):
    assert lite0.labels.index("daisy") == 985
    assert lite0.labels.index("Daisy") == 985
    assert lite0.labels.index(985) == 985
    with pytest.raises(KeyError, match="daisy"):
        lite0.labels.index("daisys")
    with pytest.raises(ValueError, match="ambiguous"):
        lite0.labels.index("crane")
    with pytest.raises(IndexError, match="0..999"):
        lite0.labels.index(1000)


def test_wrap_any_module_with_a_contract():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model = models.wrap(net, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), labels=["cat", "dog"])
    assert [info.name for info in model.layers()] == ["0", "1", "2", "3", "4"]
    assert model.layer_info("0").shape == (4, 32, 32)
    assert model.class_index("dog") == 1
    assert all(p.requires_grad for p in model.parameters())  # the caller's module is left as it was
    with model.frozen():  # Luminate's entry points freeze it only while they run
        assert not any(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_unknown_zoo_name():
    with pytest.raises(KeyError, match="efficientnet_lite0"):
        models.load("efficientnet_lite7")


def test_model_stays_in_eval_mode(lite0):
    lite0.train()
    assert not lite0.training and not lite0.network.training
