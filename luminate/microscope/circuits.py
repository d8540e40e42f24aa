"""What feeds each unit: the strongest units of the layer below (and, read the other way, of the layer above).

For two consecutive layers of a site (in the model's forward order), ``lower`` with ``C'`` units and ``upper`` with
``C``, the connection matrix ``M`` ``[C, C']`` says how much unit ``c'`` of ``lower`` drives unit ``c`` of ``upper``:

* **by weight** when the connection is linear: ``upper`` is a 1x1 convolution or a linear layer (optionally
  followed by BatchNorm and an element-wise activation, as EfficientNet's ``head``) whose input *is* ``lower``'s
  output. ``M`` is the weight matrix, with BatchNorm's per-channel scale folded in (the activation after it is
  monotone, so it keeps the ranking);
* **by gradient x activation** otherwise (a whole residual block between them):
  ``M[c, c'] = mean_images Σ_{y,x} ∂ mean_pos(upper[c]) / ∂ lower[c', y, x] · lower[c', y, x]``, the linear
  estimate of how much of unit ``c``'s mean activation comes through unit ``c'``, averaged over an evenly
  spaced sample of the image set (``images``). One forward pass to ``upper`` and one backward pass per unit of
  ``upper``, so it costs about ``C`` block backward passes per layer (on 2 CPU cores, every layer of
  EfficientNet-Lite0 over 8 images takes about half a minute).

``inputs(site, layer, unit)`` reads row ``unit`` of ``layer``'s matrix and ``outputs(site, layer, unit)`` column
``unit`` of the next layer's; both list ``[{"layer", "unit", "weight"}]`` by ``|weight|``, strongest first.
Matrices are stored in ``SITE/data/circuits-<layer>.npz`` (written atomically, keyed by weights, layers and images,
so a rerun recomputes nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from luminate.activations import LayerTap, output_as_leaf
from luminate.data.store import layer_key
from luminate.cache import atomic_write
from luminate.models.base import Model, as_model

#: parameter-free modules that may follow the linear map of a "by weight" connection
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout)


def circuits_path(data_dir: str | os.PathLike, layer: str) -> Path:
    return Path(data_dir) / f"circuits-{layer_key(layer)}.npz"


def linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The ``[C_out, C_in]`` matrix of a linear connection (1x1 conv / Linear, BatchNorm scale folded in), or
    ``None`` when ``module`` is anything else."""
    def plain(m):
        if isinstance(m, nn.Linear):
            return m.weight.detach()
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and m.groups == 1:
            return m.weight.detach()[:, :, 0, 0]
        return None

    weight = plain(module)
    if weight is not None:
        return weight.float().cpu()
    children = list(module.children())
    if not children or plain(children[0]) is None:
        return None
    weight = plain(children[0]).float().cpu()
    for child in children[1:]:
        if isinstance(child, (nn.BatchNorm2d, nn.BatchNorm1d)) and child.running_var is not None:
            scale = child.running_var.detach().float().cpu().add(child.eps).rsqrt()
            if child.weight is not None:
                scale = scale * child.weight.detach().float().cpu()
            weight = weight * scale[:, None]
        elif not isinstance(child, _ELEMENTWISE) or any(True for _ in child.parameters()):
            return None
    return weight


def _feeds_directly(model: Model, lower: str, upper: str, probe: torch.Tensor) -> bool:
    """Whether ``upper``'s module receives exactly ``lower``'s output tensor (one probe forward pass)."""
    seen: dict[str, torch.Tensor] = {}
    lower_module, upper_module = model.layer(lower), model.layer(upper)

    def keep_out(mod, inputs, output):
        seen.setdefault("lower", output)

    def keep_in(mod, inputs):
        seen.setdefault("upper", inputs[0] if inputs else None)

    handles = [lower_module.register_forward_hook(keep_out), upper_module.register_forward_pre_hook(keep_in)]
    try:
        with torch.no_grad(), LayerTap(model, [upper], detach=True) as tap:
            tap(probe)
    finally:
        for h in handles:
            h.remove()
    return seen.get("lower") is not None and seen.get("upper") is seen.get("lower")


def connection_matrix(model, lower: str, upper: str, images: torch.Tensor) -> tuple[np.ndarray, str]:
    """``(M [C_upper, C_lower] float32, method)`` with method ``"weight"`` or ``"gradient x activation"``; see
    the module docstring. ``images`` ``[N, 3, H, W]`` in [0, 1] (only the gradient method uses more than one)."""
    model = as_model(model)
    images = images.to(model.device)
    weight = linear_weight(model.layer(upper))
    if weight is not None and _feeds_directly(model, lower, upper, images[:1]):
        return weight.numpy().astype(np.float32), "weight"
    with torch.enable_grad(), output_as_leaf(model, lower) as held, LayerTap(model, [upper]) as tap:
        act = tap(images)[upper]
    if "leaf" not in held or not act.requires_grad:
        raise ValueError(f"layer {upper!r} does not depend on {lower!r} in {model.name}: no connection to measure")
    a = held["leaf"]
    objective = act.flatten(2).mean(2) if act.ndim > 2 else act                          # [N, C]
    objective = objective.mean(0)                                                         # [C]
    channels = objective.shape[0]
    rows = []
    for unit in range(channels):   # one backward pass per unit (batched backward passes were not faster on CPU)
        (grad,) = torch.autograd.grad(objective[unit], a, retain_graph=unit + 1 < channels)
        contrib = grad * a.detach()                                                       # [N, C', ...]
        rows.append((contrib.flatten(2).sum(2) if contrib.ndim > 2 else contrib).mean(0).float().cpu())
    return torch.stack(rows).numpy().astype(np.float32), "gradient x activation"


