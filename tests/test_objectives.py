"""Objectives: algebra, per-item vectors, batch targeting, parsing, binding, exact values, optimization."""

import numpy as np
import pytest
import torch

from luminate import objectives as O
from luminate.activations import LayerTap

B, C, H, W = 4, 6, 5, 7


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def acts():
    g = _gen(0)
    return {
        "l": torch.randn(B, C, H, W, generator=g, dtype=torch.float64),
        "m": torch.randn(B, C, H, W, generator=g, dtype=torch.float64),
        "fc": torch.randn(B, 10, generator=g, dtype=torch.float64),
        "input": torch.rand(B, 3, 12, 10, generator=g, dtype=torch.float64),
        "output": torch.randn(B, 10, generator=g, dtype=torch.float64),
        "step": torch.tensor(30),
    }


def _np(t):
    return t.detach().cpu().numpy()


def _nhwc(t):
    return np.transpose(_np(t), (0, 2, 3, 1))


# ------------------------------------------------------------------------------------------------------------------
# Algebra and the per-item vector
# ------------------------------------------------------------------------------------------------------------------


def test_algebra_values_and_names(acts):
    a, b, c = O.channel("l", 1), O.channel("l", 2), O.channel("m", 3)
    va, vb, vc = a(acts), b(acts), c(acts)
    assert a.name == "channel(l, 1)"
    cases = {
        "channel(l, 1) + channel(l, 2)": (a + b, va + vb),
        "channel(l, 1) - channel(l, 2)": (a - b, va - vb),
        "-channel(l, 1)": (-a, -va),
        "2 * channel(l, 1)": (2 * a, 2 * va),
        "3 * channel(l, 1)": (a * 3, 3 * va),
        "0.5 * channel(l, 1)": (a / 2, va / 2),
        "channel(l, 1) + 3": (a + 3, va + 3 / B),
        "-channel(l, 1) + 1": (1 - a, 1 / B - va),
        "channel(l, 1) + channel(l, 2) + channel(m, 3)": (sum([a, b, c]), va + vb + vc),
        "-channel(l, 1) + 0.5 * channel(l, 2) - 2 * channel(m, 3)": (-a + 0.5 * b - 2 * c, -va + 0.5 * vb - 2 * vc),
        "(channel(l, 1) + channel(l, 2)) * channel(m, 3)": ((a + b) * c, (va + vb) * vc.sum()),
        "channel(l, 1) / channel(m, 3)": (a / c, va / vc.sum()),
        "0.5 * channel(l, 1) - 0.5 * channel(l, 2)": ((a - b) / 2, (va - vb) / 2),
    }
    for name, (obj, expected) in cases.items():
        assert isinstance(obj, O.Objective)
        assert obj.name == name
        got = obj(acts)
        assert got.shape == (B,)
        torch.testing.assert_close(got, expected)
    # totals: the product of two objectives is the product of their totals (Lucid's scalar product)
    torch.testing.assert_close((a * c)(acts).sum(), va.sum() * vc.sum())
    torch.testing.assert_close(O.Objective.sum([a, b, 1.5])(acts), va + vb + 1.5 / B)
    assert sum([a]) is a and a + 0 is a and a * 1 is a
    assert (a + c).layers == frozenset({"l", "m"})
    assert (np.float64(2.0) * a)(acts).sum().item() == pytest.approx(2 * va.sum().item())


def test_algebra_rejects_other_types():
    a = O.channel("l", 1)
    with pytest.raises(TypeError):
        a + "l:2"
    with pytest.raises(TypeError):
        2 / a
    with pytest.raises(ZeroDivisionError):
        a / 0
    with pytest.raises(ValueError, match="at least one"):
        O.Objective.sum([])


