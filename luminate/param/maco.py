"""MACO: magnitude-constrained optimization (Fel et al., NeurIPS 2023).

A Fourier image whose **magnitude spectrum is fixed** to that of natural images and whose **phase** alone is
optimized. Natural images owe much of their look to their magnitude spectrum (energy falling off as ``1/f``,
per colour channel); holding it fixed keeps a visualization from drifting into the high-frequency, saturated
textures that plain Fourier optimization produces on modern networks, while the phase (where edges and parts
go) is free.

* :class:`MacoImage` is the raw image (a :class:`~luminate.param.base.RawImage`): parameter ``phase``
  ``[B, 3, H, W // 2 + 1]``, buffer ``magnitude`` ``[3, H, W // 2 + 1]``; ``raw = irfft2(magnitude * e^{i phase})``.
  The magnitude of ``rfft2(raw)`` equals ``magnitude`` at every step (up to the two real-only columns, whose
  imaginary part ``irfft2`` drops); the test measures it.
* :func:`maco` wraps it in a :class:`MacoParam`: decorrelated colour and a sigmoid (as :func:`~luminate.param.image`),
  plus the **transparency map** MACO shows beside the image: the accumulated ``|d objective / d image|`` over the
  optimization (``param.transparency``, ``[B, 3, H, W]``), which marks the pixels the objective actually used.

The magnitude prior
    ``magnitude="natural"`` (default) reads ``luminate/param/data/maco_magnitude.npz``: the mean magnitude spectrum,
    in Luminate's raw space (``from_valid_rgb(photo, decorrelate=True)``: the logit of the pixels mixed back
    through the inverse colour matrix), of 256 x 256 crops of the photos that ship with scikit-learn and scikit-image.
    ``python scripts/make_maco_prior.py`` recomputes it (deterministic). ``magnitude=`` also takes your own photos
    (paths, a folder's files, PIL images or an ``[N, 3, H, W]`` tensor: :func:`magnitude_from_images`) or a
    ``[3, h, w // 2 + 1]`` magnitude tensor. The prior is resampled to any image size (:func:`resample_magnitude`:
    a smaller image is the photos' spectrum shrunk, a larger one adds no detail) so the raw image keeps about the
    photos' contrast at every size.

Differences from Horama (the reference implementation)
    The prior ships with the package (Horama downloads an ImageNet spectrum at first use); the DC term is zero, so
    the mean raw value is 0 (a mid-grey mean) and the image is not re-standardized after the inverse FFT (Horama
    standardizes it, which rescales the magnitude every step); the phase is an angle initialised uniformly in
    ``(-pi, pi]`` (Horama standardizes a Gaussian phase). MACO's transforms (random crops with noise) are
    :func:`luminate.transforms.maco_transforms`; one crop per batch item per step, as ``render`` keeps the batch.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Index, RawImage, Size, as_index, as_size
from .color import ImageParam, from_valid_rgb

#: Where the shipped natural-image prior lives (``scripts/make_maco_prior.py`` writes it).
PRIOR_PATH = Path(__file__).parent / "data" / "maco_magnitude.npz"
#: Side of the square crops the shipped prior was measured on.
PRIOR_SIZE = 256

MagnitudeLike = Union[str, Tensor, Sequence, None]


def _shifted(magnitude: Tensor) -> Tensor:
    """``[3, h, w // 2 + 1]`` rfft layout with the vertical frequencies reordered from most negative to most positive."""
    return torch.fft.fftshift(magnitude, dim=-2)


def resample_magnitude(magnitude: Tensor, size: Size, source: int | tuple[int, int] | None = None) -> Tensor:
    """A magnitude spectrum measured on ``source``-pixel images, resampled to ``size`` = ``(H, W)``: ``[3, H, W//2+1]``.

    Along an axis where the image is no larger than the source, frequencies keep their *cycles per image* (a 64 px
    image gets the spectrum of a 256 px photo shrunk to 64 px, as Horama resizes its spectrum), and values scale
    by ``size / source`` (the DFT of a shrunk image); where it is larger, frequencies keep their *cycles per pixel*
    (the prior says nothing about finer detail than it saw) and values scale by ``sqrt(size / source)``. Either way
    a random-phase image keeps about the photos' pixel contrast at every size. Sampling is bilinear in the
    frequency plane; the DC term of the result is 0. ``source`` defaults to the spectrum's own size (``h``,
    ``2 * (w - 1)``).
    """
    if magnitude.ndim != 3:
        raise ValueError(f"a magnitude spectrum is [C, h, w // 2 + 1], got shape {tuple(magnitude.shape)}")
    sh = magnitude.shape[1]
    sw = 2 * (magnitude.shape[2] - 1)
    if source is not None:
        sh, sw = as_size(source)
    h, w = as_size(size)
    grid_src = _shifted(magnitude.double())[None]                              # [1, C, sh, sw // 2 + 1]
    # target frequency (cycles per pixel) -> source frequency: same cycles per image when no larger, else the same
    fy = torch.fft.fftfreq(h, dtype=torch.float64) * (h / sh if h <= sh else 1.0)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64) * (w / sw if w <= sw else 1.0)
    # positions in the shifted source grid, in pixels: row r <-> fy = (r - sh // 2) / sh, column c <-> fx = c / sw
    rows = fy * sh + sh // 2
    cols = fx * sw
    gy = 2 * (rows + 0.5) / sh - 1                                             # align_corners=False coordinates
    gx = 2 * (cols + 0.5) / grid_src.shape[-1] - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]    # [1, h, w // 2 + 1, 2]
    out = F.grid_sample(grid_src, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    scale_y = h / sh if h <= sh else math.sqrt(h / sh)
    scale_x = w / sw if w <= sw else math.sqrt(w / sw)
    out = out * (scale_y * scale_x)
    out[:, 0, 0] = 0.0
    return out.float()


@functools.lru_cache(maxsize=1)
def _shipped_prior() -> Tensor:
    if not PRIOR_PATH.exists():
        raise FileNotFoundError(f"the MACO magnitude prior {PRIOR_PATH} is missing from the installation; recreate it "
                                "with `python scripts/make_maco_prior.py` or pass magnitude=<your photos>")
    with np.load(PRIOR_PATH) as data:
        return torch.from_numpy(data["magnitude"].astype(np.float32))


def natural_magnitude(size: Size = PRIOR_SIZE) -> Tensor:
    """The shipped natural-image magnitude prior resampled to ``size``: ``[3, H, W // 2 + 1]`` float32."""
    return resample_magnitude(_shipped_prior(), size, PRIOR_SIZE)


def _crops(photo: Tensor, crop: int, per_image: int, generator: torch.Generator) -> list[Tensor]:
    """``per_image`` random ``crop``-pixel squares of ``photo`` ``[3, H, W]`` (downscaled first when it is small)."""
    _, h, w = photo.shape
    if min(h, w) < crop:
        scale = crop / min(h, w)
        photo = F.interpolate(photo[None], size=(max(crop, round(h * scale)), max(crop, round(w * scale))),
                              mode="bilinear", antialias=False, align_corners=False)[0]
        _, h, w = photo.shape
    out = []
    for _ in range(per_image):
        y = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
        x = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        out.append(photo[:, y:y + crop, x:x + crop])
    return out


def magnitude_from_images(images, size: int = PRIOR_SIZE, crops_per_image: int = 16, scales: Sequence[float] = (1.0,),
                          seed: int = 0) -> Tensor:
    """Mean magnitude spectrum ``[3, size, size // 2 + 1]`` of random ``size``-pixel crops of ``images``.

    ``images``: paths, PIL images, arrays, a folder path, or an ``[N, 3, H, W]`` tensor in [0, 1]. Each photo is
    also taken at every factor in ``scales`` (e.g. ``(1.0, 0.5)``: full size and halved). The crops go into
    Luminate's raw space (``from_valid_rgb(crop, decorrelate=True)``), lose their per-channel mean, are multiplied by
    a Hann window normalized to unit energy (so the crop's borders do not add a cross to the spectrum) and their
    ``|rfft2|`` is averaged. Deterministic for a given ``seed``.
    """
    from luminate.images import load_image, to_tensor

    if isinstance(images, (str, Path)) and Path(images).is_dir():
        images = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp",
                                                                                 ".webp", ".tif", ".tiff"})
    if isinstance(images, Tensor):
        photos = list(images if images.ndim == 4 else images[None])
    else:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        photos = [(load_image(i) if isinstance(i, (str, Path)) else to_tensor(i))[0] for i in items]
    if not photos:
        raise ValueError("no images to measure a magnitude spectrum from: give at least one photo")
    generator = torch.Generator().manual_seed(seed)
    window = torch.hann_window(size, periodic=False, dtype=torch.float64)
    window = torch.outer(window, window)
    window = window / window.square().mean().sqrt()
    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    count = 0
    for photo in photos:
        photo = photo.double()
        if photo.shape[0] == 1:
            photo = photo.expand(3, -1, -1)
        for factor in scales:
            scaled = photo if factor == 1.0 else F.interpolate(
                photo[None], scale_factor=factor, mode="bilinear", antialias=True, align_corners=False)[0]
            for crop in _crops(scaled, size, crops_per_image, generator):
                raw = from_valid_rgb(crop[None], decorrelate=True)[0]
                raw = (raw - raw.mean(dim=(1, 2), keepdim=True)) * window
                total += torch.fft.rfft2(raw, norm="backward").abs()
                count += 1
    return (total / count).float()


