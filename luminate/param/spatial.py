"""Pixel and Fourier image parameterizations, and the ``image`` factory (Lucid's ``param/spatial.py`` and
``param/images.py``).

The Fourier parameterization optimizes the 2-D real spectrum of each image, scaled so that every frequency band
starts with energy ``~ 1 / f ** decay_power``: gradient steps then change low frequencies as much as high ones
("preconditioning"), which removes most of the high-frequency noise of pixel-space optimization.

Numerics follow Lucid's ``fft_image``:

* ``freqs = sqrt(fx**2 + fy**2)`` with ``fy = fftfreq(h)`` and ``fx = rfftfreq(w)``;
* ``scale = 1 / max(freqs, 1 / max(h, w)) ** decay_power * sqrt(h * w)``;
* ``image = irfft2(scale * spectrum) / 4``, with the unnormalized-forward / ``1/N``-inverse convention of TF's
  ``irfft2d`` (NumPy's and torch's default ``norm="backward"``). The ``/ 4`` is Lucid's unexplained constant ("TODO:
  is that a magic constant?"); it is kept so that learning rates and ``sd`` mean the same as in Lucid.

Deliberate change: Lucid handles an odd width by keeping one extra frequency column (``w // 2 + 2``), inverting to a
``w + 1`` wide image and cropping a column. Here ``irfft2`` is given the exact output size, so odd widths use the
``w // 2 + 1`` columns of a true width-``w`` spectrum (no crop, no extra column).

All items of the batch go through one batched ``irfft2`` (Lucid's PR #200 made the same change).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from .base import Index, RawImage, Size, as_index, as_size, normal
from .color import Grayscale, ImageParam, to_valid_rgb

#: Lucid's constant divisor of the inverse FFT (``spatial.py``: ``image_t / 4.0``).
FFT_DIVISOR = 4.0
#: ``chroma`` of render's default image: class images of lite0 then have the saturation and colourfulness of the demo
#: photos (inside their interquartile range) and keep every one of 64 crops in Lite2's top 5 (``docs/quality.md``)
NATURAL_CHROMA = 2.0


def rfft2d_freqs(h: int, w: int) -> Tensor:
    """Spatial frequency magnitude of each ``rfft2`` bin: ``[h, w // 2 + 1]`` float64, in cycles per pixel."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


@functools.lru_cache(maxsize=64)
def _fft_scale(h: int, w: int, decay_power: float) -> Tensor:
    freqs = rfft2d_freqs(h, w)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power * math.sqrt(h * w)
    return scale.to(torch.float32)


def fft_scale(size: Size, decay_power: float = 1.0) -> Tensor:
    """Lucid's spectrum scaling ``1 / max(freqs, 1 / max(h, w)) ** decay_power * sqrt(h * w)``: ``[h, w // 2 + 1]``.

    Computed in float64 and returned in float32 (Lucid's precision); a fresh copy each call.
    """
    h, w = as_size(size)
    return _fft_scale(h, w, float(decay_power)).clone()


def _fft_dtype(t: Tensor) -> Tensor:
    """Half-precision tensors go through the FFT in float32 (torch has no general half FFT)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def spectrum_to_image(spectrum: Tensor, scale: Tensor, size: Size) -> Tensor:
    """``irfft2(scale * spectrum) / 4``: spectrum ``[B, C, h, w // 2 + 1, 2]`` (real, imaginary) to ``[B, C, h, w]``.

    One batched inverse FFT for every item and channel; the result has the spectrum's dtype.
    """
    h, w = as_size(size)
    z = torch.view_as_complex(_fft_dtype(spectrum).contiguous()) * _fft_dtype(scale)
    image = torch.fft.irfft2(z, s=(h, w), norm="backward") / FFT_DIVISOR
    return image.to(spectrum.dtype)


def image_to_spectrum(image: Tensor, scale: Tensor) -> Tensor:
    """Inverse of :func:`spectrum_to_image`: ``[B, C, h, w]`` to the spectrum ``[B, C, h, w // 2 + 1, 2]``.

    ``spectrum_to_image(image_to_spectrum(x, s), s, x.shape[-2:])`` equals ``x`` up to float error.
    """
    z = torch.fft.rfft2(_fft_dtype(image) * FFT_DIVISOR, norm="backward") / _fft_dtype(scale)
    return torch.view_as_real(z).to(image.dtype).contiguous()


class PixelImage(RawImage):
    """Raw pixels ``[batch, channels, H, W]``, initialised ``N(0, sd)`` (Lucid's ``pixel_image`` / ``naive``).

    Parameter ``pixels``. An ``initial`` raw image (see :meth:`set_initial`) replaces the random draw.
    """

    def __init__(self, size: Size, batch: int = 1, channels: int = 3, sd: float = 0.01) -> None:
        super().__init__(batch, channels, size)
        self.sd = float(sd)
        self.pixels = nn.Parameter(torch.zeros(self.shape))
        self.register_buffer("initial", None, persistent=False)

    def set_initial(self, raw: Tensor | None) -> None:
        """Make ``reset_parameters`` start from ``raw`` (``[batch, channels, H, W]``) instead of noise; ``None`` undoes.

        The values are copied into the parameter now as well.
        """
        if raw is None:
            self.initial = None
            return
        if tuple(raw.shape) != self.shape:
            raise ValueError(f"initial image has shape {tuple(raw.shape)}, expected {self.shape}")
        self.initial = raw.detach().to(self.pixels).clone()
        with torch.no_grad():
            self.pixels.copy_(self.initial)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw ``N(0, sd)`` from ``generator``, or copy the initial image when one was set (generator unused)."""
        self.pixels.copy_(self.initial if self.initial is not None else normal(generator, self.shape, self.sd))

    def forward(self, index: Index = None) -> Tensor:
        idx = as_index(index, self.batch, self.pixels.device)
        return self.pixels if idx is None else self.pixels[idx]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sd={self.sd}"


class FourierImage(RawImage):
    """Images parameterized by their scaled 2-D real spectrum (Lucid's ``fft_image``), ``[batch, channels, H, W]``.

    Parameter ``spectrum`` ``[batch, channels, H, W // 2 + 1, 2]`` (real, imaginary), initialised ``N(0, sd)``;
    buffer ``scale`` ``[H, W // 2 + 1]`` from :func:`fft_scale`. ``forward(index)`` transforms only the requested
    items.
    """

    def __init__(self, size: Size, batch: int = 1, channels: int = 3, sd: float = 0.01,
                 decay_power: float = 1.0) -> None:
        super().__init__(batch, channels, size)
        h, w = self.size
        self.sd = float(sd)
        self.decay_power = float(decay_power)
        self.spectrum = nn.Parameter(torch.zeros(self.batch, self.channels, h, w // 2 + 1, 2))
        self.register_buffer("scale", fft_scale(self.size, self.decay_power), persistent=False)
        self.register_buffer("initial", None, persistent=False)

    def set_initial(self, raw: Tensor | None) -> None:
        """Make ``reset_parameters`` start from the spectrum of ``raw`` (``[batch, channels, H, W]``); ``None`` undoes.

        The spectrum is computed with the inverse scaling, so the first ``forward()`` returns ``raw`` (float error).
        It is copied into the parameter now as well.
        """
        if raw is None:
            self.initial = None
            return
        if tuple(raw.shape) != self.shape:
            raise ValueError(f"initial image has shape {tuple(raw.shape)}, expected {self.shape}")
        raw = raw.detach().to(device=self.scale.device, dtype=torch.float64)
        self.initial = image_to_spectrum(raw, self.scale.double()).to(self.spectrum)
        with torch.no_grad():
            self.spectrum.copy_(self.initial)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw real and imaginary parts ``N(0, sd)`` from ``generator`` (or copy the initial spectrum when set)."""
        init = self.initial if self.initial is not None else normal(generator, self.spectrum.shape, self.sd)
        self.spectrum.copy_(init)

    def forward(self, index: Index = None) -> Tensor:
        idx = as_index(index, self.batch, self.spectrum.device)
        spectrum = self.spectrum if idx is None else self.spectrum[idx]
        return spectrum_to_image(spectrum, self.scale, self.size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sd={self.sd}, decay_power={self.decay_power}"


def random_image(size: Size, batch: int = 1, *, generator: torch.Generator, sd: float = 0.01,
                 decay_power: float = 1.0, decorrelate: bool = True, channels: int = 3) -> Tensor:
    """A fresh random Fourier-noise image ``[batch, channels, H, W]`` in [0, 1] (Lucid's ``image_sample``).

    Not a parameter: a new sample each call, drawn from ``generator`` on its device (used as a random background
    for transparent images; Lucid's transparency notebook uses ``sd=0.2, decay_power=1.5``). ``decorrelate`` needs
    3 channels; the result goes through the sigmoid.
    """
    h, w = as_size(size)
    spectrum = normal(generator, (batch, channels, h, w // 2 + 1, 2), sd)
    raw = spectrum_to_image(spectrum, _fft_scale(h, w, float(decay_power)).to(spectrum.device), (h, w))
    return to_valid_rgb(raw, decorrelate=decorrelate, sigmoid=True)


def image(w: int, h: int | None = None, batch: int = 1, sd: float | None = 0.01, decorrelate: bool = True,
          fft: bool = True, alpha: bool = False, channels: int | None = None, decay_power: float = 1.0,
          mean_colour: bool = False, chroma: float = 1.0) -> ImageParam:
    """Lucid's ``param.image``: a batch of ``[batch, C, h, w]`` images in [0, 1] (note the ``w, h`` argument order).

    * ``fft`` (default): :class:`FourierImage`; otherwise :class:`PixelImage`. Both start at ``N(0, sd)``, so the
      image starts mid-grey plus a little noise.
    * RGB (``channels=None``): decorrelated colour (``decorrelate``) and a sigmoid; ``alpha=True`` adds a 4th,
      sigmoid-only channel.
    * ``channels=k``: ``k`` channels, each through a sigmoid, never decorrelated (``decorrelate`` is ignored).
    * ``mean_colour=True`` adds a free colour per item (a 1 x 1 :class:`~luminate.param.lowres.LowResTensor`, the
      coarsest of Lucid's low-resolution components): a Fourier image's mean colour barely moves in a few hundred
      steps, so its pictures stay grey on average even where the unit prefers warm or dark photos.
    * ``chroma``: the colour-difference columns of the colour matrix are multiplied by it (RGB, decorrelated only;
      1 is Lucid's matrix). Lucid's images are greyer than the photos they stand for; render's default image uses
      :data:`NATURAL_CHROMA` (``docs/quality.md``: colour statistics against the demo photos).
    """
    if channels is not None and alpha:
        raise ValueError("alpha=True cannot be combined with channels=k; ask for channels=k+1 and treat the last "
                         "channel as alpha, or drop channels= for RGB + alpha")
    h = w if h is None else h
    sd = 0.01 if sd is None else sd
    ch = channels if channels is not None else (4 if alpha else 3)
    if fft:
        raw: RawImage = FourierImage((h, w), batch, ch, sd=sd, decay_power=decay_power)
    else:
        raw = PixelImage((h, w), batch, ch, sd=sd)
    if mean_colour:
        from .composite import Combined
        from .lowres import LowResTensor

        raw = Combined([raw, LowResTensor((h, w), (batch, 1, 1), batch, ch, sd=sd)])
    if channels is not None:
        return ImageParam(raw, decorrelate=False)
    return ImageParam(raw, decorrelate=decorrelate, alpha=alpha, chroma=chroma)


def grayscale(w: int, h: int | None = None, batch: int = 1, sd: float | None = 0.01, fft: bool = True,
              decay_power: float = 1.0) -> Grayscale:
    """One sigmoid channel tiled to 3 identical RGB channels (Lucid's ``grayscale_image_rgb``): ``[batch, 3, h, w]``."""
    return Grayscale(image(w, h, batch=batch, sd=sd, fft=fft, channels=1, decay_power=decay_power))
