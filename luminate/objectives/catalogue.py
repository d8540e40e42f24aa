"""The catalogue: Lucid's objectives (and a few more), each a per-item contribution vector ``[B]``.

How a Lucid scalar becomes a vector:

* objectives that Lucid **averages** over the batch (``channel``, ``neuron``, ``direction``, ``deepdream``,
  ...) contribute ``value_i / B`` at item ``i``;
* objectives that Lucid **sums** over the batch (``class_logit``, ``L1``, ``total_variation``, ...)
  contribute ``value_i``;
* ``batch=k`` (every unit objective takes it) computes the objective on item ``k`` alone, as Lucid's
  ``batch=`` does, and puts the value at index ``k``, zeros elsewhere;
* objectives that do not split into per-item terms (``L2``, ``input_diff``) spread their total over the
  items in proportion to each item's share of the sum under the square root (the shares carry no gradient,
  so the gradient of the sum is exactly the gradient of Lucid's scalar);
* a length-1 vector is a batch-free total (a :func:`schedule`, or a callable returning a scalar): added to a
  ``[B]`` vector it is spread evenly, ``total / B`` per item. Numbers added to objectives are spread the same way.

Many units at once: :func:`channels` (item ``i`` maximizes channel ``indices[i]``) and :func:`directions` (item
``i`` follows direction ``vecs[i]``) compute every item in one vectorized gather; Luminate's own code (sprites,
atlas icons, grids, groups) uses them. A sum of single-item terms written out, ``sum(channel(l, n_i, batch=i) ...)``,
is merged into the same form when the sum is built (see ``core._fuse``).

Deliberate differences from Lucid (each also noted where it applies):

* positions: ``x`` is the **column** (width index) and ``y`` the **row** (height index). Lucid's ``x`` indexed
  rows. The default position is the same centre, ``[H // 2, W // 2]``;
* one cosine similarity everywhere, ``cos = dot / ((1e-4 + |a|) (1e-4 + |v|))``; Lucid's atlas objective
  divided by ``|a|`` only;
* ``batch=`` works on every unit objective (Lucid's ``wrap_objective(handle_batch=...)`` was ignored);
* ``penalize_boundary_complexity`` reads the image shape from the input instead of taking it as an argument;
* ``class_logit(label, layer="output")`` takes the label first; names are resolved by :meth:`Objective.bind`.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from luminate.models.base import Model
from luminate.objectives.core import Acts, Objective, _is_number, _linear_name, _num

_EPS = 1e-4  # Lucid's epsilon in the cosine similarity


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_batch(batch) -> None:
    if batch is not None and (not isinstance(batch, numbers.Integral) or isinstance(batch, bool)):
        raise TypeError(f"batch= takes one item index (an int) or None for the whole batch, got {batch!r}")


def _item(batch: int, n: int, name: str) -> int:
    if not -n <= batch < n:
        raise IndexError(f"{name} targets batch item {batch}, but the batch has {n} image(s)")
    return batch % n


def _place(values: Tensor, k: int, n: int) -> Tensor:
    """A ``[n]`` vector with ``values`` (``[1]``) at index ``k`` and zeros elsewhere (differentiable)."""
    return F.pad(values, (k, n - k - 1))


def _flat(a: Tensor) -> Tensor:
    """``[B, C, ...]`` -> ``[B, C, P]`` (P = number of positions; 1 for linear layers)."""
    if a.ndim < 2:
        raise ValueError(f"expected activations [B, C, ...], got shape {tuple(a.shape)}")
    return a.reshape(a.shape[0], a.shape[1], -1)


def _position(a: Tensor, x: int | None, y: int | None, name: str) -> Tensor:
    """The activations at one position, ``[B, C, 1]``: column ``x``, row ``y`` (centre by default)."""
    if a.ndim == 2:
        if x is not None or y is not None:
            raise ValueError(f"{name}: the layer's output is [B, C] (no positions); leave x and y unset")
        return a[:, :, None]
    if a.ndim != 4:
        raise ValueError(f"{name}: positions need activations [B, C, H, W], got shape {tuple(a.shape)}")
    h, w = a.shape[-2:]
    col = w // 2 if x is None else x
    row = h // 2 if y is None else y
    if not (0 <= col < w and 0 <= row < h):
        raise IndexError(f"{name}: position x={col} (column), y={row} (row) is outside the {h}x{w} activation "
                         f"map; use 0 <= x < {w} and 0 <= y < {h}")
    return a[:, :, row, col][:, :, None]


def _shares(s: Tensor) -> Tensor:
    """Nonnegative per-item amounts -> detached fractions summing to 1 (uniform when all are zero)."""
    s = s.detach()
    tot = s.sum()
    return torch.where(tot > 0, s / tot.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(s, 1.0 / s.numel()))


def _cossim_weight(dot: Tensor, a_norm: Tensor, v_norm: Tensor, cossim_pow: float) -> Tensor:
    """``dot * max(0.1, cos)^p`` with Lucid's ``cos = dot / ((1e-4 + |a|) (1e-4 + |v|))``; plain dot for p = 0."""
    if cossim_pow == 0:
        return dot
    cos = dot / ((_EPS + a_norm) * (_EPS + v_norm))
    return dot * cos.clamp_min(0.1) ** cossim_pow


