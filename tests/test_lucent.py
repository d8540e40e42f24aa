"""luminate.lucent: Lucent's public API with Lucent's meanings, on Luminate's render loop."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from luminate.lucent import util
from luminate.lucent.misc.channel_reducer import ChannelReducer
from luminate.lucent.misc.io import collapse_channels, show
from luminate.lucent.modelzoo import inceptionv1
from luminate.lucent.modelzoo.util import get_model_layers
from luminate.lucent.optvis import objectives, param, render, transform


class Net(nn.Module):
    """torchvision-style: nested Sequentials, a BatchNorm, in-place ReLUs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                      nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True)),
                                      nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def inception():
    return inceptionv1(pretrained=False).eval()


def quiet(model, objective, **kw):
    kw.setdefault("thresholds", (2,))
    return render.render_vis(model, objective, show_image=False, progress=False, **kw)


def test_layer_names_are_lucents(net, inception):
    names = get_model_layers(net)
    assert names[:4] == ["features", "features_0", "features_1", "features_2"] and "features_3_0" in names
    assert isinstance(get_model_layers(net, getLayerRepr=True)["features_0"], str)
    lucent = get_model_layers(inception)
    for name in ("mixed4a", "mixed4a_3x3_pre_relu_conv", "mixed4a_pool_reduce", "softmax2_pre_activation_matmul",
                 "conv2d0", "maxpool10"):
        assert name in lucent
    assert lucent.index("softmax2_pre_activation_matmul") < lucent.index("conv2d0")   # Lucent's order
    _, image_f = param.image(64)
    with render.hook_model(inception, image_f) as hook:
        probs = inception(image_f() * 255 - 117)
        assert hook("mixed4a").shape[1] == 508 and hook("mixed4a_3x3").shape[1] == 204
        assert torch.allclose(hook("softmax2"), probs) and torch.allclose(probs.sum(1), torch.ones(1))
        assert torch.equal(hook("labels"), hook("softmax2")) and hook("input").shape == (1, 3, 64, 64)
        with pytest.raises(KeyError, match="get_model_layers"):
            hook("mixed4z")
    assert all(not m._forward_hooks for m in inception.modules())   # closed: no hook left behind


