"""DeepDream proper: octaves, tiled gradients with random shifts, normalized gradient ascent on the pixels.

This is the classic algorithm of Mordvintsev's DeepDream notebook, for photos of any size:

* **Octaves.** The photo is shrunk ``octaves - 1`` times by ``octave_scale``; the detail each shrink removed is
  kept. Dreaming starts on the smallest image; after each octave the result is enlarged to the next size and the
  kept detail is added back. Large structures grow at the small octaves, fine texture at the large ones. The
  result always has the photo's size.
* **Tiles.** The gradient of the objective is computed tile by tile (``tile`` pixels a side), so a photo of
  1200 px or more never needs more memory than one tile's forward and backward pass. Each tile is read with
  ``overlap`` pixels of context on every side; only the layer positions inside the tile's own core count, so the
  tiles' objectives partition the image's and their gradients add up. Where ``overlap`` covers the layer's
  receptive field the tiled gradient equals the untiled one (float error); a deep layer's receptive field is
  larger than any practical overlap, and there the difference shows only near tile borders.
* **Random shifts.** Before every step the image is rolled by a random offset (up to half a tile) and rolled
  back afterwards, so the tile borders fall somewhere new each time and leave no seams.
* **Normalized steps.** Each step adds ``lr * g / mean|g|``: the same visible change per step whatever
  the layer's scale. Pixels stay in [0, 1].

The objective is the sum of squared activations of a layer (Lucid's ``deepdream`` objective up to a constant
factor, which the gradient normalization removes) or of several layers.

>>> result = luminate.dream.dream(model, "photo.jpg", "blocks.9", octaves=3)
>>> result.save("dream.png")                      # a RenderResult: same size as the photo
>>> sheet = luminate.dream.dream_layers(model, "photo.jpg", ["blocks.2", "blocks.6", "blocks.12"])
"""

from __future__ import annotations

import time
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from luminate import images as imageio
from luminate.activations import LayerTap
from luminate.models.base import Model, as_model
from luminate.render import RenderResult
from luminate.progress import bar as progress_bar

__all__ = ["dream", "dream_layers", "tiled_gradient", "octave_sizes", "DreamSheet"]

#: classic DeepDream step: 1.5 on a 0-255 scale is 0.0059; a little larger suits 10 steps per octave
DEFAULT_STEP_SIZE = 0.01


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """The image sizes ``(H, W)`` of each octave, smallest first; the last is ``(height, width)``."""
    if octaves < 1:
        raise ValueError(f"octaves must be at least 1, got {octaves}")
    if octave_scale <= 1.0 and octaves > 1:
        raise ValueError(f"octave_scale must be greater than 1 (each octave this much smaller), got {octave_scale}")
    sizes = [(height, width)]
    for _ in range(octaves - 1):
        h, w = sizes[-1]
        sizes.append((max(1, round(h / octave_scale)), max(1, round(w / octave_scale))))
    return sizes[::-1]


def _tile_starts(length: int, tile: int) -> list[int]:
    return list(range(0, length, tile)) if tile < length else [0]


def _core_squared_sum(act: Tensor, padded: tuple[int, int] | None, rows: tuple[int, int], cols: tuple[int, int]
                      ) -> Tensor:
    """Sum of squares of ``act`` over the layer positions inside the tile's core. The layer's grid maps onto the
    padded tile by its size ratio (its stride); ``padded=None`` (untiled) or a non-spatial layer: everything."""
    if act.ndim == 4 and padded is not None:
        sy, sx = act.shape[-2] / padded[0], act.shape[-1] / padded[1]
        act = act[:, :, round(rows[0] * sy):round(rows[1] * sy), round(cols[0] * sx):round(cols[1] * sx)]
    return act.pow(2).sum()


