import math

import numpy as np
import pytest
import torch

from luminate import images
from luminate import param as P
from luminate.param.cppn import ACTIVATIONS, coordinates


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def factories():
    """(name, constructor) for every public parameterization kind, at small non-square sizes."""
    return [
        ("fft", lambda: P.image(12, 9, batch=2)),
        ("pixel", lambda: P.image(12, 9, batch=2, fft=False, decorrelate=False)),
        ("alpha", lambda: P.image(11, 7, batch=2, alpha=True)),
        ("channels", lambda: P.image(10, 8, channels=5)),
        ("grayscale", lambda: P.grayscale(9, 6)),
        ("lowres", lambda: P.ImageParam(P.LowResTensor((9, 12), (2, 3, 4), batch=3))),
        ("laplacian", lambda: P.ImageParam(P.LaplacianPyramid((9, 12), batch=2))),
        ("cppn", lambda: P.cppn((9, 12), batch=2, bias_sd=0.1)),
        ("aligned", lambda: P.aligned_interpolation((16, 24), frames=4)),
        ("groups", lambda: P.shared_groups((9, 12), torch.rand(5, 3, generator=gen(1)))),
        ("photo", lambda: P.from_image(torch.rand(1, 3, 9, 12, generator=gen(2)))),
    ]


FACTORIES = factories()
IDS = [name for name, _ in FACTORIES]


# -- colour --------------------------------------------------------------------------------------------------------

def test_color_matrix_values_and_normalisation():
    raw = P.color_correlation(normalized=False)
    assert torch.equal(raw, torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]))
    norms = raw.norm(dim=0)
    assert norms.tolist() == pytest.approx([0.4620, 0.1273, 0.0616], abs=1e-4)
    assert float(norms.max()) == pytest.approx(0.46195, abs=1e-5)
    expected = torch.tensor([[0.5628, 0.1948, 0.0433], [0.5845, 0.0, -0.1082], [0.5845, -0.1948, 0.0649]])
    assert torch.allclose(P.color_correlation(), expected, atol=1e-4)


def test_decorrelate_applies_matrix_per_pixel_and_inverse_round_trips():
    t = torch.randn(2, 3, 5, 7, generator=gen())
    out = P.decorrelate_color(t)
    m = P.color_correlation()
    assert torch.allclose(out[1, :, 2, 3], m @ t[1, :, 2, 3], atol=1e-6)
    assert torch.allclose(P.decorrelate_color_inverse(out), t, atol=1e-5)
    assert torch.allclose(P.decorrelate_color(P.decorrelate_color_inverse(t)), t, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        P.decorrelate_color(torch.zeros(1, 4, 2, 2))


def test_to_valid_rgb_paths():
    t = torch.randn(1, 3, 4, 4, generator=gen())
    assert torch.allclose(P.to_valid_rgb(t), torch.sigmoid(t))
    assert torch.allclose(P.to_valid_rgb(t, decorrelate=True), torch.sigmoid(P.decorrelate_color(t)))
    mean = torch.tensor(P.COLOR_MEAN).view(1, 3, 1, 1)
    clipped = P.to_valid_rgb(t, decorrelate=True, sigmoid=False)
    assert torch.allclose(clipped, (P.decorrelate_color(t) + mean).clamp(0, 1))
    assert torch.allclose(P.to_valid_rgb(t, sigmoid=False), t.clamp(0, 1))


def test_clip_projected_gradient_only_points_back_inside():
    x = torch.tensor([-0.5, -0.5, 0.5, 1.5, 1.5], requires_grad=True)
    y = P.clip_projected(x)
    y.backward(torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0]))
    # a minimizer steps along -grad: at -0.5 grad -1 moves up (kept); at 1.5 grad +1 moves down (kept)
    assert x.grad.tolist() == [-1.0, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("sigmoid", [True, False])
def test_from_valid_rgb_inverts_to_valid_rgb(decorrelate, sigmoid):
    x = torch.rand(2, 3, 6, 5, generator=gen(), dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 0.0, 1.0
    raw = P.from_valid_rgb(x, decorrelate=decorrelate, sigmoid=sigmoid)
    back = P.to_valid_rgb(raw, decorrelate=decorrelate, sigmoid=sigmoid)
    assert torch.allclose(back, x.clamp(0.01, 0.99), atol=1e-9)


# -- Fourier numerics ----------------------------------------------------------------------------------------------

def test_fft_scale_values_small_size():
    h, w = 4, 6
    freqs = P.rfft2d_freqs(h, w)
    assert freqs.shape == (4, 4)
    fy = torch.tensor([0.0, 0.25, -0.5, -0.25], dtype=torch.float64)[:, None]
    fx = torch.tensor([0.0, 1 / 6, 2 / 6, 3 / 6], dtype=torch.float64)[None]
    assert torch.allclose(freqs, torch.sqrt(fx**2 + fy**2))
    scale = P.fft_scale((h, w))
    root = math.sqrt(24)
    assert scale.dtype == torch.float32 and scale.shape == (4, 4)
    assert scale[0, 0].item() == pytest.approx(6 * root, rel=1e-6)  # f = 0 clamps to 1 / max(h, w)
    assert scale[0, 1].item() == pytest.approx(6 * root, rel=1e-6)  # f = 1/6 is the clamp itself
    assert scale[1, 0].item() == pytest.approx(4 * root, rel=1e-6)
    assert scale[0, 3].item() == pytest.approx(2 * root, rel=1e-6)
    assert scale[2, 3].item() == pytest.approx(math.sqrt(2) * root, rel=1e-6)
    assert P.fft_scale((h, w), decay_power=2)[1, 0].item() == pytest.approx(16 * root, rel=1e-6)
    assert P.fft_scale((5, 7)).shape == (5, 4)  # odd width: exactly w // 2 + 1 columns


@pytest.mark.parametrize("size", [(8, 6), (5, 7), (7, 9), (1, 5)])
def test_fourier_image_matches_numpy_irfft(size):
    h, w = size
    raw = P.FourierImage(size, batch=2, channels=3, sd=0.3)
    raw.reset_parameters(gen(3))
    spec = raw.spectrum.detach().double().numpy()
    z = (spec[..., 0] + 1j * spec[..., 1]) * raw.scale.double().numpy()
    expected = np.fft.irfft2(z, s=(h, w)) / 4.0  # numpy's default "backward" norm = TF's irfft2d
    out = raw().detach()
    assert out.shape == (2, 3, h, w)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 10), (6, 9)])
