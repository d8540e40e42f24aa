"""The state behind the toolbox app: one model (with its lock), the uploaded images, the render worker, the
optional Microscope site and feature dictionary (:class:`Toolbox`), and the small helpers its routes share."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException

from luminate.activations import activations
from luminate.models.base import Model
from luminate.serve.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, ImageStore, decode_upload
from luminate.serve.worker import RenderWorker

#: How the API names the codes of a feature dictionary of layer L (``--features``): ``features:L``.
FEATURES = "features:"


def rounded(t: torch.Tensor, digits: int = 5) -> Any:
    """A tensor as nested lists of floats rounded to ``digits`` (JSON answers)."""
    return np.round(t.double().numpy(), digits).tolist()


@dataclass(frozen=True)
class FeatureLayer:
    """A dictionary's codes presented as a layer: ``name`` is ``features:L``, ``shape`` ``(N, h, w)``."""

    name: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0]


def open_dictionary(folder: str | Path, model: Model):
    """The feature dictionary in ``folder``: a features site (its one layer), a folder holding
    ``dictionary.safetensors`` or that file (:func:`luminate.features.load`), checked against ``model``."""
    from luminate import features

    path = Path(folder).expanduser()
    found = sorted((path / "data").glob("*/dictionary.safetensors")) if (path / "data").is_dir() else []
    if len(found) == 1 and not (path / "dictionary.safetensors").is_file():
        path = found[0]
    return features.load(path, model=model)


