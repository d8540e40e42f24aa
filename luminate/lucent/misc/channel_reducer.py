"""Lucent's ``misc.channel_reducer``: :class:`ChannelReducer` factors the **last** axis of an array (channels-last,
as in Lucent and Lucid), on Luminate's :class:`luminate.analysis.factorization.ChannelReducer`.

Deliberate difference: estimators that take a ``random_state`` get 0 (repeatable fits; Lucent left sklearn's
``None``), and NMF runs up to 1000 iterations (sklearn's 200 often stops short).
"""

from __future__ import annotations


from luminate.analysis.factorization import ChannelReducer as _Reducer


def _rows(acts) -> tuple[object, tuple[int, ...]]:
    shape = tuple(acts.shape)
    return acts.reshape(-1, shape[-1]), shape


def _shaped(flat, shape: tuple[int, ...]):
    return flat.reshape(*shape[:-1], flat.shape[-1])


class ChannelReducer(_Reducer):
    """``ChannelReducer(n_components=3, reduction_alg="NMF", **kwargs)``: a ``sklearn.decomposition`` estimator (a
    class or its name) applied to the innermost axis: ``[..., C] -> [..., n_components]``."""

    def __init__(self, n_components: int = 3, reduction_alg="NMF", **kwargs):
        if not isinstance(n_components, int) or isinstance(n_components, bool):
            raise ValueError(f"n_components must be an int, not {n_components!r}")
        if n_components <= 0:
            raise ValueError("n_components must be strictly > 0")
        super().__init__(n_components, reduction_alg, **kwargs)

    def fit(self, acts) -> "ChannelReducer":
        self.fit_transform(acts)
        return self

    def fit_transform(self, acts):
        flat, shape = _rows(acts)
        return _shaped(super().fit_transform(flat), shape)

    def transform(self, acts):
        flat, shape = _rows(acts)
        return _shaped(super().transform(flat), shape)

    def inverse_transform(self, factors):
        flat, shape = _rows(factors)
        return _shaped(super().inverse_transform(flat), shape)

    def __call__(self, acts):
        return self.transform(acts) if self.is_fit else self.fit_transform(acts)


__all__ = ["ChannelReducer"]
