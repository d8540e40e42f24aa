"""Bring your own model: networks written the way torchvision and ViT code write them work correctly or say why."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import luminate
from luminate import objectives as obj
from luminate import transforms as T
from luminate.activations import LayerTap, activations, replace_output
from luminate.models import wrap
from luminate.overrides import RedirectedReLU
from nets import TinyViT as ViT

DEAD = 2  # the channel whose bias keeps it below zero on every input


# -- tiny networks ---------------------------------------------------------------------------------------------------

class Spelled(nn.Module):
    """A conv whose channel DEAD never fires, followed by one spelling of ReLU / ReLU6."""

    def __init__(self, spelling: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.bias[DEAD] = -50.0
        self.spelling = spelling
        modules = {"nn.ReLU": nn.ReLU(), "nn.ReLU(inplace)": nn.ReLU(inplace=True), "nn.ReLU6": nn.ReLU6(),
                   "nn.ReLU6(inplace)": nn.ReLU6(inplace=True)}
        self.act = modules.get(spelling, nn.Identity())

    def forward(self, x):
        h = self.conv(x)
        s = self.spelling
        if s.startswith("nn."):
            return self.act(h)
        if s == "F.relu":
            return F.relu(h)
        if s == "F.relu(inplace)":
            return F.relu(h, inplace=True)
        if s == "torch.relu":
            return torch.relu(h)
        if s == "torch.relu_":
            return torch.relu_(h)
        if s == "Tensor.relu":
            return h.relu()
        if s == "Tensor.relu_":
            h.relu_()  # the return value ignored: the tensor itself is changed
            return h
        if s == "F.relu6":
            return F.relu6(h)
        if s == "F.hardtanh(0, 6)":
            return F.hardtanh(h, 0.0, 6.0)
        raise ValueError(s)


class Wrapper(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        self.block = Spelled(spelling)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x).mean((2, 3)))


SPELLINGS = ["nn.ReLU", "nn.ReLU(inplace)", "nn.ReLU6", "nn.ReLU6(inplace)", "F.relu", "F.relu(inplace)",
             "torch.relu", "torch.relu_", "Tensor.relu", "Tensor.relu_", "F.relu6", "F.hardtanh(0, 6)"]


class Res(nn.Module):
    """ResNet-style: one in-place ReLU module called twice."""

    def __init__(self, c=4):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.c2(self.relu(self.c1(x))) + x)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.res = Res(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.drop(self.res(self.bn(self.stem(x))).mean((2, 3))))


def moved(model, objective, redirect, size=16, steps=4):
    r = luminate.render(model, objective, size=size, steps=steps, thresholds=(0, steps), transforms=[], seed=0,
                        progress=False, redirect_relu_steps=redirect)
    return float((r.images[-1] - r.images[0]).abs().max()), r


# -- the input contract ----------------------------------------------------------------------------------------------

def test_a_bare_module_is_refused_with_how_to_wrap_it():
    net = Wrapper("nn.ReLU")
    for call in (lambda: luminate.render(net, "block:0", steps=1, progress=False),
                 lambda: activations(net, torch.rand(1, 3, 8, 8), "block")):
        with pytest.raises(TypeError, match=r"wrap\(net, size, mean=.*preset='imagenet'"):
            call()
    with pytest.raises(ValueError, match="input convention"):
        wrap(net, 16)  # a size alone does not say what range the network expects
    model = wrap(net, 16, preset="imagenet")
    assert model.contract.mean == (0.485, 0.456, 0.406) and model.contract.std == (0.229, 0.224, 0.225)
    x = torch.rand(1, 3, 16, 16)
    expected = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected, atol=1e-6)
    assert wrap(net, 16, preset="imagenet", value_range=(0, 1)).contract.value_range == (0, 1)  # explicit wins
    with pytest.raises(ValueError, match="known presets: imagenet"):
        wrap(net, 16, preset="imagenette")
    # the contract's constants are buffers: they follow the model to its device and dtype
    assert {"input_scale", "input_shift"} <= {name for name, _ in model.named_buffers()}
    assert model.double().input_scale.dtype == torch.float64


# -- the redirected ReLU ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_dead_unit_wakes_up_through_every_relu_spelling(spelling):
    model = wrap(Wrapper(spelling).eval(), 16, value_range=(0, 1))
    layer = "block.act" if spelling.startswith("nn.") else "block"  # the ReLU itself, or the module calling it
    still, _ = moved(model, obj.channel(layer, DEAD), redirect=0)
    assert still == 0.0  # no gradient reaches a dead unit without the redirect
    woke, result = moved(model, obj.channel(layer, DEAD), redirect=4)
    assert woke > 1e-4, f"{spelling}: the redirect did not reach the dead unit"
    assert result.settings["redirect_relu"].startswith("1 ReLU-like calls per step")


def test_the_redirect_reaches_one_call_of_a_reused_in_place_relu():
    net = ResNet().eval()
    with torch.no_grad():
        net.res.c2.bias[1] = -50.0  # channel 1 dies at the second call of res.relu
    model = wrap(net, 16, value_range=(0, 1))
    still, _ = moved(model, "res.relu#1:1", redirect=0)
    woke, _ = moved(model, "res.relu#1:1", redirect=4)
    assert still == 0.0 and woke > 1e-4


def test_redirect_outside_its_block_and_for_frozen_inputs_is_the_true_gradient():
    x = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    with RedirectedReLU() as mode:
        y = F.relu(x)
        F.relu(torch.tensor([-1.0]))  # no gradient wanted: not counted
    (-F.relu(x * 1).sum() - y.sum()).backward()  # the first term ran outside the block
    assert x.grad.tolist() == [[-1.0, -1.0]] and mode.count == 1  # redirected inside + zero outside


def test_a_network_without_relu_says_so():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 1))
    result = luminate.render(wrap(net, 16, value_range=(0, 1)), "2:0", size=16, steps=2, transforms=[],
                             progress=False)
    assert "no ReLU-like unit" in result.settings["redirect_relu"]


# -- token layouts ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return wrap(ViT().eval(), 16, preset="symmetric", layout="tokens", layer_layouts={"blocks.1.linear1": "channels"})


def test_token_layers_are_channels_on_a_grid(vit):
    info = vit.layer_info("blocks.0")
    assert (info.channels, info.grid, info.tokens, info.prefix_tokens, info.layout) == (16, (4, 4), 17, 1, "tokens")
    assert vit.layer_info("patch").layout == "channels"  # a 4-D output is never read as tokens
    assert vit.layer_info("blocks.1.linear1").shape == (17, 32)  # the per-layer override: read as [C=17, 32]
    assert "token layers" in repr(vit)
    with pytest.raises(KeyError, match="blocks.1"):
        wrap(ViT(), 16, preset="symmetric", layout="tokens", layer_layouts={"blocks.7": "channels"})
    x = torch.rand(2, 3, 16, 16)
    native = activations(vit, x, "blocks.0")
    assert native.shape == (2, 17, 16)  # activations() gives what the network computed ...
    grid = activations(vit, x, "blocks.0", grid=True)  # ... and the grid on request, as objectives see it
    assert torch.equal(grid, native[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4))
    with pytest.raises(IndexError, match=r"0\.\.15"):
        luminate.render(vit, obj.channel("blocks.0", 16), steps=1, progress=False)
    assert vit.contract.fixed_size and luminate.render(vit, "blocks.0:1", steps=1, progress=False).image.shape == (
        1, 3, 16, 16)


def test_a_token_channel_objective_raises_that_channel(vit):
    x0 = torch.full((1, 3, 16, 16), 0.5)
    before = activations(vit, x0, "blocks.1", grid=True)[0].mean((1, 2))
    result = luminate.render(vit, "blocks.1:5", steps=32, seed=0, transforms=[], progress=False)
    after = activations(vit, result.image, "blocks.1", grid=True)[0].mean((1, 2))
    gain = after - before
    assert gain[5] > 0.5 and gain[5] == gain.max()  # channel 5 rose, more than any other channel


def test_replacing_a_token_layer_works_on_its_grid(vit):
    x = torch.rand(1, 3, 16, 16)
    seen = []

    def zero_patches(grid):
        seen.append(tuple(grid.shape))
        return torch.zeros_like(grid)

    with torch.no_grad(), replace_output(vit, "blocks.0", zero_patches), LayerTap(vit, ["blocks.1"], grid=False) as tap:
        replaced = tap(x)["blocks.1"]
    with torch.no_grad():
        t = vit.network.blocks[0](torch.cat([vit.network.cls, vit.network.patch(vit.normalize(x)).flatten(2).transpose(
            1, 2)], 1) + vit.network.pos)
        expected = vit.network.blocks[1](torch.cat([t[:, :1], torch.zeros_like(t[:, 1:])], 1))
    assert seen == [(1, 16, 4, 4)] and torch.allclose(replaced, expected, atol=1e-5)  # class token kept


# -- reused modules --------------------------------------------------------------------------------------------------

def test_a_reused_module_warns_and_each_call_is_addressable():
    net = ResNet().eval()
    model = wrap(net, 16, value_range=(0, 1))
    x = torch.rand(1, 3, 16, 16)
    assert model.layer_info("res.relu").calls == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = activations(model, x, "res.relu")
    assert any("'res.relu' of ResNet runs 2 times" in str(w.message) and "res.relu#1" in str(w.message)
               for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # addressing a call is explicit: no warning
        acts = activations(model, x, ["res.relu#0", "res.relu#1"])
    with torch.no_grad():
        h = net.bn(net.stem(x))
        call0 = torch.relu(net.res.c1(h))
        call1 = torch.relu(net.res.c2(call0) + h)
    assert torch.allclose(first, call0) and torch.allclose(acts["res.relu#0"], call0)
    assert torch.allclose(acts["res.relu#1"], call1, atol=1e-6)
    with pytest.raises(IndexError, match=r"#0\.\.#1"):
        model.layer_info("res.relu#2")
    # replacing one call leaves the other as it was (what layer attribution relies on)
    with torch.no_grad(), replace_output(model, "res.relu#1", torch.zeros_like), LayerTap(model, ["res.relu#0"]) as tap:
        assert torch.allclose(tap(x)["res.relu#0"], call0)
        out = model(x)
    assert torch.allclose(out, net.fc(torch.zeros(1, 4)))


# -- the caller's module ---------------------------------------------------------------------------------------------

def test_the_callers_module_is_left_as_it_was():
    from luminate.analysis import attribution

    net = ResNet()
    net.train()
    net.res.c1.requires_grad_(False)  # a partly frozen network, mid-training
    net.drop.eval()
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    stats = net.bn.running_mean.clone()
    model = wrap(net, 16, value_range=(0, 1), labels=["a", "b", "c"])
    luminate.render(model, "res:1", size=16, steps=2, progress=False)
    activations(model, torch.rand(2, 3, 16, 16), ["res.relu#1", "bn"])
    attribution.spatial_attribution(model, torch.rand(1, 3, 16, 16), "res", target="b")
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert torch.equal(net.bn.running_mean, stats)  # everything above ran in eval mode
    model.eval()
    assert not net.training
    model.train()  # Model.train() sets the network's mode, so training can go on
    assert net.training and net.bn.training


# -- other channel counts, thresholds, fixed sizes -------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 5])
def test_the_default_image_has_the_models_channels(channels):
    torch.manual_seed(0)  # the network's weights; the render has its own seed
    net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        net[0].bias[0] = 1.0  # a live unit
    model = wrap(net, 16, value_range=(0, 1), channels=channels)
    result = luminate.render(model, "1:0", size=16, steps=8, transforms=[], progress=False, seed=0)
    assert result.image.shape == (1, channels, 16, 16)
    assert result.history[-1, 0] > result.history[0, 0]


def test_thresholds_alone_set_the_steps_and_image_is_the_final_state():
    model = wrap(Wrapper("nn.ReLU"), 16, value_range=(0, 1))
    r = luminate.render(model, "block:0", size=16, thresholds=(2, 4), transforms=[], progress=False, seed=0)
    assert len(r.history) == 4 and r.thresholds == [2, 4]
    r = luminate.render(model, "block:0", size=16, steps=5, thresholds=(2,), transforms=[], progress=False, seed=0)
    assert len(r.history) == 5 and r.thresholds == [2, 5]  # the final state is kept after the thresholds
    again = luminate.render(model, "block:0", size=16, steps=5, transforms=[], progress=False, seed=0)
    assert torch.equal(r.image, again.image)


def test_fit_to_crops_larger_and_resizes_smaller_images():
    x = torch.rand(2, 3, 20, 24)
    fit = T.fit_to(16)
    assert torch.equal(fit(x), x[..., 2:18, 4:20])
    assert fit(torch.rand(1, 3, 10, 12)).shape == (1, 3, 16, 16)
    assert fit(x[..., :16, :16]) is not None and torch.equal(fit(x[..., :16, :16]), x[..., :16, :16])
    chained = T.end_at_size(T.standard_transforms(), (16, 16))
    assert chained(torch.rand(1, 3, 16, 16), torch.Generator().manual_seed(0)).shape == (1, 3, 16, 16)


def test_subpackages_are_reachable_from_the_top_level():
    for name in ("atlas", "analysis", "recipes", "lucid"):
        assert getattr(luminate, name).__name__ == f"luminate.{name}"
    assert "atlas" in dir(luminate)
    with pytest.raises(AttributeError):
        luminate.not_a_subpackage


# -- devices ---------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_render_on_cuda_without_a_sync_per_step():
    torch.manual_seed(0)
    model = wrap(ResNet().eval(), 32, preset="imagenet", device="cuda")
    assert model.input_scale.device.type == "cuda"
    steps = 12
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = luminate.render(model, "res:1", size=32, steps=steps, transforms=[], progress=False, seed=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) < steps // 2, [str(w.message) for w in syncs[:5]]
    assert result.image.device.type == "cpu" and result.settings["device"].startswith("cuda")
    assert result.history[-1, 0] > result.history[0, 0]


def test_atlas_collection_reads_token_layers_and_one_call(vit, tmp_path):
    from luminate.atlas import collect

    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labelled = wrap(vit.network, 16, preset="symmetric", layout="tokens", labels=[str(i) for i in range(5)])
    store = collect(labelled, images, "blocks.0", tmp_path / "vit", positions_per_image=2, batch_size=2,
                    progress=False)  # forward-mode attribution through nn.TransformerEncoderLayer
    assert store.layer_info("blocks.0")["channels"] == 16 and store.layer_info("blocks.0")["grid"] == [4, 4]
    grid = activations(labelled, images, "blocks.0", grid=True)
    yx = store.positions("blocks.0")
    expected = torch.stack([grid[i // 2, :, y, x] for i, (y, x) in enumerate(yx.tolist())])
    assert torch.allclose(torch.as_tensor(store.activations("blocks.0")), expected, atol=1e-5)
    net = ResNet().eval()
    model = wrap(net, 16, value_range=(0, 1), labels=["a", "b", "c"])
    store = collect(model, images, "res.relu#1", tmp_path / "res", positions_per_image=1, progress=False,
                    attribute=False)
    second = activations(model, images, "res.relu#1")
    yx = store.positions("res.relu#1")
    expected = torch.stack([second[i, :, y, x] for i, (y, x) in enumerate(yx.tolist())])
    assert torch.allclose(torch.as_tensor(store.activations("res.relu#1")), expected, atol=1e-5)
