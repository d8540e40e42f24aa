"""Matrix factorization of activations: :class:`ChannelReducer` and :func:`neuron_groups`.

Layout. Lucid's ``ChannelReducer`` takes channels-last arrays (``[..., C]``). Luminate is NCHW, so the
reducer takes ``[C, H, W]``, ``[N, C, H, W]`` or flat ``[M, C]`` activations (torch tensors or numpy
arrays) and returns factors with the **component axis where the channel axis was**: ``[K, H, W]``,
``[N, K, H, W]`` or ``[M, K]``. ``components`` is ``[K, C]``. Outputs follow the input's type (tensors in,
float32 CPU tensors out; arrays in, arrays out).

Any ``sklearn.decomposition`` estimator works by class name (``"NMF"``, ``"PCA"``, ``"FastICA"`` -- alias
``"ICA"`` --, ``"MiniBatchDictionaryLearning"``, ...). NMF needs non-negative activations: take a post-ReLU
layer (EfficientNet-Lite: ``blocks.N.depthwise`` or ``head``; block outputs ``blocks.N`` are linear
projections and go negative), or split signs with :func:`posneg`. Fits run with BLAS / OpenMP limited to
``n_threads`` threads (default 1: on a 2-core machine torch's and NumPy's pools otherwise fight, making a
small NMF several times slower) and with ``random_state=0`` by default, so results are reproducible.

scikit-learn is an optional dependency: ``pip install 'luminate[analysis]'``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from luminate.activations import activations
from luminate.analysis.attribution import ClassLike, as_batch, group_attribution, resolve_classes
from luminate.models.base import as_model

_ALIASES = {"ica": "FastICA"}
_NON_NEGATIVE = ("NMF", "MiniBatchNMF", "LatentDirichletAllocation")


def _sklearn_decomposition():
    try:
        import sklearn.decomposition as decomposition
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ChannelReducer needs scikit-learn: pip install 'luminate[analysis]'") from exc
    return decomposition


def _estimator_class(method) -> type:
    if isinstance(method, type):
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a sklearn.decomposition class or its name, got {type(method).__name__}")
    decomposition = _sklearn_decomposition()
    names = [n for n in getattr(decomposition, "__all__", dir(decomposition)) if n[:1].isupper()]
    wanted = _ALIASES.get(method.lower(), method)
    for name in names:
        if name.lower() == wanted.lower():
            return getattr(decomposition, name)
    raise ValueError(f"unknown factorization method {method!r}; choose a sklearn.decomposition class: "
                     f"{', '.join(sorted(names))} (or 'ICA' for FastICA)")


def _channel_axis(ndim: int) -> int:
    if ndim == 2:
        return 1
    if ndim in (3, 4):
        return ndim - 3
    raise ValueError(f"expected activations [M, C], [C, H, W] or [N, C, H, W], got {ndim} dimensions")


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def _flatten(x) -> tuple[np.ndarray, tuple[int, ...], int]:
    """``x`` -> ``([M, C] array, shape of x, channel axis)``."""
    array = _to_numpy(x)
    axis = _channel_axis(array.ndim)
    flat = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    return flat, array.shape, axis


def _unflatten(flat: np.ndarray, shape: tuple[int, ...], axis: int, like) -> Any:
    """``[M, K]`` -> ``shape`` with ``K`` at ``axis``, as a tensor if ``like`` is one."""
    moved = list(shape)
    del moved[axis]
    out = np.moveaxis(flat.reshape(*moved, flat.shape[1]), -1, axis)
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    return out


def posneg(acts, axis: int | None = None):
    """Split signs into separate non-negative channels: ``[max(0, a), max(0, -a)]`` along the channel axis.

    ``[C, H, W]`` -> ``[2C, H, W]``, ``[N, C, H, W]`` -> ``[N, 2C, H, W]``, ``[M, C]`` -> ``[M, 2C]`` (or along
    ``axis``); channel ``c`` holds the positive part, channel ``C + c`` the negative part. Makes any layer
    usable with NMF (the Understanding RL Vision trick).
    """
    axis = _channel_axis(acts.ndim) if axis is None else axis
    if isinstance(acts, torch.Tensor):
        return torch.cat([acts.clamp_min(0), (-acts).clamp_min(0)], dim=axis)
    acts = np.asarray(acts)
    return np.concatenate([np.maximum(acts, 0), np.maximum(-acts, 0)], axis=axis)


class ChannelReducer:
    """Factor activations over the channel axis with a ``sklearn.decomposition`` estimator.

    >>> reducer = ChannelReducer(6, "NMF")
    >>> factors = reducer.fit_transform(acts)        # acts [C, H, W] -> factors [6, H, W]
    >>> reducer.components.shape                     # [6, C]
    >>> reducer.reconstruction_error()               # relative Frobenius error on the fitted data

    Args:
        n_components: number of factors ``K``.
        method: estimator class or its name in ``sklearn.decomposition`` (case-insensitive; ``"ICA"`` is
            ``FastICA``). Lucid called this ``reduction_alg``.
        random_state: passed to estimators that take one (default 0: deterministic).
        n_threads: BLAS / OpenMP threads during fit and transform (``None``: leave the pools alone).
        **kwargs: more estimator arguments (e.g. ``init="nndsvd"``). NMF defaults to ``max_iter=1000``
            instead of sklearn's 200, which often ends with a ConvergenceWarning on activations (the result
            barely changes, and a fit of a 196 x 672 matrix still takes well under a second).

    Attributes of the fitted estimator are reachable without their trailing underscore, as in Lucid:
    ``reducer.explained_variance_ratio`` is ``reducer.estimator.explained_variance_ratio_``. Calling the
    reducer fits it on first use and transforms afterwards.
    """

    def __init__(self, n_components: int = 3, method="NMF", *, random_state: int | None = 0,
                 n_threads: int | None = 1, **kwargs):
        cls = _estimator_class(method)
        params = inspect.signature(cls).parameters
        if "n_components" in params:
            kwargs.setdefault("n_components", n_components)
        if "random_state" in params:
            kwargs.setdefault("random_state", random_state)
        if cls.__name__ in ("NMF", "MiniBatchNMF"):
            kwargs.setdefault("max_iter", 1000)   # sklearn's 200 often stops short (ConvergenceWarning); cheap here
        self.n_components = n_components
        self.method = cls.__name__
        self.n_threads = n_threads
        self.estimator = cls(**kwargs)
        self.is_fit = False
        self._tensor_out = True
        self._fit_error: float | None = None

    def __repr__(self) -> str:
        return f"ChannelReducer({self.n_components}, {self.method!r}{', fitted' if self.is_fit else ''})"

    def _threads(self):
        if self.n_threads is None:
            from contextlib import nullcontext

            return nullcontext()
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        return threadpool_limits(limits=self.n_threads)

    def _check(self, flat: np.ndarray) -> None:
        if not np.isfinite(flat).all():
            raise ValueError("activations contain NaN or infinite values; check the layer and the images")
        if self.method in _NON_NEGATIVE and flat.size and flat.min() < 0:
            negative = float((flat < 0).mean())
            raise ValueError(
                f"{self.method} needs non-negative activations, but these go down to {flat.min():.4g} "
                f"({negative:.1%} of the values are negative). Use a post-activation layer (after a ReLU; "
                "luminate.models.nonnegative_layers(model) lists the model's), or split signs with "
                "luminate.analysis.factorization.posneg(acts), which doubles the channels.")

    def fit(self, acts) -> "ChannelReducer":
        """Fit on ``acts`` (``[C,H,W]``, ``[N,C,H,W]`` or ``[M,C]``); returns ``self``."""
        self.fit_transform(acts)
        return self

    def fit_transform(self, acts):
        """Fit on ``acts`` and return its factors, the component axis where the channel axis was."""
        flat, shape, axis = _flatten(acts)
        self._check(flat)
        with self._threads():
            factors = self.estimator.fit_transform(flat)
        self.is_fit = True
        self._tensor_out = isinstance(acts, torch.Tensor)
        self._fit_error = self._relative_error(flat, factors)
        return _unflatten(factors, shape, axis, acts)

    def transform(self, acts):
        """Factors of new ``acts`` with the fitted components (component axis at the channel axis)."""
        self._require_fit()
        flat, shape, axis = _flatten(acts)
        self._check(flat)
        with self._threads():
            factors = self.estimator.transform(flat)
        return _unflatten(factors, shape, axis, acts)

    def inverse_transform(self, factors):
        """Activations rebuilt from ``factors`` (``[K,H,W]``, ``[N,K,H,W]`` or ``[M,K]``), channel axis restored."""
        self._require_fit()
        flat, shape, axis = _flatten(factors)
        return _unflatten(self._inverse(flat), shape, axis, factors)

    def __call__(self, acts):
        return self.transform(acts) if self.is_fit else self.fit_transform(acts)

    @property
    def components(self):
        """The ``[K, C]`` factor directions in channel space (a tensor if the fit data was one)."""
        self._require_fit()
        comps = np.asarray(self.estimator.components_, dtype=np.float32)
        return torch.from_numpy(comps.copy()) if self._tensor_out else comps

    def reconstruction_error(self, acts=None) -> float:
        """Relative Frobenius error ``||X - inverse(transform(X))|| / ||X||``.

        ``acts=None``: on the data of the last fit (computed then, so nothing is kept); otherwise on ``acts``.
        """
        self._require_fit()
        if acts is None:
            return float(self._fit_error)
        flat, _, _ = _flatten(acts)
        with self._threads():
            factors = self.estimator.transform(flat)
        return self._relative_error(flat, factors)

    def _inverse(self, flat_factors: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "inverse_transform"):
            with self._threads():
                return self.estimator.inverse_transform(flat_factors)
        return flat_factors @ self.estimator.components_

    def _relative_error(self, flat: np.ndarray, factors: np.ndarray) -> float:
        norm = float(np.linalg.norm(flat))
        if norm == 0:
            return 0.0
        return float(np.linalg.norm(flat - self._inverse(factors)) / norm)

    def _require_fit(self) -> None:
        if not self.is_fit:
            raise RuntimeError("this ChannelReducer is not fitted yet: call fit or fit_transform first")

    def __getattr__(self, name: str):
        # Lucid's proxy: reducer.components_ -> estimator.components_, reducer.n_iter -> estimator.n_iter_
        estimator = self.__dict__.get("estimator")
        if estimator is None or name.startswith("__"):
            raise AttributeError(name)
        for candidate in (name, name + "_"):
            if hasattr(estimator, candidate):
                return getattr(estimator, candidate)
        raise AttributeError(f"{type(self).__name__} and its {type(estimator).__name__} have no attribute {name!r}")


@dataclass
class NeuronGroups:
    """Neuron groups of one image at one layer (Lucid's NeuronGroups), sorted left to right.

    Attributes:
        layer: the layer name.
        image: the image ``[1, 3, H, W]`` in [0, 1].
        spatial: ``[G, h, w]`` where each group is active (non-negative NMF factors).
        channels: ``[G, C]`` each group's direction in channel space (render icons with a
            direction objective on ``layer``).
        attribution: ``[G, n_classes]`` each group's attribution to each class logit.
        classes: class indices; class_names: their names.
        reconstruction_error: relative Frobenius error of the factorization.
        reducer: the fitted :class:`ChannelReducer` (its components are unsorted).
    """

    layer: str
    image: torch.Tensor
    spatial: torch.Tensor
    channels: torch.Tensor
    attribution: torch.Tensor
    classes: list[int]
    class_names: list[str]
    reconstruction_error: float
    reducer: ChannelReducer | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        g, h, w = self.spatial.shape
        return (f"NeuronGroups(layer={self.layer!r}, {g} groups over {h}x{w} positions x {self.channels.shape[1]} "
                f"channels, classes={self.class_names}, reconstruction_error={self.reconstruction_error:.3f})")

    @property
    def n_groups(self) -> int:
        return self.spatial.shape[0]

    def masks(self, percentile: float = 99.0) -> torch.Tensor:
        """Spatial factors scaled to [0, 1] by their ``percentile`` (Lucid's GroupWidget), ``[G, h, w]``."""
        flat = self.spatial.flatten(1)
        scale = torch.quantile(flat, percentile / 100, dim=1).clamp_min(1e-12)
        return (self.spatial / scale[:, None, None]).clamp(0, 1)


def neuron_groups(model, image, layer: str, n_groups: int = 6,
                  classes: Sequence[ClassLike] | ClassLike | None = None, method="NMF",
                  **reducer_kwargs) -> NeuronGroups:
    """Factor one image's activations at ``layer`` into ``n_groups`` neuron groups and attribute classes to them.

    Follows Lucid's NeuronGroups: ``ChannelReducer(n_groups, "NMF")`` on the ``[C, h, w]`` activations gives
    spatial factors ``[G, h, w]`` and channel directions ``[G, C]``; groups are sorted by the x position of
    each spatial factor's peak (``argmax_x max_y``, ties keep factor order); the attribution of group ``g``
    to a class is ``sum (spatial_g (x) channels_g) * d logit / d acts``.

    Args:
        image: one image (tensor ``[1,3,H,W]`` / ``[3,H,W]`` in [0, 1], used as is; or a path / PIL image,
            preprocessed with the model's evaluation crop).
        layer: a layer with non-negative activations for NMF (``"blocks.9.depthwise"``, ``"head"``).
        classes: class indices or names; ``None``: the image's top class.
        method, reducer_kwargs: passed to :class:`ChannelReducer`.
    """
    model = as_model(model)
    x = as_batch(model, image)
    if x.shape[0] != 1:
        raise ValueError(f"neuron_groups takes one image, got a batch of {x.shape[0]}")
    acts = activations(model, x, layer, grid=True)[0]
    if acts.ndim != 3:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(acts.shape)}, not [C, H, W]: "
                         "choose a convolutional layer")
    reducer = ChannelReducer(n_groups, method, **reducer_kwargs)
    if reducer.method in _NON_NEGATIVE and float(acts.min()) < 0:   # name this network's own usable layers
        from luminate.models.defaults import nonnegative_layers

        usable = nonnegative_layers(model)
        raise ValueError(f"{reducer.method} needs non-negative activations, and layer {layer!r} of {model.name} goes "
                         f"down to {float(acts.min()):.4g} (a signed output, e.g. a linear projection). Layers of "
                         f"{model.name} with non-negative (post-activation) outputs: "
                         f"{', '.join(usable[-10:]) if usable else 'none'}; or use method='PCA', or "
                         "split signs with luminate.analysis.factorization.posneg(acts)")
    spatial = reducer.fit_transform(acts)                   # [G, h, w]
    channels = reducer.components                           # [G, C]
    x_peak = spatial.amax(dim=1).argmax(dim=1)              # x of each factor's peak
    order = torch.from_numpy(np.argsort(x_peak.numpy(), kind="stable"))
    spatial, channels = spatial[order].contiguous(), channels[order].contiguous()
    class_idx = resolve_classes(model, classes, x)
    attribution = group_attribution(model, x, layer, spatial, channels, class_idx)
    names = [model.labels[i] if model.labels is not None else str(i) for i in class_idx]
    return NeuronGroups(layer=layer, image=x.detach().cpu(), spatial=spatial, channels=channels,
                        attribution=attribution, classes=class_idx, class_names=names,
                        reconstruction_error=reducer.reconstruction_error(), reducer=reducer)
