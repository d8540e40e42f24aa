"""Convolutions computed with the ReLU after them (luminate.fuse): same values and input gradients as the separate
modules, tapped tensors left alone, another reader of the pre-activation undoes it, everything restored after."""

import contextlib

import pytest
import torch
from torch import nn

from luminate.fuse import find_conv_activations, fused_activations
from luminate.overrides import RedirectedReLU

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs PyTorch built with oneDNN")


class Net(nn.Module):
    def __init__(self, leak_preactivation: bool = False):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6()
        self.conv2, self.act2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU()
        self.conv3, self.act3 = nn.Conv2d(8, 4, 1), nn.ReLU()
        self.leak = leak_preactivation

    def forward(self, x):
        pre = self.conv1(x)
        y = self.act1(pre)
        if self.leak:                    # a functional reader of the pre-activation tensor
            y = y + 0.5 * pre
        return self.act3(self.conv3(self.act2(self.conv2(y)))).mean((2, 3))


def _frozen(net):
    torch.manual_seed(0)
    for p in net.parameters():
        p.requires_grad_(False)
        p.mul_(3)                        # activations beyond the ReLU6 cap too
    return net.eval()


def _value_and_grad(net, x):
    x = x.clone().requires_grad_(True)
    y = net(x)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    return y.detach(), grad


def test_fused_pairs_give_the_same_values_and_input_gradients_and_are_undone():
    net = _frozen(Net())
    x, probe = torch.rand(2, 3, 20, 20), torch.rand(1, 3, 16, 16)
    want = _value_and_grad(net, x)
    assert find_conv_activations(net, probe) == [("conv1", "act1"), ("conv2", "act2"), ("conv3", "act3")]
    with fused_activations(net, probe) as info:
        assert len(info.pairs) == 3 and info.convs == ["conv1", "conv2", "conv3"]
        assert "3 convolutions" in info.summary() and "3 ReLU-like" in info.summary()
        got = _value_and_grad(net, x)
        assert net.act1.forward(torch.full((1,), 9.0)).item() == 6.0   # anything but the fused output is activated
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in net.modules())


def test_a_kept_convolution_is_not_fused_and_a_preactivation_reader_undoes_everything():
    net, probe = _frozen(Net()), torch.rand(1, 3, 16, 16)
    with fused_activations(net, probe, keep=["conv2"]) as info:
        assert [c for c, _ in info.pairs] == ["conv1", "conv3"] and info.convs == ["conv1", "conv3"]
    leaky = _frozen(Net(leak_preactivation=True))
    want = _value_and_grad(leaky, probe)
    with fused_activations(leaky, probe) as info:
        assert info.pairs == [] == info.convs and "changed the probe's outputs" in info.reason
        torch.testing.assert_close(_value_and_grad(leaky, probe)[0], want[0])


def test_paused_runs_the_activation_modules_so_the_redirect_sees_them():
    net, probe = _frozen(Net()), torch.rand(1, 3, 16, 16)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with fused_activations(net, probe) as info:
        with RedirectedReLU() as fused_mode:
            net(x)
        with RedirectedReLU() as paused_mode, info.paused():
            net(x)
    assert fused_mode.count == 0 and paused_mode.count == 3


def test_a_training_network_is_left_alone():
    net = Net()
    with fused_activations(net, torch.rand(1, 3, 16, 16)) as info:
        assert info.pairs == [] and "training" in info.reason


def test_render_fuses_all_but_the_tapped_convolution_and_says_so():
    from luminate import render
    from luminate.models import wrap

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 1), nn.ReLU())
    model = wrap(net, 16, value_range=(0, 1))
    fused = render(model, "2:1", steps=20, size=16, progress=False, seed=0, redirect_relu_steps=0)
    # "2" is read: that convolution stays as it is, and so does the ReLU after it
    assert fused.settings["fused"].startswith("2 convolutions") and "2 ReLU-like" in fused.settings["fused"]
    assert fused.history[-1] > fused.history[0]
    assert all("forward" not in m.__dict__ for m in net.modules())


def test_redirecting_gives_fused_pairs_the_redirected_gradient():
    net, probe = _frozen(Net()), torch.rand(1, 3, 16, 16)
    for p in net.conv3.parameters():
        p.fill_(-1.0)                                  # conv3 + ReLU: dead everywhere, no true gradient
    x = torch.rand(1, 3, 16, 16)

    def gradient(run):
        xi = x.clone().requires_grad_(True)
        with run():
            y = net(xi)
        return torch.autograd.grad(-y.sum(), xi, allow_unused=True)[0]   # descent on -objective, as render

    with fused_activations(net, probe) as info:
        assert info.pairs
        fused_mode = RedirectedReLU()
        fused = gradient(lambda: _both(fused_mode, info.redirecting(fused_mode)))
        plain_mode = RedirectedReLU()
        separate = gradient(lambda: _both(plain_mode, info.paused()))
        dead = gradient(contextlib.nullcontext)
    assert dead is None or float(dead.abs().sum()) == 0.0        # no redirect: the dead unit passes nothing back
    assert float(separate.abs().sum()) > 0
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-6)
    assert fused_mode.count == plain_mode.count == 3


@contextlib.contextmanager
def _both(first, second):
    with first, second:
        yield


def test_complete_when_every_relu_call_is_fused():
    net, probe = _frozen(Net()), torch.rand(1, 3, 16, 16)
    with fused_activations(net, probe) as info:
        assert info.unfused_calls == 0 and info.complete
        with info.paused():
            assert not info.complete
    with fused_activations(net, probe, keep=["conv2"]) as info:     # act2 stays a separate ReLU call
        assert info.unfused_calls == 1 and not info.complete


def test_weights_that_cannot_be_packed_run_plain_and_say_so(monkeypatch, caplog):
    import logging

    from luminate import fuse

    def refuse(*args, **kwargs):
        raise RuntimeError("no packing here")

    net, probe, x = _frozen(Net()), torch.rand(1, 3, 16, 16), torch.rand(2, 3, 20, 20)
    want = _value_and_grad(net, x)
    monkeypatch.setattr(fuse, "_packed", refuse)
    with caplog.at_level(logging.WARNING, logger="luminate"), fused_activations(net, probe) as info:
        got = _value_and_grad(net, x)
    assert info.unpacked == 3 and "could not be packed" in caplog.text
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
