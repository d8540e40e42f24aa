"""wrap(..., preset="imagenet") is torchvision's ImageNet evaluation transform, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from luminate.models import wrap


def torchvision_eval(path: str, size: int = 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """torchvision's documented eval transform, written with PIL: Resize(int(size / 0.875)) resizes the shorter
    side with PIL's BILINEAR filter (the longer side ``int(short * long / short_in)``), CenterCrop(size) takes
    offsets ``int(round((in - out) / 2))``, ToTensor divides by 255, Normalize."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    short = int(size / 0.875)
    nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    image = image.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    return x, (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


class Probe(nn.Module):  # returns what the network receives
    def forward(self, x):
        return x


@pytest.mark.parametrize("photo", ["flower_path", "china_path"])
@pytest.mark.parametrize("size", [224, 96])
def test_imagenet_preset_is_torchvisions_eval_transform(photo, size, request):
    path = request.getfixturevalue(photo)
    reference, normalized = torchvision_eval(path, size)
    model = wrap(Probe(), size, preset="imagenet")
    ours = model.preprocess(path)[0]
    assert ours.shape == reference.shape == (3, size, size)
    assert float((ours - reference).abs().max()) <= 1 / 255           # same pixels within one 8-bit level
    assert float((ours - reference).abs().mean()) < 0.35 / 255         # 8-bit rounding of PIL's result
    cropped_first = wrap(Probe(), size, preset="imagenet", interpolation="bilinear")
    object.__setattr__(cropped_first.contract, "resize_first", False)   # crop 0.875 then resize: not the same
    assert float((cropped_first.preprocess(path)[0] - reference).abs().max()) > 4 / 255
    seen = model(ours[None])[0]                                        # and the same normalized network input
    assert float(((seen - normalized) * torch.tensor((0.229, 0.224, 0.225))[:, None, None]).abs().max()) <= 1 / 255


def test_explicit_transform_arguments_override_the_preset(flower_path):
    model = wrap(Probe(), 64, preset="imagenet", crop_fraction=1.0, interpolation="bicubic")
    assert model.contract.crop_fraction == 1.0 and model.contract.interpolation == "bicubic"
    assert model.contract.resize_first and model.preprocess(flower_path).shape == (1, 3, 64, 64)
    assert "resize 256 bilinear" in repr(wrap(Probe(), 224, preset="imagenet"))
    plain = wrap(Probe(), 64, mean=(0.5,) * 3, std=(0.5,) * 3)       # no preset: centre crop of the whole short side
    assert not plain.contract.resize_first and plain.contract.crop_fraction == 1.0
