"""BatchNorm folding during renders: same values and gradients, the user's network put back exactly."""

import contextlib
import importlib

import torch
from torch import nn

from luminate import models, param as P
from luminate.fold import FoldInfo, find_pairs, folded_batchnorm
from luminate.render import render


class _SameConv(nn.Conv2d):
    """A convolution whose forward ignores ``self.bias`` (like EfficientNet's stride-2 "same" convolutions)."""

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        _SameConv(6, 6, 3, padding=1, groups=6, bias=False), nn.BatchNorm2d(6), nn.ReLU6(),
                        nn.Conv2d(6, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for m in net:
        if isinstance(m, nn.BatchNorm2d):   # non-trivial running statistics and affine terms
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


def test_folding_keeps_values_and_gradients_and_restores_the_network():
    net = _net().eval().requires_grad_(False)
    params = {n: (p, p.detach().clone()) for n, p in net.named_parameters()}
    x = torch.rand(2, 3, 12, 12, requires_grad=True)
    plain = net(x)
    (g_plain,) = torch.autograd.grad(plain.sum(), x)
    with folded_batchnorm(net, size=(12, 12), channels_last=True) as info:
        assert info.pairs == [("0", "1"), ("3", "4")] and info.reason is None
        assert net[0].weight is not params["0.weight"][0]                       # replaced, not written to
        folded = net(x)
        (g_folded,) = torch.autograd.grad(folded.sum(), x)
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_folded, g_plain, rtol=1e-5, atol=1e-6)
    for n, p in net.named_parameters():                                        # the same objects, same values
        assert p is params[n][0] and torch.equal(p, params[n][1])
    assert "forward" not in net[1].__dict__ and "forward" not in net[4].__dict__ and net[3].bias is None


def test_not_folded_while_training_or_when_the_conv_is_read():
    net = _net()
    with folded_batchnorm(net) as info:
        assert not info.pairs and "training" in info.reason
    net.eval().requires_grad_(False)
    with folded_batchnorm(net, keep={"0"}) as info:
        assert info.pairs == [("3", "4")]
    shared = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).eval().requires_grad_(False)
    assert find_pairs(shared, torch.rand(1, 3, 4, 4)) == [("0", "1")]
    twice = nn.Sequential(shared[0], nn.BatchNorm2d(3), shared[0]).eval()     # a conv called twice does not fold
    assert find_pairs(twice, torch.rand(1, 3, 4, 4)) == []


def test_render_with_folding_matches_the_unfolded_render(monkeypatch):
    model = models.wrap(_net(), 16, value_range=(0, 1), name="bn-net")
    p = lambda: P.image(16)
    folded = render(model, "6:1", param=p(), transforms=[], steps=8, seed=0, progress=False)
    assert "2 BatchNorm layers folded" in folded.settings["batchnorm"]
    assert all(m.training for m in model.network.modules())                    # mode put back after the call
    render_module = importlib.import_module("luminate.render")
    from luminate.fuse import FusionInfo

    assert "ReLU-like activations computed" in folded.settings["fused"] or not torch.backends.mkldnn.is_available()
    monkeypatch.setattr(render_module, "_folded",
                        lambda *a: contextlib.nullcontext((FoldInfo(reason="test"), FusionInfo(reason="test"))))
    plain = render(model, "6:1", param=p(), transforms=[], steps=8, seed=0, progress=False)
    torch.testing.assert_close(folded.image, plain.image, rtol=0, atol=1e-4)
    torch.testing.assert_close(folded.history, plain.history, rtol=1e-4, atol=1e-5)


def test_units_per_batch_follows_the_device():
    from luminate.fold import units_per_batch

    assert units_per_batch("cpu") == 1 and units_per_batch(torch.device("cpu"), 8) == 1
    assert units_per_batch("cuda", 16) == 16 and units_per_batch("cuda:1", 0) == 1
