"""The :class:`Objective` and its algebra (the engine; the catalogue of objectives is in ``catalogue``).

An :class:`Objective` reads activations and returns a **per-batch-item contribution vector** ``[B]`` whose sum is
the scalar the render loop maximizes. ``acts`` maps layer names to activations, NCHW: ``[B, C, H, W]`` for
convolutional layers and ``[B, C]`` for linear ones, plus ``"input"`` (the untransformed parameterization output
``[B, C, H, W]`` in [0, 1]), ``"output"`` (the model output) and ``acts["step"]`` (a 0-d int64 tensor, the
optimization step).

Algebra: ``a + b``, ``a - b``, ``-a``, ``k * a``, ``a / k``, ``a + k``, ``sum([...])`` and :meth:`Objective.sum`
give linear combinations; a length-1 vector (a batch-free total) added to a ``[B]`` vector is spread evenly,
``total / B`` per item, and so are numbers. ``a * b`` and ``a / b`` of two objectives multiply (divide) ``a``'s
vector by ``b``'s total, as Lucid multiplies scalars (used for schedules: ``decay(200) * blur``).
"""

from __future__ import annotations

import numbers
from typing import Callable, Iterable, Mapping

from torch import Tensor

from luminate.models.base import Model, as_model

Acts = Mapping[str, Tensor]

#: Layer names that are not modules of the network.
SPECIAL_LAYERS = frozenset({"input", "output"})