def as_magnitude(magnitude: MagnitudeLike, size: Size) -> Tensor:
    """``magnitude`` as a ``[3, H, W // 2 + 1]`` spectrum for an image of ``size``.

    ``None`` or ``"natural"``: the shipped prior; a 3-D tensor ``[3, h, w // 2 + 1]``: a magnitude spectrum of
    ``h``-pixel images, resampled by frequency; anything else (paths, a folder, PIL images, an ``[N, 3, H, W]``
    tensor): photos, measured with :func:`magnitude_from_images`.
    """
    h, w = as_size(size)
    if magnitude is None or (isinstance(magnitude, str) and magnitude == "natural"):
        return natural_magnitude((h, w))
    if isinstance(magnitude, Tensor) and magnitude.ndim == 3:
        if magnitude.shape[0] != 3 or magnitude.is_complex() or bool((magnitude < 0).any()):
            raise ValueError(f"a magnitude spectrum is a real, non-negative [3, h, w // 2 + 1] tensor, got shape "
                             f"{tuple(magnitude.shape)}; pass photos as an [N, 3, H, W] tensor")
        return resample_magnitude(magnitude, (h, w))
    spectrum = magnitude_from_images(magnitude, size=min(PRIOR_SIZE, h, w) if min(h, w) >= 32 else 32)
    return resample_magnitude(spectrum, (h, w))


