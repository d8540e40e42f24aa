"""Dictionaries in SAELens's format: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

>>> d = luminate.features.saelens.read_saelens("my_sae/")     # architectures standard, topk, jumprelu
>>> codes = d.encode(acts)                                      # SAELens's encode, exactly
>>> d.save("back/", format="saelens")                           # and back (a round trip changes no value)

SAELens's tensors are ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` (and
``threshold [d_sae]`` for JumpReLU; older files hold ``log_threshold``). Its encoder, as documented and implemented
by SAELens: the input is normalized (``normalize_activations``), ``b_dec`` is subtracted when
``apply_b_dec_to_input``, then ``h = x @ W_enc + b_enc`` and the codes are ``relu(h)`` (standard), the ``k`` largest
of ``h`` through a ReLU (topk), or ``relu(h) * (h > threshold)`` (jumprelu). A Luminate :class:`Dictionary` keeps
``W_enc`` and ``W_dec`` transposed and computes the same (``Dictionary.encoding`` holds the two settings).

``luminate features MODEL IMAGES --layer L --dictionary PATH -o SITE`` shows such a dictionary as a site (codes of
every image, pages, visualizations) without training: :func:`adopt`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from luminate.features.dictionary import FILE, Dictionary, DictionaryMismatchError, read_dictionary

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "topk", "jumprelu")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
#: Luminate method -> SAELens architecture (a BatchTopK dictionary encodes with one threshold: a JumpReLU).
_ARCHITECTURE_OF = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_METHOD_OF = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def _architecture(cfg: dict) -> tuple[str, int]:
    """``(architecture, k)``; older configs say ``activation_fn: "topk"`` with ``activation_fn_kwargs: {"k": k}``."""
    arch = cfg.get("architecture", "standard")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch == "standard" and cfg.get("activation_fn") == "topk":
        arch = "topk"
    if arch not in ARCHITECTURES:
        raise ValueError(f"SAELens architecture {arch!r} is not supported; Luminate reads {', '.join(ARCHITECTURES)}")
    k = int(cfg.get("k", kwargs.get("k", 0)) or 0)
    if arch == "topk" and k < 1:
        raise ValueError("a topk SAELens config needs k (the number of active codes): none found in cfg.json")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise NotImplementedError("rescale_acts_by_decoder_norm=true is not supported (TopK on decoder-norm-scaled "
                                  "codes); fold the decoder norms into W_enc and b_enc first")
    if cfg.get("reshape_activations", "none") != "none":
        raise NotImplementedError(f"reshape_activations={cfg['reshape_activations']!r} (attention heads) has no "
                                  "meaning for a vision layer; Luminate reads 'none' only")
    return arch, k


def _files(path: Path) -> tuple[Path, Path]:
    cfg, weights = path / CFG, path / WEIGHTS
    if not path.is_dir() or not cfg.is_file() or not weights.is_file():
        there = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
        has = f" (it holds {', '.join(there)})" if there else (" (not a folder)" if path.exists() else
                                                                " (it does not exist)")
        raise FileNotFoundError(f"{path} is not a SAELens dictionary{has}: a SAELens folder holds {CFG} and {WEIGHTS}, "
                                "as SAE.save_model writes them")
    return cfg, weights


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...], path: Path) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{path / WEIGHTS}: {name} has shape {tuple(tensor.shape)}, but cfg.json (d_in, d_sae) "
                         f"says {shape}")


def read_saelens(path: str | os.PathLike) -> Dictionary:
    """A :class:`Dictionary` from a SAELens folder; ``layer`` and ``model_name`` come from the config's ``hook_name``
    and ``model_name`` (top level or ``metadata``), the whole config is kept in ``info["saelens"]``."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    cfg_file, weights_file = _files(path)
    cfg = json.loads(cfg_file.read_text())
    arch, k = _architecture(cfg)
    normalize = cfg.get("normalize_activations", "none") or "none"
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize_activations={normalize!r} is not supported; Luminate reads "
                         f"{', '.join(NORMALIZATIONS)}")
    t = load_file(str(weights_file))
    missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in t]
    if missing:
        raise ValueError(f"{weights_file} lacks {', '.join(missing)} (it has {', '.join(sorted(t))})")
    d_in, d_sae = int(cfg.get("d_in", t["W_enc"].shape[0])), int(cfg.get("d_sae", t["W_enc"].shape[1]))
    for name, shape in (("W_enc", (d_in, d_sae)), ("b_enc", (d_sae,)), ("W_dec", (d_sae, d_in)), ("b_dec", (d_in,))):
        _check_shape(name, t[name], shape, path)
    tensors = {"W_enc": t["W_enc"].t(), "b_enc": t["b_enc"], "W_dec": t["W_dec"].t(), "b_dec": t["b_dec"]}
    if arch == "jumprelu":
        if "threshold" in t:
            tensors["theta"] = t["threshold"]
        elif "log_threshold" in t:
            tensors["theta"] = t["log_threshold"].exp()
        else:
            raise ValueError(f"{weights_file}: a jumprelu SAE needs its threshold tensor (threshold [d_sae])")
        _check_shape("threshold", tensors["theta"], (d_sae,), path)
    meta = cfg.get("metadata") or {}
    return Dictionary(tensors, _METHOD_OF[arch], k, layer=cfg.get("hook_name") or meta.get("hook_name") or "",
                      model_name=cfg.get("model_name") or meta.get("model_name") or "", weights="",
                      info={"saelens": cfg, "source": str(path)},
                      encoding={"apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
                                "normalize_activations": normalize})


