"""Default-length renders stop on a plateau; explicit step counts run in full."""

import torch
from torch import nn

from luminate import models, param as P
from luminate.objectives import Objective
from luminate.render import render


def _model():
    torch.manual_seed(0)
    return models.wrap(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()), 8, value_range=(0, 1), name="plateau-net")


def _brightness():   # bounded (the image is a sigmoid): it rises fast, then flattens
    return Objective(lambda acts: acts["input"].mean((1, 2, 3)), ["input"], "brightness")


def test_default_length_stops_on_a_plateau_and_explicit_steps_do_not():
    model = _model()
    short = render(model, _brightness(), param=P.image(8), transforms=[], lr=0.2, seed=0, progress=False)
    assert 192 <= len(short.history) < 512 and len(short.history) % 64 == 0
    assert "stopped_early" in short.settings and short.thresholds[-1] == len(short.history)
    h = short.history.sum(1)
    assert h[-64:].mean() - h[-128:-64].mean() < 0.1 * h[-128:-64].mean().abs()
    full = render(model, _brightness(), param=P.image(8), transforms=[], lr=0.2, seed=0, steps=512, progress=False)
    assert len(full.history) == 512 and "stopped_early" not in full.settings
    torch.testing.assert_close(full.history[:len(short.history)], short.history)   # the same run, cut short