def test_fourier_image_spectrum_is_scaled_variable(size):
    h, w = size
    raw = P.FourierImage(size, batch=1, channels=1, sd=1.0)
    raw.reset_parameters(gen(4))
    spectrum = torch.fft.rfft2(raw().detach().double() * 4)
    expected = torch.view_as_complex(raw.spectrum.detach().double()) * raw.scale.double()
    cols = slice(1, (w - 1) // 2 + 1)  # columns that are not their own mirror image (DC / Nyquist)
    assert torch.allclose(spectrum[..., cols], expected[..., cols], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("decay", [1.0, 1.5])
def test_fourier_init_power_spectrum_follows_power_law(decay):
    n = 64
    raw = P.FourierImage(n, batch=16, channels=3, decay_power=decay)
    raw.reset_parameters(gen(5))
    amp = torch.fft.rfft2(raw().detach().double()).abs().mean(dim=(0, 1))  # [64, 33]
    freqs = P.rfft2d_freqs(n, n)
    bands = torch.arange(2, 28)  # radial bands of width 1/64 cycle per pixel, away from DC and the corners
    band = (freqs * n).round().long()
    mean_amp = torch.stack([amp[band == b].mean() for b in bands])
    slope = np.polyfit(np.log(bands.numpy()), np.log(mean_amp.numpy()), 1)[0]
    assert slope == pytest.approx(-decay, abs=0.1)


def test_batch_items_are_independent():
    raw = P.FourierImage((8, 10), batch=3)
    raw.reset_parameters(gen())
    out = raw()
    assert not torch.allclose(out[0], out[1])
    out[1].sum().backward()
    grad = raw.spectrum.grad
    assert grad[1].abs().sum() > 0
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


# -- factory ------------------------------------------------------------------------------------------------------

def test_image_factory_defaults_and_options():
    p = P.image(16)
    assert isinstance(p.raw, P.FourierImage) and p.decorrelate and p().shape == (1, 3, 16, 16)
    assert p.raw.sd == 0.01
    assert abs(p().mean().item() - 0.5) < 0.02  # starts mid-grey
    assert isinstance(P.image(16, fft=False).raw, P.PixelImage)
    assert P.image(16, 9, batch=3)().shape == (3, 3, 9, 16)  # (w, h) argument order, as Lucid
    k = P.image(8, channels=3)
    assert not k.decorrelate and torch.allclose(k(), torch.sigmoid(k.raw()))
    assert P.image(8, channels=10)().shape == (1, 10, 8, 8)
    a = P.image(8, 6, alpha=True)
    raw = a.raw()
    out = a()
    assert out.shape == (1, 4, 6, 8)
    assert torch.allclose(out[:, 3:], torch.sigmoid(raw[:, 3:]))
    assert torch.allclose(out[:, :3], P.to_valid_rgb(raw[:, :3], decorrelate=True))
    with pytest.raises(ValueError, match="alpha"):
        P.image(8, channels=2, alpha=True)
    g = P.grayscale(8, 5, batch=2)()
    assert g.shape == (2, 3, 5, 8) and torch.equal(g[:, 0], g[:, 2])
    with pytest.raises(ValueError, match="3 colour channels"):
        P.ImageParam(P.PixelImage(4, channels=2), decorrelate=True)


@pytest.mark.parametrize("name,make", FACTORIES, ids=IDS)
def test_shape_range_and_reproducibility(name, make):
    p = make()
    out = p()
    assert out.shape == (p.batch, p.channels, *p.size)
    p.reset_parameters(gen(7))
    a = p().detach()
    assert a.min() >= 0 and a.max() <= 1
    p.reset_parameters(gen(8))
    b = p().detach()
    p.reset_parameters(gen(7))
    assert torch.equal(p().detach(), a)
    if name == "photo":
        assert torch.equal(a, b)  # starts from the photo whatever the generator
    elif name == "cppn":
        assert torch.equal(a, b) and torch.all(a == 0.5)  # zero output layer: grey start, hidden weights differ
        w7 = p.raw.hidden[1].weight.detach().clone()
        p.reset_parameters(gen(8))
        assert not torch.equal(p.raw.hidden[1].weight, w7)
    else:
        assert not torch.equal(a, b)


@pytest.mark.parametrize("name,make", FACTORIES, ids=IDS)
def test_gradients_reach_every_parameter(name, make):
    p = make()
    p.reset_parameters(gen(1))
    if name == "cppn":  # the zero output layer blocks the hidden gradients until it has moved once
        with torch.no_grad():
            p.raw.output.weight.normal_(0, 0.1, generator=gen(2))
    target = torch.rand(p.shape, generator=gen(3))
    ((p() - target) ** 2).sum().backward()
    for pname, prm in p.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name,make", FACTORIES, ids=IDS)
def test_dtype_conversion(name, make):
    p = make()
    p.reset_parameters(gen(1))
    ref = p().detach()
    out = p.to(torch.float64)()
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), ref, atol=1e-5)
    half = p.to(torch.bfloat16)()
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), ref, atol=0.02)