def write_saelens(dictionary: Dictionary, path: str | os.PathLike) -> Path:
    """Write ``dictionary`` as a SAELens folder (``cfg.json`` and ``sae_weights.safetensors``, in the config's
    ``dtype``, float32 by default); a dictionary read from SAELens gets its own config back. Returns the folder."""
    from safetensors.torch import save

    from luminate.cache import atomic_write

    if dictionary.method not in _ARCHITECTURE_OF:
        raise ValueError(f"a {dictionary.method} dictionary has no SAELens form (SAELens stores sparse autoencoders: "
                         f"{', '.join(sorted(_ARCHITECTURE_OF))} dictionaries)")
    t = dictionary.tensors
    cfg = dict(dictionary.info.get("saelens") or {})
    arch = _ARCHITECTURE_OF[dictionary.method]
    cfg.update({"architecture": arch, "d_in": dictionary.channels, "d_sae": dictionary.n_features,
                "apply_b_dec_to_input": bool(dictionary.encoding["apply_b_dec_to_input"]),
                "normalize_activations": dictionary.encoding["normalize_activations"]})
    cfg.setdefault("dtype", "float32")
    cfg.setdefault("device", "cpu")
    if arch == "topk":
        cfg["k"] = dictionary.k
    if not (cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")):
        cfg["metadata"] = {**(cfg.get("metadata") or {}), "hook_name": dictionary.layer,
                           "model_name": dictionary.model_name}
    dtype = getattr(torch, str(cfg["dtype"]).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"cfg.json dtype {cfg['dtype']!r} is not a torch dtype")
    out = {"W_enc": t["W_enc"].t(), "b_enc": t["b_enc"], "W_dec": t["W_dec"].t(), "b_dec": t["b_dec"]}
    if arch == "jumprelu":
        out["threshold"] = t["theta"].expand(dictionary.n_features)
    out = {name: v.to(dtype).contiguous() for name, v in out.items()}
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS, save(out))
    atomic_write(folder / CFG, json.dumps(cfg, indent=2).encode())
    return folder


def read_any(path: str | os.PathLike) -> Dictionary:
    """A dictionary from a SAELens folder, a Luminate ``dictionary.safetensors``, or a folder holding one."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        return read_dictionary(path)
    if (path / FILE).is_file() and not (path / CFG).is_file():
        return read_dictionary(path / FILE)
    return read_saelens(path)


def _fingerprint(dictionary: Dictionary) -> str:
    digest = hashlib.sha256(json.dumps([dictionary.method, dictionary.k, dictionary.encoding]).encode())
    for name in sorted(dictionary.tensors):
        digest.update(name.encode() + dictionary.tensors[name].numpy().tobytes())
    return digest.hexdigest()[:20]


def adopt(source: str | os.PathLike | Dictionary, model, images, layer: str, folder: str | os.PathLike, *,
          seed: int = 0, holdout_every: int = 5, memory_rows: int = 4_000_000, progress: bool = True,
          num_workers: int | None = None) -> Dictionary:
    """Use a dictionary made elsewhere for ``layer`` of ``model``: checked against the layer's width, measured on the
    held-out images' positions (every ``holdout_every``-th image; ``r2`` is NaN where the decoder works in SAELens's
    normalized units), and saved as ``folder/dictionary.safetensors`` for the site."""
    from luminate.features.learn import metrics, open_store, row_reader, split_rows
    from luminate.models.base import as_model

    model = as_model(model)
    dictionary = source if isinstance(source, Dictionary) else read_any(source)
    channels = model.layer_info(layer).channels
    if dictionary.channels != channels:
        raise DictionaryMismatchError(f"the dictionary at {source} takes {dictionary.channels} inputs (d_in), but "
                                      f"layer {layer!r} of {model.name} has {channels} channels: give the layer it "
                                      "was trained on")
    folder = Path(folder)
    store = open_store(model, images, layer, folder, None, seed, progress, num_workers)
    _, held_rows = split_rows(store, holdout_every)
    dictionary.layer, dictionary.model_name, dictionary.weights = layer, model.name, model.weights_fingerprint()
    measured = metrics(dictionary, row_reader(store, layer, held_rows, memory_rows), len(held_rows))
    if dictionary.encoding["normalize_activations"] in ("constant_norm_rescale", "layer_norm"):
        measured["r2"] = float(np.nan)
    dictionary.metrics = measured
    dictionary.info.update({"key": _fingerprint(dictionary), "training rows": 0, "held-out rows": int(len(held_rows)),
                            "source": str(dictionary.info.get("source", source))})
    dictionary.save(folder / FILE)
    return dictionary


__all__ = ["ARCHITECTURES", "NORMALIZATIONS", "adopt", "read_any", "read_saelens", "write_saelens"]