def test_per_item_vector_sums_to_lucid_scalar(acts):
    l, n = acts["l"], 2
    v = O.channel("l", n)(acts)
    torch.testing.assert_close(v, l[:, n].mean((1, 2)) / B)       # averaged objective: value_i / B
    assert v.sum().item() == pytest.approx(l[:, n].mean().item())  # Lucid: reduce_mean over batch, H, W
    logits = O.class_logit(3)(acts)
    torch.testing.assert_close(logits, acts["output"][:, 3])        # summed objective: value_i
    assert O.deepdream("l")(acts).sum().item() == pytest.approx((l ** 2).mean().item())


def test_missing_layer_and_bad_return(acts):
    with pytest.raises(KeyError, match="objective.layers"):
        O.channel("nope", 1)(acts)
    bad = O.as_objective(lambda a: a["l"][:, 0], layers=["l"])
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        bad(acts)


def test_batch_free_totals_spread_evenly(acts):
    sched = O.schedule(lambda step: step / 10, name="s")
    assert sched(acts).shape == (B,)
    assert sched(acts).sum().item() == pytest.approx(3.0)
    total = O.as_objective(lambda a: a["l"].sum(), layers=["l"])      # a 0-d result: a batch-free total
    assert total(acts).shape == (1,)
    mixed = total + O.channel("l", 0)
    torch.testing.assert_close(mixed(acts), acts["l"].sum() / B + O.channel("l", 0)(acts))


def test_schedules(acts):
    ch = O.channel("l", 1)
    d = O.decay(100) * ch
    assert d.name == "decay(100) * channel(l, 1)"
    torch.testing.assert_close(d(acts), ch(acts) * (1 - 30 / 100))   # split follows the batch objective
    early = O.only_after(50) * ch
    assert early(acts).abs().sum() == 0
    late = O.only_after(30) * ch
    torch.testing.assert_close(late(acts), ch(acts))
    no_step = {k: v for k, v in acts.items() if k != "step"}
    with pytest.raises(KeyError, match="step"):
        d(no_step)


# ------------------------------------------------------------------------------------------------------------------
# Batch targeting and fusion
# ------------------------------------------------------------------------------------------------------------------

VEC = torch.linspace(-1, 1, C, dtype=torch.float64)
PATTERN = torch.randn(C, 3, 3, generator=_gen(1), dtype=torch.float64)
ORIG = torch.rand(3, 12, 10, generator=_gen(2), dtype=torch.float64)

UNIT = {
    "neuron": lambda batch: O.neuron("l", 2, x=1, y=3, batch=batch),
    "channel": lambda batch: O.channel("l", 2, batch=batch),
    "direction": lambda batch: O.direction("l", VEC, cossim_pow=2, batch=batch),
    "direction_neuron": lambda batch: O.direction_neuron("l", VEC, cossim_pow=1, batch=batch),
    "tensor_direction": lambda batch: O.tensor_direction("l", PATTERN, cossim_pow=2, batch=batch),
    "deepdream": lambda batch: O.deepdream("l", batch=batch),
    "total_variation": lambda batch: O.total_variation(batch=batch),
    "L1": lambda batch: O.L1(constant=0.5, batch=batch),
    "L2": lambda batch: O.L2(constant=0.5, batch=batch),
    "blur_input_each_step": lambda batch: O.blur_input_each_step(batch=batch),
    "penalize_boundary_complexity": lambda batch: O.penalize_boundary_complexity(w=2, batch=batch),
    "input_diff": lambda batch: O.input_diff(ORIG, batch=batch),
    "class_logit": lambda batch: O.class_logit(4, batch=batch),
}


@pytest.mark.parametrize("kind", sorted(UNIT))
def test_batch_targeting(acts, kind):
    """batch=k is the objective computed on item k alone (Lucid's slicing), placed at k, zeros elsewhere."""
    k = 2
    got = UNIT[kind](k)(acts)
    alone = {name: (v[k:k + 1] if v.ndim else v) for name, v in acts.items()}
    expected = UNIT[kind](None)(alone)
    assert got.shape == (B,)
    torch.testing.assert_close(got[k:k + 1], expected)
    assert got[torch.arange(B) != k].abs().sum() == 0
    torch.testing.assert_close(UNIT[kind](-2)(acts), got)           # negative indices count from the end
    with pytest.raises(IndexError, match="batch has 4"):
        UNIT[kind](7)(acts)