class Objective:
    """A function ``acts -> [B]`` with the layers it reads and a readable name.

    Args:
        fn: ``acts -> Tensor [B]`` (a 0-d tensor is accepted as a batch-free total and becomes ``[1]``).
        layers: layer names ``fn`` reads (``"input"`` and ``"output"`` included when used).
        name: short description, e.g. ``"channel(blocks.9, 7)"``.
        bind: optional ``model -> Objective`` that validates/resolves this objective against a model.
    """

    _prec = 3  # precedence for names: 3 atom, 2 product, 1 sum

    def __init__(self, fn: Callable[[Acts], Tensor], layers: Iterable[str] = (), name: str | None = None, *,
                 bind: Callable[[Model], "Objective"] | None = None):
        if not callable(fn):
            raise TypeError(f"an Objective wraps a function acts -> [B] tensor, got {type(fn).__name__}")
        layers = [layers] if isinstance(layers, str) else list(layers)
        for layer in layers:
            if not isinstance(layer, str):
                raise TypeError(f"layer names are strings like 'blocks.9', got {layer!r}")
        self._fn = fn
        self.layers: frozenset[str] = frozenset(layers)
        self.name: str = name or getattr(fn, "__name__", "objective")
        self._binder = bind

    # -- evaluation ---------------------------------------------------------------------------------------------

    def __call__(self, acts: Acts) -> Tensor:
        """Per-item contributions ``[B]`` (``[1]`` for a batch-free objective); their sum is the objective."""
        missing = [name for name in self.layers if name not in acts]
        if missing:
            raise KeyError(f"objective {self.name} reads {sorted(missing)}, but the activations only have "
                           f"{sorted(acts)}; collect every layer in objective.layers")
        out = self._evaluate(acts)
        if not isinstance(out, Tensor):
            raise TypeError(f"objective {self.name} returned {type(out).__name__}, not a tensor")
        if out.ndim == 0:
            return out.reshape(1)
        if out.ndim != 1:
            raise ValueError(f"objective {self.name} returned shape {tuple(out.shape)}; objectives return one "
                             "value per batch item, shape [B]")
        return out

    def _evaluate(self, acts: Acts) -> Tensor:
        return self._fn(acts)

    def total(self, acts: Acts) -> Tensor:
        """The scalar objective (Lucid's value): ``self(acts).sum()``."""
        return self(acts).sum()

    # -- binding --------------------------------------------------------------------------------------------------

    def bind(self, model: Model) -> "Objective":
        """Validate (and resolve) against ``model`` before any optimization.

        Unknown layers raise with the closest names, channel indices out of range give the valid range,
        class names are resolved to indices (unknown names suggest close ones). Returns the objective to use.
        """
        model = as_model(model)
        for layer in sorted(self.layers - SPECIAL_LAYERS):
            model.layer(layer)
        return self._bind(model)

    def _bind(self, model: Model) -> "Objective":
        return self._binder(model) if self._binder is not None else self

    # -- algebra --------------------------------------------------------------------------------------------------

    def _terms(self) -> tuple[list[tuple[float, "Objective"]], float]:
        return [(1.0, self)], 0.0

    def __add__(self, other):
        if _is_number(other):
            if other == 0:
                return self
            terms, const = self._terms()
            return _Linear(terms, const + float(other))
        if isinstance(other, Objective):
            t1, c1 = self._terms()
            t2, c2 = other._terms()
            return _Linear(t1 + t2, c1 + c2)
        return NotImplemented

    def __radd__(self, other):
        if _is_number(other):
            return self.__add__(other)
        return NotImplemented

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other):
        if _is_number(other):
            return self + (-float(other))
        if isinstance(other, Objective):
            return self + (-other)
        return NotImplemented

    def __rsub__(self, other):
        if _is_number(other):
            return (-self) + float(other)
        return NotImplemented

    def __mul__(self, other):
        if _is_number(other):
            k = float(other)
            if k == 1.0:
                return self
            terms, const = self._terms()
            return _Linear([(k * c, obj) for c, obj in terms], k * const)
        if isinstance(other, Objective):
            return _Product(self, other, "*")
        return NotImplemented

    def __rmul__(self, other):
        if _is_number(other):
            return self.__mul__(other)
        return NotImplemented

    def __truediv__(self, other):
        if _is_number(other):
            if other == 0:
                raise ZeroDivisionError(f"dividing objective {self.name} by zero")
            return self * (1.0 / float(other))
        if isinstance(other, Objective):
            return _Product(self, other, "/")
        return NotImplemented

    @staticmethod
    def sum(objectives: Iterable["Objective | float"]) -> "Objective":
        """One flat sum of many objectives (numbers allowed): ``Objective.sum([a, b, c])``."""
        terms: list[tuple[float, Objective]] = []
        const = 0.0
        for obj in objectives:
            if _is_number(obj):
                const += float(obj)
            elif isinstance(obj, Objective):
                t, c = obj._terms()
                terms += t
                const += c
            else:
                raise TypeError(f"Objective.sum takes objectives and numbers, got {type(obj).__name__}")
        if not terms:
            raise ValueError("Objective.sum needs at least one objective")
        return _Linear(terms, const)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _name_at(self, prec: int) -> str:
        return f"({self.name})" if self._prec < prec else self.name


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _num(k: float) -> str:
    return f"{k:g}"


def _accumulate(parts: list[Tensor], const: float = 0.0) -> Tensor:
    """Sum per-item vectors; a length-1 vector (batch-free total) is spread evenly over the batch."""
    n = max(p.shape[0] for p in parts)
    total = None
    for p in parts:
        if p.shape[0] != n:
            if p.shape[0] != 1:
                raise ValueError(f"objectives disagree on the batch size ({p.shape[0]} vs {n}); "
                                 "their activations must come from the same batch")
            p = p.expand(n) / n
        total = p if total is None else total + p
    if const:
        total = total + const / n
    return total