def tiled_gradient(model: Model, image: Tensor, layers: Sequence[str], tile: int = 512, overlap: int = 32
                   ) -> tuple[Tensor, float]:
    """The gradient of the dream objective with respect to ``image`` ``[1, 3, H, W]``, computed tile by tile.

    Each tile covers ``tile`` x ``tile`` pixels of the image (its *core*; the last row and column of tiles take
    what is left) and is run through the network with ``overlap`` pixels of context on each side (clipped at the
    image's border). The layer positions that fall inside the core (mapped by the layer's stride) contribute to
    the tile's objective, the sum of their squared activations; the whole padded tile's gradient is added into
    the image's gradient. Returns ``(gradient [1, 3, H, W], objective value)``. With ``tile >= max(H, W)`` this
    is the plain, untiled gradient.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiled_gradient takes one image [1, 3, H, W], got shape {tuple(image.shape)}")
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be at least 1 and overlap at least 0, got tile={tile}, overlap={overlap}")
    model = as_model(model)
    h, w = image.shape[-2:]
    layers = list(layers)
    grad = torch.zeros_like(image)
    total = 0.0
    untiled = tile >= h and tile >= w
    with LayerTap(model, layers, check_inputs=False) as tap:
        for y0 in _tile_starts(h, tile):
            for x0 in _tile_starts(w, tile):
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                py0, px0 = max(0, y0 - overlap), max(0, x0 - overlap)
                py1, px1 = min(h, y1 + overlap), min(w, x1 + overlap)
                piece = image[:, :, py0:py1, px0:px1].detach().requires_grad_(True)
                acts = tap(piece)
                padded = None if untiled else (py1 - py0, px1 - px0)
                score = sum(_core_squared_sum(acts[name], padded, (y0 - py0, y1 - py0), (x0 - px0, x1 - px0))
                            for name in layers)
                (g,) = torch.autograd.grad(score, piece)
                grad[:, :, py0:py1, px0:px1] += g
                total += float(score.detach())
    return grad, total


def _layer_list(layer: str | Sequence[str]) -> list[str]:
    layers = [layer] if isinstance(layer, str) else list(layer)
    if not layers:
        raise ValueError("give a layer to dream at, e.g. 'blocks.9' (list them with `luminate layers MODEL`)")
    return layers


def dream(model: Model | str, photo, layer: str | Sequence[str], octaves: int = 3,
          octave_scale: float = 1.4, steps: int = 10, lr: float = DEFAULT_STEP_SIZE, tile: int = 512,
          overlap: int = 32, shift: bool = True, max_shift: int | None = None, seed: int | None = 0,
          size: int | None = None, progress: bool = True, *, step_size: float | None = None) -> RenderResult:
    """DeepDream ``photo`` at ``layer`` (module docstring): octaves, tiled gradients, random shifts.

    Args:
        model: a :class:`~luminate.models.Model` or a zoo name.
        photo: a path, PIL image, array or tensor (``[1, 3, H, W]`` in [0, 1]); any size.
        layer: the layer whose squared activations grow (``"blocks.9"``), or several layers (their sum).
        octaves: number of scales (1: dream at the photo's size only).
        octave_scale: size ratio between neighbouring octaves (classic: 1.4).
        steps: gradient steps per octave.
        lr: the step size: mean absolute pixel change of each step (pixels in [0, 1]). ``step_size`` is its
            deprecated old name (a DeprecationWarning).
        tile: tile side in pixels (memory grows with its square, not with the photo's size).
        overlap: context pixels read around each tile (module docstring).
        shift: roll the image by a random offset before each step (hides tile borders).
        max_shift: largest offset in pixels (default: half a tile).
        seed: seeds the shifts; ``None`` picks one.
        size: first resize the photo so that its longer side is ``size`` (default: its own size).
        progress: a progress bar over all steps.

    Returns:
        a :class:`~luminate.render.RenderResult`: ``image`` ``[1, 3, H, W]`` at the photo's (or ``size``'s)
        size; ``history`` ``[steps_done, 1]`` the objective (sum of squared activations) at each step;
        ``settings`` every argument; ``images`` the photo (threshold 0) and the dream.
    """
    model = as_model(model)
    layers = _layer_list(layer)
    for name in layers:
        model.layer(name)  # unknown layers raise with close names
    if steps < 0:
        raise ValueError(f"steps must be at least 0, got {steps}")
    if step_size is not None:
        warnings.warn("dream(step_size=) is now lr= (the same keyword as every other entry point)",
                      DeprecationWarning, stacklevel=2)
        lr = step_size
    step_size = lr
    if step_size <= 0:
        raise ValueError(f"lr (the step size) must be positive, got {step_size}")
    original = imageio.load_image(photo)
    if size is not None:
        h, w = original.shape[-2:]
        k = size / max(h, w)
        original = imageio.resize(original, (max(1, round(h * k)), max(1, round(w * k))))
    seed = int(torch.randint(0, 2 ** 31 - 1, ()).item()) if seed is None else int(seed)
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    sizes = octave_sizes(*original.shape[-2:], octaves, octave_scale)
    # the detail each shrink removes, kept to be added back (Laplacian pyramid)
    img = original.to(device)
    details = []
    for hw in reversed(sizes[:-1]):
        lower = F.interpolate(img, size=hw, mode="bilinear", align_corners=False, antialias=True)
        details.append(img - F.interpolate(lower, size=img.shape[-2:], mode="bilinear", align_corners=False))
        img = lower
    details = details[::-1]  # smallest first
    history: list[float] = []
    bar = progress_bar(steps * len(sizes), "dream", enabled=progress and steps * len(sizes) > 0)
    start = time.perf_counter()
    interrupted = False
    try:
        for k, hw in enumerate(sizes):
            if k > 0:
                img = F.interpolate(img, size=hw, mode="bilinear", align_corners=False) + details[k - 1]
                img = img.clamp(0, 1)
            for _ in range(steps):
                dy, dx = _shift(hw, tile // 2 if max_shift is None else max_shift, generator) if shift else (0, 0)
                rolled = torch.roll(img, (dy, dx), (2, 3))
                grad, value = tiled_gradient(model, rolled, layers, tile=tile, overlap=overlap)
                grad = torch.roll(grad, (-dy, -dx), (2, 3))
                img = (img + grad * (step_size / (grad.abs().mean() + 1e-12))).clamp(0, 1).detach()
                history.append(value)
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    if img.shape[-2:] != original.shape[-2:]:  # interrupted before the last octave: still the photo's size
        img = imageio.resize(img, tuple(original.shape[-2:]), mode="bilinear")
    settings = {"model": model.name, "objective": f"deepdream({', '.join(layers)})", "layers": layers,
                "octaves": octaves, "octave_scale": octave_scale, "octave_sizes": sizes, "steps": steps,
                "lr": step_size, "tile": tile, "overlap": overlap, "shift": shift, "max_shift": max_shift,
                "seed": seed, "device": str(device)}
    done = len(history)
    return RenderResult(images=[original.cpu(), img.detach().cpu()], thresholds=[0, done],
                        history=torch.tensor(history, dtype=torch.float32).reshape(-1, 1), settings=settings,
                        interrupted=interrupted, seconds=time.perf_counter() - start)


def _shift(hw: tuple[int, int], limit: int, generator: torch.Generator) -> tuple[int, int]:
    limit_y, limit_x = min(hw[0] // 2, limit), min(hw[1] // 2, limit)
    dy = int(torch.randint(-limit_y, limit_y + 1, (), generator=generator)) if limit_y else 0
    dx = int(torch.randint(-limit_x, limit_x + 1, (), generator=generator)) if limit_x else 0
    return dy, dx


class DreamSheet:
    """The same photo dreamed at several layers: ``photo`` ``[1, 3, H, W]``, one result per layer.

    :meth:`image` lays them side by side (the photo first) with a caption strip under each; it saves with
    :meth:`save` and shows itself in a notebook."""

    def __init__(self, photo: Tensor, layers: list[str], results: list[RenderResult]):
        self.photo = photo
        self.layers = layers
        self.results = results

    def image(self, height: int | None = 320) -> Tensor:
        """``[1, 3, H', W']``: the photo and each dream, scaled to ``height`` pixels, captioned."""
        from PIL import ImageDraw

        tiles = [self.photo] + [r.image for r in self.results]
        captions = ["photo"] + [f"DeepDream {layer}" for layer in self.layers]
        h, w = self.photo.shape[-2:]
        if height is not None and h != height:
            scale = height / h
            tiles = [imageio.resize(t, (height, max(1, round(w * scale))), mode="bilinear") for t in tiles]
        grid = imageio.make_grid(torch.cat(tiles), ncol=len(tiles), padding=6)
        strip = 22
        canvas = torch.ones(3, grid.shape[1] + strip, grid.shape[2])
        canvas[:, :grid.shape[1]] = grid
        pil = imageio.to_pil(canvas[None])
        draw = ImageDraw.Draw(pil)
        tile_w = (grid.shape[2] - 6) / len(tiles)
        for k, caption in enumerate(captions):
            draw.text((6 + k * tile_w + 4, grid.shape[1] + 4), caption, fill=(40, 40, 40))
        return imageio.to_tensor(pil)

    def save(self, path) -> "object":
        return imageio.save_image(self.image(), path)

    def _repr_png_(self) -> bytes:
        return imageio.png_bytes(self.image())

    def __repr__(self) -> str:
        return f"DreamSheet({', '.join(self.layers)})"


def dream_layers(model: Model | str, photo, layers: Sequence[str], **kwargs) -> DreamSheet:
    """Dream ``photo`` at each of ``layers`` (early to late: textures, then parts, then objects) with the same
    settings (``kwargs`` of :func:`dream`); returns a :class:`DreamSheet` to view or save side by side."""
    layers = _layer_list(layers)
    model = as_model(model)
    size = kwargs.pop("size", None)
    original = imageio.load_image(photo)
    if size is not None:
        h, w = original.shape[-2:]
        k = size / max(h, w)
        original = imageio.resize(original, (max(1, round(h * k)), max(1, round(w * k))))
    results = [dream(model, original, layer, **kwargs) for layer in layers]
    return DreamSheet(original, layers, results)