def _key(model: Model, lower: str, upper: str, fingerprint: str) -> str:
    payload = [1, model.weights_fingerprint(), lower, upper, fingerprint]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]


def compute_circuits(model, data_dir: str | os.PathLike, layers: Sequence[str], images: torch.Tensor,
                     fingerprint: str = "", progress: bool = False) -> dict[str, dict]:
    """Connection matrices between consecutive ``layers`` (sorted into forward order), stored under
    ``data_dir``; returns ``{upper: {"lower", "matrix", "method"}}``. A matrix already stored for the same
    weights, layers and image ``fingerprint`` is read back instead of recomputed."""
    from luminate import progress as progress_bars

    model = as_model(model)
    ordered = forward_order(model, layers)
    out = {}
    pairs = list(zip(ordered, ordered[1:]))
    bar = progress_bars.bar(len(pairs), "inputs", unit="layer", enabled=progress and bool(pairs))
    for lower, upper in pairs:
        if bar is not None:
            bar.update(1)
        path = circuits_path(data_dir, upper)
        key = _key(model, lower, upper, fingerprint)
        saved = read_circuits(path)
        if saved is not None and saved["key"] == key:
            out[upper] = saved
            continue
        with model.frozen():
            matrix, method = connection_matrix(model, lower, upper, images)
        buffer = io.BytesIO()
        np.savez(buffer, matrix=matrix, lower=np.array(lower), upper=np.array(upper), method=np.array(method),
                 key=np.array(key), n_images=np.array(len(images)))
        atomic_write(path, buffer.getvalue(), durable=True)
        out[upper] = {"lower": lower, "matrix": matrix, "method": method, "key": key}
    if bar is not None:
        bar.close()
    return out


def read_circuits(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as saved:
            return {"lower": str(saved["lower"]), "matrix": saved["matrix"], "method": str(saved["method"]),
                    "key": str(saved["key"])}
    except (OSError, ValueError, KeyError):
        return None


def forward_order(model: Model, layers: Sequence[str]) -> list[str]:
    """``layers`` sorted by where they run in a forward pass."""
    order = {info.name: i for i, info in enumerate(model.layers())}
    return sorted(layers, key=lambda n: (order.get(model.resolve(n)[0], len(order)), n))


def _data_dir(site: str | os.PathLike) -> Path:
    from luminate.units.examples import open_examples

    return open_examples(site).path


def _ranked(layer: str, weights: np.ndarray, k: int | None) -> list[dict]:
    order = np.argsort(-np.abs(weights), kind="stable")
    if k is not None:
        order = order[:k]
    return [{"layer": layer, "unit": int(u), "weight": float(weights[u])} for u in order if weights[u] != 0]


def inputs(site: str | os.PathLike, layer: str, unit: int, k: int | None = 8) -> list[dict]:
    """The strongest units of the layer below ``layer`` in the site, for ``unit``: ``[{"layer", "unit",
    "weight"}]`` by ``|weight|``, strongest first (``[]`` for the site's first layer)."""
    saved = read_circuits(circuits_path(_data_dir(site), layer))
    if saved is None:
        return []
    matrix = saved["matrix"]
    if not 0 <= int(unit) < matrix.shape[0]:
        raise IndexError(f"unit {unit} is out of range for layer {layer!r} ({matrix.shape[0]} units)")
    return _ranked(saved["lower"], matrix[int(unit)], k)


def outputs(site: str | os.PathLike, layer: str, unit: int, k: int | None = 8) -> list[dict]:
    """The units of the layer above ``layer`` that ``unit`` drives most: ``[{"layer", "unit", "weight"}]``
    (``[]`` for the site's last layer)."""
    data = _data_dir(site)
    for path in sorted(data.glob("circuits-*.npz")):
        saved = read_circuits(path)
        if saved is not None and saved["lower"] == layer:
            matrix = saved["matrix"]
            if not 0 <= int(unit) < matrix.shape[1]:
                raise IndexError(f"unit {unit} is out of range for layer {layer!r} ({matrix.shape[1]} units)")
            upper = str(np.load(path, allow_pickle=False)["upper"])
            return _ranked(upper, matrix[:, int(unit)], k)
    return []