class _Linear(Objective):
    """``Σ c_j · objective_j + const``; fusable terms are merged into one objective (see :func:`_fuse`)."""

    def __init__(self, terms: list[tuple[float, Objective]], const: float = 0.0):
        self.terms = [(float(c), obj) for c, obj in terms if c != 0.0] or [(0.0, terms[0][1])]
        self.const = float(const)
        layers = frozenset().union(*(obj.layers for _, obj in self.terms))
        super().__init__(self._evaluate, layers, _linear_name(self.terms, self.const))
        self._prec = 1 if len(self.terms) > 1 or self.const else 2
        #: what is evaluated: ``terms`` with fusable terms merged, fixed at construction
        self._plan: list[tuple[float, Objective]] = _fuse(self.terms)

    def _terms(self):
        return list(self.terms), self.const

    def _evaluate(self, acts: Acts) -> Tensor:
        parts = [obj(acts) if c == 1.0 else c * obj(acts) for c, obj in self._plan]
        return _accumulate(parts, self.const)

    def _bind(self, model: Model) -> Objective:
        return _Linear([(c, obj._bind(model)) for c, obj in self.terms], self.const)


def _linear_name(terms: list[tuple[float, Objective]], const: float) -> str:
    out = ""
    for i, (c, obj) in enumerate(terms):
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        body = obj._name_at(2) if mag == 1.0 else f"{_num(mag)} * {obj._name_at(2)}"
        if i == 0:
            out = f"-{body}" if sign == "-" else body
        else:
            out += f" {sign} {body}"
    if const:
        out += f" {'-' if const < 0 else '+'} {_num(abs(const))}"
    return out


def _fuse(terms: list[tuple[float, Objective]]) -> list[tuple[float, Objective]]:
    """Merge the terms of a sum that can be computed together into one objective per group.

    A term can be merged when it has a ``fuse_key`` (not None): terms with equal keys are replaced by
    ``type(term).merge([(coefficient, term), ...])`` (weight 1), placed where the group's first term stood. The
    catalogue's channel / neuron / direction objectives do this, so ``sum(channel(l, n_i, batch=i) for i ...)``
    is evaluated as :func:`~luminate.objectives.channels` would be: one gather, not one per term.

    Kept because it pays: measured on one CPU thread (torch 2.13), the objective and its backward for 32
    single-item ``channel`` terms on ``[32, 112, 14, 14]`` activations took 44 ms per step term by term against
    5 ms fused, next to 370 ms for EfficientNet-Lite0's forward and backward at 64 px; on a GPU the per-term loop
    would dominate a step. Luminate's own code calls ``channels()`` / ``directions()``, which build the fused
    form directly; this serves the Lucid-style sums users write. The plan is made once, when the sum is built.
    """
    groups: dict = {}
    order: list = []   # each entry: ("term", (coefficient, objective)) or ("group", fuse key)
    for c, obj in terms:
        key = getattr(obj, "fuse_key", None)
        if key is None:
            order.append(("term", (c, obj)))
        else:
            if key not in groups:
                groups[key] = []
                order.append(("group", key))
            groups[key].append((c, obj))
    plan = []
    for kind, entry in order:
        if kind == "term":
            plan.append(entry)
        else:
            members = groups[entry]
            plan.append(members[0] if len(members) == 1 else (1.0, type(members[0][1]).merge(members)))
    return plan


class _Product(Objective):
    """``a * b`` (or ``a / b``) of two objectives: ``a``'s vector times (over) ``b``'s total.

    The sum is Lucid's product of scalars. For ``a * b`` where ``a`` reads no layers (a schedule or a constant)
    and ``b`` does, the roles swap so the per-item split follows ``b``: ``decay(n) * blur`` is ``blur_i * decay``.
    """

    _prec = 2

    def __init__(self, a: Objective, b: Objective, op: str):
        self.a, self.b, self.op = a, b, op
        right = b._name_at(3 if op == "/" else 2)
        super().__init__(self._evaluate, a.layers | b.layers, f"{a._name_at(2)} {op} {right}")

    def _evaluate(self, acts: Acts) -> Tensor:
        a, b = self.a, self.b
        if self.op == "*" and not a.layers and b.layers:
            a, b = b, a   # schedule * objective: keep the per-item split of the objective that reads the batch
        va = a(acts)
        tb = b(acts).sum()
        return va * tb if self.op == "*" else va / tb

    def _bind(self, model: Model) -> Objective:
        return _Product(self.a._bind(model), self.b._bind(model), self.op)