def test_batch_must_be_an_int():
    with pytest.raises(TypeError, match="batch="):
        O.channel("l", 1, batch=[0, 1])


def test_sums_of_single_item_objectives_are_fused(acts):
    l = acts["l"]
    ns = [3, 0, 5, 3]
    fused = sum(O.channel("l", n, batch=i) for i, n in enumerate(ns))
    expected = torch.stack([l[i, n].mean() for i, n in enumerate(ns)])
    torch.testing.assert_close(fused(acts), expected)
    torch.testing.assert_close(O.channels("l", ns)(acts), expected)
    assert len(fused._plan) == 1                                   # one vectorized gather, not four objectives
    # weights, repeated items and whole-batch terms fuse too
    mixed = 2 * O.channel("l", 1, batch=0) - O.channel("l", 2, batch=0) + O.channel("l", 4) + O.channel("m", 1)
    want = (2 * O.channel("l", 1, batch=0)(acts) - O.channel("l", 2, batch=0)(acts) + O.channel("l", 4)(acts)
            + O.channel("m", 1)(acts))
    torch.testing.assert_close(mixed(acts), want)
    assert len(mixed._plan) == 2
    # directions: the batched form equals the per-item sum of direction_neuron terms
    vecs = torch.randn(B, C, generator=_gen(3), dtype=torch.float64)
    loop = sum(O.direction_neuron("l", vecs[i], cossim_pow=2, batch=i) for i in range(B))
    torch.testing.assert_close(O.directions("l", vecs)(acts), loop(acts))
    grid = sum(O.direction("l", vecs[i], batch=i) for i in range(B))
    torch.testing.assert_close(O.directions("l", vecs, cossim_pow=0, all_positions=True)(acts), grid(acts))
    assert len(loop._plan) == 1 and len(grid._plan) == 1


def test_channels_batch_size_mismatch(acts):
    with pytest.raises(IndexError, match="batch has 4"):
        O.channels("l", [0, 1, 2, 3, 4])(acts)
    short = O.channels("l", [1, 2])(acts)
    assert short[2:].abs().sum() == 0


# ------------------------------------------------------------------------------------------------------------------
# Exact values against independent (Lucid-style NHWC numpy) computations
# ------------------------------------------------------------------------------------------------------------------


def _np_dot_cossim(x, y, p):
    dot = (x * y).sum(-1)
    if p == 0:
        return dot.mean()
    cos = dot / (1e-4 + np.linalg.norm(x, axis=-1)) / (1e-4 + np.linalg.norm(y, axis=-1))
    return (dot * np.maximum(0.1, cos) ** p).mean()


def _np_blur(x, w):
    """Lucid's _tf_blur on NHWC, by explicit loops."""
    k = np.full((w, w), 0.5)
    k[1:-1, 1:-1] = 1.0
    n, h, wd, c = x.shape
    r = w // 2
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(wd):
            num = np.zeros((n, c))
            den = 0.0
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    if 0 <= i + di < h and 0 <= j + dj < wd:
                        num += k[di + r, dj + r] * x[:, i + di, j + dj, :]
                        den += k[di + r, dj + r]
            out[:, i, j] = num / den
    return out


