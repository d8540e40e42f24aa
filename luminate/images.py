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
import struct
import warnings
from pathlib import Path
from typing import IO, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class UnreadableImageError(ValueError):
    """A file that should hold an image could not be decoded."""


class ImageTooLargeError(UnreadableImageError):
    """An image has more pixels than the reader's budget (``max_pixels``); it is skipped, named, not decoded."""


def default_max_pixels() -> int:
    """The pixel budget of :func:`open_image`: Pillow's own refusal limit (twice ``Image.MAX_IMAGE_PIXELS``,
    about 179 megapixels), counted after reduced decoding, so a huge JPEG that ``draft`` shrinks still reads."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(2 * limit) if limit else 2 * 89_478_485


def needed_side(size: int | Sequence[int], crop_fraction: float = 1.0) -> int:
    """The shortest image side that still gives ``size`` (int or ``(H, W)``) pixels after a centre crop of
    ``crop_fraction`` of the short side: what :func:`open_image` may decode a large JPEG down to (``min_side``)."""
    longest = max(size) if isinstance(size, (tuple, list)) else int(size)
    return int(math.ceil(longest / max(1e-6, float(crop_fraction))))


#: images above this many pixels are decoded at reduced size when ``min_side`` allows (smaller ones decode whole,
#: so ordinary photos give exactly the pixels they always gave)
REDUCE_ABOVE = 4096 * 4096


def open_image(path: str | os.PathLike | bytes | IO[bytes], *, min_side: int | None = None,
               max_pixels: int | None = None, formats: Sequence[str] | None = None) -> Image.Image:
    """Open an image file as an upright RGB PIL image: the one reader behind every path Luminate takes, and behind
    uploads (``bytes`` or a binary file object; ``formats`` limits the decoders Pillow may try).

    * EXIF orientation is applied (a phone photo stored on its side comes back upright);
    * 16-bit and 32-bit grey (``I;16``, ``I``) and float (``F``) images are scaled to 8 bits, not clipped
      (:func:`scale_high_depth`); palette, grey, CMYK are converted; RGBA is composited over white, so
      transparent regions do not turn black;
    * ``min_side``: when the model needs fewer pixels, a large JPEG is decoded at a reduced size (Pillow's
      ``draft``, a power-of-two DCT scaling, keeping both sides at least ``min_side``) and other formats are
      shrunk by an integer factor (``reduce``), so memory follows what is kept, not the file's size (only images
      over :data:`REDUCE_ABOVE` pixels: smaller ones decode whole);
    * ``max_pixels`` (default :func:`default_max_pixels`): a larger image raises :class:`ImageTooLargeError`
      (a named skip in collections) instead of decoding it; Pillow's ``DecompressionBombWarning`` never reaches
      the user.

    Raises :class:`UnreadableImageError` naming the file when it is missing, empty, corrupt or too large.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        path = io.BytesIO(path)
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if not path.exists():
            raise UnreadableImageError(f"image file not found: {path}")
        if path.stat().st_size == 0:
            raise UnreadableImageError(f"image file is empty (0 bytes): {path}")
    source, path = path, (path if isinstance(path, Path) else "the uploaded image")
    budget = default_max_pixels() if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(formats) if formats else None) as im:
                full = im.size
                large = min_side and im.size[0] * im.size[1] > REDUCE_ABOVE
                if large and im.format == "JPEG" and min(im.size) > 2 * min_side:
                    w, h = im.size
                    scale = min_side / min(w, h)
                    im.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
                if im.size[0] * im.size[1] > budget:
                    raise ImageTooLargeError(
                        f"{path} is {full[0]}x{full[1]} pixels ({full[0] * full[1] / 1e6:.0f} megapixels), over the "
                        f"budget of {budget / 1e6:.0f} megapixels: shrink it first (or pass a larger max_pixels)")
                im.load()
                if large:
                    factor = min(im.size) // min_side
                    if factor >= 2:
                        im = im.reduce(factor)
                return _to_rgb(_upright(im))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path} is too large to decode ({exc}); shrink it first") from None
    except UnreadableImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"cannot decode image {path}: {exc}") from exc


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says; as it is when the EXIF block is unreadable (the pixels are
    fine, only the camera's note is broken, so the image is still read)."""
    try:
        return ImageOps.exif_transpose(im)
    except (ValueError, TypeError, KeyError, SyntaxError, struct.error, OSError):
        return im


#: Pillow modes holding more than 8 bits per pixel, all single-channel
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def scale_high_depth(im: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float grey image as float32 ``[H, W]`` in [0, 1], scaled rather than clipped.

    ``I;16*`` divides by 65535. ``I`` (32-bit integers, how Pillow holds 16-bit PNG and TIFF data) divides by
    65535 when its values lie in 0..65535, else spans its own minimum..maximum. ``F`` is used as it is when it lies
    in [0, 1], divided by 255 in [0, 255], else min-max scaled. Non-finite values become 0.
    """
    array = np.asarray(im)
    if im.mode.startswith("I;16"):
        return array.astype(np.float32) / 65535.0
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    if im.mode == "I" and lo >= 0 and hi <= 65535:
        out = array / 65535.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        out = array
    elif im.mode == "F" and lo >= 0 and hi <= 255:
        out = array / 255.0
    else:
        out = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return out.astype(np.float32)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in HIGH_DEPTH_MODES:
        grey = (scale_high_depth(im) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def to_tensor(image: ImageLike, channels: int | None = 3, *, min_side: int | None = None) -> torch.Tensor:
    """Convert any image-like value to a float tensor ``[N, C, H, W]`` in [0, 1].

    * path or PIL image: decoded, converted to RGB, ``N = 1``;
    * numpy array: ``HW``, ``HWC`` or ``NHWC``; uint8 is scaled by 1/255;
    * tensor: ``HW``, ``CHW`` or ``NCHW``, used as is (float) or scaled (uint8).

    With ``channels=3`` grey images are repeated to RGB and alpha channels dropped. Paths are read by
    :func:`open_image` (EXIF orientation, 16-bit scaling; ``min_side`` lets a large JPEG decode at reduced size);
    16-bit and float PIL images are scaled to [0, 1] at full precision.
    """
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, min_side=min_side)
    if isinstance(image, Image.Image):
        image = scale_high_depth(image) if image.mode in HIGH_DEPTH_MODES else np.asarray(_to_rgb(image))
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
        raise TypeError(f"cannot read an image from {type(image).__name__}: Luminate accepts a path, a PIL image, a "
                        "numpy array (HW, HWC or NHWC; uint8 or float in [0, 1]) or a tensor (CHW or NCHW), or a list "
                        "of them")
    return _with_channels(tensor, channels).contiguous()


def _with_channels(tensor: torch.Tensor, channels: int | None) -> torch.Tensor:
    """``[N, c, H, W]`` with ``channels`` channels: grey repeated to RGB, alpha dropped, RGB to grey (ITU-R 601
    luma, as Pillow's ``L``) for a one-channel model; other counts must match."""
    have = tensor.shape[1]
    if channels is None or have == channels:
        return tensor
    if channels == 3 and have == 1:
        return tensor.expand(-1, 3, -1, -1)
    if channels == 3 and have == 4:
        return tensor[:, :3]
    if channels == 1 and have in (3, 4):
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=tensor.dtype).view(1, 3, 1, 1)
        return (tensor[:, :3] * weights).sum(1, keepdim=True)
    if channels == 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {have} (shape {tuple(tensor.shape)})")
    raise ValueError(f"the model takes {channels}-channel images, and this one has {have} channel(s) (shape "
                     f"{tuple(tensor.shape)}): give a [N, {channels}, H, W] tensor or an array with {channels} "
                     "channels (photos are RGB)")


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