def _vector(vec, name: str, dims: tuple[int, ...] = (1,)) -> Tensor:
    t = torch.as_tensor(vec).detach().to(dtype=torch.float32, device="cpu")
    if t.ndim not in dims:
        raise ValueError(f"{name}: expected a tensor with {' or '.join(map(str, dims))} dimension(s), "
                         f"got shape {tuple(t.shape)}")
    return t


def _whiten(vecs: Tensor, S, name: str) -> Tensor:
    if S is None:
        return vecs
    S = _vector(S, f"{name} S", (2,))
    c = vecs.shape[-1]
    if S.shape != (c, c):
        raise ValueError(f"{name}: the whitening matrix S must be [{c}, {c}] for {c}-dim vectors, "
                         f"got {tuple(S.shape)}")
    return vecs @ S


def _describe(v) -> str:
    if isinstance(v, Tensor):
        return "<" + "x".join(map(str, v.shape)) + ">"
    if isinstance(v, str):
        return v
    if _is_number(v):
        return _num(v)
    return repr(v)


def _call_name(fn: str, *args, **kwargs) -> str:
    parts = [_describe(a) for a in args]
    parts += [f"{k}={_describe(v)}" for k, v in kwargs.items() if v is not None]
    return f"{fn}({', '.join(parts)})"


def _check_vector_length(model: Model, layer: str, c: int, name: str) -> None:
    n = model.layer_info(layer).channels
    if c != n:
        raise ValueError(f"{name}: the direction has {c} entries but layer {layer!r} of {model.name} has "
                         f"{n} channels")


def _unit(name: str, layer: str, batch: int | None, raw: Callable[[Tensor, slice], Tensor], *, mean: bool,
          bind: Callable[[Model], Objective] | None = None) -> Objective:
    """A single-layer objective from ``raw(a, items) -> [n]`` per-item values of ``a = acts[layer][items]``.

    ``mean=True``: Lucid averages over the batch, so each item contributes ``raw_i / B``. With ``batch=k`` the
    objective is computed on item ``k`` alone (Lucid's slicing) and placed at index ``k``.
    """
    _check_batch(batch)

    def fn(acts: Acts) -> Tensor:
        a = acts[layer]
        n = a.shape[0]
        if batch is None:
            r = raw(a, slice(None))
            return r / n if mean else r
        k = _item(batch, n, name)
        return _place(raw(a[k:k + 1], slice(k, k + 1)), k, n)

    return Objective(fn, [layer], name, bind=bind)


# ----------------------------------------------------------------------------------------------------------------
# Channel and direction scores, vectorized over (batch item, target) entries
# ----------------------------------------------------------------------------------------------------------------


