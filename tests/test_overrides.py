"""The redirected ReLU gradient: dead units get a gradient for the first steps, live ones the true one."""

import torch
from torch import nn

from luminate.overrides import RedirectedReLU


def grad_through(module, x, weight):
    x = x.clone().requires_grad_(True)
    with RedirectedReLU(module):
        y = module(x)
    (-(y * weight).sum()).backward()
    return x.grad


def test_dead_relu_passes_gradient_that_would_wake_it():
    net = nn.Sequential(nn.ReLU())
    g = grad_through(net, torch.tensor([[-1.0, -2.0]]), torch.ones(1, 2))
    # minimizing -y: the gradient -1 pushes the inputs up (descent adds +lr), toward firing
    assert torch.equal(g, torch.tensor([[-1.0, -1.0]]))


def test_dead_relu_refuses_gradient_pushing_further_down():
    net = nn.Sequential(nn.ReLU())
    g = grad_through(net, torch.tensor([[-1.0, -2.0]]), torch.tensor([[1.0, -1.0]]))
    assert torch.equal(g, torch.tensor([[-1.0, 0.0]]))


def test_live_items_get_the_true_gradient_per_batch_item():
    net = nn.Sequential(nn.ReLU())
    x = torch.tensor([[1.0, -2.0], [-1.0, -3.0]])
    g = grad_through(net, x, torch.ones(2, 2))
    assert torch.equal(g[0], torch.tensor([-1.0, 0.0]))  # item 0 alive: true ReLU gradient
    assert torch.equal(g[1], torch.tensor([-1.0, -1.0]))  # item 1 dead: redirected


def test_relu6_caps_and_hooks_are_removed():
    net = nn.Sequential(nn.ReLU6())
    g = grad_through(net, torch.tensor([[7.0, 8.0]]), torch.tensor([[-1.0, 1.0]]))
    # dL/dy = -weight = [+1, -1]: +1 moves 7 down toward the live range (kept), -1 pushes 8 higher (refused)
    assert torch.equal(g, torch.tensor([[1.0, 0.0]]))
    assert all(not m._forward_hooks for m in net.modules())
    x = torch.tensor([[-1.0]], requires_grad=True)
    (-net(x).sum()).backward()
    assert x.grad.item() == 0.0  # outside the context: the true gradient
