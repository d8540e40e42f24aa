"""Hooks are scoped and removed, the forward pass stops early, images load and save."""

import numpy as np
import pytest
import torch
from PIL import Image

from luminate.activations import LayerTap, activations, all_activations
from luminate.images import (Picture, UnreadableImageError, load_image, make_grid, open_image, save_gif, save_image,
                             to_tensor)


def hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def test_tap_removes_its_hooks_even_on_error(lite0):
    before = hook_count(lite0)
    with LayerTap(lite0, ["blocks.3", "head"]) as tap:
        assert hook_count(lite0) == before + 2
        acts = tap(torch.rand(2, 3, 64, 64))
    assert hook_count(lite0) == before
    assert acts["blocks.3"].shape == (2, 40, 8, 8) and acts["head"].shape == (2, 1280, 2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with LayerTap(lite0, ["blocks.3"]):
            raise RuntimeError("boom")
    assert hook_count(lite0) == before


def test_tap_stops_the_forward_pass_after_the_deepest_layer(lite0):
    ran = []
    handle = lite0.layer("blocks.10").register_forward_hook(lambda *a: ran.append("blocks.10"))
    try:
        with LayerTap(lite0, ["blocks.4"]) as tap:
            tap(torch.rand(1, 3, 64, 64))
        assert ran == []
        with LayerTap(lite0, ["blocks.4"], stop_early=False) as tap:
            tap(torch.rand(1, 3, 64, 64))
        assert ran == ["blocks.10"]
    finally:
        handle.remove()


def test_tap_keeps_gradients_to_the_input(lite0):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    with LayerTap(lite0, ["blocks.5"]) as tap:
        tap(x)["blocks.5"][:, 3].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_activations_function_batches_and_matches_a_single_pass(lite0):
    x = torch.rand(5, 3, 96, 80)
    acts = activations(lite0, x, ["blocks.2", "logits"], batch_size=2)
    with torch.no_grad():
        logits = lite0(x)
    torch.testing.assert_close(acts["logits"], logits, atol=1e-4, rtol=1e-4)
    assert acts["blocks.2"].shape == (5, 24, 24, 20)
    assert activations(lite0, x[:1], "stem").shape == (1, 32, 48, 40)


def test_all_activations_walks_the_whole_network(lite0, flower_path):
    acts = all_activations(lite0, lite0.preprocess(flower_path))
    assert "blocks.15" in acts and "logits" in acts and acts["logits"].shape == (1, 1000)


def test_unknown_layer_in_tap(lite0):
    with pytest.raises(KeyError, match="blocks.9"):
        LayerTap(lite0, ["blocks9"])


def test_load_image_variants(tmp_path, flower_path):
    x = load_image(flower_path)
    assert x.shape == (1, 3, 427, 640) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    grey = Image.fromarray((np.random.rand(20, 30) * 255).astype(np.uint8), mode="L")
    assert to_tensor(grey).shape == (1, 3, 20, 30)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert torch.allclose(load_image(tmp_path / "clear.png"), torch.ones(1, 3, 8, 8))  # transparent -> white
    assert to_tensor(np.zeros((2, 9, 7, 3), dtype=np.uint8)).shape == (2, 3, 9, 7)
    assert load_image(flower_path, size=64).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("content", [b"", b"hello", b"\xff\xd8\xff\xe0 not a jpeg"])
def test_unreadable_files_raise_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match="bad.jpg"):
        open_image(path)


def test_save_round_trip_and_grid(tmp_path):
    x = torch.rand(1, 3, 16, 24)
    save_image(x, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png")
    assert (back - x).abs().max() < 1 / 255 + 1e-6
    grid = make_grid(torch.rand(5, 3, 10, 10), ncol=3, padding=2)
    assert grid.shape == (3, 2 * 12 + 2, 3 * 12 + 2)
    save_image(torch.rand(4, 3, 10, 10), tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").stat().st_size > 0
    save_gif([torch.rand(1, 3, 8, 8) for _ in range(3)], tmp_path / "c.gif")
    assert Image.open(tmp_path / "c.gif").n_frames == 3
    assert Picture(x)._repr_png_().startswith(b"\x89PNG")