class _Items(Objective):
    """Channel / neuron / direction scores with one entry per target: ``(item k or all, channel or vector, w)``.

    ``kind="channel"``: the score of entry ``e`` is the mean over positions of channel ``spec_e``.
    ``kind="direction"``: the mean over positions of ``dot * max(0.1, cos)^p`` with vector ``spec_e``.
    ``pos=None`` averages every position; ``pos=(x, y)`` takes one (``None`` entries: the centre).
    Entries aimed at one item ``k`` add ``w * score`` at ``k``; entries for the whole batch (``k=None``) add
    ``w * score_i / B`` at every item ``i`` (Lucid's mean over the batch). Several ``_Items`` with the same
    ``fuse_key`` in one sum merge into one (:meth:`merge`, called by the sum's plan), so one gather serves all.
    """

    def __init__(self, kind: str, layer: str, items: Sequence[int | None], specs, weights: Sequence[float],
                 pos: tuple[int | None, int | None] | None, cossim_pow: float, name: str):
        if not isinstance(layer, str):
            raise TypeError(f"{name}: layer names are strings like 'blocks.9', got {layer!r}")
        for k in items:
            _check_batch(k)
        self.kind, self.layer, self.pos, self.cossim_pow = kind, layer, pos, float(cossim_pow)
        self.items = list(items)
        self.weights = [float(w) for w in weights]
        if kind == "channel":
            self.specs = [int(s) for s in specs]
            for s, orig in zip(self.specs, specs):
                if s != orig:
                    raise TypeError(f"{name}: channel indices are ints, got {orig!r}")
            key_extra = None
        else:
            self.specs = specs  # Tensor [E, C]
            key_extra = specs.shape[1]
        self.fuse_key = (kind, layer, pos, self.cossim_pow, key_extra)
        super().__init__(self._evaluate, [layer], name)
        targeted = [e for e, k in enumerate(self.items) if k is not None]
        self._targeted = targeted
        self._untargeted = [e for e, k in enumerate(self.items) if k is None]
        self._k_range = (min((self.items[e] for e in targeted), default=0),
                         max((self.items[e] for e in targeted), default=0))
        self._spec_range = (min(self.specs), max(self.specs)) if kind == "channel" else None
        self._cache: dict = {}

    @staticmethod
    def merge(members: list[tuple[float, "_Items"]]) -> "_Items":
        first = members[0][1]
        items = [k for _, m in members for k in m.items]
        weights = [c * w for c, m in members for w in m.weights]
        if first.kind == "channel":
            specs = [s for _, m in members for s in m.specs]
        else:
            specs = torch.cat([m.specs for _, m in members])
        name = _linear_name([(c, m) for c, m in members], 0.0)
        return _Items(first.kind, first.layer, items, specs, weights, first.pos, first.cossim_pow, name)

    def _tensors(self, device: torch.device, dtype: torch.dtype):
        key = (device, dtype)
        if key not in self._cache:
            def pick(idx):
                if not idx:
                    return None
                ks = torch.tensor([self.items[e] or 0 for e in idx], dtype=torch.long, device=device)
                ws = torch.tensor([self.weights[e] for e in idx], dtype=dtype, device=device)
                if self.kind == "channel":
                    specs = torch.tensor([self.specs[e] for e in idx], dtype=torch.long, device=device)
                else:
                    specs = self.specs[idx].to(device=device, dtype=dtype)
                return ks, specs, ws
            self._cache[key] = (pick(self._targeted), pick(self._untargeted))
        return self._cache[key]

    def _check_channels(self, c: int) -> None:
        if self.kind == "channel":
            lo, hi = self._spec_range
            if lo < 0 or hi >= c:  # one rule everywhere: units count from 0, never from the end
                bad = lo if lo < 0 else hi
                raise IndexError(f"{self.name}: channel {bad} is out of range for a layer with {c} channels "
                                 f"(0..{c - 1}; units count from 0, and a negative number is not read from the end)")
        elif self.specs.shape[1] != c:
            raise ValueError(f"{self.name}: the direction has {self.specs.shape[1]} entries but layer "
                             f"{self.layer!r} has {c} channels")

    def _evaluate(self, acts: Acts) -> Tensor:
        a = acts[self.layer]
        n = a.shape[0]
        a = _flat(a) if self.pos is None else _position(a, *self.pos, name=self.name)  # [B, C, P]
        self._check_channels(a.shape[1])
        targeted, untargeted = self._tensors(a.device, a.dtype)
        out = a.new_zeros(n)
        if targeted is not None:
            lo, hi = self._k_range
            if lo < -n or hi >= n:
                raise IndexError(f"{self.name} targets batch item {hi if hi >= n else lo}, but the batch has "
                                 f"{n} image(s)")
            ks, specs, ws = targeted
            ks = ks % n
            ak = a[ks]                                        # [E, C, P]
            if self.kind == "channel":
                scores = ak[torch.arange(len(ks), device=a.device), specs % a.shape[1]].mean(-1)   # [E]
            else:
                dot = torch.einsum("ecp,ec->ep", ak, specs)
                scores = _cossim_weight(dot, ak.norm(dim=1), specs.norm(dim=1)[:, None], self.cossim_pow).mean(-1)
            out = out.index_add(0, ks, scores * ws)
        if untargeted is not None:
            _, specs, ws = untargeted
            if self.kind == "channel":
                scores = a[:, specs % a.shape[1]].mean(-1)      # [B, E]
            else:
                dot = torch.einsum("bcp,ec->bep", a, specs)
                scores = _cossim_weight(dot, a.norm(dim=1)[:, None, :], specs.norm(dim=1)[None, :, None],
                                        self.cossim_pow).mean(-1)
            out = out + (scores * ws).sum(1) / n
        return out

    def _bind(self, model: Model) -> Objective:
        if self.kind == "channel":
            for n in self._spec_range:
                model.check_channel(self.layer, n)
        else:
            _check_vector_length(model, self.layer, self.specs.shape[1], self.name)
        return self


