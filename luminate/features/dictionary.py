"""A learned dictionary of one layer: directions, the encoder that gives their codes, metrics; saved as safetensors.

A :class:`Dictionary` knows the model (name and weights fingerprint) and layer it was learned on and refuses
activations of another width, and :func:`load_dictionary` refuses it for another model or layer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FILE = "dictionary.safetensors"
FORMAT = "luminate.features.dictionary-v1"
#: How codes are computed from activations (SAELens's settings; Luminate's own dictionaries use the defaults):
#: ``apply_b_dec_to_input`` subtracts the decoder bias before the encoder, ``normalize_activations`` is SAELens's
#: run-time input normalization ("none", "expected_average_only_in" (none at run time), "constant_norm_rescale",
#: "layer_norm").
ENCODING = {"apply_b_dec_to_input": True, "normalize_activations": "none"}


class DictionaryMismatchError(ValueError):
    """A dictionary was loaded against another model or layer than the one it was learned on."""


class Dictionary:
    """``N`` directions in the ``C``-dimensional activation space of one layer, with sparse codes.

    Attributes:
        directions: ``[N, C]`` unit vectors (the decoder's columns): feature ``i`` adds ``code_i * directions[i]``.
        method: ``"topk"``, ``"batchtopk"``, ``"nmf"``, or for dictionaries read in SAELens's format ``"relu"``
            (standard) and ``"jumprelu"`` (a threshold per feature, ``theta``); ``k``: active codes per position (TopK
            / BatchTopK). encoding: see :data:`ENCODING`.
        layer, model_name, weights: what it was learned on. metrics: held-out quality (see :func:`metrics`).
        info: training settings and numbers (rows, steps, seconds, the run's key).
    """

    def __init__(self, tensors: dict[str, Tensor], method: str, k: int, layer: str, model_name: str, weights: str,
                 metrics: dict | None = None, info: dict | None = None, encoding: dict | None = None):
        self.tensors = {name: t.detach().float().cpu().contiguous() for name, t in tensors.items()}
        self.method = method
        self.k = int(k)
        self.layer = layer
        self.model_name = model_name
        self.weights = weights
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.info: dict[str, Any] = dict(info or {})
        self.encoding: dict[str, Any] = {**ENCODING, **(encoding or {})}

    # ----- shape ----------------------------------------------------------------------------------------------
    @property
    def directions(self) -> Tensor:
        """``[N, C]`` unit-norm feature directions."""
        if self.method == "nmf":
            h = self.tensors["components"]
            c = h.shape[1] // 2
            d = h[:, :c] - h[:, c:]
            return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.tensors["W_dec"].t()

    @property
    def n_features(self) -> int:
        return int(self.directions.shape[0])

    @property
    def channels(self) -> int:
        return int(self.directions.shape[1])

    def __len__(self) -> int:
        return self.n_features

    def __repr__(self) -> str:
        m = self.metrics
        quality = f", R2 {m['r2']:.3f}, L0 {m['l0']:.1f}, dead {100 * m['dead']:.1f}%" if "r2" in m else ""
        return (f"Dictionary({self.method}, {self.n_features} features of {self.model_name} {self.layer} "
                f"({self.channels} channels), k={self.k}{quality})")

    # ----- codes ----------------------------------------------------------------------------------------------
    def _rows(self, acts: Tensor) -> tuple[Tensor, tuple | None]:
        acts = torch.as_tensor(acts)
        if acts.ndim == 4:
            b, c, h, w = acts.shape
            return acts.permute(0, 2, 3, 1).reshape(-1, c), (b, h, w)
        if acts.ndim == 2:
            return acts, None
        raise ValueError(f"activations of shape {tuple(acts.shape)}: give [B, C, H, W] or [R, C]")

    def encode(self, acts: Tensor) -> Tensor:
        """Codes of activations: ``[B, C, H, W] -> [B, N, H, W]`` (or ``[R, C] -> [R, N]``), non-negative, at most
        ``k`` non-zero per position (TopK)."""
        x, shape = self._rows(acts)
        if x.shape[1] != self.channels:
            raise ValueError(f"activations have {x.shape[1]} channels, but this dictionary was learned on layer "
                             f"{self.layer} of {self.model_name}, which has {self.channels} channels: encode that "
                             "layer's activations")
        device, dtype = x.device, x.dtype
        x = x.detach().float().cpu()
        if self.method == "nmf":
            from luminate.features.sae import nmf_codes

            z = torch.from_numpy(nmf_codes(x.numpy(), self.tensors["components"].numpy()))
        else:
            t = self.tensors
            x = _normalized(x, self.encoding["normalize_activations"])
            if self.encoding["apply_b_dec_to_input"]:
                x = x - t["b_dec"]
            pre = torch.relu(x @ t["W_enc"].t() + t["b_enc"])
            if self.method == "relu":
                z = pre
            elif self.method == "topk":
                values, index = pre.topk(self.k, dim=1)
                z = torch.zeros_like(pre).scatter(1, index, values)
            else:
                z = pre * (pre > t["theta"])
        z = z.to(device=device, dtype=dtype)
        if shape is None:
            return z
        b, h, w = shape
        return z.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstructed activations: ``[B, N, H, W] -> [B, C, H, W]`` (or ``[R, N] -> [R, C]``)."""
        codes = torch.as_tensor(codes)
        shape = None
        z = codes
        if codes.ndim == 4:
            b, n, h, w = codes.shape
            z, shape = codes.permute(0, 2, 3, 1).reshape(-1, n), (b, h, w)
        elif codes.ndim != 2:
            raise ValueError(f"codes of shape {tuple(codes.shape)}: give [B, N, H, W] or [R, N]")
        if z.shape[1] != self.n_features:
            raise ValueError(f"codes have {z.shape[1]} features; this dictionary has {self.n_features}")
        device, dtype = z.device, z.dtype
        z = z.detach().float().cpu()
        if self.method == "nmf":
            h2 = z @ self.tensors["components"]
            c = h2.shape[1] // 2
            x = h2[:, :c] - h2[:, c:]
        else:
            x = z @ self.tensors["W_dec"].t() + self.tensors["b_dec"]
        x = x.to(device=device, dtype=dtype)
        if shape is None:
            return x
        b, h, w = shape
        return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    # ----- identity -------------------------------------------------------------------------------------------
    def check(self, model=None, layer: str | None = None) -> None:
        """Raise :class:`DictionaryMismatchError` unless this dictionary was learned on ``model`` (name and
        weights) and ``layer``."""
        if layer is not None and layer != self.layer:
            raise DictionaryMismatchError(f"this dictionary was learned on layer {self.layer!r} of {self.model_name}, "
                                          f"not {layer!r}: learn one for {layer!r} (luminate features ... --layer "
                                          f"{layer})")
        if model is not None:
            from luminate.models.base import as_model

            model = as_model(model)
            if model.name != self.model_name or model.weights_fingerprint() != self.weights:
                what = "model" if model.name != self.model_name else "weights"
                raise DictionaryMismatchError(
                    f"this dictionary was learned on {self.model_name} (weights {self.weights[:12]}), not on "
                    f"{model.name} (weights {model.weights_fingerprint()[:12]}): the {what} differ, so its directions "
                    "mean nothing there; learn a dictionary for this model")

    # ----- files ----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, format: str = "luminate") -> Path:
        """Write ``path`` (a ``.safetensors`` file, or a folder that gets ``dictionary.safetensors``) atomically.

        ``format="saelens"``: a folder with SAELens's ``cfg.json`` and ``sae_weights.safetensors``
        (:func:`luminate.features.saelens.write_saelens`)."""
        from safetensors.torch import save

        if format == "saelens":
            from luminate.features.saelens import write_saelens

            return write_saelens(self, path)
        if format != "luminate":
            raise ValueError(f"format {format!r}: write 'luminate' or 'saelens'")

        from luminate.cache import atomic_write

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "sha256": tensors_digest(self.tensors), "method": self.method, "k": str(self.k),
                  "layer": self.layer,
                  "model": self.model_name, "weights": self.weights, "metrics": json.dumps(self.metrics),
                  "info": json.dumps(self.info, default=str), "encoding": json.dumps(self.encoding)}
        atomic_write(path, save(self.tensors, metadata=header))
        return path


class DictionaryDamagedError(ValueError):
    """A dictionary file whose bytes are not the ones written (truncated, or changed in place)."""


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of every tensor's name, shape, dtype and bytes, in name order: what a dictionary file records of
    itself, so a change to its bytes is found on read."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_dictionary(path: str | os.PathLike) -> Dictionary:
    """A :class:`Dictionary` from a file written by :meth:`Dictionary.save`, its bytes checked against the SHA-256
    it records (:class:`DictionaryDamagedError` for a truncated or changed file)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a Luminate feature dictionary (format {meta.get('format')!r})")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (ValueError, OSError):
        raise
    except Exception as exc:   # safetensors' own error: a truncated file or a garbled header
        raise DictionaryDamagedError(f"the dictionary {path} is damaged ({exc}); rerun the command that made it "
                                     "(the same arguments learn it again), or delete the file") from None
    if "sha256" in meta and tensors_digest(tensors) != meta["sha256"]:
        raise DictionaryDamagedError(f"the dictionary {path} is damaged: its bytes differ from the ones written "
                                     "(SHA-256 mismatch); rerun the command that made it (the same arguments learn "
                                     "it again), or delete the file")
    return Dictionary(tensors, meta["method"], int(meta["k"]), meta["layer"], meta["model"], meta["weights"],
                      json.loads(meta.get("metrics", "{}")), json.loads(meta.get("info", "{}")),
                      json.loads(meta.get("encoding", "{}")))


def _normalized(x: Tensor, how: str) -> Tensor:
    """SAELens's run-time input normalization of rows ``[R, C]``."""
    if how == "constant_norm_rescale":
        return x * (x.shape[1] ** 0.5 / x.norm(dim=1, keepdim=True))
    if how == "layer_norm":
        x = x - x.mean(dim=1, keepdim=True)
        return x / (x.std(dim=1, keepdim=True) + 1e-5)
    return x


def dictionary_dir(site: str | os.PathLike, layer: str) -> Path:
    """Where a site keeps the data of ``layer``: ``SITE/data/<layer key>``."""
    from luminate.data.store import layer_key

    return Path(site) / "data" / layer_key(layer)


def load_dictionary(site: str | os.PathLike, layer: str | None = None, model=None) -> Dictionary:
    """The dictionary of ``layer`` in a features site (``luminate features ... -o SITE``), a folder holding
    ``dictionary.safetensors``, or that file. ``model``: refuse (:class:`DictionaryMismatchError`) a dictionary
    learned on another model or weights; ``layer``: refuse one learned on another layer."""
    path = Path(site).expanduser()
    candidates = [path] if path.suffix == ".safetensors" else []
    if layer is not None:
        candidates.append(dictionary_dir(path, layer) / FILE)
    candidates.append(path / FILE)
    for candidate in candidates:
        if candidate.is_file():
            found = read_dictionary(candidate)
            found.check(model, layer)
            return found
    there = sorted(p.parent.name for p in (path / "data").glob(f"*/{FILE}")) if (path / "data").is_dir() else []
    hint = f"; it has dictionaries of {', '.join(there)}" if there else ""
    raise FileNotFoundError(f"no dictionary of layer {layer!r} in {path}{hint}. Learn one with "
                            f"`luminate features MODEL IMAGES --layer {layer or 'L'} -o {path}` or features.learn")


def match_directions(a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching of two sets of directions ``[N, C]`` and ``[M, C]`` by cosine (scipy's
    ``linear_sum_assignment``): ``(rows of a, rows of b, their cosines)``."""
    from scipy.optimize import linear_sum_assignment

    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (a @ b.t()).double().numpy()
    rows, cols = linear_sum_assignment(-cos)
    return rows, cols, cos[rows, cols]


def stability(a: Dictionary | Tensor, b: Dictionary | Tensor) -> float:
    """Mean cosine of Hungarian-matched directions of two dictionaries (1: the same directions)."""
    da = a.directions if isinstance(a, Dictionary) else a
    db = b.directions if isinstance(b, Dictionary) else b
    return float(match_directions(da, db)[2].mean())
