"""The unit behind a concept: rank units by how well each alone predicts labels, and fit a sparse probe.

This is the sentiment-neuron experiment (Radford et al. 2017) and Karpathy's cell search in one call: given labels
per token (an array per text) or per text (one number per text), every unit's activations are scored by ROC AUC,
sign-free (``max(AUC, 1 - AUC)``: a unit that is low inside quotes tracks quotes as well as one that is high), and
an L1-regularized logistic regression over all units (scikit-learn) shows which few units together predict them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch


def auc_per_unit(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of ``values`` ``[N, C]`` for binary ``labels`` ``[N]`` (ties count half, as
    ``sklearn.metrics.roc_auc_score``): the probability that a positive scores above a negative."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError(f"labels need both classes to rank units, got {pos} positive and {neg} negative")
    ranks = rankdata(values, axis=0)
    return (ranks[y].sum(0) - pos * (pos + 1) / 2) / (pos * neg)


@dataclass
class Probe:
    """The sparse probe: ``units`` with non-zero weight (largest first), their ``weights`` (on standardized
    activations), the held-out ``accuracy`` and ``auc`` (texts split in two halves), and ``C`` (inverse L1
    strength)."""

    units: list[int]
    weights: list[float]
    accuracy: float
    auc: float
    C: float


class UnitRanking(list):
    """``[(unit, auc), ...]`` best first (AUC sign-free), with ``.direction`` (+1: the unit is high where the
    label is 1, -1: low), ``.layer`` and ``.probe`` (:class:`Probe`, or ``None``)."""

    def __init__(self, items, layer: str, direction: dict[int, int], probe: Probe | None, n: int, positives: int):
        super().__init__(items)
        self.layer = layer
        self.direction = direction
        self.probe = probe
        self.samples = n
        self.positives = positives

    def __repr__(self) -> str:
        head = ", ".join(f"{u}: {a:.3f}{'+' if self.direction[u] > 0 else '-'}" for u, a in self[:5])
        probe = (f"; L1 probe: units {self.probe.units[:8]} held-out AUC {self.probe.auc:.3f}"
                 if self.probe else "")
        return f"UnitRanking({self.layer}: {head}, ... over {self.samples} samples{probe})"


def _flatten(acts: list[torch.Tensor], labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values [N, C], labels [N], text index [N])``: per-token labels are matched to tokens; per-text labels
    (one number per text) use each text's mean activation."""
    labels = list(labels)
    if len(labels) != len(acts):
        raise ValueError(f"got {len(labels)} labels for {len(acts)} texts: give one label per text, or one array "
                         "of per-token labels per text")
    if all(np.ndim(l) == 0 for l in labels):
        values = np.stack([a.mean(0).numpy() for a in acts])
        return values, np.asarray(labels, dtype=float), np.arange(len(acts))
    rows, ys, which = [], [], []
    for i, (a, l) in enumerate(zip(acts, labels)):
        l = np.asarray(l).reshape(-1)
        if len(l) != a.shape[0]:
            raise ValueError(f"text {i}: {len(l)} labels for {a.shape[0]} tokens (labels go one per character for "
                             "char_rnn, one per word piece for minilm_l6: see luminate.text.encode)")
        rows.append(a.numpy())
        ys.append(l)
        which.append(np.full(len(l), i))
    return np.concatenate(rows), np.concatenate(ys).astype(float), np.concatenate(which)


def rank_units(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sign-free AUC [C], direction [C])`` for activations ``[N, C]`` and binary labels ``[N]``."""
    auc = auc_per_unit(values, labels)
    return np.maximum(auc, 1 - auc), np.where(auc >= 0.5, 1, -1)


def sparse_probe(values: np.ndarray, labels: np.ndarray, groups: np.ndarray, C: float = 0.05,
                 max_samples: int = 20000, seed: int = 0) -> Probe:
    """An L1 logistic regression over all units (standardized), fitted on the texts of one half and scored on
    the other (so tokens of one text never sit on both sides). When ``C`` leaves no unit (few samples), it is
    raised 4x at a time, up to 256x; the ``C`` used is reported."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    texts = np.unique(groups)
    rng.shuffle(texts)
    train = np.isin(groups, texts[: max(1, len(texts) // 2)])
    test = ~train if (~train).any() else train
    y = labels.astype(int)
    tr, te = np.flatnonzero(train), np.flatnonzero(test)
    tr = rng.choice(tr, max_samples, replace=False) if len(tr) > max_samples else tr
    if len(np.unique(y[tr])) < 2 or len(np.unique(y[te])) < 2:
        raise ValueError("the probe needs both classes in each half of the texts; give more labelled texts")
    scaler = StandardScaler().fit(values[tr])
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}  # 1.8 deprecated penalty=
    for c in (C, 4 * C, 16 * C, 64 * C, 256 * C):  # few samples: weaken the L1 penalty until a unit is chosen
        clf = LogisticRegression(C=c, solver="liblinear", max_iter=500, **l1)
        clf.fit(scaler.transform(values[tr]), y[tr])
        w = clf.coef_[0]
        if (w != 0).any():
            break
    C = c
    order = [int(u) for u in np.argsort(-np.abs(w)) if w[u] != 0]
    scores = clf.decision_function(scaler.transform(values[te]))
    return Probe(order, [float(w[u]) for u in order], float(clf.score(scaler.transform(values[te]), y[te])),
                 float(roc_auc_score(y[te], scores)), C)


def find_units(model, texts: Sequence[str], labels, layer: str, probe: bool = True, C: float = 0.05,
               acts: list[torch.Tensor] | None = None) -> UnitRanking:
    """Which units of ``layer`` track the labelled concept.

    Args:
        model: a text model (``char_rnn``, ``minilm_l6``).
        texts: the texts.
        labels: per token (an array of 0/1 per text, one per character or word piece) or per text (one 0/1 each;
            units are then scored by their mean over the text).
        layer: the layer whose units are ranked.
        probe: also fit the L1 logistic probe over all units (:class:`Probe`).
        acts: activations already computed with :func:`luminate.text.activations` (skips the forward passes).

    Returns:
        :class:`UnitRanking`: ``[(unit, auc), ...]`` best first, AUC sign-free, ``.probe`` the sparse probe.
    """
    from luminate.text.core import activations

    if acts is None:
        acts = activations(model, list(texts), layer)
    values, y, groups = _flatten(acts, labels)
    uniq = np.unique(y)
    if not set(uniq.tolist()) <= {0.0, 1.0}:
        raise ValueError(f"labels must be 0/1 (got values {uniq[:5].tolist()}); threshold them first")
    auc, direction = rank_units(values, y)
    order = np.argsort(-auc, kind="stable")
    fitted = sparse_probe(values, y, groups, C) if probe else None
    return UnitRanking([(int(u), float(auc[u])) for u in order], layer, {int(u): int(direction[u]) for u in order},
                       fitted, len(y), int(y.sum()))