def _pos(x, y, name: str) -> tuple[int | None, int | None]:
    for v in (x, y):
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool)):
            raise TypeError(f"{name}: x (column) and y (row) are ints or None (centre), got {v!r}")
    return (None if x is None else int(x), None if y is None else int(y))


# ----------------------------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------------------------


def neuron(layer: str, n: int, x: int | None = None, y: int | None = None, batch: int | None = None) -> Objective:
    """Channel ``n`` of ``layer`` at one position: column ``x``, row ``y`` (default: centre ``[H//2, W//2]``,
    the bottom-right of the central 2x2 for even sizes).

    **Differs from Lucid**, whose ``x`` indexed rows: here ``x`` is the width index and ``y`` the height index.
    For a linear layer ``[B, C]`` leave ``x``/``y`` unset. Value: mean over the batch (``/B`` per item).
    """
    name = _call_name("neuron", layer, n, x=x, y=y, batch=batch)
    return _Items("channel", layer, [batch], [n], [1.0], _pos(x, y, name), 0.0, name)


def channel(layer: str, n: int, batch: int | None = None) -> Objective:
    """Mean of channel ``n`` of ``layer`` over positions (and over the batch when ``batch`` is None)."""
    return _Items("channel", layer, [batch], [n], [1.0], None, 0.0, _call_name("channel", layer, n, batch=batch))


def channels(layer: str, indices: Sequence[int]) -> Objective:
    """Item ``i`` maximizes channel ``indices[i]`` (mean over positions), all in one gather.

    Equals ``sum(channel(layer, n, batch=i) for i, n in enumerate(indices))``. Items past ``len(indices)``
    contribute 0; a batch smaller than ``len(indices)`` is an error.
    """
    indices = list(indices)
    if not indices:
        raise ValueError("channels() needs at least one channel index")
    name = f"channels({layer}, [{', '.join(map(str, indices[:8]))}{', ...' if len(indices) > 8 else ''}])"
    return _Items("channel", layer, list(range(len(indices))), indices, [1.0] * len(indices), None, 0.0, name)


def direction(layer: str, vec, cossim_pow: float = 0, batch: int | None = None, S=None) -> Objective:
    """Mean over positions of ``<a, vec>``, weighted by ``max(0.1, cos)^cossim_pow`` when ``cossim_pow > 0``.

    ``vec``: ``[C]``. ``cos = dot / ((1e-4 + |a|)(1e-4 + |vec|))`` (Lucid's ``_dot_cossim``), the one cosine
    definition used by every direction objective here. ``S``: optional whitening matrix ``[C, C]``; the
    direction becomes ``vec @ S``.
    """
    name = _call_name("direction", layer, _vector(vec, "direction"), cossim_pow=cossim_pow or None, batch=batch)
    v = _whiten(_vector(vec, name), S, name)[None]
    return _Items("direction", layer, [batch], v, [1.0], None, cossim_pow, name)


direction_cossim = direction


def direction_neuron(layer: str, vec, x: int | None = None, y: int | None = None, cossim_pow: float = 0,
                     batch: int | None = None, S=None) -> Objective:
    """:func:`direction` at one position (column ``x``, row ``y``; default the centre, as :func:`neuron`)."""
    name = _call_name("direction_neuron", layer, _vector(vec, "direction_neuron"), x=x, y=y,
                      cossim_pow=cossim_pow or None, batch=batch)
    v = _whiten(_vector(vec, name), S, name)[None]
    return _Items("direction", layer, [batch], v, [1.0], _pos(x, y, name), cossim_pow, name)


