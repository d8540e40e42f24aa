"""Lucent's ``lucent.optvis.objectives``: objectives are **losses** of a hook ``T`` (``T(layer)`` is that layer's
activation ``[B, C, H, W]``, ``T("input")`` the image), minimized by the render loop, as in Lucent.

Every objective of Lucent 0.1.8 is here with Lucent's formula (``channel`` is ``-mean`` over batch and positions,
``diversity`` the Gram overlap divided by the batch size, ...), so sums such as
``channel("mixed4a", 476) - 1e2 * diversity("mixed4a")`` weigh their terms as in Lucent. Layers are named the
Lucent way (module paths joined with ``_``: ``features_3_conv_0``; list them with
:func:`luminate.lucent.modelzoo.util.get_model_layers`). ``@wrap_objective()`` turns any function returning a loss
of ``T`` into an objective; :func:`luminate.lucent.optvis.render.render_vis` finds the layers it reads with one
trial call.

The one deliberate change: ``neuron``'s default position is the centre ``(W // 2, H // 2)`` with ``x`` the column
and ``y`` the row (Lucent swapped the two defaults, which only matters for non-square layers).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Hook = Callable[[str], Tensor]

#: Names a hook answers that are not layers of the network: the untransformed image and the network's output.
SPECIAL = frozenset({"input", "labels"})


def _union(a: frozenset | None, b: frozenset | None) -> frozenset | None:
    return None if a is None or b is None else a | b


class Objective:
    """A loss of the hook ``T``: ``objective(T)`` returns a 0-d tensor to minimize.

    ``layers``: the Lucent layer names it reads, when known (catalogue objectives and their sums); ``None`` for a
    plain function, whose layers the render loop finds with a trial call. Algebra as in Lucent: ``a + b``,
    ``a - b``, ``-a``, ``k * a``, ``a / k``, ``a + k``, ``sum([...])`` and :meth:`Objective.sum`.
    """

    def __init__(self, objective_func: Callable[[Hook], Tensor], name: str = "", description: str = "",
                 layers: Iterable[str] | None = None):
        self.objective_func = objective_func
        self.name = name
        self.description = description
        self.layers = None if layers is None else frozenset(layers)

    def __call__(self, T: Hook) -> Tensor:
        return self.objective_func(T)

    def __repr__(self) -> str:
        return f"Objective({self.description or self.name})"

    def __add__(self, other):
        if isinstance(other, numbers.Number):
            return Objective(lambda T: other + self(T), self.name, self.description, self.layers)
        if not callable(other):
            return NotImplemented
        name = ", ".join([self.name, getattr(other, "name", "")])
        description = "Sum(" + " +\n".join([self.description, getattr(other, "description", "")]) + ")"
        return Objective(lambda T: self(T) + other(T), name, description,
                         _union(self.layers, getattr(other, "layers", None)))

    __radd__ = __add__

    @staticmethod
    def sum(objs: Iterable["Objective"]) -> "Objective":
        """The sum of several objectives, one term each."""
        objs = list(objs)
        layers: frozenset | None = frozenset()
        for obj in objs:
            layers = _union(layers, getattr(obj, "layers", None))
        return Objective(lambda T: sum(obj(T) for obj in objs), ", ".join(o.name for o in objs),
                         "Sum(" + " +\n".join(o.description for o in objs) + ")", layers)

    def __neg__(self) -> "Objective":
        return -1 * self

    def __sub__(self, other) -> "Objective":
        return self + (-1 * other)

    def __mul__(self, other) -> "Objective":
        if not isinstance(other, numbers.Number):
            raise TypeError(f"an objective can be multiplied by an int or float only (as in Lucent), got "
                            f"{type(other).__name__}")
        return Objective(lambda T: other * self(T), self.name, self.description, self.layers)

    __rmul__ = __mul__

    def __truediv__(self, other) -> "Objective":
        if not isinstance(other, numbers.Number):
            raise TypeError(f"an objective can be divided by an int or float only, got {type(other).__name__}")
        return self * (1 / other)


def _arg_text(arg) -> str:
    text = str(arg)
    return "..." if len(text) > 15 or "\n" in text else text


def _wrap(func: Callable, layers_of: Callable[[inspect.BoundArguments], Iterable[str]] | None) -> Callable:
    signature = inspect.signature(func)

    @functools.wraps(func)
    def make(*args, **kwargs) -> Objective:
        layers = None
        if layers_of is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            layers = layers_of(bound)
        description = func.__name__.title() + " [" + ", ".join(_arg_text(a) for a in args) + "]"
        return Objective(func(*args, **kwargs), func.__name__, description, layers)

    return make


def wrap_objective() -> Callable[[Callable], Callable]:
    """Lucent's decorator: ``@wrap_objective()`` over ``f(*args) -> (T -> loss)`` makes ``f(*args)`` an
    :class:`Objective` named after ``f``."""
    return lambda func: _wrap(func, None)


def _catalogue(*layer_args: str, reads_input: bool = False):
    """Like :func:`wrap_objective`, and the objective knows its layers (the arguments named ``layer_args``)."""
    def layers_of(bound: inspect.BoundArguments) -> list[str]:
        return [bound.arguments[a] for a in layer_args] + (["input"] if reads_input else [])
    return lambda func: _wrap(func, layers_of)


def handle_batch(batch: int | None = None) -> Callable:
    """Lucent's ``handle_batch``: ``handle_batch(b)(f)`` is ``f`` reading only item ``b`` of every layer (all items
    when ``b`` is None)."""
    def on_item(T: Hook) -> Hook:
        return lambda name: T(name)[batch:batch + 1] if isinstance(batch, int) else T(name)
    return lambda f: (lambda T: f(on_item(T)))


def _at(acts: Tensor, x: int | None, y: int | None) -> Tensor:
    """``acts[:, :, y:y+1, x:x+1]``: column ``x``, row ``y``, the centre by default."""
    x = acts.shape[3] // 2 if x is None else x
    y = acts.shape[2] // 2 if y is None else y
    return acts[:, :, y:y + 1, x:x + 1]


def _cosine(direction: Tensor, acts: Tensor) -> Tensor:
    return F.cosine_similarity(direction.reshape(1, -1, 1, 1).to(acts), acts, dim=1)


@_catalogue("layer")
def neuron(layer: str, n_channel: int, x: int | None = None, y: int | None = None, batch: int | None = None):
    """Channel ``n_channel`` at column ``x``, row ``y`` (default: the centre): ``-mean`` over the batch."""
    return handle_batch(batch)(lambda T: -_at(T(layer), x, y)[:, n_channel].mean())


@_catalogue("layer")
def channel(layer: str, n_channel: int, batch: int | None = None):
    """Channel ``n_channel`` of ``layer``: ``-mean`` over batch and positions."""
    return handle_batch(batch)(lambda T: -T(layer)[:, n_channel].mean())


@_catalogue("layer")
def neuron_weight(layer: str, weight: Tensor | None, x: int | None = None, y: int | None = None,
                  batch: int | None = None):
    """Channels of ``layer`` at one position weighted by ``weight`` ``[C]`` (all channels when None)."""
    def loss(T: Hook) -> Tensor:
        acts = _at(T(layer), x, y)
        return -acts.mean() if weight is None else -(acts[:, :, 0, 0] * weight.to(acts)).mean()
    return handle_batch(batch)(loss)


@_catalogue("layer")
def channel_weight(layer: str, weight: Tensor, batch: int | None = None):
    """Channels of ``layer`` weighted by ``weight`` ``[C]``, averaged over everything."""
    return handle_batch(batch)(lambda T: -(T(layer) * weight.to(T(layer)).view(1, -1, 1, 1)).mean())


@_catalogue("layer")
def localgroup_weight(layer: str, weight: Tensor | None = None, x: int | None = None, y: int | None = None,
                      wx: int = 1, wy: int = 1, batch: int | None = None):
    """Channels (weighted by ``weight`` ``[C]``, or all) in the window of ``wx`` columns from ``x`` and ``wy`` rows
    from ``y``."""
    def loss(T: Hook) -> Tensor:
        window = T(layer)[:, :, y:y + wy, x:x + wx]
        return -window.mean() if weight is None else -(window * weight.to(window).view(1, -1, 1, 1)).mean()
    return handle_batch(batch)(loss)


@_catalogue("layer")
def direction(layer: str, direction: Tensor, batch: int | None = None):
    """Cosine similarity of ``layer``'s activation vectors with ``direction`` ``[C]``, averaged."""
    return handle_batch(batch)(lambda T: -_cosine(direction, T(layer)).mean())


