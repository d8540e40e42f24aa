"""Transforms: geometry, Lucid's semantics, seeded reproducibility, gradients, readable values."""

import math

import numpy as np
import pytest
import torch

from luminate.transforms import (Compose, Jitter, atlas_notebook_transforms, atlas_transforms, collapse_alpha_random,
                                 compose, crop_or_pad_to, jitter, normalize_gradient, pad, random_rotate, random_scale,
                                 standard_transforms)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramp(b: int = 2, c: int = 3, h: int = 20, w: int = 24) -> torch.Tensor:
    """Every value distinct, so a crop can be located exactly."""
    return torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)


def blob(h: int, w: int, cy: float, cx: float, radius: float, softness: float = 1.0) -> torch.Tensor:
    """A soft-edged disc [1, 1, h, w] centred at pixel coordinates (cy, cx)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    r = torch.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    return torch.sigmoid((radius - r) / softness).float()[None, None]


def centroid(img: torch.Tensor) -> tuple[float, float]:
    m = img[0, 0].double()
    y, x = torch.meshgrid(torch.arange(m.shape[0], dtype=torch.float64),
                          torch.arange(m.shape[1], dtype=torch.float64), indexing="ij")
    return float((m * y).sum() / m.sum()), float((m * x).sum() / m.sum())


def second_moments(img: torch.Tensor) -> tuple[float, float, float]:
    m = img[0, 0].double()
    cy, cx = centroid(img)
    y, x = torch.meshgrid(torch.arange(m.shape[0], dtype=torch.float64),
                          torch.arange(m.shape[1], dtype=torch.float64), indexing="ij")
    total = m.sum()
    return (float((m * (y - cy) ** 2).sum() / total), float((m * (x - cx) ** 2).sum() / total),
            float((m * (y - cy) * (x - cx)).sum() / total))


# ---------------------------------------------------------------------------------------------------- jitter


def test_jitter_is_a_random_crop_that_shrinks_the_image_by_d():
    x = ramp()
    offsets = set()
    for seed in range(20):
        y = jitter(5)(x, gen(seed))
        assert y.shape == (2, 3, 15, 19)
        oy, ox = divmod(int(y[0, 0, 0, 0]), 24)
        assert 0 <= oy <= 5 and 0 <= ox <= 5
        assert torch.equal(y, x[..., oy:oy + 15, ox:ox + 19])  # shared offset for the whole batch
        offsets.add((oy, ox))
    assert len(offsets) > 5


def test_jitter_per_item_crops_each_item_at_its_own_offset():
    x = ramp(b=8)
    y = jitter(6, per_item=True)(x, gen(1))
    assert y.shape == (8, 3, 14, 18)
    found = set()
    for i in range(8):
        oy, ox = divmod(int(y[i, 0, 0, 0] - x[i, 0, 0, 0]), 24)
        assert torch.equal(y[i], x[i, :, oy:oy + 14, ox:ox + 18])
        found.add((oy, ox))
    assert len(found) > 1


def test_jitter_zero_is_identity_and_too_large_raises():
    x = ramp()
    assert jitter(0)(x, gen()) is x
    with pytest.raises(ValueError, match="needs H and W > 20"):
        jitter(20)(x, gen())


# ---------------------------------------------------------------------------------------------------- pad


def test_pad_constant_values_and_size():
    x = torch.rand(2, 3, 10, 12)
    y = pad(3, mode="constant", value=0.25)(x, gen())
    assert y.shape == (2, 3, 16, 18)
    assert torch.equal(y[..., 3:13, 3:15], x)
    border = torch.ones_like(y, dtype=torch.bool)
    border[..., 3:13, 3:15] = False
    assert torch.all(y[border] == 0.25)
    assert pad(3, mode="CONSTANT") == pad(3, mode="constant")  # Lucid's spelling is accepted


def test_pad_reflect_is_the_default_and_mirrors_without_the_edge():
    x = ramp(b=1, c=1, h=6, w=7)
    y = pad(2)(x, gen())
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    assert np.array_equal(y.numpy(), expected)
    r = pad(2, mode="replicate")(x, gen())
    assert np.array_equal(r.numpy(), np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge"))


def test_pad_uniform_draws_a_random_constant_from_the_generator():
    x = torch.zeros(4, 3, 5, 5)
    t = pad(2, mode="constant", value="uniform")
    a, b, c = t(x, gen(1)), t(x, gen(1)), t(x, gen(2))
    v = a[0, 0, 0, 0]
    assert 0 < v < 1 and torch.all(a[..., :2, :] == v) and torch.all(a[..., :, -2:] == v)
    assert torch.equal(a, b) and not torch.equal(a, c)
    per_item = pad(2, mode="constant", value="uniform", per_item=True)(x, gen(1))
    corners = per_item[:, 0, 0, 0]
    assert len(set(corners.tolist())) == 4
    for i in range(4):
        assert torch.all(per_item[i, :, :2, :] == corners[i])
    assert torch.all(per_item[:, :, 2:7, 2:7] == 0)


# ---------------------------------------------------------------------------------------------------- scale


def test_random_scale_sizes_match_lucid_float32_arithmetic():
    for s in [1 + (i - 5) / 50.0 for i in range(11)]:
        y = random_scale([s])(torch.rand(1, 3, 144, 100), gen())
        assert y.shape[-2:] == (int(np.float32(s) * np.float32(144)), int(np.float32(s) * np.float32(100)))
    # float64 would say int(1.06 * 50) = 53; TF (float32) made 52, and so do we
    assert random_scale([1.06])(torch.rand(1, 3, 50, 50), gen()).shape[-2:] == (52, 52)
    seen = {random_scale([0.5, 1.0, 1.5])(torch.rand(1, 1, 20, 20), gen(s)).shape[-1] for s in range(30)}
    assert seen == {10, 20, 30}


def test_random_scale_is_bilinear_with_half_pixel_centres():
    x = torch.rand(2, 3, 16, 12)
    half = random_scale([0.5])(x, gen())
    assert torch.allclose(half, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert random_scale([1.0])(x, gen()) is x


# ---------------------------------------------------------------------------------------------------- rotate


def test_rotate_90_degrees_equals_rot90_and_0_is_identity():
    x = torch.rand(2, 3, 17, 17)
    y = random_rotate([90])(x, gen())
    expected = torch.rot90(x, 1, (-2, -1))  # counter-clockwise, as TF's rotate
    assert torch.allclose(y[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5)
    assert torch.allclose(y, expected, atol=1e-3)
    assert torch.allclose(random_rotate([-math.pi / 2], units="radians")(x, gen()), torch.rot90(x, -1, (-2, -1)),
                          atol=1e-3)
    assert random_rotate([0])(x, gen()) is x


def test_rotate_keeps_a_centred_disc_on_a_non_square_image():
    img = blob(48, 96, 23.5, 47.5, radius=12)
    for angle in (30, 90, -73):
        y = random_rotate([angle], fill=0.0)(img, gen())
        assert (y - img).abs().max() < 0.03  # a shear would turn the disc into an ellipse
        vy, vx, cov = second_moments(y)
        assert abs(vy - vx) < 0.5 and abs(cov) < 0.5


def test_rotate_moves_an_off_centre_blob_correctly_on_a_non_square_image():
    img = blob(64, 96, 31.5, 47.5 + 20, radius=3)  # 20 px right of the centre
    cy, cx = centroid(random_rotate([90], fill=0.0)(img, gen()))
    assert abs(cy - (31.5 - 20)) < 0.02 and abs(cx - 47.5) < 0.02  # counter-clockwise: now 20 px above
    cy, cx = centroid(random_rotate([30], fill=0.0)(img, gen()))
    assert abs(cy - (31.5 - 20 * math.sin(math.pi / 6))) < 0.02
    assert abs(cx - (47.5 + 20 * math.cos(math.pi / 6))) < 0.02


def test_rotate_fills_uncovered_corners_with_the_fill_colour():
    x = torch.ones(1, 3, 32, 32)
    assert torch.allclose(random_rotate([45])(x, gen())[..., 0, 0], torch.tensor(0.5))
    lucid = random_rotate([45], mode="nearest", fill=0.0)(x, gen())
    assert torch.all(lucid[..., 0, 0] == 0) and torch.all(lucid[..., 16, 16] == 1)
    assert torch.allclose(random_rotate([45], fill="border")(x, gen()), x)


def test_rotate_per_item_draws_one_angle_per_item():
    x = blob(33, 33, 16, 26, radius=3).expand(6, 3, 33, 33)
    shared = random_rotate(range(-40, 41, 10))(x, gen(3))
    assert all(torch.equal(shared[0], shared[i]) for i in range(6))
    separate = random_rotate(range(-40, 41, 10), per_item=True)(x, gen(3))
    assert len({round(centroid(separate[i:i + 1])[0], 3) for i in range(6)}) > 1


# ---------------------------------------------------------------------------------------------------- gradients


def test_normalize_gradient_gives_a_unit_norm_gradient_per_item():
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    weights = torch.randn(3, 3, 8, 8, generator=gen()) * torch.tensor([1.0, 10.0, 0.01])[:, None, None, None]
    y = normalize_gradient()(x)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert torch.allclose(x.grad.flatten(1).norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(x.grad, weights / weights.flatten(1).norm(dim=1)[:, None, None, None], atol=1e-6)

    x.grad = None
    (normalize_gradient([1.0, 2.0, 0.5])(x) * weights).sum().backward()
    assert torch.allclose(x.grad.flatten(1).norm(dim=1), torch.tensor([1.0, 2.0, 0.5]), atol=1e-5)

    x.grad = None
    (normalize_gradient()(x)[:1] * weights[:1]).sum().backward()  # items 1, 2 get a zero gradient: no NaN
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[1:] == 0)
    with pytest.raises(ValueError, match="one scale per batch item"):
        normalize_gradient([1.0])(x)


def test_gradient_flows_to_the_input_through_the_standard_set():
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    t = compose(standard_transforms() + [normalize_gradient()])
    for seed in range(3):
        x.grad = None
        t(x, gen(seed)).square().sum().backward()
        assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


# ---------------------------------------------------------------------------------------------------- crop or pad


def test_crop_or_pad_to_both_ways():
    x = ramp(b=1, c=2, h=10, w=7)
    crop = crop_or_pad_to(6, 5)(x)
    assert crop.shape == (1, 2, 6, 5) and torch.equal(crop, x[..., 2:8, 1:6])
    padded = crop_or_pad_to(13, 12)(x)
    assert padded.shape == (1, 2, 13, 12)
    assert torch.equal(padded[..., 1:11, 2:9], x)  # offset (13-10)//2 = 1, (12-7)//2 = 2, rest after
    assert padded[..., 0, :].abs().sum() == 0 and padded[..., 11:, :].abs().sum() == 0
    assert padded[..., :, :2].abs().sum() == 0 and padded[..., :, 9:].abs().sum() == 0
    mixed = crop_or_pad_to(8, 9, value=0.5)(x)
    assert mixed.shape == (1, 2, 8, 9) and torch.equal(mixed[..., :, 1:8], x[..., 1:9, :])
    assert torch.all(mixed[..., :, 0] == 0.5)


# ---------------------------------------------------------------------------------------------------- alpha


def test_collapse_alpha_random_composites_over_seeded_noise():
    t = collapse_alpha_random()
    rgb = torch.rand(3, 3, 24, 20)
    opaque = torch.cat([rgb, torch.ones(3, 1, 24, 20)], 1)
    assert torch.allclose(t(opaque, gen()), rgb)
    clear = torch.cat([rgb, torch.zeros(3, 1, 24, 20)], 1)
    noise = t(clear, gen(5))
    assert noise.shape == (3, 3, 24, 20) and torch.all((noise > 0) & (noise < 1))
    assert noise.std() > 0.05 and not torch.allclose(noise[0], noise[1])  # one noise image per item
    assert torch.equal(noise, t(clear, gen(5))) and not torch.equal(noise, t(clear, gen(6)))
    with pytest.raises(ValueError, match="needs RGBA"):
        t(rgb, gen())


def test_collapse_alpha_noise_is_lucids_image_sample():
    from luminate.param.spatial import random_image

    noise = collapse_alpha_random(sd=0.2, decay_power=1.5).noise(2, 24, 21, gen(4))
    assert torch.allclose(noise, random_image((24, 21), 2, generator=gen(4), sd=0.2, decay_power=1.5), atol=1e-6)


def test_atlas_transforms_end_at_the_icon_size():
    x = torch.rand(2, 4, 48, 48, requires_grad=True)
    y = compose(atlas_transforms(48, alpha=True))(x, gen())
    assert y.shape == (2, 3, 48, 48)
    y.sum().backward()
    assert x.grad[:, 3].abs().sum() > 0  # the alpha channel gets a gradient through the compositing
    assert len(atlas_transforms(80)) == 10 and len(atlas_notebook_transforms()) == 9


# ---------------------------------------------------------------------------------------------------- values


def test_same_seed_same_output_different_seed_different_output():
    x = torch.rand(2, 3, 64, 64)
    t = compose(standard_transforms())
    a, b = t(x, gen(7)), t(x, gen(7))
    assert torch.equal(a, b)
    outputs = [t(x, gen(seed)) for seed in range(4)]
    assert any(o.shape != a.shape or not torch.equal(o, a) for o in outputs)
    g = gen(7)
    first, second = t(x, g), t(x, g)  # the generator advances between steps
    assert torch.equal(first, a) and (first.shape != second.shape or not torch.equal(first, second))


def test_transforms_are_readable_comparable_values():
    t = compose(standard_transforms())
    assert repr(t) == ("compose([pad(12, mode='constant', value=0.5), jitter(8), random_scale([0.9, 0.92, 0.94, "
                       "0.96, 0.98, 1, 1.02, 1.04, 1.06, 1.08, 1.1]), random_rotate([-10..10, 0*5]), jitter(4)])")
    assert "random_rotate([-20..19, -10..9, -5..4, 0*5])" in repr(compose(atlas_transforms(80)))
    assert "(20 values)" in repr(compose(atlas_transforms(80)))
    assert t == compose(standard_transforms()) and hash(t) == hash(compose(standard_transforms()))
    assert jitter(8) != jitter(4) and isinstance(t, Compose) and isinstance(t[1], Jitter) and len(t) == 5
    assert repr(random_rotate([5], mode="nearest", fill=0.0)) == "random_rotate([5], mode='nearest', fill=0.0)"
    assert repr(normalize_gradient([1, 2])) == "normalize_gradient(grad_scales=[1.0, 2.0])"


def test_random_transforms_name_a_missing_generator():
    with pytest.raises(TypeError, match=r"jitter\(8\) is random: pass a CPU torch.Generator"):
        jitter(8)(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"image batch \[B, C, H, W\]"):
        jitter(2)(torch.rand(3, 32, 32), gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_seed_gives_the_same_output_on_the_gpu():
    x = torch.rand(2, 4, 64, 64)
    t = compose(standard_transforms() + [collapse_alpha_random()])
    cpu = t(x, gen(3))
    gpu = t(x.cuda(), gen(3))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