def directions(layer: str, vecs, cossim_pow: float = 2, S=None, x: int | None = None, y: int | None = None,
               all_positions: bool = False) -> Objective:
    """Item ``i`` follows its own direction ``vecs[i]`` (``[B, C]``), all items in one batched computation.

    This is Lucid's activation-atlas icon objective ``Σ_i direction_neuron_cossim_S(layer, vecs[i], batch=i, S)``:
    per item ``dot * max(0.1, cos)^cossim_pow`` at the centre position (or column ``x``, row ``y``), with the
    direction whitened as ``vec @ S`` when ``S`` (``[C, C]``) is given. **Fixes a Lucid quirk:** Lucid's atlas
    "cossim" divided by ``|acts|`` only; here ``cos`` also divides by ``|vec @ S|`` (the one definition of
    :func:`direction`). ``all_positions=True`` averages over every position instead (the ActivationGrid /
    NeuronGroups form ``Σ_i direction(layer, vecs[i], batch=i)``).
    """
    v = _vector(vecs, "directions", (2,))
    name = _call_name("directions", layer, v, cossim_pow=cossim_pow or None, x=x, y=y)
    if all_positions and (x is not None or y is not None):
        raise ValueError(f"{name}: all_positions=True averages every position; leave x and y unset")
    v = _whiten(v, S, name)
    pos = None if all_positions else _pos(x, y, name)
    return _Items("direction", layer, list(range(v.shape[0])), v, [1.0] * v.shape[0], pos, cossim_pow, name)


def tensor_direction(layer: str, vec, cossim_pow: float = 0, batch: int | None = None) -> Objective:
    """A spatial pattern ``vec`` ``[C, h, w]`` (or ``[1, C, h, w]``, or ``[B, C, h, w]``: one per item).

    The activations are centre-cropped to ``h x w`` (offsets ``(H - h)//2``, ``(W - w)//2``); the value is the
    mean over positions of ``dot * max(0.1, cos)^cossim_pow`` with the pattern's vector at each position.
    """
    v = _vector(vec, "tensor_direction", (3, 4))
    v = v[None] if v.ndim == 3 else v
    name = _call_name("tensor_direction", layer, v, cossim_pow=cossim_pow or None, batch=batch)

    def raw(a: Tensor, items: slice) -> Tensor:
        if a.ndim != 4:
            raise ValueError(f"{name}: needs activations [B, C, H, W], got {tuple(a.shape)}")
        h, w = v.shape[-2:]
        H, W = a.shape[-2:]
        if h > H or w > W or v.shape[1] != a.shape[1]:
            raise ValueError(f"{name}: pattern [C={v.shape[1]}, {h}, {w}] does not fit activations "
                             f"[C={a.shape[1]}, {H}, {W}]")
        top, left = (H - h) // 2, (W - w) // 2
        crop = a[:, :, top:top + h, left:left + w]
        pat = v if v.shape[0] == 1 else v[items]
        pat = pat.to(device=a.device, dtype=a.dtype)
        dot = (crop * pat).sum(1)
        return _cossim_weight(dot, crop.norm(dim=1), pat.norm(dim=1), cossim_pow).flatten(1).mean(1)

    def bind(model: Model) -> Objective:
        _check_vector_length(model, layer, v.shape[1], name)
        return obj

    obj = _unit(name, layer, batch, raw, mean=True, bind=bind)
    return obj


def deepdream(layer: str, batch: int | None = None) -> Objective:
    """``mean(a^2)`` over the batch, channels and positions (Mordvintsev et al. 2015)."""
    return _unit(_call_name("deepdream", layer, batch=batch), layer, batch,
                 lambda a, _: a.pow(2).flatten(1).mean(1), mean=True)


def total_variation(layer: str = "input", batch: int | None = None) -> Objective:
    """Per image, the sum of absolute differences between vertical and horizontal neighbours (as
    ``tf.image.total_variation``); summed over the batch. A penalty: use with a negative weight."""
    def raw(a: Tensor, _) -> Tensor:
        dh = (a[..., 1:, :] - a[..., :-1, :]).abs().flatten(1).sum(1)
        dw = (a[..., :, 1:] - a[..., :, :-1]).abs().flatten(1).sum(1)
        return dh + dw
    return _unit(_call_name("total_variation", layer, batch=batch), layer, batch, raw, mean=False)


