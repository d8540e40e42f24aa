"""What an attribution graph depends on besides the model, the photo and the target: one frozen value."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

METHODS = ("gradient", "integrated")


@dataclass(frozen=True)
class CircuitSettings:
    """How :func:`luminate.circuits.trace` scores, prunes and checks a graph.

    Attributes:
        method: ``"gradient"`` (gradient x activation, the default) or ``"integrated"`` (integrated gradients of
            each layer from a zero activation, ``steps`` points).
        steps: points of the integrated-gradients path.
        node_share: keep, per layer, the fewest nodes whose ``|score|`` covers this share of the layer's total.
        max_nodes: but at most this many nodes per layer.
        edge_share: keep the fewest edges (between kept nodes) whose ``|weight|`` covers this share of the total.
        draws: random sets drawn per layer for the faithfulness baseline (its median is reported).
        amplify: the factor of the page's precomputed "amplify" intervention.
        top: classes listed with each intervention's probabilities.
        seed: seeds the random ablation sets.
        batch: forward passes run together for interventions.
    """

    method: str = "gradient"
    steps: int = 16
    node_share: float = 0.8
    max_nodes: int = 16
    edge_share: float = 0.98
    draws: int = 5
    amplify: float = 2.0
    top: int = 5
    seed: int = 0
    batch: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("node_share", "edge_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} is a share of the total influence in (0, 1], got {value}")
        for name in ("steps", "max_nodes", "draws", "top", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def replace(self, **changes) -> "CircuitSettings":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)