def test_neuron_channel_positions(acts):
    l = _nhwc(acts["l"])
    assert O.neuron("l", 2)(acts).sum().item() == pytest.approx(l[:, H // 2, W // 2, 2].mean())
    # x is the column (width index), y the row (height index); Lucid's x indexed rows
    assert O.neuron("l", 2, x=5, y=1)(acts).sum().item() == pytest.approx(l[:, 1, 5, 2].mean())
    assert O.channel("l", 4)(acts).sum().item() == pytest.approx(l[..., 4].mean())
    fc = _np(acts["fc"])
    assert O.neuron("fc", 7)(acts).sum().item() == pytest.approx(fc[:, 7].mean())
    assert O.channel("fc", 7)(acts).sum().item() == pytest.approx(fc[:, 7].mean())
    with pytest.raises(IndexError, match="outside"):
        O.neuron("l", 2, x=W, y=0)(acts)
    with pytest.raises(ValueError, match="no positions"):
        O.neuron("fc", 2, x=0)(acts)
    with pytest.raises(IndexError, match="0..5"):
        O.channel("l", 6)(acts)


@pytest.mark.parametrize("p", [0, 1, 2, 4])
def test_direction_values(acts, p):
    l = _nhwc(acts["l"])
    v = _np(VEC)
    assert O.direction("l", VEC, cossim_pow=p)(acts).sum().item() == pytest.approx(_np_dot_cossim(l, v, p))
    centre = l[:, H // 2:H // 2 + 1, W // 2:W // 2 + 1]
    assert O.direction_neuron("l", VEC, cossim_pow=p)(acts).sum().item() == pytest.approx(
        _np_dot_cossim(centre, v, p))
    assert O.direction_neuron("l", VEC, x=0, y=4, cossim_pow=p)(acts).sum().item() == pytest.approx(
        _np_dot_cossim(l[:, 4:5, 0:1], v, p))
    # tensor_direction: centre crop to the pattern's 3x3, then per-position dot / cossim
    pat = np.transpose(_np(PATTERN), (1, 2, 0))[None]
    top, left = (H - 3) // 2, (W - 3) // 2
    crop = l[:, top:top + 3, left:left + 3]
    assert O.tensor_direction("l", PATTERN, cossim_pow=p)(acts).sum().item() == pytest.approx(
        _np_dot_cossim(crop, pat, p))
    assert O.tensor_direction("l", PATTERN[None], cossim_pow=p)(acts).sum().item() == pytest.approx(
        _np_dot_cossim(crop, pat, p))


def test_directions_whitened_atlas_objective(acts):
    l = _nhwc(acts["l"])
    g = _gen(4)
    vecs = torch.randn(B, C, generator=g, dtype=torch.float64)
    m = torch.randn(C, C, generator=g, dtype=torch.float64)
    S = m @ m.T / C
    got = O.directions("l", vecs, cossim_pow=3, S=S, x=2, y=1)(acts)
    for i in range(B):
        a = l[i, 1, 2]
        v = _np(vecs[i]) @ _np(S)
        dot = a @ v
        cos = dot / (1e-4 + np.linalg.norm(a)) / (1e-4 + np.linalg.norm(v))   # one cossim: |a| and |v|
        assert got[i].item() == pytest.approx(dot * max(0.1, cos) ** 3)
    with pytest.raises(ValueError, match="S must be"):
        O.directions("l", vecs, S=torch.eye(C + 1))


def test_penalties_and_regularizers(acts):
    x = _nhwc(acts["input"])
    n = x.shape[0]
    tv = np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum()
    got = O.total_variation()(acts)
    assert got.sum().item() == pytest.approx(tv)
    assert got[1].item() == pytest.approx(np.abs(np.diff(x[1], axis=0)).sum() + np.abs(np.diff(x[1], axis=1)).sum())
    assert O.L1(constant=0.3)(acts).sum().item() == pytest.approx(np.abs(x - 0.3).sum())
    assert O.L2(constant=0.3, epsilon=1e-6)(acts).sum().item() == pytest.approx(
        np.sqrt(1e-6 + ((x - 0.3) ** 2).sum()))
    assert O.L1("l")(acts).sum().item() == pytest.approx(np.abs(_np(acts["l"])).sum())
    # blur_input_each_step: 0.5 * sum((x - blur3(x))^2), gradient x - blur(x) (blur is stop-grad)
    blurred = _np_blur(x, 3)
    assert O.blur_input_each_step()(acts).sum().item() == pytest.approx(0.5 * ((x - blurred) ** 2).sum())
    xt = acts["input"].clone().requires_grad_(True)
    O.blur_input_each_step()({"input": xt}).sum().backward()
    np.testing.assert_allclose(np.transpose(_np(xt.grad), (0, 2, 3, 1)), x - blurred, rtol=1e-10)
    # penalize_boundary_complexity: border mask of width w, blur5
    w = 3
    mask = np.ones(x.shape)
    mask[:, w:-w, w:-w] = 0
    diffs = (_np_blur(x, 5) - x) ** 2 + 0.8 * (x - 0.5) ** 2
    assert O.penalize_boundary_complexity(w=w)(acts).sum().item() == pytest.approx(-(diffs * mask).sum())
    custom = torch.zeros(12, 10, dtype=torch.float64)
    custom[0] = 1
    assert O.penalize_boundary_complexity(mask=custom, C=0.2)(acts).sum().item() == pytest.approx(
        -(((_np_blur(x, 5) - x) ** 2 + 0.8 * (x - 0.2) ** 2)[:, 0]).sum())
    # input_diff: root mean square difference over the whole batch
    assert O.input_diff(ORIG)(acts).sum().item() == pytest.approx(
        np.sqrt(((x - np.transpose(_np(ORIG), (1, 2, 0))[None]) ** 2).mean()))
    assert n == B


def test_inter_item_objectives(acts):
    l = _nhwc(acts["l"])
    # alignment (Lucid's double loop)
    accum = 0.0
    for d in [1, 2, 3, 4]:
        for i in range(B - d):
            accum += ((l[i] - l[i + d]) ** 2).mean() / 3.0 ** d
    got = O.alignment("l", decay_ratio=3)(acts)
    assert got.sum().item() == pytest.approx(-accum)
    # diversity (Lucid: per-image Gram of [HW, C], l2-normalized, off-diagonal inner products / N)
    flat = l.reshape(B, -1, C)
    grams = np.einsum("npc,npd->ncd", flat, flat)
    grams = grams / np.sqrt(np.maximum((grams ** 2).sum((1, 2), keepdims=True), 1e-10))
    div = sum((grams[i] * grams[j]).sum() for i in range(B) for j in range(B) if j != i) / B
    assert O.diversity("l")(acts).sum().item() == pytest.approx(div)
    # channel_interpolate: weights n / (N - 1)
    m = _nhwc(acts["m"])
    wts = np.arange(B) / (B - 1)
    expected = [(1 - wts[i]) * l[i, ..., 1].mean() + wts[i] * m[i, ..., 5].mean() for i in range(B)]
    np.testing.assert_allclose(_np(O.channel_interpolate("l", 1, "m", 5)(acts)), expected)


# ------------------------------------------------------------------------------------------------------------------
# Parsing and conversion
# ------------------------------------------------------------------------------------------------------------------


def test_parse_expressions(acts):
    ch = lambda layer, n: O.channel(layer, n)(acts)  # noqa: E731
    e = O.parse("-l:3 + 0.5*l:5")
    torch.testing.assert_close(e(acts), -ch("l", 3) + 0.5 * ch("l", 5))
    e = O.parse("(m:1 - m:2) / 2")
    torch.testing.assert_close(e(acts), (ch("m", 1) - ch("m", 2)) / 2)
    e = O.parse("l:4 - 0.5 * l:3 * 2 + 1e-1*m:0")
    torch.testing.assert_close(e(acts), ch("l", 4) - ch("l", 3) + 0.1 * ch("m", 0))
    e = O.parse(" --l:1 ")
    torch.testing.assert_close(e(acts), ch("l", 1))
    assert O.parse("blocks.10:7").name == "channel(blocks.10, 7)"
    assert O.parse("-blocks.10:7 + 0.5*blocks.10:11").layers == frozenset({"blocks.10"})
    daisy = O.parse("class:daisy")
    assert daisy.name == "class_logit(daisy)" and daisy.layers == frozenset({"output"})
    torch.testing.assert_close(O.parse("class:4")(acts), acts["output"][:, 4])
    assert O.parse("class:'tiger cat'").name == "class_logit(tiger cat)"
    assert O.as_objective("l:2").name == "channel(l, 2)"


@pytest.mark.parametrize("bad", ["", "   ", "l", "l:x", "l:1 +", "(l:1", "l:1)", "l:1 ** 2", "2 / l:1",
                                 "1 + 2", "l:1 $ 2", "__import__('os').system('x')", "l:1 l:2", "l:1 / 0",
                                 "class:tiger cat", "l:-1", "()"])
def test_parse_errors(bad):
    with pytest.raises(ValueError) as err:
        O.parse(bad)
    assert isinstance(err.value, O.ObjectiveSyntaxError)


def test_as_objective(acts):
    a = O.channel("l", 1)
    assert O.as_objective(a) is a
    wrapped = O.as_objective(lambda t: t["l"][:, 0].mean((1, 2)), layers=["l"])
    torch.testing.assert_close(wrapped(acts), acts["l"][:, 0].mean((1, 2)))
    with pytest.raises(TypeError, match="layers="):
        O.as_objective(lambda t: t["l"])
    with pytest.raises(TypeError):
        O.as_objective(3)


# ------------------------------------------------------------------------------------------------------------------
# bind() on the real model
# ------------------------------------------------------------------------------------------------------------------


def test_bind_errors(lite0):
    with pytest.raises(KeyError, match="blocks.9"):
        O.channel("blocks.99", 1).bind(lite0)
    with pytest.raises(IndexError, match=r"0\.\.111"):
        O.channel("blocks.9", 112).bind(lite0)
    with pytest.raises(IndexError, match=r"0\.\.111"):
        O.channels("blocks.9", [1, 200]).bind(lite0)
    with pytest.raises(IndexError, match=r"0\.\.111"):
        (O.channel("blocks.9", 3) + 0.5 * O.neuron("blocks.9", 500)).bind(lite0)   # composites bind children
    with pytest.raises(KeyError, match="daisy"):
        O.parse("class:daisyy").bind(lite0)
    with pytest.raises(KeyError, match="blocks"):
        O.parse("blocks.3:1 - block.9:2").bind(lite0)
    with pytest.raises(ValueError, match="112 channels"):
        O.direction("blocks.9", torch.ones(40)).bind(lite0)
    with pytest.raises(IndexError, match="0..39"):
        O.channel_interpolate("blocks.4", 1, "blocks.4", 40).bind(lite0)
    with pytest.raises(RuntimeError, match="bind"):
        O.class_logit("daisy")({"output": torch.zeros(1, 1000)})


def test_bind_resolves(lite0):
    obj = O.parse("class:daisy - 0.5 * class:tiger_cat").bind(lite0)
    out = torch.randn(2, 1000, generator=_gen(5))
    daisy, cat = lite0.class_index("daisy"), lite0.class_index("tiger cat")
    torch.testing.assert_close(obj({"output": out}), out[:, daisy] - 0.5 * out[:, cat])
    assert obj.name == "class_logit(daisy) - 0.5 * class_logit(tiger_cat)"
    ok = (O.channel("blocks.9", 111) + O.directions("blocks.9", torch.ones(2, 112)) - O.L1()).bind(lite0)
    assert ok.layers == frozenset({"blocks.9", "input"})


# ------------------------------------------------------------------------------------------------------------------
# Every objective rises when optimized
# ------------------------------------------------------------------------------------------------------------------

LAYER = "blocks.2"   # 24 channels, 8x8 at 32 px: cheap enough to optimize every objective on 2 CPU cores
SIZE = 32
_v = torch.randn(24, generator=_gen(6))
_vs = torch.randn(2, 24, generator=_gen(7))
_pat = torch.randn(24, 3, 3, generator=_gen(8))

RISES = {
    "neuron": (1, lambda: O.neuron(LAYER, 3)),
    "channel": (1, lambda: O.channel(LAYER, 3)),
    "channel_batch": (2, lambda: O.channel(LAYER, 5, batch=1)),
    "channels": (2, lambda: O.channels(LAYER, [3, 5])),
    "direction": (1, lambda: O.direction(LAYER, _v)),
    "direction_cossim": (1, lambda: O.direction(LAYER, _v, cossim_pow=2)),
    "direction_neuron": (1, lambda: O.direction_neuron(LAYER, _v, x=2, y=5)),
    "directions": (2, lambda: O.directions(LAYER, _vs, S=torch.eye(24) * 2)),
    "tensor_direction": (1, lambda: O.tensor_direction(LAYER, _pat)),
    "deepdream": (1, lambda: O.deepdream(LAYER)),
    "total_variation": (1, lambda: O.total_variation()),
    "L1": (1, lambda: O.L1(constant=0.5)),
    "L2": (1, lambda: O.L2(constant=0.5)),
    "blur_input_each_step": (1, lambda: O.blur_input_each_step()),
    "penalize_boundary_complexity": (1, lambda: O.penalize_boundary_complexity(w=4)),
    "channel_interpolate": (3, lambda: O.channel_interpolate(LAYER, 3, LAYER, 5)),
    "alignment": (3, lambda: O.alignment(LAYER)),
    "neg_diversity": (2, lambda: -O.diversity(LAYER)),
    "input_diff": (1, lambda: O.input_diff(torch.full((3, SIZE, SIZE), 0.5))),     # reads no layer of the model
    "class_logit": (1, lambda: O.class_logit("daisy")),
    "scheduled_parse": (1, lambda: O.decay(100) * O.parse(f"{LAYER}:3 - 0.5*{LAYER}:5")),
}


def _optimize(model, obj, batch, steps=15, size=SIZE):
    """Adam (lr 0.05) on raw pixels through a sigmoid; the objective's total at every step."""
    obj = obj.bind(model)
    g = _gen(11)
    pixels = torch.nn.Parameter(torch.randn(batch, 3, size, size, generator=g))
    opt = torch.optim.Adam([pixels], lr=0.05)
    taps = sorted(obj.layers - {"input", "output"})
    values = []
    with LayerTap(model, taps) as tap:
        for step in range(steps + 1):
            image = torch.sigmoid(pixels)
            acts = tap(image) if taps else {}
            if "output" in obj.layers:
                acts["output"] = model(image)
            acts["input"] = image
            acts["step"] = torch.tensor(step)
            vec = obj(acts)
            assert vec.shape == (batch,)
            values.append(vec.sum().item())
            opt.zero_grad()
            (-vec.sum()).backward()
            opt.step()
    return values


@pytest.mark.parametrize("kind", sorted(RISES))
def test_objective_rises_when_optimized(lite0, kind):
    batch, make = RISES[kind]
    if kind == "class_logit":   # the whole network runs: fewer steps, and 64 px so the logit can move
        values = _optimize(lite0, make(), batch, steps=10, size=64)
    else:
        values = _optimize(lite0, make(), batch)
    start, end = values[0], values[-1]
    assert np.isfinite(values).all()
    assert end > start + 0.25 * abs(start) + 1e-2, (kind, start, end)


def test_schedules_take_the_step_as_a_tensor_without_a_host_sync():
    from luminate.objectives import decay, only_after, schedule

    seen = []
    acts = {"step": torch.tensor(150), "x": torch.zeros(2, 3)}
    value = schedule(lambda step: seen.append(type(step)) or 1 - step / 300)(acts)
    assert seen == [torch.Tensor] and torch.allclose(value, torch.tensor([0.25, 0.25]))
    assert torch.allclose(decay(300)(acts), value)
    assert only_after(100)(acts).tolist() == [0.5, 0.5] and only_after(200)(acts).tolist() == [0.0, 0.0]
