"""ChannelReducer (NCHW layouts, NMF on real activations, errors, determinism) and neuron groups."""

import numpy as np
import pytest
import torch

from luminate.activations import activations
from luminate.analysis import attribution as A
from luminate.analysis.factorization import ChannelReducer, NeuronGroups, neuron_groups, posneg
from luminate.images import resize


@pytest.fixture(scope="module")
def flower224(lite0, flower_path):
    return lite0.preprocess(flower_path)


@pytest.fixture(scope="module")
def depthwise_acts(lite0, flower224):
    """``blocks.9.depthwise`` (after ReLU6): ``[672, 14, 14]``, non-negative."""
    return activations(lite0, flower224, "blocks.9.depthwise")[0]


def test_nmf_reconstruction_on_real_activations(depthwise_acts):
    """Stated tolerance: 6 NMF groups rebuild blocks.9.depthwise of flower.jpg at 224 px with relative
    Frobenius error < 0.6 (measured 0.556), within 10% of the best rank-6 error (truncated SVD, 0.544)."""
    acts = depthwise_acts
    reducer = ChannelReducer(6, "NMF")
    factors = reducer.fit_transform(acts)
    assert factors.shape == (6, 14, 14) and factors.min() >= 0
    assert reducer.components.shape == (6, 672) and reducer.components.min() >= 0
    rebuilt = reducer.inverse_transform(factors)
    assert rebuilt.shape == acts.shape
    error = reducer.reconstruction_error()
    assert error == pytest.approx(((rebuilt - acts).norm() / acts.norm()).item(), rel=1e-4)
    assert error < 0.6
    best = ChannelReducer(6, "TruncatedSVD").fit(acts).reconstruction_error()
    assert best - 1e-4 <= error <= 1.1 * best                       # Eckart-Young bound, and close to it
    errors = [ChannelReducer(k, "NMF").fit(acts).reconstruction_error() for k in (2, 6, 24)]
    assert errors[0] > errors[1] > errors[2]
    assert reducer.reconstruction_error(acts) == pytest.approx(error, abs=0.02)   # refit-free transform


def test_layouts_put_components_where_channels_were(depthwise_acts):
    acts = depthwise_acts                                           # [C, H, W]
    chw = ChannelReducer(4, "NMF").fit_transform(acts)
    nchw = ChannelReducer(4, "NMF").fit_transform(acts[None])
    flat = ChannelReducer(4, "NMF").fit_transform(acts.flatten(1).T)    # [H*W, C]
    assert chw.shape == (4, 14, 14) and nchw.shape == (1, 4, 14, 14) and flat.shape == (196, 4)
    torch.testing.assert_close(nchw[0], chw)
    torch.testing.assert_close(flat.T.reshape(4, 14, 14), chw)
    as_array = ChannelReducer(4, "NMF").fit_transform(acts.numpy())
    assert isinstance(as_array, np.ndarray) and as_array.shape == (4, 14, 14)
    np.testing.assert_allclose(as_array, chw.numpy(), rtol=1e-5, atol=1e-6)


def test_reducer_is_deterministic_and_proxies_estimator_attributes(depthwise_acts):
    a = ChannelReducer(3, "NMF").fit_transform(depthwise_acts)
    b = ChannelReducer(3, "NMF").fit_transform(depthwise_acts)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    pca = ChannelReducer(3, "pca")
    pca.fit(depthwise_acts)
    assert pca.method == "PCA" and pca.explained_variance_ratio.shape == (3,)
    assert pca.n_components_ == 3
    ica = ChannelReducer(3, "ICA", max_iter=400)
    assert ica.method == "FastICA" and ica.fit_transform(depthwise_acts[:, :8, :8]).shape == (3, 8, 8)
    assert "fitted" in repr(pca)


def test_fit_limits_blas_threads(depthwise_acts):
    from threadpoolctl import threadpool_info

    seen = []

    class Recorder:
        def __init__(self, n_components):
            self.components_ = np.zeros((n_components, depthwise_acts.shape[0]), dtype=np.float32)

        def fit_transform(self, x):
            seen.extend(pool["num_threads"] for pool in threadpool_info())
            return np.zeros((x.shape[0], self.components_.shape[0]), dtype=np.float32)

    ChannelReducer(2, Recorder).fit(depthwise_acts)
    assert seen and set(seen) == {1}


def test_nmf_rejects_negative_activations_and_posneg_fixes_it(lite0, flower224):
    linear = activations(lite0, flower224, "blocks.9")[0]            # block output: a linear projection
    assert linear.min() < 0
    with pytest.raises(ValueError, match="non-negative") as err:
        ChannelReducer(4, "NMF").fit(linear)
    assert "posneg" in str(err.value) and "post-activation" in str(err.value)
    split = posneg(linear)
    assert split.shape == (224, 14, 14) and split.min() >= 0
    torch.testing.assert_close(split[:112] - split[112:], linear)
    assert posneg(linear[None]).shape == (1, 224, 14, 14)
    assert posneg(linear.flatten(1).T.numpy()).shape == (196, 224)
    assert ChannelReducer(4, "NMF").fit_transform(split).shape == (4, 14, 14)


def test_reducer_errors():
    with pytest.raises(ValueError, match="NMF"):
        ChannelReducer(3, "NotAMethod")
    with pytest.raises(RuntimeError, match="fit"):
        ChannelReducer(3).transform(torch.rand(4, 2, 2))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ChannelReducer(3).fit(torch.rand(2, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        ChannelReducer(3).fit(torch.full((4, 2, 2), float("nan")))


def test_neuron_groups(lite0, flower224):
    groups = neuron_groups(lite0, flower224, "blocks.9.depthwise", n_groups=5)
    assert isinstance(groups, NeuronGroups) and groups.n_groups == 5
    assert groups.spatial.shape == (5, 14, 14) and groups.channels.shape == (5, 672)
    assert groups.classes == [lite0.class_index("daisy")] and groups.class_names == ["daisy"]
    assert groups.attribution.shape == (5, 1)
    x_peaks = groups.spatial.amax(dim=1).argmax(dim=1)
    assert (x_peaks[1:] >= x_peaks[:-1]).all()                        # left to right, as Lucid
    masks = groups.masks()
    assert masks.shape == (5, 14, 14) and masks.min() >= 0 and masks.max() <= 1
    assert 0 < groups.reconstruction_error < 1 and "daisy" in repr(groups)
    # the groups' attributions are exactly the attribution of the activations they rebuild
    _, grad, _ = A._layer_gradient(lite0, flower224, "blocks.9.depthwise",
                                   torch.tensor([lite0.class_index("daisy")]), None)
    rebuilt = torch.einsum("ghw,gc->chw", groups.spatial, groups.channels)
    assert groups.attribution.sum().item() == pytest.approx((rebuilt * grad[0]).sum().item(), rel=1e-4, abs=1e-5)


def test_neuron_groups_classes_and_errors(lite0, flower224):
    small = resize(flower224, 128)
    groups = neuron_groups(lite0, small, "head", n_groups=3, classes=["daisy", "bee"])
    assert groups.attribution.shape == (3, 2) and groups.class_names == ["daisy", "bee"]
    with pytest.raises(KeyError, match="daysy"):
        neuron_groups(lite0, small, "head", n_groups=3, classes=["daysy"])
    with pytest.raises(ValueError, match="posneg"):
        neuron_groups(lite0, small, "blocks.12", n_groups=3)
