"""What a node of a layer is: a unit (a one-hot direction) or a direction of a dictionary or of neuron groups.

A basis of a layer with ``C`` channels reads an activation ``a`` ``[N, C, h, w]`` as codes ``z = codes(a)``
``[N, K, h, w]`` along ``K`` directions ``D`` ``[K, C]`` (``a ≈ Σ_k z_k D_k``, exactly for units) and, to carry a
gradient back through a node, a linear read-out ``R`` ``[K, C]`` with ``z_k ≈ R_k · a`` where the node is active:

* :class:`Units`: ``z = a``, ``D = R = I``;
* :class:`Directions`: a features dictionary (:class:`luminate.features.Dictionary`: codes by its encoder,
  directions its decoder's, the read-out its encoder rows for a sparse autoencoder, else the pseudo-inverse) or
  neuron groups of this photo (NMF factors, :func:`luminate.analysis.factorization`), codes the least-squares
  coordinates along the factors.

Layers without positions (``[N, C]``) are read as ``[N, C, 1, 1]``.
"""

from __future__ import annotations

import torch


def as_grid(a: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` -> ``[N, C, 1, 1]``; ``[N, C, h, w]`` as it is."""
    return a[:, :, None, None] if a.ndim == 2 else a


class Units:
    """Each channel of the layer is a node (``unit`` = channel index)."""

    kind = "unit"

    def __init__(self, channels: int):
        self.channels = channels
        self.size = channels

    def codes(self, a: torch.Tensor) -> torch.Tensor:
        return as_grid(a)

    def along(self, grad: torch.Tensor) -> torch.Tensor:
        """``D · g`` per node and position: ``[N, C, h, w]`` -> ``[N, K, h, w]``."""
        return as_grid(grad)

    def pull_back(self, node_grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A cotangent on the codes ``[..., K, h, w]`` as one on the activation ``[..., C, h, w]`` (through ``R``
        with the active pattern of ``z`` held fixed)."""
        return node_grad

    def scale(self, a: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """``a`` with node ``k`` multiplied by ``factors[:, k]`` (``[N, K]``, 1 = unchanged, 0 = removed)."""
        grid = as_grid(a) * factors[:, :, None, None].to(a.dtype)
        return grid if a.ndim == 4 else grid[:, :, 0, 0]

    def describe(self) -> str:
        return "units"


class Directions:
    """``K`` directions ``[K, C]`` at a layer: a dictionary's features or this photo's neuron groups."""

    def __init__(self, directions: torch.Tensor, readout: torch.Tensor | None = None, encode=None,
                 kind: str = "feature", name: str = "directions"):
        self.directions = directions.detach().float()
        self.readout = (torch.linalg.pinv(self.directions.t()) if readout is None else readout.detach().float())
        self._encode = encode
        self.kind = kind
        self.name = name
        self.size = self.directions.shape[0]
        self.channels = self.directions.shape[1]

    def codes(self, a: torch.Tensor) -> torch.Tensor:
        a = as_grid(a)
        if self._encode is not None:
            return self._encode(a.detach()).to(a.dtype)
        return torch.einsum("kc,nchw->nkhw", self.readout.to(a), a)

    def along(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,nchw->nkhw", self.directions.to(grad), as_grid(grad))

    def pull_back(self, node_grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        active = (z != 0).to(node_grad) if self._encode is not None else 1.0
        return torch.einsum("...khw,kc->...chw", node_grad * active, self.readout.to(node_grad))

    def scale(self, a: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        grid = as_grid(a)
        z = self.codes(grid)
        delta = torch.einsum("nk,nkhw,kc->nchw", (factors - 1).to(grid), z, self.directions.to(grid))
        out = grid + delta
        return out if a.ndim == 4 else out[:, :, 0, 0]

    def describe(self) -> str:
        return self.name


def dictionary_basis(dictionary) -> Directions:
    """A :class:`luminate.features.Dictionary` as a basis of its layer."""
    readout = dictionary.tensors.get("W_enc") if dictionary.method in ("topk", "batchtopk") else None
    return Directions(dictionary.directions, readout, encode=dictionary.encode, kind="feature",
                      name=f"features ({dictionary.n_features}, {dictionary.method})")


def groups_basis(acts: torch.Tensor, n_groups: int, seed: int = 0) -> Directions:
    """Neuron groups of one photo's activations ``[1, C, h, w]`` (non-negative): NMF factors as directions."""
    from luminate.analysis.factorization import ChannelReducer

    grid = as_grid(acts)[0].detach().float().cpu()
    if float(grid.min()) < 0:
        raise ValueError("neuron groups factorize with NMF, which needs non-negative (post-activation) values; this "
                         "layer is signed: choose a layer after a ReLU (luminate.models.defaults.nonnegative_layers)")
    reducer = ChannelReducer(n_groups, "NMF", random_state=seed)
    reducer.fit_transform(grid)
    return Directions(reducer.components.float(), kind="group", name=f"neuron groups ({n_groups}, NMF)")
