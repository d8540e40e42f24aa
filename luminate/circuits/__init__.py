"""Attribution graphs: from a photo, through units (or features) of a few layers, to a decision.

>>> graph = luminate.circuits.trace("efficientnet_lite0", "flower.jpg", "daisy")
>>> graph.kept("head"), graph.faithfulness["head"]          # the units that carry it, checked by ablation
>>> graph.ablate(["head/17"])["drop"]; graph.save_json("daisy.json")

Definitions (``y`` the target score: a logit, or a difference of two; ``a_l`` layer ``l``'s activation, ``g_l =
∂y/∂a_l``; a node ``k`` of layer ``l`` reads codes ``z_k`` along a direction ``D_k``, for units ``z_k = a_l[k]``):

* **score** of node ``k``: ``s_k = Σ_p z_k(p) (D_k · g_l(p))`` (gradient x activation summed over positions;
  with ``method="integrated"``, ``g_l`` is averaged along ``α a_l``, ``α`` in (0, 1], so a layer's unit scores
  add up to ``y(a_l) - y(0)``). A layer's unit scores add up to ``Σ a_l · g_l``, the first-order estimate of
  how much of ``y`` comes through that layer.
* **edge** ``i -> j`` (``i`` in the layer below ``j``'s): ``w_ij = Σ_q z_i(q) (D_i · ∂Q_j/∂a_low(q))`` with
  ``Q_j = Σ_p z_j(p) (D_j · g_up(p))`` and ``g_up`` held fixed: ``i``'s attribution to the target *through*
  ``j``. Edges from the input are ``Σ x · ∂Q_j/∂x``; edges into the target are the scores of the last layer.
  On a network that is linear (or ReLU, piecewise) without biases between the two layers, the edges into ``j``
  from every node below add up exactly to ``s_j`` (Euler's theorem); biases and paths that bypass the lower
  layer make up the difference (``inflow`` vs ``score`` in the JSON).

See ``docs/circuits.md`` for pruning, faithfulness and what a graph does not claim.
"""

from luminate.circuits.basis import Directions, Units, dictionary_basis, groups_basis
from luminate.circuits.graph import Edge, Graph, LayerNodes, node_id
from luminate.circuits.settings import CircuitSettings
from luminate.circuits.target import Target, parse_target
from luminate.circuits.trace import integrated_gradient, keep_by_share, prune_edges, trace

__all__ = ["CircuitSettings", "Directions", "Edge", "Graph", "LayerNodes", "Target", "Units", "dictionary_basis",
           "groups_basis", "integrated_gradient", "keep_by_share", "node_id", "parse_target", "prune_edges", "trace"]