class MacoImage(RawImage):
    """Raw images with a fixed magnitude spectrum and an optimized phase: ``[batch, 3, H, W]``.

    Parameter ``phase`` ``[batch, 3, H, W // 2 + 1]`` (radians); buffer ``magnitude`` ``[3, H, W // 2 + 1]``, shared by
    every item. ``forward()`` is ``irfft2(magnitude * exp(i * phase))`` (torch's ``norm="backward"``), so
    ``|rfft2(forward())| == magnitude`` wherever a bin is not forced real.
    """

    def __init__(self, size: Size, batch: int = 1, magnitude: MagnitudeLike = "natural") -> None:
        super().__init__(batch, 3, size)
        h, w = self.size
        mag = as_magnitude(magnitude, (h, w))
        if tuple(mag.shape) != (3, h, w // 2 + 1):
            raise ValueError(f"magnitude spectrum has shape {tuple(mag.shape)}, expected {(3, h, w // 2 + 1)}")
        self.register_buffer("magnitude", mag.float(), persistent=False)
        self.phase = nn.Parameter(torch.zeros(self.batch, 3, h, w // 2 + 1))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Phase uniform in ``(-pi, pi]`` from ``generator``."""
        draw = torch.rand(tuple(self.phase.shape), generator=generator, device=generator.device, dtype=torch.float32)
        self.phase.copy_((1.0 - 2.0 * draw) * math.pi)

    def forward(self, index: Index = None) -> Tensor:
        idx = as_index(index, self.batch, self.phase.device)
        phase = self.phase if idx is None else self.phase[idx]
        spectrum = torch.polar(self.magnitude.expand_as(phase), phase)
        return torch.fft.irfft2(spectrum, s=self.size, norm="backward")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, magnitude fixed (mean {float(self.magnitude.mean()):.3g})"


class MacoParam(ImageParam):
    """A :class:`MacoImage` through decorrelated colour and a sigmoid, recording MACO's transparency map.

    Every ``forward()`` that is part of a graph adds ``|d loss / d image|`` to ``transparency`` ``[batch, 3, H, W]``
    when the backward pass runs (a tensor hook), so after ``render`` it holds the gradient accumulated over every
    step: where the objective looked. :meth:`transparency_map` turns it into a ``[batch, 1, H, W]`` map in [0, 1];
    ``reset_parameters`` clears it.
    """

    raw: MacoImage

    def __init__(self, raw: MacoImage) -> None:
        super().__init__(raw, decorrelate=True)
        self.register_buffer("transparency", torch.zeros(self.shape), persistent=False)

    def reset_parameters(self, generator: torch.Generator) -> None:
        super().reset_parameters(generator)
        if hasattr(self, "transparency"):
            self.transparency.zero_()

    def forward(self, index: Index = None, size: Size | None = None) -> Tensor:
        image = super().forward(index, size)
        if image.requires_grad and torch.is_grad_enabled():
            idx = as_index(index, self.batch, image.device)

            def accumulate(grad: Tensor) -> None:
                with torch.no_grad():
                    if idx is None:
                        self.transparency += grad.abs().to(self.transparency)
                    else:
                        self.transparency.index_add_(0, idx, grad.abs().to(self.transparency))

            image.register_hook(accumulate)
        return image

    def transparency_map(self, percentile: float = 0.99, blur: int = 0) -> Tensor:
        """The transparency map ``[batch, 1, H, W]`` in [0, 1]: summed over colour, divided by its ``percentile``.

        ``blur`` (pixels, odd) smooths it with a box filter first, as MACO's figures do for display.
        """
        t = self.transparency.detach().sum(1, keepdim=True).float().cpu()
        if blur > 1:
            k = blur | 1
            t = F.avg_pool2d(F.pad(t, (k // 2,) * 4, mode="replicate"), k, stride=1)
        q = torch.quantile(t.flatten(1), percentile, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (t / q).clamp(0, 1)


def maco(size: Size, magnitude: MagnitudeLike = "natural", batch: int = 1) -> MacoParam:
    """MACO parameterization: ``[batch, 3, H, W]`` images in [0, 1] with a fixed natural magnitude spectrum.

    Args:
        size: ``W`` for a square image, or ``(H, W)``.
        magnitude: ``"natural"`` (the shipped prior), your photos (paths, a folder, PIL images, an ``[N, 3, H, W]``
            tensor), or a ``[3, h, w // 2 + 1]`` magnitude tensor (see :func:`as_magnitude`).
        batch: images optimized together; each has its own phase, all share the magnitude.

    Use with :func:`luminate.transforms.maco_transforms` and a larger learning rate than Fourier images
    (``render(..., param=maco(224), transforms=maco_transforms(), lr=MACO_LR)``); ``luminate render --param maco``
    does that. After rendering, ``param.transparency_map()`` is the transparency map.
    """
    return MacoParam(MacoImage(size, batch=batch, magnitude=magnitude))


#: Adam learning rate for the phase (radians per step at most, roughly); measured in ``benchmarks/quality.py``.
MACO_LR = 0.1