def test_render_vis_keeps_the_network_and_returns_lucents_arrays(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    util.set_seed(0)
    out = quiet(net, "features_3_0:5", thresholds=(1, 3), param_f=lambda: param.image(32, batch=2))
    assert [a.shape for a in out] == [(2, 32, 32, 3)] * 2 and out[0].dtype == np.float32
    assert 0 <= out[1].min() and out[1].max() <= 1 and not np.array_equal(out[0], out[1])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags and not net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    util.set_seed(0)
    again = quiet(net, "features_3_0:5", thresholds=(1, 3), param_f=lambda: param.image(32, batch=2))
    assert np.array_equal(out[1], again[1])                  # set_seed repeats a render


def test_preprocess_is_lucents_assumption(net, inception):
    assert render.lucent_model(inception).contract.value_range == (-117.0, 138.0)
    imagenet = render.lucent_model(net).contract
    assert imagenet.mean == transform.IMAGENET_MEAN and imagenet.std == transform.IMAGENET_STD
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(render.lucent_model(net).normalize(x), transform.normalize()(x), atol=1e-6)
    assert torch.allclose(render.lucent_model(inception).normalize(x), transform.preprocess_inceptionv1()(x),
                          atol=1e-4)
    assert render.lucent_model(net, preprocess=False).normalize(x).equal(x)


def test_objectives_follow_lucents_formulas():
    acts = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    image = torch.rand(3, 3, 8, 8)
    T = {"L": acts, "M": acts * 2, "input": image}.__getitem__
    assert torch.isclose(objectives.channel("L", 1)(T), -acts[:, 1].mean())
    assert torch.isclose(objectives.channel("L", 1, batch=2)(T), -acts[2, 1].mean())
    assert torch.isclose(objectives.neuron("L", 1)(T), -acts[:, 1, 2, 3].mean())
    assert torch.isclose(objectives.neuron("L", 1, x=4, y=1)(T), -acts[:, 1, 1, 4].mean())
    w = torch.arange(4.0)
    assert torch.isclose(objectives.channel_weight("L", w)(T), -(acts * w.view(1, -1, 1, 1)).mean())
    assert torch.isclose(objectives.neuron_weight("L", w)(T), -(acts[:, :, 2, 3] * w).mean())
    assert torch.isclose(objectives.localgroup_weight("L", w, x=1, y=2, wx=2, wy=2)(T),
                         -(acts[:, :, 2:4, 1:3] * w.view(1, -1, 1, 1)).mean())
    cos = torch.nn.functional.cosine_similarity(w.view(1, -1, 1, 1), acts, dim=1)
    assert torch.isclose(objectives.direction("L", w)(T), -cos.mean())
    assert torch.isclose(objectives.direction_neuron("L", w)(T), -cos[:, 2, 3].mean())
    weights = torch.tensor([0.0, 0.5, 1.0])
    want = -sum((1 - weights[n]) * acts[n, 0].mean() + weights[n] * 2 * acts[n, 2].mean() for n in range(3))
    assert torch.isclose(objectives.channel_interpolate("L", 0, "M", 2)(T), want)
    want = sum(((acts[i] - acts[i + d]) ** 2).mean() / 2.0 ** d for d in (1, 2) for i in range(3 - d))
    assert torch.isclose(objectives.alignment("L")(T), want)
    flat = acts.reshape(3, 4, -1)
    grams = [g / g.norm() for g in flat @ flat.transpose(1, 2)]
    want = -sum((grams[i] * grams[j]).sum() for i in range(3) for j in range(3) if i != j) / 3
    assert torch.isclose(objectives.diversity("L")(T), want, atol=1e-6)
    assert objectives.blur_input_each_step()(T) < 0
    combo = objectives.channel("L", 1) - 1e2 * objectives.diversity("L") + 1
    assert torch.isclose(combo(T), -acts[:, 1].mean() - 100 * objectives.diversity("L")(T) + 1)
    assert combo.layers == {"L"} and (objectives.channel("L", 0) / 2)(T) == -acts[:, 0].mean() / 2
    total = sum([objectives.channel("L", 0), objectives.channel("M", 0)])
    assert torch.isclose(total(T), objectives.Objective.sum([objectives.channel("L", 0),
                                                              objectives.channel("M", 0)])(T))
    assert objectives.as_objective("L:3")(T) == objectives.channel("L", 3)(T)
    assert torch.isclose(objectives.handle_batch(1)(lambda t: t("L").sum())(T), acts[1].sum())
    with pytest.raises(TypeError, match="int or float"):
        objectives.channel("L", 0) * objectives.channel("L", 1)
    with pytest.raises(ValueError, match="layer:channel"):
        objectives.as_objective("L")


def test_custom_objectives_params_and_transforms_render(net):
    @objectives.wrap_objective()
    def mean_of(layer, n, batch=None):
        return lambda T: -T(layer)[:, n].mean()

    obj = mean_of("features_0", 2)
    assert obj.name == "mean_of" and obj.layers is None and obj.description == "Mean_Of [features_0, 2]"
    out = quiet(net, obj + objectives.channel("features_3_0", 1), param_f=lambda: param.image(24, fft=False))
    assert out[0].shape == (1, 24, 24, 3)
    steps = [transform.pad(4), transform.jitter(3), transform.random_scale([0.9, 1.1]),
             transform.random_rotate([-5, 5]), lambda t: t, nn.Identity()]
    quiet(net, "features_3_0:0", transforms=steps, param_f=lambda: param.image(32, decorrelate=False))
    quiet(net, "features_3_0:0", transforms=[], fixed_image_size=40,
          param_f=lambda: param.lowres_tensor((1, 3, 16, 16), (1, 3, 4, 4)))
    raw = param.to_valid_rgb(param.fft_image((1, 3, 16, 16))[1] + param.pixel_image((1, 3, 16, 16))[1],
                             decorrelate=True)
    quiet(net, "features_3_0:0", param_f=lambda: (list(raw.parameters()), raw))
    cppn_params, cppn_f = param.cppn(16, num_layers=3)
    assert cppn_f().shape == (1, 3, 16, 16) and torch.allclose(cppn_f(), torch.full((1, 3, 16, 16), 0.5))
    out = quiet(net, objectives.blur_input_each_step() * -1 + objectives.channel("features_0", 0), transforms=[],
                param_f=lambda: param.cppn(16, num_layers=3), optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    assert out[0].shape == (1, 16, 16, 3)
    tensor = (torch.randn(1, 3, 16, 16) * 0.01).requires_grad_(True)
    custom = quiet(net, "features_0:1", param_f=lambda: ([tensor], lambda: torch.sigmoid(tensor)), transforms=[])
    assert not np.allclose(custom[0], 0.5, atol=1e-4)                    # the tensor itself was optimized


def test_inceptionv1_renders_with_lucents_names(inception, capsys):
    out = quiet(inception, "mixed3a:5", verbose=True, param_f=lambda: param.image(64))
    printed = capsys.readouterr().out
    assert out[0].shape == (1, 64, 64, 3) and "Initial loss" in printed and "Loss at step 2" in printed
    out = quiet(inception, objectives.neuron("mixed3a_3x3_pre_relu_conv", 1) - objectives.diversity("mixed3a"),
                param_f=lambda: param.image(64, batch=2), transforms=transform.standard_transforms)
    assert out[0].shape == (2, 64, 64, 3)
    with pytest.raises(KeyError, match="mixed4a"):
        quiet(inception, "mixed4x:1")


def test_show_save_and_view(net, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("PIL.Image.Image.show", lambda self, *a, **k: shown.append(self.size))
    name = tmp_path / "out.png"
    render.render_vis(net, "features_0:0", param_f=lambda: param.image(16, batch=2), thresholds=(1,),
                      progress=False, save_image=True, image_name=str(name))
    assert shown == [(32, 16)] and name.is_file()


def test_channel_reducer_collapse_and_show(monkeypatch):
    acts = np.abs(np.random.RandomState(0).randn(2, 5, 5, 12)).astype(np.float32)
    reducer = ChannelReducer(3, "NMF")
    out = reducer.fit_transform(acts)
    assert out.shape == (2, 5, 5, 3) and reducer.components.shape == (3, 12)
    assert reducer.transform(acts[:1]).shape == (1, 5, 5, 3)
    assert ChannelReducer(2, "PCA")(acts).shape == (2, 5, 5, 2)
    with pytest.raises(ValueError, match="n_components"):
        ChannelReducer(0)
    rgb = collapse_channels(np.random.RandomState(1).randn(4, 4, 6))
    assert rgb.shape == (4, 4, 3) and (rgb >= -1e-9).all()
    single = collapse_channels(np.array([[1.0, 0, 0]]))              # one channel: pure red, its norm kept
    assert np.allclose(single, [[1.0, 0, 0]], atol=1e-3)
    pytest.importorskip("IPython")
    displayed = []
    monkeypatch.setattr("IPython.display.display", lambda html: displayed.append(html.data))
    show(np.random.rand(2, 8, 8, 5))
    assert displayed and displayed[0].count("<img") == 2


def test_gan_needs_its_weights_file(tmp_path):
    gan = param.upconvGAN("pool5", pretrained=False)
    assert gan.codelen == 256 and gan(torch.zeros(1, 256, 6, 6)).shape == (1, 3, 256, 256)
    assert gan.visualize(torch.zeros(1, 256, 6, 6)).max() <= 1
    with pytest.raises(FileNotFoundError, match="upconvGAN_fc6.pt"):
        param.upconvGAN("fc6", weights=tmp_path / "upconvGAN_fc6.pt")
    with pytest.raises(ValueError, match="fc6, fc7, fc8, pool5"):
        param.upconvGAN("fc9", pretrained=False)


def test_inceptionv1_loads_lucents_checkpoint(tmp_path, inception):
    from luminate.lucent.modelzoo.inceptionv1 import LUCENT_LAYERS

    state = {}
    for name, tensor in inception.state_dict().items():
        module, _, kind = name.rpartition(".")
        lucent = next(n for n, path in LUCENT_LAYERS.items() if path == module and n.endswith(("_conv", "_matmul")))
        state[f"{lucent}.{kind}"] = tensor + 1
    path = tmp_path / "inception5h.pth"
    torch.save(state, path)
    loaded = inceptionv1(pretrained=True, weights=path)
    assert torch.equal(loaded.mixed4a.conv_3x3.pre_relu.weight, inception.mixed4a.conv_3x3.pre_relu.weight + 1)
    with pytest.raises(FileNotFoundError, match="inception"):
        inceptionv1(pretrained=True, weights=tmp_path / "missing.pth")
