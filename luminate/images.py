"""Images in and out: load, convert, save, tile into grids, display in notebooks.

Every Luminate API takes and returns images as float tensors in [0, 1], NCHW, RGB.
This module converts at the edges: paths, PIL images, numpy arrays (HWC or NHWC),
and tensors (CHW or NCHW) all become ``[N, C, H, W]`` float32 tensors.
"""

from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class UnreadableImageError(ValueError):
    """A file that should hold an image could not be decoded."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an RGB PIL image (grey, palette and RGBA files are converted).

    RGBA images are composited over white, so transparent regions do not turn black.
    Raises :class:`UnreadableImageError` naming the file when it is missing, empty or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableImageError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise UnreadableImageError(f"image file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"cannot decode image {path}: {exc}") from exc


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def to_tensor(image: ImageLike, channels: int | None = 3) -> torch.Tensor:
    """Convert any image-like value to a float tensor ``[N, C, H, W]`` in [0, 1].

    * path or PIL image: decoded, converted to RGB, ``N = 1``;
    * numpy array: ``HW``, ``HWC`` or ``NHWC``; uint8 is scaled by 1/255;
    * tensor: ``HW``, ``CHW`` or ``NCHW``, used as is (float) or scaled (uint8).

    With ``channels=3`` grey images are repeated to RGB and alpha channels dropped.
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(_to_rgb(image))
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tensor.ndim == 2:
            tensor = tensor[None, None]
        elif tensor.ndim == 3:
            tensor = tensor.permute(2, 0, 1)[None]
        elif tensor.ndim == 4:
            tensor = tensor.permute(0, 3, 1, 2)
        else:
            raise ValueError(f"expected an HW, HWC or NHWC array, got shape {tuple(image.shape)}")
    elif isinstance(image, torch.Tensor):
        tensor = image.detach()
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        tensor = tensor.float()
        if tensor.ndim == 2:
            tensor = tensor[None, None]
        elif tensor.ndim == 3:
            tensor = tensor[None]
        elif tensor.ndim != 4:
            raise ValueError(f"expected an HW, CHW or NCHW tensor, got shape {tuple(tensor.shape)}")
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}: give a path, PIL image, array or tensor")
    if channels == 3:
        if tensor.shape[1] == 1:
            tensor = tensor.expand(-1, 3, -1, -1)
        elif tensor.shape[1] == 4:
            tensor = tensor[:, :3]
        elif tensor.shape[1] != 3:
            raise ValueError(f"expected 1, 3 or 4 channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)})")
    return tensor.contiguous()


def load_image(source: ImageLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Load one image as ``[1, 3, H, W]`` in [0, 1]; ``size`` (int or ``(H, W)``) resizes it (bicubic)."""
    tensor = to_tensor(source)
    if size is not None:
        tensor = resize(tensor, size)
    return tensor


def resize(images: torch.Tensor, size: int | tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size`` (int: square) with antialiasing, clamped to [0, 1]."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    out = torch.nn.functional.interpolate(images, size=hw, mode=mode, align_corners=False, antialias=mode in ("bilinear", "bicubic"))
    return out.clamp(0, 1)


def to_pil(image: ImageLike) -> Image.Image:
    """One image (``N`` must be 1; use :func:`make_grid` for a batch) as a PIL image."""
    tensor = to_tensor(image, channels=None)
    if tensor.shape[0] != 1:
        tensor = make_grid(tensor)[None]
    array = (tensor[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    if array.shape[2] == 4:
        return Image.fromarray(array, mode="RGBA")
    if array.shape[2] != 3:
        raise ValueError(f"cannot show an image with {array.shape[2]} channels; reduce it to 1, 3 or 4 first")
    return Image.fromarray(array, mode="RGB")


def make_grid(images: torch.Tensor | Sequence[torch.Tensor], ncol: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``[N, C, H, W]`` (or a list of same-sized images) into one ``[C, H', W']`` montage.

    ``ncol`` defaults to a near-square layout; ``padding`` pixels of ``pad_value`` separate tiles.
    """
    if not isinstance(images, torch.Tensor):
        images = torch.cat([to_tensor(im, channels=None) for im in images])
    images = images.detach().cpu().float()
    if images.ndim == 3:
        return images
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.full((c, nrow * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k in range(n):
        r, q = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


def save_image(images: ImageLike, path: str | os.PathLike, ncol: int | None = None, quality: int = 95) -> Path:
    """Save an image or a batch (tiled with :func:`make_grid`) as PNG/JPEG/WebP, chosen by extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = to_tensor(images, channels=None)
    if tensor.shape[0] > 1:
        tensor = make_grid(tensor, ncol=ncol)[None]
    pil = to_pil(tensor)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        pil.convert("RGB").save(path, quality=quality)
    elif suffix in (".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"):
        pil.save(path)
    else:
        raise ValueError(f"unknown image format {suffix!r} for {path}: use .png, .jpg or .webp")
    return path


def png_bytes(image: ImageLike) -> bytes:
    """PNG-encoded bytes of an image (a batch is tiled)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: ImageLike, fmt: str = "png", quality: int = 90) -> str:
    """A ``data:`` URL holding the image, for self-contained HTML."""
    if fmt == "png":
        payload, mime = png_bytes(image), "image/png"
    else:
        buffer = io.BytesIO()
        to_pil(image).convert("RGB").save(buffer, format="JPEG", quality=quality)
        payload, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def save_gif(frames: Iterable[ImageLike], path: str | os.PathLike, duration_ms: int = 80) -> Path:
    """Write frames (each an image or a batch, tiled) as an animated GIF that loops forever."""
    pils = [to_pil(frame).convert("RGB") for frame in frames]
    if not pils:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pils[0].save(path, save_all=True, append_images=pils[1:], duration=duration_ms, loop=0)
    return path


class Picture:
    """An image that shows itself in notebooks (``_repr_png_``) and saves with :meth:`save`.

    ``tensor`` is ``[N, C, H, W]`` in [0, 1]; batches display as a grid.
    """

    def __init__(self, tensor: torch.Tensor, caption: str = ""):
        self.tensor = to_tensor(tensor, channels=None)
        self.caption = caption

    def save(self, path: str | os.PathLike) -> Path:
        return save_image(self.tensor, path)

    def _repr_png_(self) -> bytes:
        return png_bytes(self.tensor)

    def __repr__(self) -> str:
        return f"Picture({tuple(self.tensor.shape)}{', ' + repr(self.caption) if self.caption else ''})"


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All files under ``folder`` (recursively) whose extension is a common image format, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder of images: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def sample_image_paths() -> list[Path]:
    """The real photos that ship inside scikit-learn (china.jpg, flower.jpg), when it is installed.

    Located without importing scikit-learn; an empty list when it is absent.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images"
    return sorted(folder.glob("*.jpg"))