def L1(layer: str = "input", constant: float = 0, batch: int | None = None) -> Objective:
    """``sum(|a - constant|)`` (per image, summed over the batch). A penalty: use with a negative weight."""
    return _unit(_call_name("L1", layer, constant=constant or None, batch=batch), layer, batch,
                 lambda a, _: (a - constant).abs().flatten(1).sum(1), mean=False)


def L2(layer: str = "input", constant: float = 0, epsilon: float = 1e-6, batch: int | None = None) -> Objective:
    """``sqrt(epsilon + sum((a - constant)^2))`` over the whole batch (or item ``batch``).

    Not a sum of per-item terms: item ``i`` gets the share ``(s_i + eps/B) / (Σ s + eps)`` of the total,
    where ``s_i`` is its sum of squares (shares carry no gradient).
    """
    def raw(a: Tensor, _) -> Tensor:
        s = (a - constant).pow(2).flatten(1).sum(1)
        total = torch.sqrt(epsilon + s.sum())
        return total * _shares(s + epsilon / s.numel())
    return _unit(_call_name("L2", layer, constant=constant or None, batch=batch), layer, batch, raw, mean=False)


def _blur_kernel(w: int, device, dtype) -> Tensor:
    """Lucid's ``_tf_blur`` kernel: 0.5 on the border ring of a ``w x w`` window, 1.0 inside."""
    k = torch.full((w, w), 0.5, device=device, dtype=dtype)
    k[1:-1, 1:-1] = 1.0
    return k