@pytest.mark.parametrize("name,make", FACTORIES, ids=IDS)
def test_index_selects_batch_items(name, make):
    p = make()
    p.reset_parameters(gen(1))
    full = p().detach()
    idx = [p.batch - 1, 0]
    assert torch.allclose(p(index=idx).detach(), full[idx], atol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        p(index=[p.batch])


def test_no_global_rng_use():
    state = torch.get_rng_state()
    for _, make in FACTORIES:
        make().reset_parameters(gen(3))
    P.random_image(8, generator=gen())
    assert torch.equal(torch.get_rng_state(), state)


# -- low resolution -------------------------------------------------------------------------------------------------

def test_interpolation_matrix():
    m = P.interpolation_matrix(6, 2)
    assert torch.allclose(m[:, 1], torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    assert torch.allclose(m.sum(1), torch.ones(6))
    assert torch.equal(P.interpolation_matrix(4, 1), torch.ones(4, 1))
    assert torch.allclose(P.interpolation_matrix(3, 3), torch.eye(3))
    assert torch.allclose(P.interpolation_matrix(5, 3)[:, 1], torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0]))


def test_lowres_tensor_upsamples_space_and_batch():
    low = P.LowResTensor((16, 12), (2, 4, 3), batch=5, sd=1.0)
    low.reset_parameters(gen())
    out = low().detach()
    assert out.shape == (5, 3, 16, 12)
    up = torch.nn.functional.interpolate(low.values.detach(), size=(16, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(out[0], up[0], atol=1e-6) and torch.allclose(out[4], up[1], atol=1e-6)
    assert torch.allclose(out[2], 0.5 * (up[0] + up[1]), atol=1e-6)
    shared = P.LowResTensor(8, 2, batch=3)  # b = 1 (int underlying keeps the batch: b = batch here)
    assert shared.underlying == (3, 2, 2)
    one = P.LowResTensor(8, (1, 2, 2), batch=3, sd=1.0)
    one.reset_parameters(gen())
    o = one().detach()
    assert torch.equal(o[0], o[2])
    with torch.no_grad():
        one.values.fill_(0.3)
    assert torch.allclose(one(), torch.full((3, 3, 8, 8), 0.3))  # a constant stays constant
    same = P.LowResTensor((6, 4), (6, 4), batch=2)
    assert torch.equal(same(), same.values)


def test_laplacian_pyramid_is_sum_of_levels():
    pyr = P.LaplacianPyramid((16, 24), batch=2, n_levels=4)
    pyr.reset_parameters(gen())
    assert [lvl.underlying for lvl in pyr.levels] == [(2, 16, 24), (2, 8, 12), (2, 4, 6), (2, 2, 3)]
    total = sum(lvl() for lvl in pyr.levels)
    assert torch.allclose(pyr(), total)


# -- CPPN -----------------------------------------------------------------------------------------------------------

def test_cppn_definition():
    coords = coordinates((5, 9))
    assert coords.shape == (1, 2, 5, 9)
    assert coords[0, 0, 0].tolist() == pytest.approx(np.linspace(-math.sqrt(3), math.sqrt(3), 9).tolist(), abs=1e-6)
    assert coords[0, 1, :, 0].tolist() == pytest.approx(np.linspace(-math.sqrt(3), math.sqrt(3), 5).tolist(), abs=1e-6)
    p = P.cppn(32)
    raw = p.raw
    assert len(raw.hidden) == 8 and raw.hidden[0].weight.shape == (24, 2, 1, 1)
    assert raw.hidden[1].weight.shape == (24, 48, 1, 1) and raw.output.weight.shape == (3, 48, 1, 1)
    raw.reset_parameters(gen(9))
    ws = torch.cat([c.weight.flatten() for c in raw.hidden[1:]])
    assert ws.std().item() == pytest.approx(math.sqrt(1 / 48), rel=0.05)
    assert all(torch.all(c.bias == 0) for c in raw.hidden)
    assert torch.all(raw.output.weight == 0) and torch.all(p() == 0.5)
    x = torch.randn(1, 24, 2, 2, generator=gen())
    a = torch.atan(x)
    assert torch.allclose(ACTIVATIONS["composite"][0](x), torch.cat([a / 0.67, a * a / 0.6], 1))


def test_cppn_renders_at_any_resolution():
    p = P.cppn((12, 16), batch=2)
    with torch.no_grad():
        p.raw.output.weight.normal_(0, 1, generator=gen(4))
    out = p()
    assert out.shape == (2, 3, 12, 16) and torch.equal(out[0], out[1])  # the batch shares the weights
    assert out.std() > 0.01
    assert torch.equal(p(size=(12, 16)), out)
    big = p(size=(23, 31))
    assert big.shape == (2, 3, 23, 31)
    # the corners sample the same coordinates at every resolution
    assert torch.allclose(big[..., 0, 0], out[..., 0, 0], atol=1e-5)
    assert torch.allclose(big[..., -1, -1], out[..., -1, -1], atol=1e-5)
    with pytest.raises(ValueError, match="only a CPPN"):
        P.image(8)(size=16)
    with pytest.raises(ValueError, match="unknown CPPN activation"):
        P.cppn(8, activation="tanh")


# -- shared components ---------------------------------------------------------------------------------------------

def test_combined_algebra():
    a = P.FourierImage((6, 8), batch=3, sd=1.0)
    b = P.PixelImage((6, 8), batch=3, sd=1.0)
    s = P.PixelImage((6, 8), batch=1, sd=1.0)
    g = P.FourierImage((6, 8), batch=2, sd=1.0)
    for i, m in enumerate([a, b, s, g]):
        m.reset_parameters(gen(i))
    w = torch.rand(3, 2, generator=gen(9))
    assert torch.allclose((a + b)(), a() + b())
    assert torch.allclose((a - 2 * b)(), a() - 2 * b(), atol=1e-6)
    assert torch.allclose((a / 2)(), a() / 2)
    assert torch.allclose(sum([a, b, s])(), a() + b() + s())  # batch-1 part broadcast
    mixed = w @ g
    assert mixed.batch == 3
    assert torch.allclose(mixed(), torch.einsum("nb,bchw->nchw", w, g()), atol=1e-6)
    nested = 0.5 * (a + w @ (g + 2 * g))  # flattened, g kept once
    assert len(nested.parts) == 2
    assert torch.allclose(nested(), 0.5 * (a() + torch.einsum("nb,bchw->nchw", 3 * w, g())), atol=1e-5)
    broadcast = torch.ones(3, 3) @ (a + s)  # s is broadcast inside, then mixed
    assert torch.allclose(broadcast(), (a() + s()).sum(0, keepdim=True).expand(3, -1, -1, -1), atol=1e-5)
    assert P.Combined([s], batch=4)().shape == (4, 3, 6, 8)
    with pytest.raises(ValueError, match="share channels and size"):
        a + P.PixelImage((6, 9), batch=3)
    with pytest.raises(ValueError, match="cannot be added"):
        a + g
    with pytest.raises(ValueError, match=r"\[3, 2\]"):
        P.Combined([a, (g, torch.ones(3, 3))])


def test_shared_groups_formula():
    w = torch.rand(7, 3, generator=gen(2))
    p = P.shared_groups((10, 14), w)
    p.reset_parameters(gen(5))
    own, groups = p.raw.parts
    assert (own.batch, groups.batch) == (7, 3)
    raw = 0.7 * own() + 0.5 * torch.einsum("ij,jchw->ichw", w, groups())
    assert torch.allclose(p(), torch.sigmoid(P.decorrelate_color(raw)), atol=1e-6)
    assert p(index=torch.tensor([4, 1])).shape == (2, 3, 10, 14)


def test_aligned_interpolation_structure():
    p = P.aligned_interpolation(128, frames=6)
    parts = p.raw.parts
    assert isinstance(parts[0], P.FourierImage) and parts[0].batch == 6
    assert [q.underlying for q in parts[1:]] == [(1, 64, 64), (1, 32, 32), (1, 16, 16), (2, 16, 16), (1, 8, 8),
                                                 (2, 8, 8)]
    q = P.aligned_interpolation((24, 32), frames=5)
    with torch.no_grad():
        q.raw.parts[0].spectrum.zero_()  # no unique term: frames differ only through the b = 2 terms
    raw = q.raw().detach()
    steps = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1) / 4
    assert torch.allclose(raw, raw[0] + steps * (raw[4] - raw[0]), atol=1e-6)
    assert not torch.allclose(raw[0], raw[4])


# -- photo and random -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_from_image_starts_at_the_photo(flower_path, fft, decorrelate):
    photo = images.load_image(flower_path, size=(31, 46))  # odd, non-square
    p = P.from_image(photo, fft=fft, decorrelate=decorrelate)
    assert p.shape == (1, 3, 31, 46)
    assert (p().detach() - photo.clamp(0.01, 0.99)).abs().max() < 1e-3
    opt = torch.optim.Adam(p.parameters(), lr=0.05)
    p().mean().backward()
    opt.step()
    assert (p().detach() - photo.clamp(0.01, 0.99)).abs().max() > 1e-2
    g = gen(1)
    before = g.get_state()
    p.reset_parameters(g)
    assert torch.equal(g.get_state(), before)  # the generator is unused
    assert (p().detach() - photo.clamp(0.01, 0.99)).abs().max() < 1e-3


def test_random_image():
    a = P.random_image((9, 13), batch=2, generator=gen(1), sd=0.2, decay_power=1.5)
    assert a.shape == (2, 3, 9, 13) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, P.random_image((9, 13), batch=2, generator=gen(1), sd=0.2, decay_power=1.5))
    g = gen(1)
    assert not torch.equal(P.random_image(8, generator=g), P.random_image(8, generator=g))
    assert P.random_image(8, generator=g, decorrelate=False, channels=1).shape == (1, 1, 8, 8)


def test_size_and_batch_validation():
    with pytest.raises(ValueError, match="positive"):
        P.image(0)
    with pytest.raises(ValueError, match="batch"):
        P.image(8, batch=0)
    assert P.as_size(5) == (5, 5) and P.as_size((3, 4)) == (3, 4)