@_catalogue("layer")
def direction_neuron(layer: str, direction: Tensor, x: int | None = None, y: int | None = None,
                     batch: int | None = None):
    """:func:`direction` at one position (default: the centre)."""
    return handle_batch(batch)(lambda T: -_cosine(direction, _at(T(layer), x, y)).mean())


def _blur3(images: Tensor) -> Tensor:
    """Each channel blurred with a 3x3 box whose border weighs 0.5, normalized at the edges."""
    kernel = torch.full((3, 3), 0.5, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 1.0
    c = images.shape[1]
    weight = kernel.expand(c, 1, 3, 3)
    return F.conv2d(images, weight, padding=1, groups=c) / F.conv2d(torch.ones_like(images), weight, padding=1,
                                                                     groups=c)


@_catalogue(reads_input=True)
def blur_input_each_step():
    """``-0.5 * sum((x - blur(x))**2)``: minimizing ``-k * blur_input_each_step()`` blurs the image a little each
    step (Nguyen et al., 2015)."""
    def loss(T: Hook) -> Tensor:
        x = T("input")
        with torch.no_grad():
            blurred = _blur3(x)
        return -0.5 * ((x - blurred) ** 2).sum()
    return loss


@_catalogue("layer1", "layer2")
def channel_interpolate(layer1: str, n_channel1: int, layer2: str, n_channel2: int):
    """Item ``i`` of ``B`` weighs ``layer1:n_channel1`` by ``1 - i / (B - 1)`` and ``layer2:n_channel2`` by
    ``i / (B - 1)``."""
    def loss(T: Hook) -> Tensor:
        a, b = T(layer1)[:, n_channel1], T(layer2)[:, n_channel2]
        n = a.shape[0]
        w = torch.as_tensor(np.arange(n) / (n - 1), dtype=a.dtype, device=a.device)
        return -((1 - w) * a.reshape(n, -1).mean(1)).sum() - (w * b.reshape(n, -1).mean(1)).sum()
    return loss


@_catalogue("layer")
def alignment(layer: str, decay_ratio: float = 2):
    """The squared distance of items ``d = 1..4`` apart in the batch at ``layer``, divided by ``decay_ratio ** d``
    (a penalty: neighbouring images alike)."""
    def loss(T: Hook) -> Tensor:
        acts = T(layer)
        n = acts.shape[0]
        total = acts.new_zeros(())
        for d in (1, 2, 3, 4):
            if n > d:
                per_pair = ((acts[:-d] - acts[d:]) ** 2).reshape(n - d, -1).mean(1)
                total = total + per_pair.sum() / decay_ratio ** float(d)
        return total
    return loss


@_catalogue("layer")
def diversity(layer: str):
    """``-sum_{i != j} <G_i, G_j> / B`` with ``G_i`` item ``i``'s channel Gram matrix at ``layer`` scaled to unit
    Frobenius norm; subtract it (``obj - k * diversity(layer)``) to push a batch apart."""
    def loss(T: Hook) -> Tensor:
        acts = T(layer)
        b, c = acts.shape[:2]
        flat = acts.reshape(b, c, -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(b, -1), p=2, dim=1)
        overlap = grams @ grams.t()
        return -(overlap.sum() - overlap.diagonal().sum()) / b
    return loss


def as_objective(obj) -> Callable[[Hook], Tensor]:
    """An :class:`Objective` or any callable of ``T`` as it is; ``"layer:n"`` becomes ``channel(layer, n)``."""
    if callable(obj):
        return obj
    if isinstance(obj, str):
        layer, sep, n = obj.rpartition(":")
        if not sep or not n.strip().lstrip("-").isdigit():
            raise ValueError(f"objective string {obj!r}: write 'layer:channel', e.g. 'mixed4a:476'")
        return channel(layer.strip(), int(n))
    raise TypeError(f"an objective is an Objective, a function of T, or a 'layer:channel' string, not "
                    f"{type(obj).__name__}")


__all__ = ["Objective", "alignment", "as_objective", "blur_input_each_step", "channel", "channel_interpolate",
           "channel_weight", "direction", "direction_neuron", "diversity", "handle_batch", "localgroup_weight",
           "neuron", "neuron_weight", "wrap_objective"]