def blur(x: Tensor, w: int = 3) -> Tensor:
    """Lucid's blur of ``x`` ``[B, C, H, W]``: per channel, a ``w x w`` window weighted 1.0 inside and 0.5 on
    the border, zero padding ("SAME"), normalised by the same convolution of ones (so edges are not darkened)."""
    c = x.shape[1]
    k = _blur_kernel(w, x.device, x.dtype)[None, None]
    blurred = F.conv2d(x, k.repeat(c, 1, 1, 1), padding=w // 2, groups=c)
    norm = F.conv2d(torch.ones_like(x[:1, :1]), k, padding=w // 2)
    return blurred / norm


def blur_input_each_step(batch: int | None = None) -> Objective:
    """``0.5 * sum((x - stop_grad(blur3(x)))^2)`` on ``"input"``. Optimizing ``-k *`` this acts like
    ``x <- (1 - k) x + k blur(x)`` each step (Nguyen et al. 2015): use it with a negative weight."""
    def raw(a: Tensor, _) -> Tensor:
        return 0.5 * (a - blur(a).detach()).pow(2).flatten(1).sum(1)
    return _unit(_call_name("blur_input_each_step", batch=batch), "input", batch, raw, mean=False)


def blur_alpha_each_step(batch: int | None = None) -> Objective:
    """:func:`blur_input_each_step` on the alpha channel (channel 3) of an RGBA input."""
    def raw(a: Tensor, _) -> Tensor:
        if a.shape[1] < 4:
            raise ValueError(f"blur_alpha_each_step needs an RGBA input (4 channels), got {a.shape[1]}; "
                             "use a parameterization with alpha=True")
        a = a[:, 3:4]
        return 0.5 * (a - blur(a).detach()).pow(2).flatten(1).sum(1)
    return _unit(_call_name("blur_alpha_each_step", batch=batch), "input", batch, raw, mean=False)


def channel_interpolate(layer1: str, n1: int, layer2: str, n2: int) -> Objective:
    """Item ``i`` of ``N`` maximizes ``(1 - w_i) mean(layer1[i, n1]) + w_i mean(layer2[i, n2])`` with
    ``w_i = i / (N - 1)``: the batch walks from the first channel to the second. (One image: ``w = 0``.)"""
    name = _call_name("channel_interpolate", layer1, n1, layer2, n2)

    def fn(acts: Acts) -> Tensor:
        a1, a2 = _flat(acts[layer1]), _flat(acts[layer2])
        n = a1.shape[0]
        if a2.shape[0] != n:
            raise ValueError(f"{name}: the two layers have different batch sizes ({n} vs {a2.shape[0]})")
        w = torch.linspace(0.0, 1.0, n, device=a1.device, dtype=a1.dtype) if n > 1 else a1.new_zeros(1)
        return (1 - w) * a1[:, n1].mean(-1) + w * a2[:, n2].mean(-1)

    def bind(model: Model) -> Objective:
        model.check_channel(layer1, n1)
        model.check_channel(layer2, n2)
        return obj

    obj = Objective(fn, [layer1, layer2], name, bind=bind)
    return obj


def penalize_boundary_complexity(w: int = 20, mask: Tensor | None = None, C: float = 0.5,
                                 batch: int | None = None) -> Objective:
    """``-sum(mask * ((blur5(x) - x)^2 + 0.8 (x - C)^2))`` on ``"input"``: plain, grey-ish borders.

    The default mask is 1 on a border ``w`` pixels wide and 0 inside (all ones when the image is narrower
    than ``2 w``; nothing when ``w == 0``); a given ``mask`` broadcasts against ``[B, C, H, W]``. Lucid's
    version took the input shape as its first argument; ours reads it from the input. Already negative: add it
    with a positive weight.
    """
    name = _call_name("penalize_boundary_complexity", w=w, C=C, batch=batch,
                      mask=None if mask is None else torch.as_tensor(mask))
    masks: dict = {}

    def get_mask(a: Tensor, items: slice) -> Tensor:
        if mask is not None:
            m = torch.as_tensor(mask).to(device=a.device, dtype=a.dtype)
            return m[items] if m.ndim == 4 and m.shape[0] > 1 else m
        key = (tuple(a.shape[-2:]), a.device, a.dtype)
        if key not in masks:
            h, wd = a.shape[-2:]
            m = torch.ones(h, wd, device=a.device, dtype=a.dtype)
            if w <= 0:
                m.zero_()
            elif h > 2 * w and wd > 2 * w:
                m[w:h - w, w:wd - w] = 0
            masks[key] = m
        return masks[key]

    def raw(a: Tensor, items: slice) -> Tensor:
        diffs = (blur(a, 5) - a).pow(2) + 0.8 * (a - C).pow(2)
        return -(diffs * get_mask(a, items)).flatten(1).sum(1)

    return _unit(name, "input", batch, raw, mean=False)


def alignment(layer: str, decay_ratio: float = 2) -> Objective:
    """``-Σ_{d=1..4} Σ_i mean((a_i - a_{i+d})^2) / decay_ratio^d``: neighbouring batch items look alike at
    ``layer`` (for interpolations). Each pair's term is split equally between its two items."""
    name = _call_name("alignment", layer, decay_ratio=decay_ratio)

    def fn(acts: Acts) -> Tensor:
        a = acts[layer].flatten(1)
        n = a.shape[0]
        out = a.new_zeros(n)
        for d in range(1, 5):
            if d >= n:
                break
            t = (a[:-d] - a[d:]).pow(2).mean(1) / decay_ratio ** d / 2      # [n - d]
            out = out - F.pad(t, (0, d)) - F.pad(t, (d, 0))
        return out

    return Objective(fn, [layer], name)


def diversity(layer: str) -> Objective:
    """``Σ_{i≠j} <G_i, G_j> / N`` with ``G_i = A_i^T A_i`` the Gram matrix of item ``i`` (``A_i`` is
    ``[H*W, C]``), each L2-normalised over the whole matrix (Lucid's ``l2_normalize``, eps 1e-10).

    This measures how **similar** the items' styles are, so use it with a **negative** weight, as Lucid's
    notebooks do: ``channel(l, 9) - 1e2 * diversity(l)`` with a batch of 4. Item ``i`` contributes
    ``Σ_{j≠i} <G_i, G_j> / N``.
    """
    def fn(acts: Acts) -> Tensor:
        a = _flat(acts[layer])                                    # [N, C, P]
        n = a.shape[0]
        g = (a @ a.transpose(1, 2)).flatten(1)                    # [N, C*C]
        g = g * torch.rsqrt(g.pow(2).sum(1, keepdim=True).clamp_min(1e-10))
        sims = g @ g.T                                           # [N, N]
        return (sims.sum(1) - sims.diagonal()) / n

    return Objective(fn, [layer], _call_name("diversity", layer))


def input_diff(orig_img, batch: int | None = None) -> Objective:
    """``sqrt(mean((x - orig_img)^2))`` on ``"input"`` (root-mean-square difference), ``orig_img``
    ``[C, H, W]`` or ``[N, C, H, W]`` (N = 1 or B). Usually a penalty (negative weight) for adversarial
    examples. The total is shared between items in proportion to their squared error (see :func:`L2`)."""
    orig = _vector(orig_img, "input_diff", (3, 4))
    orig = orig[None] if orig.ndim == 3 else orig
    name = _call_name("input_diff", orig, batch=batch)

    def raw(a: Tensor, items: slice) -> Tensor:
        ref = (orig if orig.shape[0] == 1 else orig[items]).to(device=a.device, dtype=a.dtype)
        s = (a - ref).pow(2).flatten(1).sum(1)
        total = torch.sqrt(s.sum() / (s.numel() * a[0].numel()))
        return total * _shares(s)

    return _unit(name, "input", batch, raw, mean=False)


def class_logit(label: int | str, layer: str = "output", batch: int | None = None) -> Objective:
    """The logit of class ``label`` (an index, or a name resolved by :meth:`Objective.bind` through the model's
    labels), summed over the batch: item ``i`` contributes its own logit. ``layer="output"`` is the model's
    final output. (Lucid's signature was ``class_logit(layer, label)``.)"""
    if isinstance(label, bool) or not isinstance(label, (numbers.Integral, str)):
        raise TypeError(f"class_logit takes a class index or name, got {label!r}")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    return _class_logit(label, label, layer, batch)


def _class_logit(label, shown, layer: str, batch: int | None) -> Objective:
    name = _call_name("class_logit", str(shown), layer=None if layer == "output" else layer, batch=batch)

    def raw(a: Tensor, _) -> Tensor:
        if not isinstance(label, numbers.Integral):
            raise RuntimeError(f"{name}: the class name {label!r} is resolved against a model; call "
                               "objective.bind(model) first (render does), or give the class index")
        return _flat(a)[:, label].sum(-1)

    def bind(model: Model) -> Objective:
        if isinstance(label, numbers.Integral):
            index = model.class_index(int(label))
        else:
            try:
                index = model.class_index(label)
            except KeyError:
                if "_" not in label:
                    raise
                index = model.class_index(label.replace("_", " "))
        if layer != "output":
            model.check_channel(layer, index)
        return _class_logit(index, shown, layer, batch)

    return _unit(name, layer, batch, raw, mean=False, bind=bind)


# ----------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------


def _batch_size(acts: Acts) -> int:
    for key, value in acts.items():
        if key != "step" and isinstance(value, Tensor) and value.ndim >= 1:
            return value.shape[0]
    return 1


def schedule(fn: Callable[[int], float], name: str | None = None) -> Objective:
    """An objective whose value is ``fn(step)`` (``step`` from ``acts["step"]``), spread evenly over the batch.

    Multiply to weight another objective over time (Lucid's schedule pattern): ``decay(300) * blur`` gives item
    ``i`` the value ``blur_i * (1 - step / 300)``. ``fn`` receives the step as a 0-d tensor on the model's device
    (tensor arithmetic such as ``1 - step / n`` or ``(step >= n).float()`` stays there: no host sync per step); a
    plain number it returns works too.
    """
    label = name or f"schedule({getattr(fn, '__name__', 'fn')})"

    def value(acts: Acts) -> Tensor:
        if "step" not in acts:
            raise KeyError(f"{label} reads acts['step'] (the optimization step, a 0-d int tensor), which is missing")
        step = acts["step"]
        device = next((v.device for k, v in acts.items() if isinstance(v, Tensor) and k != "step"), None)
        n = _batch_size(acts)
        v = fn(step)
        v = v.to(device=device, dtype=torch.float32) if isinstance(v, Tensor) else torch.tensor(float(v), device=device)
        return (v / n).expand(n).clone()

    return Objective(value, [], label)


def decay(n: float) -> Objective:
    """``1 - step / n`` (Lucid's notebook schedule; not clamped, so choose ``n`` past the last step)."""
    return schedule(lambda step: 1.0 - step / n, f"decay({_num(n)})")


def only_after(n: int) -> Objective:
    """0 before step ``n``, 1 from step ``n`` on."""
    return schedule(lambda step: (step >= n).float() if isinstance(step, Tensor) else float(step >= n),
                    f"only_after({n})")