class Toolbox:
    """The state behind the app: the model (with its lock), the uploaded images, the render worker, the optional
    Microscope site and feature dictionary. :func:`luminate.serve.app.create_app` makes one; everything it holds
    belongs to that app."""

    def __init__(self, model: Model, *, site: str | Path | None = None, features: str | Path | None = None,
                 render_size: int = 96,
                 render_steps: int = 256, max_images: int = 64, max_image_bytes: int = 256 << 20,
                 max_upload: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS):
        self.model = model
        # the server's model is inference-only: frozen once, so concurrent Model.frozen() blocks restore nothing
        model.eval()
        model.requires_grad_(False)
        self.lock = threading.Lock()
        with self.lock, torch.no_grad():
            self.layer_infos = [model.layer_info(name) for name in model.default_layers()]
            activations(model, torch.zeros(1, model.contract.channels, *model.size), self.layer_infos[-1].name)
        self.store = ImageStore(max_images=max_images, max_bytes=max_image_bytes)
        self.max_upload, self.max_pixels = max_upload, max_pixels
        self.dictionary = open_dictionary(features, model) if features is not None else None
        self.features = None
        if self.dictionary is not None:
            base = self.dictionary.layer
            self.features = FeatureLayer(FEATURES + base, (self.dictionary.n_features,
                                                            *model.layer_info(base).shape[1:]))
            self.layer_infos.append(self.features)
        self.worker = RenderWorker(model, size=render_size, steps=render_steps, dictionary=self.dictionary)
        self.examples = None
        self.site = Path(site) if site is not None else None
        if site is not None:
            from luminate.microscope import open_examples

            self.examples = open_examples(site)

    # ----- inputs -------------------------------------------------------------------------------------------

    def add_image(self, data: bytes) -> dict:
        image = decode_upload(data, max_bytes=self.max_upload, max_pixels=self.max_pixels)
        pixels = self.model.preprocess(image).cpu()
        return {"id": self.store.add(pixels), "width": image.width, "height": image.height}

    def image(self, key: str):
        try:
            return self.store.get(key)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None

    def layer(self, name: str, spatial: bool = False):
        """The LayerInfo of ``name`` (a :class:`FeatureLayer` for ``features:L``), or 400 naming the closest layers."""
        if name.startswith(FEATURES):
            if self.features is None or name != self.features.name:
                have = (f"this server has {self.features.name}" if self.features is not None
                        else "start the server with --features SITE for a dictionary's features")
                raise HTTPException(400, f"unknown feature layer {name!r}: {have}")
            return self.features
        try:
            with self.lock:
                info = self.model.layer_info(name)
        except (KeyError, ValueError, IndexError) as exc:
            raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
        if len(info.shape) not in (1, 3) or (spatial and len(info.shape) != 3):
            want = "a convolutional layer [C, H, W]" if spatial else "[C] or [C, H, W] activations"
            raise HTTPException(400, f"layer {name!r} has output shape {list(info.shape)}; this needs {want}")
        return info

    def unit(self, layer: str, unit: int) -> None:
        if self.features is not None and layer == self.features.name:
            n = self.features.channels
            if not 0 <= unit < n:
                raise HTTPException(404, f"feature {unit} is out of range: the dictionary has {n} (0..{n - 1})")
            return
        try:
            self.model.check_channel(layer, unit)
        except IndexError as exc:
            raise HTTPException(404, exc.args[0]) from None

    # ----- computations -------------------------------------------------------------------------------------

    def activation(self, key: str, layer: str) -> torch.Tensor:
        """``[C, h, w]`` (or ``[C]``) activation of ``layer`` for image ``key``: one forward pass cut at the layer,
        remembered with the image."""
        self.layer(layer)
        item = self.image(key)
        cached = item.activations.get(layer)
        if cached is not None:
            return cached
        if layer.startswith(FEATURES):   # the dictionary's codes of its layer's activation
            value = self.dictionary.encode(self.activation(key, self.dictionary.layer)[None])[0]
        else:
            with self.lock:
                value = activations(self.model, item.pixels, layer, grid=True)[0]
        self.store.put_activation(key, layer, value)
        return value

    def classes(self, key: str, k: int) -> list[dict]:
        item = self.image(key)
        with self.lock, torch.no_grad(), self.model.frozen():
            output = self.model(item.pixels.to(self.model.device))
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            return []
        probs = output.float().softmax(-1)[0].cpu()
        top = probs.topk(min(k, probs.numel()))
        return [{"index": int(i), "name": self.model.class_name(int(i)), "probability": float(p)}
                for p, i in zip(top.values, top.indices)]

    def attribution(self, key: str, target: str, layer: str | None) -> dict:
        from luminate.analysis import attribution

        layer = layer or self.model.default_layer("attribution")
        if layer.startswith(FEATURES):
            raise HTTPException(400, f"attribution maps are computed on the model's layers, not on a dictionary's "
                                     f"features: ask for layer={layer[len(FEATURES):]} (the dictionary's layer)")
        self.layer(layer, spatial=True)
        item = self.image(key)
        try:
            index = attribution.resolve_classes(self.model, target)[0]
        except (KeyError, ValueError, IndexError) as exc:
            raise HTTPException(400, exc.args[0] if exc.args else str(exc)) from None
        with self.lock:
            where = attribution.spatial_attribution(self.model, item.pixels.to(self.model.device), layer,
                                                    target=index)[0]
        return {"image": key, "target": index, "class": self.model.class_name(index), "layer": layer,
                "method": "activation x gradient, summed over channels", "shape": list(where.shape),
                "map": rounded(where)}

    def shown(self, layer: str, unit: int) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The images the Microscope site's page of the unit shows, ``{name: [3, H, W]}`` (the guided one first
        where the site guided it), and their scores on held-out photos; None without a site or a page for it."""
        from luminate.analysis.shown import read_shown
        from luminate.microscope.shown import shown_file

        if self.site is None or layer.startswith(FEATURES):
            return None
        path = shown_file(self.site, layer)
        if not path.is_file():
            return None
        try:
            return read_shown(path, unit)
        except KeyError:
            return None

    def site_examples(self, layer: str, unit: int) -> tuple[Any, list[dict]]:
        if self.examples is None:
            raise HTTPException(404, "no Microscope site is open: start the server with --site SITE "
                                     "(a folder made by `luminate microscope`)")
        if layer not in self.examples.layers:
            raise HTTPException(404, f"the Microscope site has no layer {layer!r}; its layers: "
                                     f"{', '.join(self.examples.layers)}")
        try:
            return self.examples, self.examples.top_examples(layer, unit)
        except IndexError as exc:
            raise HTTPException(404, exc.args[0]) from None
