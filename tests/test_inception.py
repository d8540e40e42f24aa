"""InceptionV1 (inception5h): Lucid's layer names and shapes, any input size, checkpoint loading, labels."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from luminate import models
from luminate.activations import activations
from luminate.models import inception
from luminate.models.inception import inception_v1, lucid_layer

# The checkpoint's architecture, written out independently of the module:
# (block, input channels, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool_reduce).
BLOCKS = [("mixed3a", 192, 64, 96, 128, 16, 32, 32), ("mixed3b", 256, 128, 128, 192, 32, 96, 64),
          ("mixed4a", 480, 192, 96, 204, 16, 48, 64), ("mixed4b", 508, 160, 112, 224, 24, 64, 64),
          ("mixed4c", 512, 128, 128, 256, 24, 64, 64), ("mixed4d", 512, 112, 144, 288, 32, 64, 64),
          ("mixed4e", 528, 256, 160, 320, 32, 128, 128), ("mixed5a", 832, 256, 160, 320, 48, 128, 128),
          ("mixed5b", 832, 384, 192, 384, 48, 128, 128)]
DEPTHS = {"conv2d0": 64, "conv2d1": 64, "conv2d2": 192, "mixed3a": 256, "mixed3b": 480, "mixed4a": 508,
          "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024,
          "softmax2": 1008}  # Lucid's InceptionV1.layers
SPATIAL_224 = {"conv2d0": 112, "conv2d1": 56, "conv2d2": 56, "mixed3a": 28, "mixed3b": 28, "mixed4a": 14,
               "mixed4b": 14, "mixed4c": 14, "mixed4d": 14, "mixed4e": 14, "mixed5a": 7, "mixed5b": 7}


def lucent_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random state dict with the key names and shapes of lucent's / ProGamerGov's inception5h.pth."""
    shapes = {"conv2d0": (64, 3, 7), "conv2d1": (64, 64, 1), "conv2d2": (192, 64, 3)}
    for name, cin, c1, c3b, c3, c5b, c5, cp in BLOCKS:
        shapes.update({f"{name}_1x1": (c1, cin, 1), f"{name}_3x3_bottleneck": (c3b, cin, 1),
                       f"{name}_3x3": (c3, c3b, 3), f"{name}_5x5_bottleneck": (c5b, cin, 1),
                       f"{name}_5x5": (c5, c5b, 5), f"{name}_pool_reduce": (cp, cin, 1)})
    state = {}
    for name, (cout, cin, k) in shapes.items():
        scale = (2 / (cin * k * k)) ** 0.5
        state[f"{name}_pre_relu_conv.weight"] = torch.randn(cout, cin, k, k, generator=generator) * scale
        state[f"{name}_pre_relu_conv.bias"] = torch.randn(cout, generator=generator) * 0.1
    state["softmax2_pre_activation_matmul.weight"] = torch.randn(1008, 1024, generator=generator) * 0.03
    state["softmax2_pre_activation_matmul.bias"] = torch.randn(1008, generator=generator) * 0.1
    return state


def reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The TF graph at 224 px with explicit pads (as lucent's port writes them) and TF's LRN parameters."""
    def conv(name, h, pad=None, stride=1):
        if pad:
            h = F.pad(h, pad)
        return F.conv2d(h, state[f"{name}_pre_relu_conv.weight"], state[f"{name}_pre_relu_conv.bias"], stride)

    def maxpool_s2(h):
        return F.max_pool2d(F.pad(h, (0, 1, 0, 1), value=float("-inf")), 3, 2)

    def lrn(h):
        return F.local_response_norm(h, size=11, alpha=11 * 1e-4, beta=0.5, k=2.0)

    h = lrn(maxpool_s2(F.relu(conv("conv2d0", x, (2, 3, 2, 3), stride=2))))
    h = maxpool_s2(lrn(F.relu(conv("conv2d2", F.relu(conv("conv2d1", h)), (1, 1, 1, 1)))))
    for name, *_ in BLOCKS:
        if name in ("mixed4a", "mixed5a"):
            h = maxpool_s2(h)
        pool = F.max_pool2d(F.pad(h, (1, 1, 1, 1), value=float("-inf")), 3, 1)
        h = torch.cat([conv(f"{name}_1x1", h),
                       conv(f"{name}_3x3", F.relu(conv(f"{name}_3x3_bottleneck", h)), (1, 1, 1, 1)),
                       conv(f"{name}_5x5", F.relu(conv(f"{name}_5x5_bottleneck", h)), (2, 2, 2, 2)),
                       conv(f"{name}_pool_reduce", pool)], 1).relu()
    h = F.avg_pool2d(h, 7).flatten(1)
    return F.linear(h, state["softmax2_pre_activation_matmul.weight"], state["softmax2_pre_activation_matmul.bias"])


@pytest.fixture(scope="module")
def model():
    return inception_v1(weights=False)


@pytest.fixture(scope="module")
def lucent_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "inception5h.pth"
    torch.save(lucent_state_dict(torch.Generator().manual_seed(1)), path)
    return path


def test_lucids_layers_have_lucids_depths_and_spatial_sizes_at_224(model):
    infos = {info.name: info for info in models.layers(model)}
    top = [name for name in infos if "." not in name]
    assert [n for n in top if n in DEPTHS] == list(DEPTHS)  # forward order
    for name, depth in DEPTHS.items():
        assert infos[name].channels == depth, name
    for name, side in SPATIAL_224.items():
        assert infos[name].spatial == (side, side), name
    assert infos["softmax2"].shape == (1008,)


def test_pre_relu_points_are_addressable_and_relu_of_them_is_the_layer(model):
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    names = ["conv2d0", "conv2d0.pre_relu", "mixed4a", "mixed4a.pre_relu", "mixed4a.conv_3x3",
             "mixed4a.conv_3x3.pre_relu", "mixed4a.conv_3x3_bottleneck.pre_relu", "mixed4a.pool"]
    acts = activations(model, x, names)
    assert torch.equal(acts["conv2d0"], acts["conv2d0.pre_relu"].relu())
    assert torch.equal(acts["mixed4a"], acts["mixed4a.pre_relu"].relu())
    assert (acts["mixed4a.pre_relu"] < 0).any()  # pre-ReLU really is before the ReLU
    # Branch order in the concatenation: 1x1 (192), 3x3 (204), 5x5 (48), pool_reduce (64).
    assert torch.equal(acts["mixed4a.pre_relu"][:, 192:396], acts["mixed4a.conv_3x3.pre_relu"])
    assert torch.equal(acts["mixed4a"][:, 192:396], acts["mixed4a.conv_3x3"])
    assert acts["mixed4a.conv_3x3_bottleneck.pre_relu"].shape[1] == 96
    assert acts["mixed4a.pool"].shape[1] == 480
    # Every ReLU is an nn.ReLU module, so module-based gradient overrides reach all 57 of them.
    assert sum(isinstance(m, nn.ReLU) for m in model.network.modules()) == 57


@pytest.mark.parametrize("size", [(128, 128), (160, 224), (64, 64), (97, 131)])
def test_any_input_size_runs_with_tf_same_spatial_sizes(model, size):
    infos = {info.name: info for info in model.layers(size)}  # runs one full forward pass at this size
    assert infos["softmax2"].shape == (1008,)
    for name, stride in [("conv2d0", 2), ("conv2d2", 4), ("mixed3b", 8), ("mixed4e", 16), ("mixed5b", 32)]:
        assert infos[name].spatial == tuple(math.ceil(s / stride) for s in size), name


def test_logits_are_n_by_1008(model):
    with torch.no_grad():
        assert model(torch.full((3, 3, 128, 128), 0.5)).shape == (3, 1008)


def test_strict_loading_of_a_lucent_format_checkpoint_matches_the_tf_graph(lucent_file):
    state = torch.load(lucent_file, weights_only=True)
    model = inception_v1(lucent_file)
    net = model.network
    assert torch.equal(net.mixed4a.conv_3x3_bottleneck.pre_relu.weight,
                       state["mixed4a_3x3_bottleneck_pre_relu_conv.weight"])
    assert torch.equal(net.softmax2.bias, state["softmax2_pre_activation_matmul.bias"])
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        ref = reference_logits(state, x * 255 - 117)  # the contract: [0, 1] -> (-117, 138)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert ours.std() > 0.1  # a real signal, not everything dead


def test_captum_format_and_own_format_load_to_the_same_weights(lucent_file, tmp_path):
    lucent = torch.load(lucent_file, weights_only=True)
    captum_names = {"1x1": "conv_1x1", "3x3_bottleneck": "conv_3x3_reduce", "3x3": "conv_3x3",
                    "5x5_bottleneck": "conv_5x5_reduce", "5x5": "conv_5x5", "pool_reduce": "pool_proj"}
    captum = {}
    for key, value in lucent.items():
        module, param = key.rsplit(".", 1)
        module = module.removesuffix("_pre_relu_conv")
        if module.startswith("conv2d"):
            module = f"conv{int(module[-1]) + 1}"
        elif module == "softmax2_pre_activation_matmul":
            module = "fc"
        else:
            block, branch = module.split("_", 1)
            module = f"{block}.{captum_names[branch]}"
        captum[f"{module}.{param}"] = value
    torch.save(captum, tmp_path / "captum.pth")
    from_lucent = inception_v1(lucent_file).network.state_dict()
    from_captum = inception_v1(tmp_path / "captum.pth").network.state_dict()
    torch.save(from_captum, tmp_path / "own.pth")
    from_own = inception_v1(tmp_path / "own.pth").network.state_dict()
    assert from_lucent.keys() == from_captum.keys() == from_own.keys()
    assert all(torch.equal(from_lucent[k], from_captum[k]) and torch.equal(from_lucent[k], from_own[k])
               for k in from_lucent)


def test_a_checkpoint_with_a_stray_or_missing_key_is_refused(lucent_file, tmp_path):
    state = torch.load(lucent_file, weights_only=True)
    torch.save({**state, "head0_bottleneck_pre_relu_conv.weight": torch.zeros(128, 508, 1, 1)}, tmp_path / "extra.pth")
    with pytest.raises(KeyError, match="head0_bottleneck_pre_relu_conv.weight"):
        inception_v1(tmp_path / "extra.pth")
    del state["mixed5b_5x5_pre_relu_conv.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match=r"mixed5b\.conv_5x5\.pre_relu\.bias"):
        inception_v1(tmp_path / "missing.pth")


def test_missing_weights_error_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("LUMINATE_CACHE", str(tmp_path))
    expected = tmp_path / "inception_v1.pth"
    assert inception.weights_path() == expected
    with pytest.raises(FileNotFoundError) as err:
        inception_v1(weights=True)
    assert str(expected) in str(err.value) and inception.WEIGHTS_URL in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        inception_v1(tmp_path / "nowhere.pth")


def test_weights_true_loads_the_cached_file(monkeypatch, tmp_path, lucent_file):
    monkeypatch.setenv("LUMINATE_CACHE", str(tmp_path))
    (tmp_path / "inception_v1.pth").write_bytes(lucent_file.read_bytes())
    state = torch.load(lucent_file, weights_only=True)
    net = models.load("inception_v1").network  # weights=True by default
    assert torch.equal(net.conv2d0.pre_relu.weight, state["conv2d0_pre_relu_conv.weight"])


def test_lrn_is_tensorflows_formula():
    x = torch.randn(2, 20, 3, 3, generator=torch.Generator().manual_seed(0)) * 30
    r, bias, alpha, beta = 5, 2.0, 1e-4, 0.5
    sq = F.pad(x * x, (0, 0, 0, 0, r, r))
    sums = torch.stack([sq[:, c:c + 2 * r + 1].sum(1) for c in range(20)], 1)
    torch.testing.assert_close(inception.LocalResponseNorm()(x), x / (bias + alpha * sums) ** beta)


def test_labels_are_inception5h_with_1008_entries(model):
    labels = model.labels
    assert len(labels) == 1008
    assert (labels[0], labels[1], labels[2], labels[1000]) == ("dummy", "kit fox", "English setter", "dumbbell")
    assert labels.index("tench") == 449 and labels.index("daisy") == 357
    assert labels[1001] == "unused 1001" and labels[1007] == "unused 1007"


def test_zoo_load_without_weights(model):
    m = models.load("inception_v1", weights=False)
    assert isinstance(m, models.Model) and m.name == "inception_v1"
    assert m.contract.size == (224, 224)
    lo, hi = m.contract.network_range
    assert lo == (-117.0,) * 3 and hi == (138.0,) * 3
    assert not any(p.requires_grad for p in m.parameters())


def test_lucid_names_translate_to_layers(model):
    assert lucid_layer("mixed4a_pre_relu") == "mixed4a.pre_relu"
    assert lucid_layer("mixed4b_3x3_bottleneck_pre_relu") == "mixed4b.conv_3x3_bottleneck.pre_relu"
    assert lucid_layer("mixed5b_pool_reduce") == "mixed5b.pool_reduce"
    assert lucid_layer("conv2d2_pre_relu") == "conv2d2.pre_relu"
    assert lucid_layer("softmax2_pre_activation") == lucid_layer("softmax2") == "softmax2"
    for name in ["mixed4a_pre_relu", "mixed4c_5x5", "mixed3a_pool", "maxpool10", "localresponsenorm1", "avgpool0"]:
        model.layer(lucid_layer(name))  # resolves
    with pytest.raises(KeyError, match="auxiliary"):
        lucid_layer("softmax0_pre_activation")
    with pytest.raises(KeyError):
        lucid_layer("mixed4a_pool_pre_relu")
